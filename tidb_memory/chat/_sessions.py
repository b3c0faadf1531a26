"""The sessions of a message table: info, list, delete and purge, and the bulk operations
over every session (scan, restore, status).

:class:`SessionOps` is the half of :class:`~tidb_memory.chat._messages.MessageStore` that works on
whole sessions; the store inherits it, so both halves share one object, one retry policy and one
set-up mark. Its statements are built in :mod:`~tidb_memory.chat._sql`. Each operation states its
cost in round trips.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.messages import BaseMessage

from .._checks import ago, as_count, check_id, check_text, to_utc
from .._retry import retrying
from .._types import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_SEQ,
    UNSET,
    MessageRecord,
    ServerStatus,
    SessionInfo,
    SessionPage,
    _decode_cursor,
    _encode_cursor,
    _from_db_time,
    _timestamp,
    _Unset,
    _utcnow,
)
from ..codec import decode, decode_json, encode_batch, encode_json
from ..errors import InvalidInputError
from ._schema import MIGRATIONS_TABLE, applied_versions, describe_layout, table_columns
from ._sql import (
    delete_session_info_statement,
    list_sessions_statement,
    purge_statement,
    restore_statement,
    scan_statement,
    session_info_statement,
    set_session_statement,
)

if TYPE_CHECKING:
    from .._retry import RetryPolicy
    from ..engine import Connection, Database

__all__ = ["PURGE_BATCH", "TITLE_MAX_CHARS", "SessionOps"]

T = TypeVar("T")

#: Rows deleted per statement by apurge_expired().
PURGE_BATCH = 1_000
#: The longest session title (the sessions table's VARCHAR(1024)).
TITLE_MAX_CHARS = 1024

_SERVER_VERSION = {"mysql": "SELECT VERSION()", "sqlite": "SELECT sqlite_version()"}

_INFO_FIELDS = ("user_id", "title", "metadata")


class SessionOps:
    """The session operations of :class:`~tidb_memory.chat._messages.MessageStore`.

    A base class with no state of its own: the store holds the table, the database and the
    policies, and the plumbing these methods call (``_fetch``, ``_delete``, ``_retrying``,
    ``_since``, ``_metadata``, ``_check_packet``, ``aclear``).
    """

    __slots__ = ()

    if TYPE_CHECKING:
        db: Database
        table: str
        retry: RetryPolicy
        max_message_bytes: int
        ttl: timedelta | None

        async def _retrying(self, attempt: Callable[[], Awaitable[T]], operation: str) -> T: ...

        async def _fetch(self, sql: str, params: Sequence[Any], operation: str) -> list[Any]: ...

        async def _delete(
            self,
            sql: str,
            params: Sequence[Any],
            batch: int,
            operation: str,
            progress: Callable[[int], None] | None = None,
        ) -> int: ...

        def _since(self, earliest: datetime | None) -> str | None: ...

        def _metadata(
            self,
            metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None,
            count: int,
        ) -> list[str | None]: ...

        def _check_packet(self, conn: Connection, payloads: list[str]) -> None: ...

        async def aclear(self, session_id: str, *, operation: str = "aclear") -> int: ...

    # -- purge

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

        Four round trips, plus ``pings`` for the latency (the median of ``SELECT 1``). The TLS
        cipher and protocol are read from the client's own socket, not asked of the server.
        """
        pings = as_count("pings", pings, high=100)

        async def attempt() -> ServerStatus:
            async with self.db.connection() as conn:
                backend = conn.backend
                version = str((await conn.fetchall(_SERVER_VERSION[backend], ()))[0][0])
                tls = conn.tls()
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
                tls_cipher=tls[0] if tls else None,
                layout=layout,
                schema_version=schema_version,
                latency_ms=statistics.median(times),
                tls_version=tls[1] if tls else None,
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
