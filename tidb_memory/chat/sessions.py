"""The sessions of one message table, as one object: :class:`SessionStore`, one-line doors onto
the session operations of :class:`~tidb_memory.chat._messages.MessageStore` (``_sessions.py``),
each async with its synchronous twin through the bridge."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy
from .._types import DEFAULT_PAGE_SIZE, UNSET, SessionInfo, SessionPage, _Unset
from ._messages import open_store
from ._schema import DEFAULT_TABLE_NAME

__all__ = ["SessionStore"]


class SessionStore:
    """Every session of one message table: list, inspect, annotate, delete, purge.

    Example::

        sessions = SessionStore("mysql+aiomysql://root@127.0.0.1:3306/test")
        page = await sessions.alist_sessions(user_id="u1", limit=20)
        for info in page.sessions:
            print(info.session_id, info.title, info.message_count, info.last_activity)
        more = await sessions.alist_sessions(user_id="u1", cursor=page.next_cursor)

    It shares pools with the histories of the same URL. Costs are in each method's docstring.
    """

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        create_table: bool = True,
        engine_args: Mapping[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        ttl: timedelta | None = None,
    ) -> None:
        self.store = open_store(
            connection_string,
            engine,
            engine_args,
            table_name,
            create_table=create_table,
            retry=retry,
            ttl=ttl,
        )

    def __repr__(self) -> str:
        return f"SessionStore(table_name={self.store.table!r}, url={self.store.db.spec.display!r})"

    async def alist_sessions(
        self,
        *,
        user_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> SessionPage:
        """See :meth:`MessageStore.alist_sessions`: one round trip per page."""
        return await self.store.alist_sessions(user_id=user_id, limit=limit, cursor=cursor)

    async def aget_session_info(self, session_id: str) -> SessionInfo:
        """See :meth:`MessageStore.asession_info`: one round trip."""
        return await self.store.asession_info(session_id)

    async def aset_session_info(
        self,
        session_id: str,
        *,
        user_id: str | _Unset | None = UNSET,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
    ) -> None:
        """See :meth:`MessageStore.aset_session_info`: one round trip."""
        await self.store.aset_session_info(
            session_id, user_id=user_id, title=title, metadata=metadata
        )

    async def adelete_session(self, session_id: str) -> int:
        """See :meth:`MessageStore.adelete_session`: two round trips."""
        return await self.store.adelete_session(session_id)

    async def apurge_expired(self, *, older_than: datetime | None = None) -> int:
        """See :meth:`MessageStore.apurge_expired`: one round trip per batch."""
        return await self.store.apurge_expired(older_than=older_than)

    def list_sessions(
        self,
        *,
        user_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> SessionPage:
        """Synchronous :meth:`alist_sessions`."""
        return self.store.db.run_sync(
            self.alist_sessions, user_id=user_id, limit=limit, cursor=cursor
        )

    def get_session_info(self, session_id: str) -> SessionInfo:
        """Synchronous :meth:`aget_session_info`."""
        return self.store.db.run_sync(self.aget_session_info, session_id)

    def set_session_info(
        self,
        session_id: str,
        *,
        user_id: str | _Unset | None = UNSET,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
    ) -> None:
        """Synchronous :meth:`aset_session_info`."""
        self.store.db.run_sync(
            self.aset_session_info, session_id, user_id=user_id, title=title, metadata=metadata
        )

    def delete_session(self, session_id: str) -> int:
        """Synchronous :meth:`adelete_session`."""
        return self.store.db.run_sync(self.adelete_session, session_id)

    def purge_expired(self, *, older_than: datetime | None = None) -> int:
        """Synchronous :meth:`apurge_expired`."""
        return self.store.db.run_sync(self.apurge_expired, older_than=older_than)
