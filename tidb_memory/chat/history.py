"""The chat history classes: LangChain's history API, as thin doors onto the message store.

:class:`~tidb_memory.chat._messages.MessageStore` does the work. Each operation is written
once, as a coroutine (``a<verb>``). Its synchronous twin is one line that runs the coroutine
through the bridge (``_bridge.py``), so sync and async callers share one code path, one pool
registry and the same guarantees.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage
from sqlalchemy.ext.asyncio import AsyncEngine

from .._checks import as_count, check_id, to_utc
from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy
from .._types import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    UNSET,
    MessageRecord,
    SessionInfo,
    _Unset,
)
from .._url import DEFAULT_SQLITE_URL as DEFAULT_SQLITE_URL
from .._url import default_url as default_url
from ..codec import DEFAULT_MAX_MESSAGE_BYTES
from ..errors import InvalidInputError
from ._messages import open_store
from ._schema import DEFAULT_TABLE_NAME
from .sessions import SessionStore as SessionStore

__all__ = [
    "DEFAULT_SQLITE_URL",
    "AsyncTiDBChatMessageHistory",
    "SessionStore",
    "TiDBChatMessageHistory",
    "default_url",
]


class AsyncTiDBChatMessageHistory(BaseChatMessageHistory):
    """Chat history of one session in TiDB, MySQL, MariaDB or SQLite; async first.

    Example::

        history = AsyncTiDBChatMessageHistory("s1", "mysql+aiomysql://root@127.0.0.1:3306/test")
        await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
        print(await history.aget_messages())
        history.add_user_message("from sync code too")   # the same object, no event loop needed
        await history.aclose()

    Construction does no I/O. The table is created on first use, once per process. Histories
    built from equal URLs share one pool per event loop; one object serves ``invoke`` and
    ``ainvoke``, any number of event loops, and many threads at once.

    Costs (steady state): ``aget_messages`` 1 round trip, ``aadd_messages`` 1 round trip for any
    batch (atomic), ``aclear`` 1 round trip.

    Args:
        session_id: the conversation; 1-255 characters, not ending in a space.
        connection_string: ``mysql://``, ``mysql+pymysql://``, ``mysql+aiomysql://`` or
            ``sqlite+aiosqlite://`` URL; TiDB Cloud's ``ssl_ca``/``ssl_verify_*`` parameters are
            honoured. Defaults to ``$TIDB_DATABASE_URL``, else a local SQLite file.
        engine: an ``AsyncEngine`` the application owns, instead of a URL (see
            :func:`tidb_memory.create_engine`).
        table_name: the table; created on first use unless ``create_table`` is false.
        earliest_time: read only messages stored at or after this time (naive means UTC).
        create_table: create the table on first use if it is missing.
        engine_args: pool settings for a URL: ``pool_size``, ``max_overflow``, ``pool_timeout``,
            ``pool_recycle``, ``pool_pre_ping``, ``echo``.
        retry: the retry policy for transient errors.
        max_message_bytes: the largest encoded message accepted (default 6 MiB).
        window: return only the last ``window`` messages (one ``ORDER BY seq DESC LIMIT``
            statement). The window never starts on a tool result whose tool call was cut off,
            and it is the same at load and at save, as ``RunnableWithMessageHistory`` needs.
        pin_system: with ``window``, keep the session's first message at the front if it is a
            ``SystemMessage``.
        ttl: messages older than this are expired: reads skip them immediately; on TiDB the
            table gets a native TTL; elsewhere :meth:`apurge_expired` deletes them.

    Raises:
        ConfigurationError: the URL, engine or an option is invalid.
        InvalidInputError: the session id, table name or earliest_time is invalid.
    """

    def __init__(
        self,
        session_id: str,
        connection_string: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        earliest_time: datetime | None = None,
        create_table: bool = True,
        engine_args: Mapping[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        window: int | None = None,
        pin_system: bool = False,
        ttl: timedelta | None = None,
    ) -> None:
        self.session_id = check_id(session_id)
        self.earliest_time = None if earliest_time is None else to_utc(earliest_time)
        self.window = None if window is None else as_count("window", window, high=MAX_PAGE_SIZE)
        self.pin_system = pin_system
        self.store = open_store(
            connection_string,
            engine,
            engine_args,
            table_name,
            create_table=create_table,
            retry=retry,
            max_message_bytes=max_message_bytes,
            ttl=ttl,
        )
        # The session's last seq as this object last saw it: lets the next append send its seqs
        # instead of asking the server for MAX(seq). A stale value only costs a retry.
        self._last_seq: int | None = None

    @property
    def table_name(self) -> str:
        return self.store.table

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session_id={self.session_id!r}, "
            f"table_name={self.table_name!r}, url={self.store.db.spec.display!r})"
        )

    # -- async: the real implementations

    async def aget_messages(self) -> list[BaseMessage]:
        """Read the session, oldest first. One round trip.

        Raises:
            StorageError: the database failed (after retries, for transient errors).
        """
        result = await self.store.aread(
            self.session_id,
            since=self.earliest_time,
            window=self.window,
            pin_system=self.pin_system,
        )
        self._last_seq = result.last_seq
        return result.messages

    async def aadd_messages(
        self,
        messages: Sequence[BaseMessage],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
    ) -> None:
        """Append messages atomically, in one statement. One round trip.

        Args:
            messages: the batch, in order.
            metadata: per-message metadata kept beside each message (never inside it): one
                mapping for all, or one mapping (or ``None``) per message. Read it back with
                :meth:`aget_records`.

        Raises:
            InvalidInputError: an item is not a ``BaseMessage`` or cannot be stored exactly;
                nothing is written.
            MessageTooLargeError: an item is over ``max_message_bytes``; nothing is written.
            StorageError: the database failed (after retries, for transient errors).
        """
        if isinstance(messages, BaseMessage):
            raise InvalidInputError("aadd_messages takes a sequence of messages; wrap it in [ ]")
        # A generator is materialised; anything else goes to the store as given, whose check
        # refuses non-sequences (None, a dict, a str) with InvalidInputError.
        batch = list(messages) if isinstance(messages, Iterator) else messages
        self._last_seq = await self.store.aappend(
            self.session_id, batch, metadata=metadata, last_seq=self._last_seq
        )

    async def aget_records(
        self, *, before: int | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[MessageRecord]:
        """One page of stored records (seq, UTC created_at, message, metadata), oldest first.

        Page backwards by passing the first record's ``seq`` as ``before``. One round trip.

        Example::

            page = await history.aget_records(limit=20)
            older = await history.aget_records(before=page[0].seq, limit=20)
        """
        return await self.store.arecords(
            self.session_id, before=before, limit=limit, since=self.earliest_time
        )

    async def aget_session_info(self) -> SessionInfo:
        """Message count, first/last activity, user, title and metadata. One round trip."""
        return await self.store.asession_info(self.session_id)

    async def aset_session_info(
        self,
        *,
        user_id: str | _Unset | None = UNSET,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
    ) -> None:
        """Set the session's user, title and/or metadata (others unchanged). One round trip."""
        await self.store.aset_session_info(
            self.session_id, user_id=user_id, title=title, metadata=metadata
        )

    async def adelete_session(self) -> None:
        """Delete the session's messages and its info. Two round trips."""
        await self.store.adelete_session(self.session_id)
        self._last_seq = None

    async def aclear(self) -> None:
        """Delete every message of the session. One round trip."""
        await self.store.aclear(self.session_id)
        self._last_seq = None

    async def acreate_tables(self) -> None:
        """Create the table now (and record its schema version). Idempotent."""
        await self.store.acreate_tables()

    async def aclose(self) -> None:
        """Close the pooled connections of this history's URL, on every event loop.

        Other histories on the same URL share those pools; they reconnect on their next call,
        and so does this one. An engine passed as ``engine=`` is left to its owner.
        """
        await self.store.db.aclose()

    # -- sync: the same coroutines, run through the bridge

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Synchronous :meth:`aget_messages`."""
        return self.store.db.run_sync(self.aget_messages)

    def add_messages(
        self,
        messages: Sequence[BaseMessage],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
    ) -> None:
        """Synchronous :meth:`aadd_messages`."""
        self.store.db.run_sync(self.aadd_messages, messages, metadata=metadata)

    def clear(self) -> None:
        """Synchronous :meth:`aclear`."""
        self.store.db.run_sync(self.aclear)

    def create_tables(self) -> None:
        """Synchronous :meth:`acreate_tables`."""
        self.store.db.run_sync(self.acreate_tables)

    def get_records(
        self, *, before: int | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[MessageRecord]:
        """Synchronous :meth:`aget_records`."""
        return self.store.db.run_sync(self.aget_records, before=before, limit=limit)

    def get_session_info(self) -> SessionInfo:
        """Synchronous :meth:`aget_session_info`."""
        return self.store.db.run_sync(self.aget_session_info)

    def set_session_info(
        self,
        *,
        user_id: str | _Unset | None = UNSET,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
    ) -> None:
        """Synchronous :meth:`aset_session_info`."""
        self.store.db.run_sync(
            self.aset_session_info, user_id=user_id, title=title, metadata=metadata
        )

    def delete_session(self) -> None:
        """Synchronous :meth:`adelete_session`."""
        self.store.db.run_sync(self.adelete_session)

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        self.store.db.close()


class TiDBChatMessageHistory(AsyncTiDBChatMessageHistory):
    """Drop-in replacement for ``langchain_community``'s ``TiDBChatMessageHistory``.

    Same constructor, same URLs (the TiDB Cloud ``mysql+pymysql://...?ssl_ca=...`` form
    included), plus the async methods. Unlike the original it does no I/O when constructed,
    orders by a per-session sequence, writes a batch atomically, and raises errors instead of
    logging them.

    Example::

        from tidb_memory import TiDBChatMessageHistory   # was: langchain_community...

        history = TiDBChatMessageHistory(
            session_id="code_gen",
            connection_string="mysql+pymysql://user:pw@host:4000/db?ssl_ca=/etc/ssl/cert.pem"
            "&ssl_verify_cert=true&ssl_verify_identity=true",
        )
        history.add_user_message("hi")
        history.messages
    """

    def __init__(
        self,
        session_id: str,
        connection_string: str,
        table_name: str = DEFAULT_TABLE_NAME,
        earliest_time: datetime | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            session_id,
            connection_string,
            table_name=table_name,
            earliest_time=earliest_time,
            **options,
        )

    def reload_cache(self) -> None:
        """Kept for compatibility. ``messages`` always reads the database, so there is no cache
        to go stale; this reads the session once, as the original did."""
        self.store.db.run_sync(self.aget_messages)
