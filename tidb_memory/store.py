"""The storage core: read, append and clear a session. Every DML statement lives here.

:class:`MessageStore` knows nothing of LangChain's history classes: the history, the CLI and the
LangGraph saver stand on it. Each operation is written once, as a coroutine.

Ordering and atomicity
    ``seq`` orders a session. An append is **one** statement that inserts the whole batch with
    consecutive seqs, so it lands whole or not at all. When the caller knows the session's last
    seq (it has just read the session, as every LangChain turn does) the statement carries the
    seqs as values; otherwise it computes them in the statement
    (``INSERT ... SELECT COALESCE(MAX(seq), 0) + k``). Two writers that pick the same seq collide
    on the primary key; the loser recomputes and tries again. No clock and no AUTO_INCREMENT
    decides the order, so it holds on multi-node TiDB.

Idempotency
    Every message gets a random 128-bit ``msg_key`` under a unique index, generated once per call
    and reused by every retry. If a connection dies after the server committed but before the
    reply arrived, the retry collides on ``msg_key``, which proves the batch landed: the append
    returns as a success and nothing is written twice.

Round trips (steady state): a read (whole, windowed or a page) is 1 statement, an append is 1, a
clear is 1 (more only for sessions over ``CLEAR_BATCH`` rows on MySQL and TiDB, which delete in
bounded batches). Session operations state their own cost.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import random
import re
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, TypeVar

from langchain_core.messages import BaseMessage, SystemMessage, ToolMessage

from ._checks import ago, as_count, check_id, check_text, to_utc
from ._checks import check_id as check_session_id
from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy, error_code, error_text, retrying
from .codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    decode,
    decode_json,
    encode_batch,
    encode_json,
)
from .engine import Backend, Connection, Database
from .errors import InvalidInputError, MessageTooLargeError, SchemaError, StorageError
from .schema import (
    MIGRATIONS_TABLE,
    MSG_KEY_INDEX,
    SESSIONS_TABLE,
    applied_versions,
    check_table_name,
    check_ttl,
    describe_layout,
    ensure_schema,
    quote,
    table_columns,
)
from .schema import _done as _schema_done

__all__ = [
    "CLEAR_BATCH",
    "DEFAULT_PAGE_SIZE",
    "PURGE_BATCH",
    "TITLE_MAX_CHARS",
    "UNSET",
    "MessageRecord",
    "MessageStore",
    "ReadResult",
    "ServerStatus",
    "SessionInfo",
    "SessionPage",
    "check_session_id",
    "to_utc",
    "trim_window",
]

T = TypeVar("T")

#: Rows deleted per statement when clearing a session on MySQL/TiDB (TiDB caps a transaction).
CLEAR_BATCH = 10_000
#: How often one append may lose the race for its seqs before it gives up.
MAX_SEQ_CONFLICTS = 200
#: Rows deleted per statement by apurge_expired().
PURGE_BATCH = 1_000
#: The longest session title (the sessions table's VARCHAR(1024)).
TITLE_MAX_CHARS = 1024
#: Records or sessions per page when no limit is given.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 10_000
#: The largest seq a BIGINT (and SQLite's INTEGER) holds.
MAX_SEQ = 2**63 - 1


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field as it is" for :meth:`MessageStore.aset_session_info`.
UNSET: Final = _Unset()


def _timestamp(value: datetime) -> str:
    # One text form for both backends: MySQL parses it into DATETIME(6), and on SQLite the
    # fixed width makes text order equal time order.
    return value.isoformat(" ", "microseconds")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _from_db_time(value: Any) -> datetime:
    """A stored UTC timestamp (a datetime from MySQL, text from SQLite), timezone-aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise StorageError(f"unexpected timestamp {value!r}", operation="read")
    return value.replace(tzinfo=UTC)


def trim_window(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Drop the tool results at the front of a window whose tool call was cut off.

    Cutting only at the front keeps every ``AIMessage(tool_calls=...)`` in the window together
    with the results that follow it.
    """
    start = 0
    while start < len(messages) and isinstance(messages[start], ToolMessage):
        start += 1
    return messages[start:] if start else messages


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A session read: its messages in order, and the seq of the last one (``None`` if empty)."""

    messages: list[BaseMessage]
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored message with what the store keeps beside it.

    Attributes:
        seq: its position in the session (use it as the ``before`` cursor of the next page).
        created_at: when it was stored, timezone-aware UTC.
        message: the message, exactly as appended.
        metadata: the per-message metadata given at append time, or ``None``.
    """

    seq: int
    created_at: datetime
    message: BaseMessage
    metadata: Any


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's summary: activity from its messages, the rest from ``aset_session_info``."""

    session_id: str
    message_count: int
    first_activity: datetime | None
    last_activity: datetime | None
    user_id: str | None = None
    title: str | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of sessions, most recently active first; pass ``next_cursor`` for the next."""

    sessions: list[SessionInfo]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What :meth:`MessageStore.astatus` found (``tidb-memory doctor`` prints it).

    Attributes:
        backend: ``"mysql"`` (MySQL, MariaDB, TiDB) or ``"sqlite"``.
        server_version: ``VERSION()``, or SQLite's library version.
        tidb: the server is TiDB.
        tls_cipher: the session's TLS cipher; ``None`` in plaintext (and on SQLite).
        layout: the table's layout: ``"current"``, ``"missing"`` (created on first use),
            ``"seed"`` (langchain-community's: run ``tidb-memory migrate``) or ``"foreign"``.
        schema_version: the newest schema version recorded for the table, if any.
        latency_ms: the median round trip of ``SELECT 1``, in milliseconds.
    """

    backend: str
    server_version: str
    tidb: bool
    tls_cipher: str | None
    layout: str
    schema_version: int | None
    latency_ms: float


_SERVER_VERSION = {"mysql": "SELECT VERSION()", "sqlite": "SELECT sqlite_version()"}
_TLS_CIPHER = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"


def _encode_cursor(last_activity: datetime, session_id: str) -> str:
    raw = f"{_timestamp(last_activity.replace(tzinfo=None))}\t{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        stamp, session_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("\t", 1)
        datetime.fromisoformat(stamp)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise InvalidInputError("cursor is not one that alist_sessions returned") from exc
    return stamp, session_id


# --- statements ----------------------------------------------------------------------------


def _p(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


def _where(backend: Backend, *, since: bool) -> str:
    p = _p(backend)
    return f"session_id = {p}" + (f" AND created_at >= {p}" if since else "")


@lru_cache(maxsize=256)
def read_statement(
    backend: Backend, table: str, *, since: bool, window: bool = False, pin: bool = False
) -> str:
    """Read a session in order: whole, or its last N messages (``window``), optionally with its
    first message alongside (``pin``, as part 0). Each form is one range scan of the primary key.
    """
    t = quote(backend, table)
    where = _where(backend, since=since)
    if not window:
        return f"SELECT seq, message FROM {t} WHERE {where} ORDER BY seq"
    last = f"SELECT seq, message FROM {t} WHERE {where} ORDER BY seq DESC LIMIT {_p(backend)}"
    if not pin:
        return f"SELECT seq, message FROM ({last}) AS w ORDER BY seq"
    first = f"SELECT seq, message FROM {t} WHERE {where} ORDER BY seq LIMIT 1"
    return (
        f"SELECT 0 AS part, seq, message FROM ({first}) AS f UNION ALL "
        f"SELECT 1 AS part, seq, message FROM ({last}) AS w ORDER BY seq, part"
    )


@lru_cache(maxsize=256)
def records_statement(backend: Backend, table: str, *, since: bool, before: bool) -> str:
    """One page of records, newest first, strictly before a seq cursor."""
    p = _p(backend)
    where = _where(backend, since=since) + (f" AND seq < {p}" if before else "")
    return (
        f"SELECT seq, message, metadata, created_at FROM {quote(backend, table)} "
        f"WHERE {where} ORDER BY seq DESC LIMIT {p}"
    )


_INSERT_COLUMNS = "(session_id, seq, msg_key, message, metadata, created_at)"


@lru_cache(maxsize=1024)
def insert_values_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert ``rows`` messages whose seqs the caller supplies."""
    p = _p(backend)
    row = f"({p}, {p}, {p}, {p}, {p}, {p})"
    return f"INSERT INTO {quote(backend, table)} {_INSERT_COLUMNS} VALUES " + ", ".join(
        [row] * rows
    )


@lru_cache(maxsize=1024)
def insert_select_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert ``rows`` messages, numbering them after the session's current ``MAX(seq)``."""
    t = quote(backend, table)
    p = _p(backend)
    base = f"(SELECT COALESCE(MAX(seq), 0) AS base FROM {t} WHERE session_id = {p}) AS b"
    if backend == "mysql":
        # UNION ALL rather than a VALUES table constructor: TiDB has none.
        first = f"SELECT 1 AS k, {p} AS msg_key, {p} AS message, {p} AS metadata"
        rest = [f" UNION ALL SELECT {k}, {p}, {p}, {p}" for k in range(2, rows + 1)]
        batch = "(" + first + "".join(rest) + ") AS v"
        return (
            f"INSERT INTO {t} {_INSERT_COLUMNS} SELECT {p}, b.base + v.k, v.msg_key, "
            f"v.message, v.metadata, {p} FROM {base} CROSS JOIN {batch}"
        )
    # SQLite caps UNION ALL at 500 terms; a VALUES list has no such cap.
    values = ", ".join(f"({k}, ?, ?, ?)" for k in range(1, rows + 1))
    return (
        f"INSERT INTO {t} {_INSERT_COLUMNS} "
        f"SELECT ?, b.base + v.column1, v.column2, v.column3, v.column4, ? FROM {base} "
        f"CROSS JOIN (VALUES {values}) AS v"
    )


@lru_cache(maxsize=256)
def clear_statement(backend: Backend, table: str) -> str:
    """Delete a session; on MySQL and TiDB newest first, in bounded batches."""
    p = _p(backend)
    sql = f"DELETE FROM {quote(backend, table)} WHERE session_id = {p}"
    if backend == "mysql":
        # Newest first: a reader racing the clear still sees a prefix of the session.
        sql += f" ORDER BY seq DESC LIMIT {CLEAR_BATCH}"
    return sql


@lru_cache(maxsize=256)
def purge_statement(backend: Backend, table: str) -> str:
    """Delete up to a bounded number of rows stored before a time."""
    t = quote(backend, table)
    p = _p(backend)
    if backend == "mysql":
        return f"DELETE FROM {t} WHERE created_at < {p} ORDER BY created_at LIMIT {p}"
    return (
        f"DELETE FROM {t} WHERE (session_id, seq) IN "
        f"(SELECT session_id, seq FROM {t} WHERE created_at < ? LIMIT ?)"
    )


@lru_cache(maxsize=256)
def session_info_statement(backend: Backend, table: str, *, since: bool) -> str:
    """One session's counts and times, with its stored title and metadata."""
    p = _p(backend)
    return (
        "SELECT a.n, a.first_at, a.last_at, s.user_id, s.title, s.metadata FROM "
        "(SELECT COUNT(*) AS n, MIN(created_at) AS first_at, MAX(created_at) AS last_at "
        f"FROM {quote(backend, table)} WHERE {_where(backend, since=since)}) AS a "
        f"LEFT JOIN {quote(backend, SESSIONS_TABLE)} AS s "
        f"ON s.table_name = {p} AND s.session_id = {p}"
    )


@lru_cache(maxsize=256)
def list_sessions_statement(
    backend: Backend, table: str, *, since: bool, user: bool, cursor: bool
) -> str:
    """Sessions by last activity (newest first), keyset-paginated on (last_at, session_id)."""
    p = _p(backend)
    st = quote(backend, SESSIONS_TABLE)
    conditions = [f"created_at >= {p}"] if since else []
    if user:
        conditions.append(
            f"session_id IN (SELECT session_id FROM {st} WHERE table_name = {p} AND user_id = {p})"
        )
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    after = f" WHERE a.last_at < {p} OR (a.last_at = {p} AND a.session_id < {p})" if cursor else ""
    return (
        "SELECT a.session_id, a.n, a.first_at, a.last_at, s.user_id, s.title, s.metadata FROM "
        "(SELECT session_id, COUNT(*) AS n, MIN(created_at) AS first_at, "
        f"MAX(created_at) AS last_at FROM {quote(backend, table)}{where} "
        "GROUP BY session_id) AS a "
        f"LEFT JOIN {st} AS s ON s.table_name = {p} AND s.session_id = a.session_id"
        f"{after} ORDER BY a.last_at DESC, a.session_id DESC LIMIT {p}"
    )


_INFO_FIELDS = ("user_id", "title", "metadata")


@lru_cache(maxsize=64)
def set_session_statement(backend: Backend, fields: tuple[str, ...]) -> str:
    """Create or update a session's info row; only ``fields`` change on update."""
    p = _p(backend)
    st = quote(backend, SESSIONS_TABLE)
    insert = (
        f"INSERT INTO {st} (table_name, session_id, user_id, title, metadata, updated_at) "
        f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    )
    if backend == "mysql":
        sets = [f"{f} = VALUES({f})" for f in fields] + ["updated_at = VALUES(updated_at)"]
        return f"{insert} ON DUPLICATE KEY UPDATE " + ", ".join(sets)
    sets = [f"{f} = excluded.{f}" for f in fields] + ["updated_at = excluded.updated_at"]
    return f"{insert} ON CONFLICT (table_name, session_id) DO UPDATE SET " + ", ".join(sets)


@lru_cache(maxsize=8)
def delete_session_info_statement(backend: Backend) -> str:
    p = _p(backend)
    return (
        f"DELETE FROM {quote(backend, SESSIONS_TABLE)} WHERE table_name = {p} AND session_id = {p}"
    )


@lru_cache(maxsize=256)
def scan_statement(backend: Backend, table: str, *, since: bool, after: bool) -> str:
    """Every session's records in primary-key order, keyset-paginated on (session_id, seq)."""
    p = _p(backend)
    conditions = [f"created_at >= {p}"] if since else []
    if after:
        conditions.append(f"(session_id > {p} OR (session_id = {p} AND seq > {p}))")
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    return (
        f"SELECT session_id, seq, message, metadata, created_at FROM {quote(backend, table)}"
        f"{where} ORDER BY session_id, seq LIMIT {p}"
    )


@lru_cache(maxsize=1024)
def restore_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert records at given seqs; a row whose seq or key is taken is skipped (first wins)."""
    sql = insert_values_statement(backend, table, rows)
    if backend == "mysql":
        return sql + " ON DUPLICATE KEY UPDATE seq = seq"
    return sql + " ON CONFLICT DO NOTHING"


_MYSQL_DUP_KEY = re.compile(r"for key '(?:[^']*\.)?([^'.]*)'\s*$")


def duplicate_of(exc: BaseException, table: str) -> str | None:
    """For a duplicate-key error: ``"msg_key"`` or ``"seq"``; ``None`` for any other error."""
    if error_code(exc) == 1062:
        match = _MYSQL_DUP_KEY.search(error_text(exc))
        if match is None:
            return None
        return "msg_key" if match.group(1) == MSG_KEY_INDEX else "seq"
    err = getattr(exc, "orig", None) or exc
    if isinstance(err, sqlite3.IntegrityError):
        text = str(err)
        if text.endswith(f"{table}.msg_key"):
            return "msg_key"
        if "UNIQUE constraint failed" in text and f"{table}.seq" in text:
            return "seq"
    return None


# --- the store -----------------------------------------------------------------------------


def _random_keys(count: int) -> list[str]:
    """``count`` random 128-bit ``msg_key`` values, 32 hex digits each: one ``os.urandom`` call
    for the batch (a ``uuid4`` each costs twice as much, for 6 bits fewer)."""
    text = os.urandom(16 * count).hex()
    return [text[i : i + 32] for i in range(0, 32 * count, 32)]


class MessageStore:
    """Messages of many sessions in one table, and the sessions' info.

    Example::

        store = MessageStore(get_database("sqlite+aiosqlite:///chat.db"), "messages")
        await store.aappend("s1", [HumanMessage("hi")])
        (await store.aread("s1")).messages

    Args:
        db: the shared database handle (see :func:`tidb_memory.engine.get_database`).
        table: the table name; a plain identifier of at most 64 characters.
        create_table: create the table on first use if it does not exist.
        retry: the retry policy for transient errors.
        max_message_bytes: the largest encoded message accepted; default 6 MiB (TiDB's row limit).
        ttl: messages older than this are expired: reads skip them at once, TiDB's native TTL
            deletes them, and :meth:`apurge_expired` deletes them elsewhere.
    """

    __slots__ = ("_ready", "create_table", "db", "max_message_bytes", "retry", "table", "ttl")

    def __init__(
        self,
        db: Database,
        table: str,
        *,
        create_table: bool = True,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        ttl: timedelta | None = None,
    ) -> None:
        if not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a RetryPolicy")
        self.db = db
        self.table = check_table_name(table)
        self.create_table = create_table
        self.retry = retry
        self.max_message_bytes = as_count("max_message_bytes", max_message_bytes)
        self.ttl = check_ttl(ttl)
        self._ready = (db.key, self.table)

    def __repr__(self) -> str:
        return f"<MessageStore table={self.table!r} url={self.db.spec.display!r}>"

    # -- plumbing

    async def _ensure(self) -> None:
        if self._ready not in _schema_done:
            await retrying(
                lambda: ensure_schema(self.db, self.table, create=self.create_table, ttl=self.ttl),
                policy=self.retry,
                operation="schema setup",
                table=self.table,
            )

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], operation: str) -> T:
        """Set the table up on first use, then run ``attempt`` under the retry policy.

        A table dropped under this running process (error 1146, SQLite's "no such table")
        makes its set-up mark stale: with ``create_table`` the mark is forgotten, the table set
        up again and ``attempt`` run once more; without it the ``SchemaError``, which names
        ``create_tables``, is raised.
        """
        await self._ensure()
        try:
            return await retrying(attempt, policy=self.retry, operation=operation, table=self.table)
        except SchemaError as exc:
            missing = exc.errno == 1146 or "no such table" in str(exc)
            if not (missing and self.create_table):
                raise
        _schema_done.discard(self._ready)
        await self._ensure()
        return await retrying(attempt, policy=self.retry, operation=operation, table=self.table)

    async def _fetch(self, sql: str, params: Sequence[Any], operation: str) -> list[Any]:
        """Run one read-only statement, retrying transient failures."""

        async def attempt() -> list[Any]:
            async with self.db.connection() as conn:
                return await conn.fetchall(sql, params)

        return await self._retrying(attempt, operation)

    async def _delete(
        self,
        sql: str,
        params: Sequence[Any],
        batch: int,
        operation: str,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Run a bounded DELETE until it deletes fewer than ``batch`` rows (``batch=0``: once).

        ``progress`` gets the running total after each statement.
        """
        # Kept across attempts: batches deleted before a retried failure still count.
        deleted = [0]

        async def attempt() -> int:
            async with self.db.connection() as conn:
                while True:
                    count = await conn.execute(sql, params)
                    deleted[0] += count
                    if progress is not None:
                        progress(deleted[0])
                    if not batch or count < batch:
                        return deleted[0]

        return await self._retrying(attempt, operation)

    def _since(self, earliest: datetime | None) -> str | None:
        """The lower bound on ``created_at`` for reads: ``earliest``, or the TTL's, if later."""
        bounds = [] if earliest is None else [to_utc(earliest)]
        if self.ttl is not None:
            bounds.append(ago(self.ttl))
        return _timestamp(max(bounds)) if bounds else None

    async def acreate_tables(self) -> None:
        """Create the tables if needed, or upgrade them: apply the pending schema migrations
        (:data:`~tidb_memory.schema.MIGRATIONS`) in order, recording each. Idempotent."""
        await self.db.run(self._create_tables)

    async def _create_tables(self) -> None:
        async def attempt() -> None:
            await ensure_schema(self.db, self.table, create=True, ttl=self.ttl, upgrade=True)

        _schema_done.discard(self._ready)
        await retrying(attempt, policy=self.retry, operation="create_tables", table=self.table)

    # -- read

    async def aread(
        self,
        session_id: str,
        *,
        since: datetime | None = None,
        window: int | None = None,
        pin_system: bool = False,
        operation: str = "aget_messages",
    ) -> ReadResult:
        """Read one session in order. One round trip.

        Args:
            session_id: the session.
            since: only messages stored at or after this UTC time (naive means UTC).
            window: only the last ``window`` messages, never starting on a tool result whose
                tool call was cut off (so possibly fewer).
            pin_system: with ``window``, also return the session's first message ahead of the
                window if it is a ``SystemMessage``.
            operation: the name errors report.
        """
        check_id(session_id)
        if window is not None:
            window = as_count("window", window, high=MAX_PAGE_SIZE)
        return await self.db.run(
            self._read, session_id, self._since(since), window, pin_system, operation
        )

    async def _read(
        self,
        session_id: str,
        since: str | None,
        window: int | None,
        pin: bool,
        operation: str,
    ) -> ReadResult:
        backend = self.db.backend
        base: list[Any] = [session_id] if since is None else [session_id, since]
        pin = pin and window is not None
        sql = read_statement(
            backend, self.table, since=since is not None, window=window is not None, pin=pin
        )
        params = base if window is None else [*base, window]
        if pin:
            params = [*base, *params]
        rows = await self._fetch(sql, params, operation)
        try:
            if not pin:
                messages = [decode(row[1]) for row in rows]
                if window is not None:
                    messages = trim_window(messages)
                return ReadResult(messages, int(rows[-1][0]) if rows else None)
            head = [row for row in rows if row[0] == 0]
            tail = [row for row in rows if row[0] == 1]
            messages = trim_window([decode(row[2]) for row in tail])
            if head and (not tail or int(head[0][1]) < int(tail[0][1])):
                first = decode(head[0][2])
                if isinstance(first, SystemMessage) and first not in messages[:1]:
                    messages.insert(0, first)
        except ValueError as exc:
            raise StorageError(
                f"{operation} on table {self.table!r}: a row of session {session_id!r} does not "
                "hold a stored message",
                operation=operation,
                table=self.table,
            ) from exc
        return ReadResult(messages, int(rows[-1][1]) if rows else None)

    async def arecords(
        self,
        session_id: str,
        *,
        before: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        since: datetime | None = None,
    ) -> list[MessageRecord]:
        """One page of a session's records, oldest first, ending just before seq ``before``.

        Pass the first record's ``seq`` as ``before`` to get the page before it; an empty list
        means there is none. One round trip per page.
        """
        check_id(session_id)
        limit = as_count("limit", limit, high=MAX_PAGE_SIZE)
        if before is not None:
            before = as_count("before", before, low=0, high=MAX_SEQ)
        return await self.db.run(self._records, session_id, before, limit, self._since(since))

    async def _records(
        self, session_id: str, before: int | None, limit: int, since: str | None
    ) -> list[MessageRecord]:
        sql = records_statement(
            self.db.backend, self.table, since=since is not None, before=before is not None
        )
        params: list[Any] = [session_id]
        if since is not None:
            params.append(since)
        if before is not None:
            params.append(before)
        params.append(limit)
        rows = await self._fetch(sql, params, "arecords")
        return [
            MessageRecord(int(seq), _from_db_time(created), decode(message), decode_json(meta))
            for seq, message, meta, created in reversed(rows)
        ]

    # -- append

    async def aappend(
        self,
        session_id: str,
        messages: Sequence[BaseMessage],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
        last_seq: int | None = None,
        operation: str = "aadd_messages",
    ) -> int | None:
        """Append a batch atomically, in one statement. One round trip.

        Every item is checked and encoded before any I/O; a bad item rejects the whole batch.

        Args:
            session_id: the session.
            messages: the batch, in order.
            metadata: per-message metadata stored beside each message (never inside it): one
                mapping for every message, or a sequence with one mapping (or ``None``) each.
            last_seq: the session's last seq, if the caller has just read it; saves the server
                a ``MAX(seq)`` lookup. A stale value costs one extra statement, never order.
            operation: the name errors report.

        Returns:
            The seq of the last appended message when it is known, else ``None``.
        """
        check_id(session_id)
        payloads = encode_batch(messages, max_bytes=self.max_message_bytes)
        metas = self._metadata(metadata, len(payloads))
        if not payloads:
            return last_seq
        keys = _random_keys(len(payloads))
        now = _timestamp(_utcnow())
        return await self.db.run(
            self._append, session_id, payloads, metas, keys, now, last_seq, operation
        )

    def _metadata(
        self, metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None, count: int
    ) -> list[str | None]:
        limit = self.max_message_bytes
        if metadata is None:
            return [None] * count
        if isinstance(metadata, Mapping):
            return [encode_json(dict(metadata), max_bytes=limit)] * count
        if isinstance(metadata, str | bytes) or not isinstance(metadata, Sequence):
            raise InvalidInputError("metadata must be a mapping or a sequence of mappings")
        if len(metadata) != count:
            raise InvalidInputError(
                f"metadata has {len(metadata)} items for {count} messages; nothing was written"
            )
        out: list[str | None] = []
        for i, item in enumerate(metadata):
            if item is not None and not isinstance(item, Mapping):
                raise InvalidInputError(f"metadata[{i}] must be a mapping or None")
            meta = (
                None if item is None else encode_json(dict(item), f"metadata[{i}]", max_bytes=limit)
            )
            out.append(meta)
        return out

    async def _append(
        self,
        session_id: str,
        payloads: list[str],
        metas: list[str | None],
        keys: list[str],
        now: str,
        last_seq: int | None,
        operation: str,
    ) -> int | None:
        backend = self.db.backend
        hint = [last_seq]

        async def attempt() -> int | None:
            async with self.db.connection() as conn:
                self._check_packet(conn, payloads)
                conflicts = 0
                while True:
                    sql, params = self._insert(
                        backend, session_id, payloads, metas, keys, now, hint[0]
                    )
                    try:
                        await conn.execute(sql, params)
                    except Exception as exc:
                        target = duplicate_of(exc, self.table)
                        if target == "msg_key":
                            # An earlier attempt of this very call landed (its reply was lost).
                            return None
                        if target != "seq":
                            raise
                        conflicts += 1
                        if conflicts > MAX_SEQ_CONFLICTS:
                            raise
                        hint[0] = None
                        if conflicts > 1:
                            await asyncio.sleep(random.uniform(0, 0.001 * min(conflicts, 20)))
                        continue
                    seq = hint[0]
                    return None if seq is None else seq + len(payloads)

        return await self._retrying(attempt, operation)

    def _insert(
        self,
        backend: Backend,
        session_id: str,
        payloads: list[str],
        metas: list[str | None],
        keys: list[str],
        now: str,
        last_seq: int | None,
    ) -> tuple[str, list[Any]]:
        params: list[Any] = []
        rows = zip(keys, payloads, metas, strict=True)
        if last_seq is not None:
            for i, (key, payload, meta) in enumerate(rows, 1):
                params += (session_id, last_seq + i, key, payload, meta, now)
            return insert_values_statement(backend, self.table, len(payloads)), params
        params += (session_id, now, session_id)
        for key, payload, meta in rows:
            params += (key, payload, meta)
        return insert_select_statement(backend, self.table, len(payloads)), params

    def _check_packet(self, conn: Connection, payloads: list[str]) -> None:
        info = self.db.server_info
        if conn.backend != "mysql" or info is None:
            return
        limit = int(info["max_allowed_packet"])
        rough = sum(map(len, payloads))
        # Escaping at most doubles ASCII and UTF-8 at most quadruples: only measure when close.
        if 5 * rough + 4096 < limit:
            return
        size = sum(len(conn.driver.escape_string(p).encode()) for p in payloads) + 4096
        if size > limit:
            raise MessageTooLargeError(
                f"the batch needs a statement of about {size:,} bytes, over the server's "
                f"max_allowed_packet of {limit:,}; nothing was written. Append fewer or smaller "
                "messages at a time, or raise max_allowed_packet"
            )

    # -- delete

    async def aclear(self, session_id: str, *, operation: str = "aclear") -> int:
        """Delete every message of a session; returns how many. One round trip for sessions up
        to ``CLEAR_BATCH`` messages; the session's info row is kept."""
        check_id(session_id)
        batch = CLEAR_BATCH if self.db.backend == "mysql" else 0
        sql = clear_statement(self.db.backend, self.table)
        return await self.db.run(self._delete, sql, (session_id,), batch, operation)

    async def apurge_expired(
        self,
        *,
        older_than: datetime | None = None,
        batch: int = PURGE_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete messages stored before ``older_than`` (default: now minus ``ttl``), in batches
        of ``batch`` rows; returns how many. One round trip per batch.

        TiDB deletes expired rows by itself (the table's native TTL); MySQL, MariaDB and SQLite
        need this, e.g. from a periodic job or ``tidb-memory purge``. ``progress``, if given, is
        called with the running total after each batch.
        """
        if older_than is None:
            if self.ttl is None:
                raise InvalidInputError("apurge_expired needs older_than, or a store with a ttl")
            older_than = ago(self.ttl)
        bound = _timestamp(to_utc(older_than, "older_than"))
        batch = as_count("batch", batch, high=MAX_PAGE_SIZE)
        sql = purge_statement(self.db.backend, self.table)
        return await self.db.run(
            self._delete, sql, (bound, batch), batch, "apurge_expired", progress
        )

    # -- sessions

    async def asession_info(self, session_id: str) -> SessionInfo:
        """A session's message count, first and last activity, user, title and metadata.

        One round trip: an aggregate over the session's primary-key range.
        """
        check_id(session_id)
        since = self._since(None)
        sql = session_info_statement(self.db.backend, self.table, since=since is not None)
        params = [session_id] + ([since] if since else []) + [self.table, session_id]
        rows = await self.db.run(self._fetch, sql, params, "asession_info")
        n, first, last, user_id, title, meta = rows[0]
        return SessionInfo(
            session_id,
            int(n or 0),
            None if first is None else _from_db_time(first),
            None if last is None else _from_db_time(last),
            user_id,
            title,
            decode_json(meta),
        )

    async def aset_session_info(
        self,
        session_id: str,
        *,
        user_id: str | _Unset | None = UNSET,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
    ) -> None:
        """Set a session's user, title and/or metadata; fields left ``UNSET`` keep their value.

        One round trip (an upsert). Appends never touch this row, so they stay one round trip.
        """
        check_id(session_id)
        values: dict[str, Any] = {"user_id": user_id, "title": title, "metadata": metadata}
        fields = tuple(f for f in _INFO_FIELDS if values[f] is not UNSET)
        if not fields:
            raise InvalidInputError("give at least one of user_id, title or metadata")
        if user_id is not UNSET and user_id is not None:
            check_id(user_id, "user_id")
        if title is not UNSET and title is not None:
            # MySQL would refuse a longer one (1406) and SQLite keep it: refuse it everywhere.
            check_text(title, "title", max_chars=TITLE_MAX_CHARS)
        if metadata is not UNSET and metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidInputError("metadata must be a mapping or None")
            values["metadata"] = encode_json(dict(metadata), max_bytes=self.max_message_bytes)
        row = [None if values[f] is UNSET else values[f] for f in _INFO_FIELDS]
        sql = set_session_statement(self.db.backend, fields)
        params = [self.table, session_id, *row, _timestamp(_utcnow())]
        await self.db.run(self._delete, sql, params, 0, "aset_session_info")

    async def alist_sessions(
        self,
        *,
        user_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions that have messages, most recently active first, one page per call.

        One round trip per page. The server aggregates the table's primary key (all sessions,
        or only ``user_id``'s when given), so this suits chat UIs and admin tools rather than a
        per-message hot path.
        """
        limit = as_count("limit", limit, high=MAX_PAGE_SIZE)
        if user_id is not None:
            check_id(user_id, "user_id")
        after = None if cursor is None else _decode_cursor(cursor)
        since = self._since(None)
        sql = list_sessions_statement(
            self.db.backend,
            self.table,
            since=since is not None,
            user=user_id is not None,
            cursor=after is not None,
        )
        params: list[Any] = [since] if since else []
        if user_id is not None:
            params += [self.table, user_id]
        params.append(self.table)
        if after is not None:
            params += [after[0], after[0], after[1]]
        params.append(limit)
        rows = await self.db.run(self._fetch, sql, params, "alist_sessions")
        sessions = [
            SessionInfo(
                sid,
                int(n),
                _from_db_time(first),
                _from_db_time(last),
                uid,
                title,
                decode_json(meta),
            )
            for sid, n, first, last, uid, title, meta in rows
        ]
        last_info = sessions[-1] if len(sessions) == limit else None
        next_cursor = (
            None
            if last_info is None or last_info.last_activity is None
            else _encode_cursor(last_info.last_activity, last_info.session_id)
        )
        return SessionPage(sessions, next_cursor)

    # -- bulk: export, import, diagnostics

    async def ascan(
        self, *, after: tuple[str, int] | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[tuple[str, MessageRecord]]:
        """One page of every session's records, in (session_id, seq) order.

        Pass the last item's ``(session_id, record.seq)`` as ``after`` for the next page; an
        empty list means the end. One round trip per page (a primary-key range scan).
        """
        limit = as_count("limit", limit, high=MAX_PAGE_SIZE)
        if after is not None:
            after = (check_id(after[0]), as_count("after seq", after[1], low=0, high=MAX_SEQ))
        since = self._since(None)
        sql = scan_statement(
            self.db.backend, self.table, since=since is not None, after=after is not None
        )
        params: list[Any] = [since] if since else []
        if after is not None:
            params += [after[0], after[0], after[1]]
        params.append(limit)
        rows = await self.db.run(self._fetch, sql, params, "ascan")
        return [
            (
                str(sid),
                MessageRecord(int(seq), _from_db_time(created), decode(msg), decode_json(meta)),
            )
            for sid, seq, msg, meta, created in rows
        ]

    async def arestore(
        self,
        records: Sequence[tuple[str, int, datetime, BaseMessage, Mapping[str, Any] | None]],
    ) -> int:
        """Insert ``(session_id, seq, created_at, message, metadata)`` records at their seqs,
        first wins: a record whose ``(session_id, seq)`` is taken is skipped, so restoring the
        same records twice changes nothing. Returns how many were inserted. One round trip.

        Each record's ``msg_key`` is derived from ``(session_id, seq)``. Seqs are kept as
        given, so a session restored into an empty table reads back exactly as exported.
        """
        rows: list[Any] = []
        payloads: list[str] = []
        for i, item in enumerate(records):
            session_id, seq, created_at, message, metadata = item
            check_id(session_id)
            seq = as_count(f"record {i}: seq", seq, high=MAX_SEQ)
            payload = encode_batch([message], max_bytes=self.max_message_bytes)[0]
            meta = self._metadata([metadata], 1)[0]
            key = "r" + hashlib.sha256(f"{session_id}\x00{seq}".encode()).hexdigest()[:31]
            when = _timestamp(to_utc(created_at, "created_at"))
            rows += (session_id, seq, key, payload, meta, when)
            payloads.append(payload)
        if not payloads:
            return 0
        return await self.db.run(self._restore, rows, payloads)

    async def _restore(self, params: list[Any], payloads: list[str]) -> int:
        sql = restore_statement(self.db.backend, self.table, len(payloads))

        async def attempt() -> int:
            async with self.db.connection() as conn:
                self._check_packet(conn, payloads)
                return await conn.execute(sql, params)

        return await self._retrying(attempt, "arestore")

    async def astatus(self, *, pings: int = 5) -> ServerStatus:
        """Connect, and describe the server and this table without changing anything.

        Five round trips (four on SQLite), plus ``pings`` for the latency (the median of
        ``SELECT 1``).
        """
        pings = as_count("pings", pings, high=100)

        async def attempt() -> ServerStatus:
            async with self.db.connection() as conn:
                backend = conn.backend
                version = str((await conn.fetchall(_SERVER_VERSION[backend], ()))[0][0])
                cipher = None
                if backend == "mysql":
                    row = await conn.fetchall(_TLS_CIPHER, ())
                    cipher = str(row[0][1]) if row and row[0][1] else None
                layout = describe_layout(await table_columns(conn, self.table))
                schema_version = None
                if await table_columns(conn, MIGRATIONS_TABLE):
                    versions = await applied_versions(conn, self.table)
                    schema_version = max(versions) if versions else None
                times = []
                for _ in range(pings):
                    started = time.perf_counter()
                    await conn.fetchall("SELECT 1", ())
                    times.append((time.perf_counter() - started) * 1000)
            return ServerStatus(
                backend=backend,
                server_version=version,
                tidb="tidb" in version.lower(),
                tls_cipher=cipher,
                layout=layout,
                schema_version=schema_version,
                latency_ms=statistics.median(times),
            )

        return await self.db.run(
            lambda: retrying(attempt, policy=self.retry, operation="astatus", table=self.table)
        )

    async def adelete_session(self, session_id: str) -> int:
        """Delete a session's messages and its info row; returns how many messages.

        Two round trips (one more per ``CLEAR_BATCH`` messages on MySQL/TiDB). Only rows of this
        session are touched, whatever other sessions are doing.
        """
        deleted = await self.aclear(session_id, operation="adelete_session")
        sql = delete_session_info_statement(self.db.backend)
        await self.db.run(self._delete, sql, (self.table, session_id), 0, "adelete_session")
        return deleted
