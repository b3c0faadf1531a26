"""The retry policy (``tidb_memory/_retry.py``): classification, attempts, deadline, last cause.

Pure tests: errors are built the way the driver and SQLAlchemy raise them, and the retry loop
runs against coroutines that fail on cue. No server is needed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

import pymysql.err
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
from tidb_memory._retry import Verdict, classify, error_code, retrying, translate

OperationalError = pymysql.err.OperationalError
InterfaceError = pymysql.err.InterfaceError


def wrapped(orig: BaseException) -> sqlalchemy.exc.DBAPIError:
    """The error as SQLAlchemy's engine would raise it around the driver's."""
    return sqlalchemy.exc.DBAPIError.instance(
        "INSERT INTO t VALUES (%s)", ("secret-param",), orig, pymysql.err.Error
    )


def both(orig: BaseException) -> list[BaseException]:
    """The raw driver error (the store's fast path) and the SQLAlchemy-wrapped one."""
    return [orig, wrapped(orig)]


# --- classification ------------------------------------------------------------------------

DISCONNECTS = [
    OperationalError(2006, "MySQL server has gone away"),
    OperationalError(2013, "Lost connection to MySQL server during query"),
    OperationalError(2055, "Lost connection to MySQL server at 'reading', system error: 104"),
    OperationalError(1927, "Connection was killed"),
    InterfaceError("(0, 'Not connected')"),  # what aiomysql really raises: args[0] is a str
    InterfaceError(0, "Not connected"),
    OperationalError(0, ""),
]
CONFLICTS = [
    OperationalError(8002, "[tikv:8002]can not retry select for update statement"),
    OperationalError(8005, "Write Conflict, txnStartTS is stale"),
    OperationalError(8022, "Error: KV error safe to retry"),
    OperationalError(8028, "Information schema is changed during the execution"),
    OperationalError(9007, "Write conflict, txnStartTS=1, conflictStartTS=2 [try again later]"),
    OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction"),
    OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction"),
    OperationalError(1105, "Information schema is changed. [try again later]"),
    OperationalError(8027, "Information schema is out of date: schema failed to update"),
]
BACKOFFS = [
    OperationalError(code, f"TiDB transient error {code}")
    for code in (9001, 9002, 9003, 9004, 9005, 9006, 9008)
] + [OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")]
NEVER = [
    OperationalError(8025, "entry too large, the max entry size is 6291456"),
    OperationalError(8004, "Transaction is too large, size: 104857600"),
    OperationalError(9500, "Transaction is too large"),
    OperationalError(8129, "TiDB does not yet support JSON objects with the key length >= 65536"),
    pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
    OperationalError(1142, "INSERT command denied to user 'u'@'h' for table 't'"),
    OperationalError(1044, "Access denied for user 'u'@'%' to database 'db'"),
    OperationalError(1045, "Access denied for user 'u'@'h' (using password: YES)"),
    pymysql.err.IntegrityError(1062, "Duplicate entry 'x' for key 'PRIMARY'"),
    pymysql.err.ProgrammingError(1146, "Table 'test.nope' doesn't exist"),
    OperationalError(1105, "some other unknown error"),
]


def _ids(errors: list[BaseException]) -> list[str]:
    return [repr(e.args) for e in errors]


@pytest.mark.parametrize("orig", DISCONNECTS, ids=_ids(DISCONNECTS))
def test_disconnects_are_retried_after_dropping_the_connection(orig: BaseException) -> None:
    for exc in both(orig):
        assert classify(exc) is Verdict.DISCONNECT


@pytest.mark.parametrize("orig", CONFLICTS, ids=_ids(CONFLICTS))
def test_conflicts_and_try_again_later_are_retried(orig: BaseException) -> None:
    for exc in both(orig):
        assert classify(exc) is Verdict.CONFLICT


@pytest.mark.parametrize("orig", BACKOFFS, ids=_ids(BACKOFFS))
def test_transient_server_errors_are_retried_with_backoff(orig: BaseException) -> None:
    for exc in both(orig):
        assert classify(exc) is Verdict.BACKOFF


@pytest.mark.parametrize("orig", NEVER, ids=_ids(NEVER))
def test_final_errors_are_never_retried(orig: BaseException) -> None:
    for exc in both(orig):
        assert classify(exc) is Verdict.FATAL


def test_try_again_later_mark_wins_over_an_unknown_code() -> None:
    assert classify(OperationalError(1105, "foo")) is Verdict.FATAL
    assert classify(OperationalError(1105, "foo [try again later]")) is Verdict.CONFLICT
    # ...but never over a code that is final by itself.
    assert classify(OperationalError(8025, "entry too large [try again later]")) is Verdict.FATAL


def test_socket_level_errors() -> None:
    assert classify(ConnectionResetError(104, "Connection reset by peer")) is Verdict.DISCONNECT
    assert classify(asyncio.IncompleteReadError(b"", 4)) is Verdict.DISCONNECT
    assert classify(ConnectionRefusedError(111, "refused")) is Verdict.DISCONNECT
    assert classify(socket.gaierror(-2, "Name or service not known")) is Verdict.BACKOFF


def test_certificate_failures_are_final() -> None:
    """A certificate that fails verification will fail the same way on every attempt."""
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get issuer")
    err = OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")
    err.__cause__ = cause
    assert classify(err) is Verdict.FATAL
    out = translate(err, operation="aget_messages", table="t")
    assert type(out) is ConnectError
    assert "certificate verify failed" in str(out)
    assert "ssl_ca" in str(out)


def test_our_own_errors_and_pool_timeouts_are_final() -> None:
    assert classify(SchemaError("x", operation="op")) is Verdict.FATAL
    assert classify(sqlalchemy.exc.TimeoutError("QueuePool limit reached")) is Verdict.FATAL


def test_error_code_ignores_non_int_first_args() -> None:
    assert error_code(InterfaceError("(0, 'Not connected')")) is None
    assert error_code(OperationalError(True, "x")) is None
    assert error_code(wrapped(OperationalError(2013, "Lost"))) == 2013


# --- translation ---------------------------------------------------------------------------


def test_translate_picks_the_most_specific_error_and_keeps_errno() -> None:
    cases: list[tuple[BaseException, type[StorageError], int | None]] = [
        (OperationalError(1045, "Access denied"), ConnectError, 1045),
        (OperationalError(2003, "Can't connect"), ConnectError, 2003),
        (pymysql.err.ProgrammingError(1146, "Table doesn't exist"), SchemaError, 1146),
        (sqlalchemy.exc.TimeoutError("QueuePool limit"), PoolTimeoutError, None),
        (OperationalError(8025, "entry too large"), StorageError, 8025),
    ]
    for orig, cls, errno in cases:
        for exc in both(orig) if not isinstance(orig, sqlalchemy.exc.TimeoutError) else [orig]:
            out = translate(exc, operation="aadd_messages", table="t")
            assert type(out) is cls, (exc, out)
            assert out.errno == errno
            assert out.operation == "aadd_messages" and out.table == "t"
            # SQLAlchemy's rendering carries the statement and its parameters; ours does not.
            assert "secret-param" not in str(out)
            assert "INSERT INTO" not in str(out)


def test_translate_keeps_our_own_errors() -> None:
    err = SchemaError("missing", operation="op")
    assert translate(err, operation="x", table=None) is err


# --- the retry loop ------------------------------------------------------------------------


class Flaky:
    """Fails with ``errors`` in turn (the last one forever), then succeeds if told to."""

    def __init__(self, *errors: BaseException, succeed_after: int | None = None) -> None:
        self.errors = errors
        self.succeed_after = succeed_after
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.succeed_after is not None and self.calls > self.succeed_after:
            return "ok"
        raise self.errors[min(self.calls, len(self.errors)) - 1]


FAST = RetryPolicy(attempts=5, deadline=10.0, base_delay=0.001, max_delay=0.002)


async def test_transient_errors_are_retried_until_success() -> None:
    fn = Flaky(
        OperationalError(2013, "Lost connection"),
        OperationalError(1213, "Deadlock"),
        OperationalError(9005, "Region is unavailable"),
        succeed_after=3,
    )
    assert await retrying(fn, policy=FAST, operation="aget_messages", table="t") == "ok"
    assert fn.calls == 4


async def test_attempts_are_honoured_and_the_last_cause_is_named() -> None:
    first = OperationalError(2013, "Lost connection to MySQL server during query")
    last = OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")
    fn = Flaky(first, first, last)
    with pytest.raises(RetriesExhaustedError) as info:
        await retrying(fn, policy=FAST, operation="aadd_messages", table="t")
    err = info.value
    assert fn.calls == FAST.attempts == err.attempts
    assert err.errno == 1205
    assert err.__cause__ is last
    assert "[1205] Lock wait timeout exceeded" in str(err)
    assert "after 5 attempts" in str(err)
    assert isinstance(err, StorageError) and isinstance(err, TiDBMemoryError)


async def test_single_attempt_policy_never_retries() -> None:
    fn = Flaky(OperationalError(2006, "gone away"))
    with pytest.raises(RetriesExhaustedError) as info:
        await retrying(fn, policy=RetryPolicy(attempts=1), operation="op", table=None)
    assert fn.calls == 1 and info.value.attempts == 1


async def test_deadline_is_honoured() -> None:
    policy = RetryPolicy(attempts=10_000, deadline=0.3, base_delay=0.01, max_delay=0.05)
    fn = Flaky(OperationalError(9003, "TiKV server is busy"))
    started = time.monotonic()
    with pytest.raises(RetriesExhaustedError) as info:
        await retrying(fn, policy=policy, operation="op", table="t")
    elapsed = time.monotonic() - started
    # No new attempt starts after the deadline, and no sleep runs past it.
    assert elapsed < 0.3 + 0.1, elapsed
    assert 3 < fn.calls < 10_000
    assert info.value.attempts == fn.calls
    assert "[9003] TiKV server is busy" in str(info.value)


async def test_final_errors_fail_at_once_with_their_own_type() -> None:
    orig = OperationalError(8025, "entry too large, the max entry size is 6291456")
    fn = Flaky(orig)
    with pytest.raises(StorageError) as info:
        await retrying(fn, policy=FAST, operation="aadd_messages", table="t")
    assert fn.calls == 1
    assert type(info.value) is StorageError
    assert info.value.errno == 8025 and info.value.__cause__ is orig
    assert "Split the content" in str(info.value)


async def test_our_own_errors_pass_through_unchanged() -> None:
    own = SchemaError("table is missing", operation="schema check", table="t")
    fn = Flaky(own)
    with pytest.raises(SchemaError) as info:
        await retrying(fn, policy=FAST, operation="op", table="t")
    assert info.value is own and fn.calls == 1
    assert info.value.__cause__ is not own  # never its own cause


async def test_each_retry_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    fn = Flaky(OperationalError(2013, "Lost connection"), succeed_after=2)
    with caplog.at_level(logging.DEBUG, logger="tidb_memory"):
        await retrying(fn, policy=FAST, operation="aget_messages", table="t")
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2
    assert all(r.levelno == logging.DEBUG for r in retries)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(attempts=20, deadline=60, base_delay=0.1, max_delay=1.0)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (12, 1.0)]:
        delays = [policy.delay(attempt, Verdict.BACKOFF) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays), (attempt, min(delays), max(delays))
    conflicts = [policy.delay(3, Verdict.CONFLICT) for _ in range(200)]
    assert all(0 <= d <= 0.3 for d in conflicts)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"deadline": 0},
        {"deadline": -1.0},
        {"base_delay": -0.1},
        {"base_delay": 2.0, "max_delay": 1.0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_sane() -> None:
    policy = RetryPolicy()
    assert 3 <= policy.attempts <= 20
    assert 5 <= policy.deadline <= 120
    assert policy.base_delay < policy.max_delay <= 5
