"""The message store: read, append and clear a session's messages, in one table.

:class:`MessageStore` knows nothing of LangChain's history classes: the history, the CLI and the
erasure stand on it. Each operation is written once, as a coroutine. Its statements are built in
:mod:`~tidb_memory.chat._sql`; the operations on whole sessions (info, list, delete, purge, scan,
restore, status) are in :mod:`~tidb_memory.chat._sessions`, which it inherits.

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
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage, SystemMessage, ToolMessage
from sqlalchemy.ext.asyncio import AsyncEngine

from .._checks import ago, as_count, check_id, to_utc
from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy, retrying
from .._types import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_SEQ,
    MessageRecord,
    ReadResult,
    _from_db_time,
    _timestamp,
    _utcnow,
)
from .._url import default_url
from ..codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    decode,
    decode_json,
    encode_batch,
    encode_json,
)
from ..engine import Backend, Connection, Database, get_database
from ..errors import InvalidInputError, MessageTooLargeError, SchemaError, StorageError
from ._schema import _done as _schema_done
from ._schema import check_table_name, check_ttl, ensure_schema
from ._sessions import SessionOps
from ._sql import (
    clear_plan,
    duplicate_of,
    insert_select_statement,
    insert_values_statement,
    read_statement,
    records_statement,
)

__all__ = ["MAX_SEQ_CONFLICTS", "MessageStore", "open_store", "trim_window"]

T = TypeVar("T")

#: How often one append may lose the race for its seqs before it gives up.
MAX_SEQ_CONFLICTS = 200


def trim_window(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Drop the tool results at the front of a window whose tool call was cut off.

    Cutting only at the front keeps every ``AIMessage(tool_calls=...)`` in the window together
    with the results that follow it.
    """
    start = 0
    while start < len(messages) and isinstance(messages[start], ToolMessage):
        start += 1
    return messages[start:] if start else messages


def _random_keys(count: int) -> list[str]:
    """``count`` random 128-bit ``msg_key`` values, 32 hex digits each: one ``os.urandom`` call
    for the batch (a ``uuid4`` each costs twice as much, for 6 bits fewer)."""
    text = os.urandom(16 * count).hex()
    return [text[i : i + 32] for i in range(0, 32 * count, 32)]


def open_store(
    connection_string: str | None,
    engine: AsyncEngine | None,
    engine_args: Mapping[str, Any] | None,
    table_name: str,
    **options: Any,
) -> MessageStore:
    """The store of ``table_name`` on the shared database of ``connection_string`` (or
    ``engine``; neither: :func:`~tidb_memory._url.default_url`). No I/O."""
    if engine is None and connection_string is None:
        connection_string = default_url()
    db = get_database(connection_string, engine=engine, engine_args=engine_args)
    return MessageStore(db, table_name, **options)


class MessageStore(SessionOps):
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
        (:data:`~tidb_memory.chat._schema.MIGRATIONS`) in order, recording each. Idempotent."""
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
        sql, batch = clear_plan(self.db.backend, self.table)
        return await self.db.run(self._delete, sql, (session_id,), batch, operation)
