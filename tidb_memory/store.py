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

Round trips (steady state): a read is 1 statement, an append is 1, a clear is 1 (more only for
sessions over ``CLEAR_BATCH`` rows on MySQL and TiDB, which delete in bounded batches).
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from langchain_core.messages import BaseMessage

from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy, error_code, error_text, retrying
from .codec import DEFAULT_MAX_MESSAGE_BYTES, decode, encode_batch
from .engine import Backend, Connection, Database
from .errors import InvalidInputError, MessageTooLargeError, StorageError
from .schema import (
    MSG_KEY_INDEX,
    SESSION_ID_MAX_CHARS,
    check_table_name,
    create_table_statements,
    ensure_schema,
    quote,
)
from .schema import _done as _schema_done

__all__ = ["CLEAR_BATCH", "MessageStore", "ReadResult", "check_session_id", "to_utc"]

#: Rows deleted per statement when clearing a session on MySQL/TiDB (TiDB caps a transaction).
CLEAR_BATCH = 10_000
#: How often one append may lose the race for its seqs before it gives up.
MAX_SEQ_CONFLICTS = 200


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it can be stored and compared exactly.

    Raises:
        InvalidInputError: not a str, empty, over 255 characters, ending in a space (MySQL's PAD
            SPACE collations would make ``"a "`` equal to ``"a"``), or not encodable as UTF-8.
    """
    if not isinstance(session_id, str):
        raise InvalidInputError(f"session_id must be a str, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidInputError("session_id must not be empty")
    if len(session_id) > SESSION_ID_MAX_CHARS:
        raise InvalidInputError(
            f"session_id has {len(session_id)} characters; the most is {SESSION_ID_MAX_CHARS}"
        )
    if session_id[-1] == " ":
        raise InvalidInputError(
            "session_id must not end with a space: MySQL and TiDB compare 'a ' equal to 'a'"
        )
    try:
        session_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError("session_id is not valid Unicode (lone surrogate)") from exc
    return session_id


def to_utc(value: object, name: str = "earliest_time") -> datetime:
    """A naive UTC datetime from ``value``; a naive input is taken to be UTC already.

    Raises:
        InvalidInputError: ``value`` is not a datetime.
    """
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _timestamp(value: datetime) -> str:
    # One text form for both backends: MySQL parses it into DATETIME(6), and on SQLite the
    # fixed width makes text order equal time order.
    return value.isoformat(" ", "microseconds")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A session read: its messages in order, and the seq of the last one (``None`` if empty)."""

    messages: list[BaseMessage]
    last_seq: int | None


# --- statements ----------------------------------------------------------------------------


def _p(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


@lru_cache(maxsize=256)
def read_statement(backend: Backend, table: str, *, since: bool) -> str:
    """``SELECT seq, message`` of one session in order; a single range scan of the primary key."""
    p = _p(backend)
    where = f"session_id = {p}" + (f" AND created_at >= {p}" if since else "")
    return f"SELECT seq, message FROM {quote(backend, table)} WHERE {where} ORDER BY seq"


_INSERT_COLUMNS = "(session_id, seq, msg_key, message, created_at)"


@lru_cache(maxsize=1024)
def insert_values_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert ``rows`` messages whose seqs the caller supplies."""
    p = _p(backend)
    row = f"({p}, {p}, {p}, {p}, {p})"
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
        first = f"SELECT 1 AS k, {p} AS msg_key, {p} AS message"
        rest = [f" UNION ALL SELECT {k}, {p}, {p}" for k in range(2, rows + 1)]
        batch = "(" + first + "".join(rest) + ") AS v"
        return (
            f"INSERT INTO {t} {_INSERT_COLUMNS} "
            f"SELECT {p}, b.base + v.k, v.msg_key, v.message, {p} FROM {base} CROSS JOIN {batch}"
        )
    # SQLite caps UNION ALL at 500 terms; a VALUES list has no such cap.
    values = ", ".join(f"({k}, ?, ?)" for k in range(1, rows + 1))
    return (
        f"INSERT INTO {t} {_INSERT_COLUMNS} "
        f"SELECT ?, b.base + v.column1, v.column2, v.column3, ? FROM {base} "
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


class MessageStore:
    """Messages of many sessions in one table.

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
    """

    __slots__ = ("_ready", "create_table", "db", "max_message_bytes", "retry", "table")

    def __init__(
        self,
        db: Database,
        table: str,
        *,
        create_table: bool = True,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a RetryPolicy")
        if not isinstance(max_message_bytes, int) or max_message_bytes < 1:
            raise InvalidInputError("max_message_bytes must be a positive int")
        self.db = db
        self.table = check_table_name(table)
        self.create_table = create_table
        self.retry = retry
        self.max_message_bytes = max_message_bytes
        self._ready = (db.key, self.table)

    def __repr__(self) -> str:
        return f"<MessageStore table={self.table!r} url={self.db.spec.display!r}>"

    # -- setup

    async def _ensure(self) -> None:
        if self._ready not in _schema_done:
            await retrying(
                lambda: ensure_schema(self.db, self.table, create=self.create_table),
                policy=self.retry,
                operation="schema setup",
                table=self.table,
            )

    async def acreate_tables(self) -> None:
        """Create the table if needed and record its schema version. Idempotent."""
        await self.db.run(self._create_tables)

    async def _create_tables(self) -> None:
        async def attempt() -> None:
            async with self.db.connection() as conn:
                for statement in create_table_statements(conn.backend, self.table):
                    await conn.execute(statement, ())
            await ensure_schema(self.db, self.table, create=True)

        _schema_done.discard(self._ready)
        await retrying(attempt, policy=self.retry, operation="create_tables", table=self.table)

    # -- read

    async def aread(
        self, session_id: str, *, since: datetime | None = None, operation: str = "aget_messages"
    ) -> ReadResult:
        """Read one session in order. One round trip.

        Args:
            session_id: the session.
            since: only messages stored at or after this UTC time (naive means UTC).
            operation: the name errors report.
        """
        check_session_id(session_id)
        bound = None if since is None else _timestamp(to_utc(since))
        return await self.db.run(self._read, session_id, bound, operation)

    async def _read(self, session_id: str, since: str | None, operation: str) -> ReadResult:
        await self._ensure()
        backend = self.db.backend
        sql = read_statement(backend, self.table, since=since is not None)
        params: tuple[Any, ...] = (session_id,) if since is None else (session_id, since)

        async def attempt() -> list[Any]:
            async with self.db.connection() as conn:
                return await conn.fetchall(sql, params)

        rows = await retrying(attempt, policy=self.retry, operation=operation, table=self.table)
        try:
            messages = [decode(row[1]) for row in rows]
        except ValueError as exc:
            raise StorageError(
                f"{operation} on table {self.table!r}: a row of session {session_id!r} does not "
                "hold a stored message",
                operation=operation,
                table=self.table,
            ) from exc
        return ReadResult(messages, int(rows[-1][0]) if rows else None)

    # -- append

    async def aappend(
        self,
        session_id: str,
        messages: Sequence[BaseMessage],
        *,
        last_seq: int | None = None,
        operation: str = "aadd_messages",
    ) -> int | None:
        """Append a batch atomically, in one statement. One round trip.

        Every item is checked and encoded before any I/O; a bad item rejects the whole batch.

        Args:
            session_id: the session.
            messages: the batch, in order.
            last_seq: the session's last seq, if the caller has just read it; saves the server
                a ``MAX(seq)`` lookup. A stale value costs one extra statement, never order.
            operation: the name errors report.

        Returns:
            The seq of the last appended message when it is known, else ``None``.
        """
        check_session_id(session_id)
        payloads = encode_batch(messages, max_bytes=self.max_message_bytes)
        if not payloads:
            return last_seq
        keys = [uuid.uuid4().hex for _ in payloads]
        now = _timestamp(_utcnow())
        return await self.db.run(self._append, session_id, payloads, keys, now, last_seq, operation)

    async def _append(
        self,
        session_id: str,
        payloads: list[str],
        keys: list[str],
        now: str,
        last_seq: int | None,
        operation: str,
    ) -> int | None:
        await self._ensure()
        backend = self.db.backend
        hint = [last_seq]

        async def attempt() -> int | None:
            async with self.db.connection() as conn:
                self._check_packet(conn, payloads)
                conflicts = 0
                while True:
                    sql, params = self._insert(backend, session_id, payloads, keys, now, hint[0])
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

        return await retrying(attempt, policy=self.retry, operation=operation, table=self.table)

    def _insert(
        self,
        backend: Backend,
        session_id: str,
        payloads: list[str],
        keys: list[str],
        now: str,
        last_seq: int | None,
    ) -> tuple[str, list[Any]]:
        params: list[Any] = []
        if last_seq is not None:
            for i, (key, payload) in enumerate(zip(keys, payloads, strict=True), 1):
                params += (session_id, last_seq + i, key, payload, now)
            return insert_values_statement(backend, self.table, len(payloads)), params
        params += (session_id, now, session_id)
        for key, payload in zip(keys, payloads, strict=True):
            params += (key, payload)
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

    # -- clear

    async def aclear(self, session_id: str, *, operation: str = "aclear") -> int:
        """Delete every message of a session; returns how many were deleted. One round trip for
        sessions up to ``CLEAR_BATCH`` messages."""
        check_session_id(session_id)
        return await self.db.run(self._clear, session_id, operation)

    async def _clear(self, session_id: str, operation: str) -> int:
        await self._ensure()
        sql = clear_statement(self.db.backend, self.table)
        batched = self.db.backend == "mysql"

        async def attempt() -> int:
            deleted = 0
            async with self.db.connection() as conn:
                while True:
                    count = await conn.execute(sql, (session_id,))
                    deleted += count
                    if not batched or count < CLEAR_BATCH:
                        return deleted

        return await retrying(attempt, policy=self.retry, operation=operation, table=self.table)
