"""_retry.py: error classification, translation and the retry loop. Pure: no server."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
import time

import pymysql
import pytest
import sqlalchemy.exc

from tidb_memory import (
    ConnectError,
    PoolTimeoutError,
    RetriesExhaustedError,
    RetryPolicy,
    SchemaError,
    StorageError,
    TiDBMemoryError,
)
from tidb_memory._retry import Verdict, classify, error_code, error_text, retrying, translate

SECRET_SQL = "SELECT secret_column FROM secret_table WHERE api_key = %s"
SECRET_PARAM = "param-value-that-must-not-leak"


def mysql_error(code: int, text: str = "server says no") -> pymysql.err.MySQLError:
    return pymysql.err.OperationalError(code, text)


def wrapped(orig: BaseException, *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    """The error as SQLAlchemy hands it over: with the statement and its parameters."""
    return sqlalchemy.exc.OperationalError(
        SECRET_SQL, (SECRET_PARAM,), orig, connection_invalidated=invalidated
    )


# Every code the module docstring lists, with the verdict it states.
DOCUMENTED = {
    Verdict.DISCONNECT: [2006, 2013, 2055, 2014, 4031, 1927],
    Verdict.CONFLICT: [1213, 1205, 8002, 8005, 8022, 8027, 8028, 9007],
    Verdict.BACKOFF: [9001, 9002, 9003, 9004, 9005, 9006, 9008, 2003, 1040, 1053],
    Verdict.FATAL: [8025, 8004, 9500, 1153, 8129, 1064, 1142, 1044, 1045, 1062, 1146],
}
CASES = [(code, verdict) for verdict, codes in DOCUMENTED.items() for code in codes]


@pytest.mark.parametrize(("code", "verdict"), CASES, ids=[f"{c}-{v.name}" for c, v in CASES])
def test_documented_codes(code: int, verdict: Verdict) -> None:
    assert classify(mysql_error(code)) is verdict
    # The same error wrapped by SQLAlchemy classifies the same.
    assert classify(wrapped(mysql_error(code))) is verdict
    assert error_code(wrapped(mysql_error(code))) == code


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (pymysql.err.OperationalError(0, "Not connected"), Verdict.DISCONNECT),
        (pymysql.err.InterfaceError(0, ""), Verdict.DISCONNECT),
        (ConnectionResetError(104, "Connection reset by peer"), Verdict.DISCONNECT),
        (ConnectionRefusedError(111, "Connection refused"), Verdict.DISCONNECT),
        (BrokenPipeError(32, "Broken pipe"), Verdict.DISCONNECT),
        (TimeoutError("timed out"), Verdict.DISCONNECT),
        (asyncio.IncompleteReadError(b"", 4), Verdict.DISCONNECT),
        (RuntimeError("Lost connection to MySQL server during query"), Verdict.DISCONNECT),
        (OSError(113, "No route to host"), Verdict.BACKOFF),
        (sqlite3.OperationalError("database is locked"), Verdict.BACKOFF),
        (sqlite3.OperationalError("database table is locked"), Verdict.BACKOFF),
        (wrapped(sqlite3.OperationalError("database is locked")), Verdict.BACKOFF),
        (sqlite3.OperationalError("no such table: x"), Verdict.FATAL),
        (sqlite3.IntegrityError("UNIQUE constraint failed: t.seq"), Verdict.FATAL),
        (
            mysql_error(1105, "Information schema is out of date [try again later]"),
            Verdict.CONFLICT,
        ),
        (mysql_error(1105, "something else"), Verdict.FATAL),
        (ValueError("a bug"), Verdict.FATAL),
        (StorageError("ours", operation="x"), Verdict.FATAL),
        (ConnectError("ours", operation="x"), Verdict.FATAL),
        (sqlalchemy.exc.TimeoutError("QueuePool limit reached"), Verdict.FATAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.name,
)
def test_other_errors(exc: BaseException, verdict: Verdict) -> None:
    assert classify(exc) is verdict


def test_invalidated_connection_is_a_disconnect_whatever_the_code() -> None:
    assert classify(wrapped(mysql_error(1064), invalidated=True)) is Verdict.DISCONNECT


def test_error_text_is_one_line_without_sql_or_params() -> None:
    exc = wrapped(mysql_error(1064, "You have an error in your SQL syntax\nsecond line"))
    assert error_text(exc) == "You have an error in your SQL syntax"
    generic = sqlalchemy.exc.StatementError("boom", SECRET_SQL, (SECRET_PARAM,), ValueError("x"))
    text = error_text(generic)
    assert "\n" not in text
    assert SECRET_SQL not in text
    assert SECRET_PARAM not in text
    assert len(error_text(ValueError("y" * 2000))) == 500
    assert error_text(ValueError()) == "ValueError"


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (mysql_error(1146, "Table 'test.t' doesn't exist"), SchemaError),
        (sqlite3.OperationalError("no such table: t"), SchemaError),
        (wrapped(sqlite3.OperationalError("no such table: t")), SchemaError),
        (mysql_error(1045, "Access denied for user 'u'@'h' (using password: YES)"), ConnectError),
        (mysql_error(1044, "Access denied for user to database"), ConnectError),
        (mysql_error(1049, "Unknown database 'nope'"), ConnectError),
        (mysql_error(2003, "Can't connect to MySQL server on 'h'"), ConnectError),
        (mysql_error(2026, "SSL connection error"), ConnectError),
        (mysql_error(1040, "Too many connections"), ConnectError),
        (mysql_error(1130, "Host is not allowed to connect"), ConnectError),
        (ConnectionRefusedError(111, "Connection refused"), ConnectError),
        (OSError(113, "No route to host"), ConnectError),
        (
            sqlalchemy.exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached"),
            PoolTimeoutError,
        ),
        (mysql_error(1064, "You have an error in your SQL syntax"), StorageError),
        (mysql_error(8025, "entry too large"), StorageError),
        (ValueError("odd"), StorageError),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else type(v).__name__,
)
def test_translate_picks_the_subclass(exc: BaseException, cls: type[StorageError]) -> None:
    error = translate(
        wrapped(exc) if isinstance(exc, pymysql.err.MySQLError) else exc,
        operation="aget_messages",
        table="my_table",
        attempts=3,
    )
    assert type(error) is cls
    assert isinstance(error, TiDBMemoryError)
    message = str(error)
    assert message.startswith("aget_messages on table 'my_table' failed")
    assert error.operation == "aget_messages"
    assert error.table == "my_table"
    assert error.attempts == 3
    assert error.errno == error_code(exc)
    assert SECRET_SQL not in message and "secret_table" not in message
    assert SECRET_PARAM not in message
    assert SECRET_PARAM not in repr(error)


def test_translate_adds_hints() -> None:
    auth = str(translate(mysql_error(1045), operation="op", table="t"))
    assert "[1045]" in auth and "user name and password" in auth
    missing = str(translate(mysql_error(1146), operation="op", table="t"))
    assert "create_tables" in missing
    down = str(translate(mysql_error(2003), operation="op", table="t"))
    assert "Is the server running" in down
    pool = str(translate(sqlalchemy.exc.TimeoutError("x"), operation="op", table="t"))
    assert "pool_size" in pool


def test_translate_passes_our_own_errors_through() -> None:
    ours = SchemaError("already ours", operation="op", table="t")
    assert translate(ours, operation="other", table="u") is ours


def test_translate_without_a_table() -> None:
    error = translate(mysql_error(1064), operation="connect", table=None)
    assert str(error).startswith("connect failed")
    assert error.table is None


# --- the retry loop ------------------------------------------------------------------------

FAST = RetryPolicy(attempts=4, deadline=5.0, base_delay=0.001, max_delay=0.002)


class Flaky:
    """Fails with the given errors, one per call, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retries_transient_errors_until_success() -> None:
    fn = Flaky(mysql_error(1213), mysql_error(2013), mysql_error(1040))
    assert await retrying(fn, policy=FAST, operation="op", table="t") == "ok"
    assert fn.calls == 4


async def test_fatal_error_is_raised_at_once_with_its_cause() -> None:
    cause = wrapped(mysql_error(1064, "syntax"))
    fn = Flaky(cause)
    with pytest.raises(StorageError) as info:
        await retrying(fn, policy=FAST, operation="aadd_messages", table="t")
    assert fn.calls == 1
    assert info.value.__cause__ is cause
    assert info.value.attempts == 1
    assert info.value.errno == 1064
    assert "aadd_messages on table 't'" in str(info.value)


async def test_gives_up_after_the_attempts() -> None:
    last = mysql_error(1205, "Lock wait timeout exceeded")
    fn = Flaky(*[mysql_error(1213)] * 3, last, mysql_error(1213))
    with pytest.raises(RetriesExhaustedError) as info:
        await retrying(fn, policy=FAST, operation="aclear", table="t")
    assert fn.calls == FAST.attempts
    assert info.value.attempts == FAST.attempts
    assert info.value.__cause__ is last
    assert info.value.errno == 1205
    assert info.value.operation == "aclear"
    assert info.value.table == "t"
    assert "gave up after 4 attempts" in str(info.value)
    assert "Lock wait timeout" in str(info.value)


async def test_gives_up_at_the_deadline() -> None:
    policy = RetryPolicy(attempts=1000, deadline=0.3, base_delay=0.05, max_delay=0.05)
    fn = Flaky(*[mysql_error(2003)] * 1000)
    started = time.monotonic()
    with pytest.raises(RetriesExhaustedError):
        await retrying(fn, policy=policy, operation="op", table="t")
    assert time.monotonic() - started < 1.0
    assert 2 <= fn.calls < 20


async def test_our_own_errors_are_never_retried() -> None:
    ours = SchemaError("missing", operation="schema check", table="t")
    fn = Flaky(ours)
    with pytest.raises(SchemaError) as info:
        await retrying(fn, policy=FAST, operation="op", table="t")
    assert info.value is ours
    assert fn.calls == 1


def test_policy_validation_and_delays() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=2.0, max_delay=1.0)
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    for attempt in range(1, 10):
        cap = min(1.0, 0.1 * 2 ** (attempt - 1))
        assert cap / 2 <= policy.delay(attempt, Verdict.BACKOFF) <= cap
        assert 0 <= policy.delay(attempt, Verdict.CONFLICT) <= min(1.0, 0.1 * attempt)


def test_a_certificate_that_fails_verification_is_final() -> None:
    # aiomysql reports a failed TLS handshake as 2003, raised from the ssl error.
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] unknown CA")
    cert.verify_message = "unable to get local issuer certificate"
    exc = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'h'")
    exc.__cause__ = cert
    assert classify(exc) is Verdict.FATAL  # the same certificate fails every attempt
    error = translate(exc, operation="aget_messages", table="t")
    assert type(error) is ConnectError
    assert "did not verify" in str(error)
    assert "unable to get local issuer certificate" in str(error)
