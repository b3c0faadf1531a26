"""Retry policy: which errors are worth another attempt, how long to wait, and when to give up.

This is the one place that knows MySQL, MariaDB, TiDB and SQLite error numbers. Classification is a
pure function of the exception, so it is unit-tested without a server.

* **Retried, after dropping the connection** (:attr:`Verdict.DISCONNECT`): the connection broke
  (2006, 2013, 2055, 2014, 4031, 1927, aiomysql's ``(0, 'Not connected')``, socket errors). A
  write that fails this way may have committed; appends are still safe to retry because every
  message carries a client-generated key under a unique index (see ``chat/_messages.py``).
* **Retried at once, with a little jitter** (:attr:`Verdict.CONFLICT`): deadlock (1213), lock wait
  timeout (1205), TiDB write conflicts and schema changes (8002, 8005, 8022, 8027, 8028, 9007), and
  any message marked ``[try again later]``.
* **Retried with exponential backoff** (:attr:`Verdict.BACKOFF`): the server is busy or away
  (TiDB 9001-9006 and 9008, 2003 can't connect, 1040 too many connections, 1053 shutdown in
  progress, SQLite ``database is locked``).
* **Never retried** (:attr:`Verdict.FATAL`): everything else, notably an entry or transaction too
  large (8025, 8004, 9500, 1153), a bad JSON key (8129), syntax (1064) and permission errors,
  and a server certificate that fails verification (it would fail the same way every time).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy.exc

from .errors import (
    ConnectError,
    PoolTimeoutError,
    RetriesExhaustedError,
    SchemaError,
    StorageError,
    TiDBMemoryError,
)

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RetryPolicy",
    "Verdict",
    "classify",
    "error_code",
    "error_text",
    "retrying",
    "translate",
]

logger = logging.getLogger("tidb_memory")

T = TypeVar("T")

DISCONNECT_CODES = frozenset({1927, 2006, 2013, 2014, 2045, 2055, 4031})
CONFLICT_CODES = frozenset({1205, 1213, 8002, 8005, 8022, 8027, 8028, 9007})
BACKOFF_CODES = frozenset({1040, 1053, 2003, 9001, 9002, 9003, 9004, 9005, 9006, 9008})
#: Final whatever the message says: entry or transaction too large, JSON key too long.
FATAL_CODES = frozenset({1153, 8004, 8025, 8129, 9500})
CONNECT_CODES = frozenset({1044, 1045, 1049, 2003, 2005, 2026, 1040, 1129, 1130, 1251})
TRY_AGAIN_MARK = "[try again later]"


class Verdict(enum.Enum):
    """What to do about an error."""

    FATAL = "fatal"
    DISCONNECT = "disconnect"
    CONFLICT = "conflict"
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before an operation fails.

    Example::

        history = AsyncTiDBChatMessageHistory(
            "s1", url, retry=RetryPolicy(attempts=10, deadline=60.0)
        )

    Args:
        attempts: the most attempts for one operation, the first included.
        deadline: the most seconds spent retrying one operation; no new attempt starts after it.
        base_delay: the first backoff delay, in seconds; it doubles on every attempt.
        max_delay: the cap on one backoff delay, in seconds.
    """

    attempts: int = 8
    deadline: float = 30.0
    base_delay: float = 0.02
    max_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.deadline <= 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("RetryPolicy needs deadline > 0 and 0 <= base_delay <= max_delay")

    def delay(self, attempt: int, verdict: Verdict) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (full jitter)."""
        if verdict is Verdict.CONFLICT:
            # Conflicts clear as soon as the other writer commits: stay short, only desynchronise.
            return random.uniform(0, min(self.max_delay, self.base_delay * attempt))
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)


DEFAULT_RETRY_POLICY = RetryPolicy()


def _driver_error(exc: BaseException) -> BaseException:
    """The innermost driver exception behind SQLAlchemy's wrapper, if any."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def error_code(exc: BaseException) -> int | None:
    """The MySQL-protocol error number of ``exc``, or ``None``."""
    err = _driver_error(exc)
    if isinstance(err, OSError):  # args[0] is an errno (104, 111, ...), not a server code
        return None
    args = getattr(err, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def error_text(exc: BaseException) -> str:
    """The driver's own message: one line, no SQL text, no parameters."""
    err = _driver_error(exc)
    args: tuple[Any, ...] = tuple(getattr(err, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]
    elif isinstance(err, sqlalchemy.exc.SQLAlchemyError):
        # SQLAlchemy's own str() appends the SQL and its parameters; keep the first line only.
        text = str(err).split("\n", 1)[0]
    else:
        text = str(err) or type(err).__name__
    return text.split("\n", 1)[0][:500]


def _tls_verify_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed behind ``exc``, if any.

    aiomysql reports a failed TLS handshake as ``(2003, "Can't connect ...")`` raised from the
    ``ssl`` error; the cause says what was wrong (unknown CA, host name mismatch).
    """
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        if isinstance(item, ssl.SSLCertVerificationError):
            return item
        seen.add(id(item))
        item = item.__cause__ or item.__context__
    return None


def _tls_reason(failure: ssl.SSLCertVerificationError) -> str:
    text = getattr(failure, "verify_message", None) or getattr(failure, "reason", None) or failure
    return str(text).split("\n", 1)[0][:300]


def classify(exc: BaseException) -> Verdict:
    """Decide whether ``exc`` is worth another attempt, and how."""
    if isinstance(exc, TiDBMemoryError):
        return Verdict.FATAL
    if _tls_verify_failure(exc) is not None:  # the same certificate fails every attempt
        return Verdict.FATAL
    if isinstance(
        exc, sqlalchemy.exc.TimeoutError
    ):  # pool exhausted: retrying would only wait more
        return Verdict.FATAL
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return Verdict.DISCONNECT
    err = _driver_error(exc)
    code = error_code(err)
    if code is not None:
        if code in FATAL_CODES:
            return Verdict.FATAL
        if code in DISCONNECT_CODES:
            return Verdict.DISCONNECT
        if code in CONFLICT_CODES:
            return Verdict.CONFLICT
        if code in BACKOFF_CODES:
            return Verdict.BACKOFF
        if TRY_AGAIN_MARK in error_text(err):
            return Verdict.CONFLICT
        if code == 0:  # aiomysql raises (0, '') when the socket died between packets
            return Verdict.DISCONNECT
        return Verdict.FATAL
    text = error_text(err)
    if "Not connected" in text or "Lost connection" in text or "already closed" in text:
        return Verdict.DISCONNECT
    if isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text.lower()):
        return Verdict.BACKOFF
    if isinstance(err, ConnectionError | TimeoutError | asyncio.IncompleteReadError):
        return Verdict.DISCONNECT
    if isinstance(err, OSError):
        return Verdict.BACKOFF
    return Verdict.FATAL


def _hint(code: int | None, exc: BaseException) -> str:
    if code in (1044, 1045):
        return " Check the user name and password in the URL."
    if code == 2003 or isinstance(_driver_error(exc), OSError):
        return " Is the server running, and reachable at the URL's host and port?"
    if code == 1049:
        return " Create the database first, or fix its name in the URL."
    if code in (1146,) or "no such table" in error_text(exc):
        return " Call acreate_tables()/create_tables(), or construct with create_table=True."
    if code in (8025, 1153, 8004, 9500):
        return " Split the content, or store large payloads elsewhere and keep a reference."
    return ""


def translate(
    exc: BaseException, *, operation: str, table: str | None, attempts: int = 1
) -> TiDBMemoryError:
    """Turn a driver or SQLAlchemy error into the most specific :class:`StorageError`."""
    if isinstance(exc, TiDBMemoryError):
        return exc
    code = error_code(exc)
    where = f"{operation} on table {table!r}" if table else operation
    detail = f"[{code}] {error_text(exc)}" if code is not None else error_text(exc)
    cls: type[StorageError] = StorageError
    message = f"{where} failed: {detail}.{_hint(code, exc)}"
    failure = _tls_verify_failure(exc)
    if failure is not None:
        cls = ConnectError
        message = (
            f"{where} failed: the server's TLS certificate did not verify "
            f"({_tls_reason(failure)}). Check ssl_ca (without it the system CA store is used) "
            "and that the URL's host name is one the certificate names."
        )
    elif isinstance(exc, sqlalchemy.exc.TimeoutError):
        cls = PoolTimeoutError
        message = (
            f"{where} failed: no pooled connection was free in time ({error_text(exc)}). "
            "Raise pool_size/max_overflow in engine_args, or lower the concurrency."
        )
    elif code == 1146 or "no such table" in error_text(exc):
        cls = SchemaError
    elif code in CONNECT_CODES or (code is None and isinstance(_driver_error(exc), OSError)):
        cls = ConnectError
    return cls(message, operation=operation, table=table, errno=code, attempts=attempts)


async def retrying(
    attempt_fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    operation: str,
    table: str | None,
) -> T:
    """Run ``attempt_fn`` until it succeeds, fails for good, or the policy runs out.

    Only call this for operations that are safe to repeat: reads, and writes that are idempotent.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await attempt_fn()
        except Exception as exc:
            verdict = classify(exc)
            if verdict is Verdict.FATAL:
                translated = translate(exc, operation=operation, table=table, attempts=attempt)
                if translated is exc:  # already ours: re-raise as is, not as its own cause
                    if isinstance(exc, StorageError) and exc.table is None:
                        exc.table = table  # raised below the store, e.g. while connecting
                    raise
                raise translated from exc
            delay = policy.delay(attempt, verdict)
            elapsed = time.monotonic() - started
            if attempt >= policy.attempts or elapsed + delay >= policy.deadline:
                code = error_code(exc)
                cause = f"[{code}] {error_text(exc)}" if code is not None else error_text(exc)
                raise RetriesExhaustedError(
                    f"{operation} on table {table!r} gave up after {attempt} attempts in "
                    f"{elapsed:.1f}s; last error: {cause}.{_hint(code, exc)}",
                    operation=operation,
                    table=table,
                    errno=code,
                    attempts=attempt,
                ) from exc
            logger.debug(
                "%s on %r: attempt %d failed (%s: %s); retrying in %.3fs",
                operation,
                table,
                attempt,
                verdict.value,
                error_text(exc),
                delay,
            )
            await asyncio.sleep(delay)
