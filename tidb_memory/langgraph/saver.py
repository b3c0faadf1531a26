"""LangGraph checkpointer on TiDB, MySQL, MariaDB or SQLite: :class:`AsyncTiDBSaver`.

One object serves both faces of a graph: ``ainvoke`` calls the ``a*`` coroutines on any event
loop, and ``invoke`` calls the synchronous methods from LangGraph's executor threads. Each sync
method is one line that runs its coroutine through the shared bridge (``Database.run_sync``), so
both faces share one code path, the per-loop pools, the retry policy and the error types of the
rest of tidb-memory. There is no instance-wide lock: concurrent calls run on as many pooled
connections as they need.

Tables (``table_prefix`` defaults to ``checkpoint``, which gives LangGraph's usual names)::

    checkpoints             PK (thread_id, ns_hash, checkpoint_id)
        checkpoint_ns, parent_checkpoint_id, v, checkpoint (JSON text with the inline values),
        metadata (JSON), refs (JSON list of the [channel, version] pairs kept in blobs)
    checkpoint_blobs        PK (thread_id, ns_hash, channel, version)   type, blob
    checkpoint_writes       PK (thread_id, ns_hash, checkpoint_id, task_id, idx)
        task_path, channel, type, blob
    checkpoint_migrations   PK (v)   description, applied_at

``ns_hash`` is the 16-byte MD5 of ``checkpoint_ns``, computed client-side: nested subgraph
namespaces outgrow index limits, so the full namespace sits in its own column. Every table is
``utf8mb4``/``utf8mb4_bin`` with a ``/*T![clustered_index] CLUSTERED */`` primary key. The SQL
is in :mod:`._saver_sql`, the row conversions in :mod:`._saver_rows`.

Round trips: ``aget_tuple`` 1 (one statement returns the checkpoint, its blobs and its pending
writes as ``UNION ALL`` rows tagged with a kind column; the blobs of exactly the versions the
checkpoint references are found by primary-key lookups, expanding ``refs`` with a recursive CTE
instead of ``JSON_TABLE``, which TiDB lacks); ``aput`` 1 (the new blobs' insert, the
checkpoint row and the thread's row in one multi-statement query, one transaction);
``aput_writes`` 1; ``alist`` 1 per page of :attr:`AsyncTiDBSaver.list_page_size` checkpoints.

Every write is keyed and idempotent, so the retry policy may repeat one after a lost connection
without duplicating or losing anything. Blobs are content-addressed by (channel, version), so
they are written first and the checkpoint row is the commit point; a blob orphaned by a failed
``aput`` is harmless and is reused by the retry. Because every write is idempotent, the writes of
concurrent calls may also share a round trip and its transaction
(:meth:`Database.execute_grouped`).

Blobs never travel as a ``bytes`` parameter to aiomysql (PyMySQL 1.2 broke them): they are
:class:`~tidb_memory.engine.Binary` values, which the engine writes as ``FROM_BASE64('...')``,
and the namespace hash is hex decoded by ``UNHEX``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy.ext.asyncio import AsyncEngine

from tidb_memory._checks import as_count, check_text
from tidb_memory._migrations import apply_migrations
from tidb_memory._retry import DEFAULT_RETRY_POLICY, RetryPolicy, retrying
from tidb_memory._url import default_url
from tidb_memory.engine import Backend, Binary, Connection, Database, get_database
from tidb_memory.errors import InvalidInputError
from tidb_memory.langgraph._saver_rows import (
    STATEMENT_BYTES,
    CheckpointTooLargeError,
    ListQuery,
    Prepared,
    PutOptions,
    assemble,
    batches,
    check_id,
    check_ns,
    check_thread_id,
    config_of,
    filter_terms,
    hash_value,
    metadata_matches,
    next_version,
    ns_hex_of,
    prepare_put,
    too_large,
)
from tidb_memory.langgraph._saver_sql import (
    MIGRATIONS,
    Select,
    Tables,
    bind_migrations,
    insert_writes_statement,
    read_statement,
)
from tidb_memory.langgraph.retention import RetentionPolicy
from tidb_memory.langgraph.threads import ThreadsMixin

__all__ = [
    "DEFAULT_CHECKPOINT_PREFIX",
    "DEFAULT_DELETE_BATCH",
    "DEFAULT_LIST_PAGE_SIZE",
    "DEFAULT_MAX_BLOB_BYTES",
    "MIGRATIONS",
    "AsyncTiDBSaver",
    "CheckpointTooLargeError",
    "TiDBSaver",
]

_List = builtins.list  # the saver defines a method called ``list``

DEFAULT_CHECKPOINT_PREFIX = "checkpoint"
#: TiDB's default row limit (``txn-entry-size-limit``): 6 MiB.
DEFAULT_MAX_BLOB_BYTES = 6 * 1024 * 1024
#: Checkpoints per ``alist`` statement.
DEFAULT_LIST_PAGE_SIZE = 50
#: Rows per ``DELETE`` of ``delete_thread`` on MySQL and TiDB (TiDB caps a transaction).
DEFAULT_DELETE_BATCH = 1000


class AsyncTiDBSaver(ThreadsMixin, BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on TiDB, MySQL, MariaDB or SQLite; one object, sync and async.

    Example::

        saver = AsyncTiDBSaver("mysql+aiomysql://root@127.0.0.1:3306/test")
        await saver.asetup()                  # once, at deployment: creates the tables
        agent = create_agent(model, tools, checkpointer=saver)
        await agent.ainvoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t1"}})
        agent.invoke(...)                     # the same saver serves sync callers too

    Construction does no I/O. Savers built from equal URLs share one pool per event loop with
    the chat histories.

    Args:
        connection_string: ``mysql://``, ``mysql+pymysql://``, ``mysql+aiomysql://`` or
            ``sqlite+aiosqlite://`` URL; TiDB Cloud's ``ssl_ca``/``ssl_verify_*`` parameters are
            honoured. Defaults to ``$TIDB_DATABASE_URL``, else a local SQLite file.
        engine: an ``AsyncEngine`` the application owns, instead of a URL (see
            :func:`tidb_memory.create_engine`).
        table_prefix: names the tables ``<prefix>s``, ``<prefix>_blobs``, ``<prefix>_writes`` and
            ``<prefix>_migrations``.
        serde: the serializer for channel values and writes; ``JsonPlusSerializer`` by default.
            ``EncryptedSerializer`` works as is.
        engine_args: pool settings for a URL, as for the chat history: ``pool_size``,
            ``max_overflow``, ``pool_timeout``, ``pool_recycle``, ``pool_pre_ping``, ``echo``.
        retry: the retry policy for transient errors.
        inline_primitives: keep ``None``, bool, int, float and short str channel values in the
            checkpoint row itself (as the Postgres saver does). ``False`` sends every value
            through ``serde``, so that an ``EncryptedSerializer`` covers all of them.
        max_blob_bytes: the largest serialised value, write or checkpoint row accepted.
        retention: what :meth:`aapply_retention` and the retention sweeper keep, e.g.
            ``RetentionPolicy(keep_last=2, max_idle=timedelta(days=30))``.

    Raises:
        ConfigurationError: the URL, engine or an option is invalid.
        InvalidInputError: the table prefix is invalid.
    """

    list_page_size: int = DEFAULT_LIST_PAGE_SIZE
    delete_batch: int = DEFAULT_DELETE_BATCH

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        table_prefix: str = DEFAULT_CHECKPOINT_PREFIX,
        serde: SerializerProtocol | None = None,
        engine_args: Mapping[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        inline_primitives: bool = True,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        retention: RetentionPolicy | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a RetryPolicy")
        if not isinstance(max_blob_bytes, int) or max_blob_bytes < 1:
            raise InvalidInputError("max_blob_bytes must be a positive int")
        if engine is None and connection_string is None:
            connection_string = default_url()
        self.tables = Tables.from_prefix(table_prefix)
        self.db: Database = get_database(connection_string, engine=engine, engine_args=engine_args)
        self.retry = retry
        self.inline_primitives = bool(inline_primitives)
        self.max_blob_bytes = max_blob_bytes
        if retention is not None and not isinstance(retention, RetentionPolicy):
            raise InvalidInputError("retention must be a RetentionPolicy")
        self.retention = retention

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(table_prefix={self.tables.checkpoints[:-1]!r}, "
            f"url={self.db.spec.display!r})"
        )

    @property
    def backend(self) -> Backend:
        return self.db.backend

    def _put_options(self) -> PutOptions:
        return PutOptions(
            self.backend, self.tables, self.serde, self.inline_primitives, self.max_blob_bytes
        )

    # -- setup ------------------------------------------------------------------------------

    async def asetup(self) -> None:
        """Create or migrate the tables; run it once at deployment (LangGraph's convention).

        Versioned and idempotent: versions recorded in the migrations table are skipped, and a
        version is recorded only after its DDL succeeded. On MySQL and TiDB concurrent setups
        are serialised with ``GET_LOCK``.

        Raises:
            SchemaError: the migrations table belongs to another tool.
            StorageError: the database failed, or another setup held the lock too long.
        """
        await self.db.run(self._setup)

    def setup(self) -> None:
        """Synchronous :meth:`asetup`."""
        self.db.run_sync(self.asetup)

    async def _setup(self) -> None:
        async def attempt() -> None:
            async with self.db.connection() as conn:
                await self._migrate(conn)

        await retrying(attempt, policy=self.retry, operation="setup", table=self.tables.migrations)

    async def _migrate(self, conn: Connection) -> None:
        await apply_migrations(
            conn,
            database=self.db.spec.url.database or "",
            ledger=self.tables.migrations,
            migrations=bind_migrations(self.tables, MIGRATIONS),
            owner_hint="another checkpointer (such as langgraph-checkpoint-mysql) uses the "
            "same names: choose another table_prefix",
        )

    # -- versions ---------------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The Postgres saver's scheme: a 32-digit counter, a dot and a random fraction, so
        that two forks of one checkpoint never mint the same version."""
        return next_version(current)

    # -- read -------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest; ``None`` if there is none.

        One round trip: the checkpoint row, its blobs and its pending writes come back from one
        statement.
        """
        sel, params = self._get_query(config)
        rows = await self.db.run(
            self._fetch, read_statement(self.backend, self.tables, sel), params
        )
        found = assemble(rows, self.serde)
        return found[0] if found else None

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Synchronous :meth:`aget_tuple`."""
        return self.db.run_sync(self.aget_tuple, config)

    def _get_query(self, config: RunnableConfig) -> tuple[Select, _List[Any]]:
        configurable = config.get("configurable") or {}
        thread_id = check_thread_id(configurable.get("thread_id"))
        ns = check_ns(configurable.get("checkpoint_ns"))
        checkpoint_id = get_checkpoint_id(config)
        params: _List[Any] = [thread_id, hash_value(self.backend, ns)]
        if checkpoint_id:
            params.append(check_id("checkpoint id", checkpoint_id))
            return Select(thread=True, ns=True, checkpoint_id=True), params
        return Select(thread=True, ns=True, latest=True), params

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints, newest first: of one thread (and namespace, if ``config`` names one),
        or of every thread when ``config`` is ``None``.

        One round trip per page of :attr:`list_page_size` checkpoints, blobs and writes
        included.

        Args:
            config: the thread (and optionally namespace and checkpoint) to list.
            filter: metadata equality on each key, exactly as ``InMemorySaver`` applies it
                (``{"user": "alice"}`` does not match ``["alice", "bob"]``).
            before: only checkpoints older than this one.
            limit: the most checkpoints to return (an int, or anything with ``__index__``).

        Raises:
            InvalidInputError: a bad id, namespace, filter or limit; before any I/O.
        """
        query = self._list_query(config, filter, before, limit)
        while (page := await self.db.run(self._next_page, query)) is not None:
            for item in page:
                yield item

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Synchronous :meth:`alist`; fetches one page per step of the iteration."""
        query = self._list_query(config, filter, before, limit)
        while (page := self.db.run_sync(self._next_page, query)) is not None:
            yield from page

    def _list_query(
        self,
        config: RunnableConfig | None,
        filter: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        limit: object,
    ) -> ListQuery:
        params: _List[Any] = []
        thread = ns = has_id = False
        if config is not None:
            configurable = config.get("configurable") or {}
            if configurable.get("thread_id") is not None:
                params.append(check_thread_id(configurable["thread_id"]))
                thread = True
            checkpoint_ns = configurable.get("checkpoint_ns")
            if checkpoint_ns is not None:
                params.append(hash_value(self.backend, check_ns(checkpoint_ns)))
                ns = True
            if checkpoint_id := get_checkpoint_id(config):
                params.append(check_id("checkpoint id", checkpoint_id))
                has_id = True
        filters: tuple[str, ...] = ()
        if filter:
            if not isinstance(filter, Mapping):
                raise InvalidInputError("filter must be a dict of metadata keys and values")
            filters, filter_params = filter_terms(filter)
            params += filter_params
        has_before = False
        if before is not None and (before_id := get_checkpoint_id(before)):
            params.append(check_id("checkpoint id", before_id))
            has_before = True
        remaining = None if limit is None else as_count("limit", limit, low=0)
        sel = Select(thread=thread, ns=ns, checkpoint_id=has_id, filters=filters, before=has_before)
        return ListQuery(sel, params, dict(filter) if filter else None, remaining)

    async def _next_page(self, query: ListQuery) -> _List[CheckpointTuple] | None:
        """The next page of ``query``, advancing it; ``None`` once it is over. The one paging
        loop, driven by :meth:`alist` and :meth:`list` alike."""
        remaining = query.remaining
        if query.done or remaining == 0:
            return None
        size = self.list_page_size if remaining is None else min(remaining, self.list_page_size)
        page, query.cursor = await self._list_page(query, size, query.cursor)
        query.done = query.cursor is None
        if remaining is not None:
            query.remaining = remaining - len(page)
        return page

    async def _list_page(
        self, query: ListQuery, size: int, cursor: _List[Any] | None
    ) -> tuple[_List[CheckpointTuple], _List[Any] | None]:
        """One statement: up to ``size`` checkpoints after ``cursor``, then the metadata
        filter; the next cursor follows the last row read, matched or not."""
        sel = query.sel
        params = _List(query.params)
        if cursor is not None:
            cid, thread_id, ns_hex = cursor
            if sel.thread and sel.ns:
                params.append(cid)
            else:
                ns_value = ns_hex if self.backend == "mysql" else bytes.fromhex(ns_hex)
                params += [cid, cid, thread_id, thread_id, ns_value]
        sel = Select(
            thread=sel.thread,
            ns=sel.ns,
            checkpoint_id=sel.checkpoint_id,
            filters=sel.filters,
            before=sel.before,
            cursor=cursor is not None,
            limit=True,
        )
        params.append(size)
        rows = await self._fetch(read_statement(self.backend, self.tables, sel), params)
        found = assemble(rows, self.serde)
        matched = found
        if query.filter is not None:
            flt = query.filter
            matched = [item for item in found if metadata_matches(item.metadata, flt)]
        if len(found) < size:
            return matched, None
        last = found[-1].config["configurable"]
        return matched, [last["checkpoint_id"], last["thread_id"], ns_hex_of(found[-1])]

    async def _fetch(self, sql: str, params: Sequence[Any]) -> _List[Any]:
        async def attempt() -> _List[Any]:
            async with self.db.connection() as conn:
                return await conn.fetchall(sql, _List(params))

        return await retrying(
            attempt, policy=self.retry, operation="read checkpoints", table=self.tables.checkpoints
        )

    # -- write ------------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint; its parent is the checkpoint ``config`` names.

        One round trip on MySQL and TiDB: the changed blobs' insert and the checkpoint's upsert
        travel as one multi-statement query (on SQLite, two statements), shared with the other
        writes of the same event-loop iteration. Idempotent: storing the same checkpoint again
        changes nothing.

        Raises:
            CheckpointTooLargeError: a value is over ``max_blob_bytes``; nothing was written.
            InvalidInputError: the config or checkpoint cannot be stored.
        """
        configurable = config.get("configurable") or {}
        thread_id = check_thread_id(configurable.get("thread_id"))
        checkpoint_ns = check_ns(configurable.get("checkpoint_ns"))
        prepared = prepare_put(
            self._put_options(), thread_id, checkpoint_ns, configurable.get("checkpoint_id"),
            config, checkpoint, metadata, new_versions,
        )  # fmt: skip
        await self.db.run(self._put, prepared)
        return config_of(thread_id, checkpoint_ns, str(checkpoint["id"]))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Synchronous :meth:`aput`."""
        return self.db.run_sync(self.aput, config, checkpoint, metadata, new_versions)

    async def _put(self, prepared: Prepared) -> None:
        async def attempt() -> None:
            await self.db.execute_grouped(prepared.statements, max_bytes=STATEMENT_BYTES)

        await retrying(attempt, policy=self.retry, operation="aput", table=self.tables.checkpoints)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names. One round trip,
        shared with the other writes of the same event-loop iteration.

        Special writes (error, interrupt, resume, scheduled) replace earlier ones of the same
        task; normal writes keep the first value stored, so a retry never duplicates them.

        Raises:
            CheckpointTooLargeError: a value is over ``max_blob_bytes``; nothing was written.
        """
        configurable = config.get("configurable") or {}
        thread_id = check_thread_id(configurable.get("thread_id"))
        checkpoint_ns = check_ns(configurable.get("checkpoint_ns"))
        checkpoint_id = check_id("checkpoint id", configurable.get("checkpoint_id") or "")
        task = check_id("task_id", task_id)
        path = check_text(str(task_path), "task_path")
        ns_value = hash_value(self.backend, checkpoint_ns)
        rows: _List[_List[Any]] = []
        for idx, (channel, value) in enumerate(writes):
            type_, data = self.serde.dumps_typed(value)
            if len(data) > self.max_blob_bytes:
                raise too_large(f"a write to channel {channel!r}", len(data), self.max_blob_bytes)
            rows.append(
                [
                    thread_id, ns_value, checkpoint_id, task, WRITES_IDX_MAP.get(channel, idx),
                    path, check_text(channel, "channel"), type_, Binary(data),
                ]
            )  # fmt: skip
        if not rows:
            return
        await self.db.run(
            self._put_writes, batches(self.backend, self.tables, rows, insert_writes_statement)
        )

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Synchronous :meth:`aput_writes`."""
        self.db.run_sync(self.aput_writes, config, writes, task_id, task_path)

    async def _put_writes(self, statements: _List[tuple[str, _List[Any]]]) -> None:
        async def attempt() -> None:
            await self.db.execute_grouped(statements, max_bytes=STATEMENT_BYTES)

        await retrying(
            attempt, policy=self.retry, operation="aput_writes", table=self.tables.writes
        )


#: The same class: one object serves ``invoke`` and ``ainvoke``.
TiDBSaver = AsyncTiDBSaver
