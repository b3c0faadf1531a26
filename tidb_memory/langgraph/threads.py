"""A user's threads, fast: the threads table behind ``alist_threads``, and erasure.

Each thread has one row (owner, title, last activity, checkpoint count), kept current by
``aput`` in the same round trip as the checkpoint, so listing a user's threads is one indexed
read per page, whatever the number of checkpoints.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tidb_memory import _checks
from tidb_memory.errors import InvalidInputError
from tidb_memory.langgraph._retention_sql import (
    list_threads_statement,
    refresh_thread_statement,
    thread_batch_statement,
    thread_info_statement,
)
from tidb_memory.langgraph._saver_rows import check_thread_id, text
from tidb_memory.langgraph.retention import RetentionMixin, RetentionReport

__all__ = ["ThreadInfo", "ThreadPage", "ThreadsMixin"]

#: Threads per page of :meth:`ThreadsMixin.alist_threads` unless told otherwise.
DEFAULT_THREADS_PAGE = 20


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """One thread as the threads table knows it."""

    thread_id: str
    user_id: str | None
    title: str | None
    #: When its last checkpoint was written (UTC).
    last_activity: datetime
    checkpoints: int


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """A page of :meth:`ThreadsMixin.alist_threads`; pass ``next_cursor`` for the next."""

    threads: list[ThreadInfo]
    next_cursor: str | None


class ThreadsMixin(RetentionMixin):
    """The threads table's reads and writes, and erasure by user, for the saver."""

    async def alist_threads(
        self,
        *,
        user_id: str | None = None,
        limit: int = DEFAULT_THREADS_PAGE,
        cursor: str | None = None,
    ) -> ThreadPage:
        """A page of threads, the most recently active first: of one user, or of everyone.

        Example::

            page = await saver.alist_threads(user_id="alice", limit=20)
            for t in page.threads:
                print(t.thread_id, t.title, t.last_activity, t.checkpoints)
            more = await saver.alist_threads(user_id="alice", cursor=page.next_cursor)

        One statement per page, read from the threads table's ``(user_id, last_activity,
        thread_id)`` index: its cost follows the page, not the number of checkpoints. A
        thread's owner is the ``user_id`` of its checkpoints' metadata (LangGraph copies
        ``config["configurable"]["user_id"]`` there), or what :meth:`aset_thread_info` set.

        Raises:
            InvalidInputError: a bad user id, limit (1-1000) or cursor.
        """
        params: list[Any] = []
        if user_id is not None:
            params.append(_checks.check_id(user_id, "user_id"))
        size = _checks.as_count("limit", limit, high=1000)
        after = _decode_cursor(cursor) if cursor is not None else None
        if after is not None:
            params += [after[0], after[0], after[1]]
        params.append(size + 1)
        sql = list_threads_statement(self.backend, self.tables, user_id is not None, bool(after))
        rows = await self.db.run(self._read, "alist_threads", sql, params)
        threads = [_thread_info(row) for row in rows[:size]]
        next_cursor = None
        if len(rows) > size:
            last = rows[size - 1]
            next_cursor = _encode_cursor(_raw_when(last[3]), text(last[0]))
        return ThreadPage(threads, next_cursor)

    def list_threads(
        self,
        *,
        user_id: str | None = None,
        limit: int = DEFAULT_THREADS_PAGE,
        cursor: str | None = None,
    ) -> ThreadPage:
        """Synchronous :meth:`alist_threads`."""
        return self.db.run_sync(self._list_threads_sync, user_id, limit, cursor)

    async def _list_threads_sync(
        self, user_id: str | None, limit: int, cursor: str | None
    ) -> ThreadPage:
        return await self.alist_threads(user_id=user_id, limit=limit, cursor=cursor)

    async def aget_thread_info(self, thread_id: str) -> ThreadInfo | None:
        """The thread's row, or ``None`` if the saver has never seen the thread. One round
        trip."""
        sql = thread_info_statement(self.backend, self.tables)
        rows = await self.db.run(self._read, "aget_thread_info", sql, [check_thread_id(thread_id)])
        return _thread_info(rows[0]) if rows else None

    def get_thread_info(self, thread_id: str) -> ThreadInfo | None:
        """Synchronous :meth:`aget_thread_info`."""
        return self.db.run_sync(self.aget_thread_info, thread_id)

    async def aset_thread_info(
        self, thread_id: str, *, user_id: str | None = None, title: str | None = None
    ) -> None:
        """Set a thread's owner and/or title (``None`` leaves a value as it is); a thread the
        saver has not seen yet gets a row with no checkpoints. One round trip.

        Example::

            await saver.aset_thread_info("t1", user_id="alice", title="Trip to Lisbon")
        """
        params = [
            check_thread_id(thread_id),
            None if user_id is None else _checks.check_id(user_id, "user_id"),
            None if title is None else _checks.check_text(title, "title", max_chars=65535),
        ]
        sql = refresh_thread_statement(self.backend, self.tables)
        await self.db.run(self._write, "aset_thread_info", [(sql, [*params, params[0]])])

    def set_thread_info(
        self, thread_id: str, *, user_id: str | None = None, title: str | None = None
    ) -> None:
        """Synchronous :meth:`aset_thread_info`."""
        self.db.run_sync(self._set_thread_info_sync, thread_id, user_id, title)

    async def _set_thread_info_sync(
        self, thread_id: str, user_id: str | None, title: str | None
    ) -> None:
        await self.aset_thread_info(thread_id, user_id=user_id, title=title)

    async def aerase_user(self, user_id: str) -> RetentionReport:
        """Delete every thread the threads table gives to ``user_id``, whole, for a "delete my
        data" request; returns what was deleted. :func:`tidb_memory.erasure.aerase_user`
        also reaches the chat history.

        Raises:
            InvalidInputError: a bad user id.
        """
        user = _checks.check_id(user_id, "user_id")
        return await self.db.run(self._erase_user, user)

    def erase_user(self, user_id: str) -> RetentionReport:
        """Synchronous :meth:`aerase_user`."""
        return self.db.run_sync(self.aerase_user, user_id)

    async def _erase_user(self, user_id: str) -> RetentionReport:
        report = RetentionReport()
        sql = thread_batch_statement(self.backend, self.tables, "user")
        while True:
            rows = await self._read("aerase_user", sql, [user_id, self.delete_batch])
            for (thread_id,) in rows:
                report += await self._delete_thread(text(thread_id))
            if len(rows) < self.delete_batch:
                return report


def _raw_when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text(value)


def _parse_when(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(text(value))
    return moment.replace(tzinfo=UTC)


def _thread_info(row: Sequence[Any]) -> ThreadInfo:
    thread_id, user_id, title, last_activity, checkpoints = row
    return ThreadInfo(
        thread_id=text(thread_id),
        user_id=None if user_id is None else text(user_id),
        title=None if title is None else text(title),
        last_activity=_parse_when(last_activity),
        checkpoints=int(checkpoints),
    )


def _encode_cursor(when: str, thread_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([when, thread_id])).decode()


def _decode_cursor(cursor: object) -> tuple[str, str]:
    try:
        when, thread_id = orjson.loads(base64.urlsafe_b64decode(str(cursor).encode()))
        return str(when), str(thread_id)
    except Exception as exc:
        raise InvalidInputError(
            "cursor is not one alist_threads returned; pass page.next_cursor as it is"
        ) from exc
