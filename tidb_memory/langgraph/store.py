"""LangGraph long-term memory on TiDB, MySQL, MariaDB or SQLite: :class:`AsyncTiDBStore`.

One object serves every caller. The ``a*`` coroutines run on any event loop; the synchronous
methods (``get``, ``put``, ``search``... and ``batch``) are one line through the shared bridge
(``Database.run_sync``), so they work from worker threads (sync tools under ``ainvoke``) and
from the event loop's own thread (a prompt function, a FastAPI route), where LangGraph's
``AsyncBatchedBaseStore`` raises ``InvalidStateError``.

Round trips on MySQL and TiDB: a ``batch`` is one multi-statement query (reads first, then the
writes), after its embeddings; ``get``, ``put``, ``delete``, ``search`` and ``list_namespaces``
are one each, and the calls a loop makes in one iteration (``asyncio.gather``) share one.
Reading items that have a TTL with ``refresh_ttl`` costs one more (the refresh). Construction
does no I/O; ``setup()`` creates the tables, once, at deployment.

See :mod:`tidb_memory.langgraph._store_sql` for the tables, the exact keys and labels, the
whole-label prefixes, the typed filters and the total order.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from langgraph.store.base import (
    BaseStore,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    Result,
    SearchItem,
    TTLConfig,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from .._dialect import table_columns
from .._migrations import apply_migrations
from .._process import forget_at_fork
from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy, retrying
from .._url import default_url
from ..engine import Binary, Connection, Database, get_database
from ..errors import InvalidInputError
from . import _store_sql as sql
from ._store_filter import client_match
from ._store_group import BatchGroup
from ._store_plan import Plan, Put, Search, check_ns, plan
from ._store_ttl import TTLSweeper
from ._vectors import (
    check_vectors,
    pack,
    parse_index,
    similarities,
    texts_to_embed,
    tidb_has_vectors,
    vector_literal,
)

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_STORE_PREFIX",
    "DEFAULT_SWEEP_BATCH",
    "AsyncTiDBStore",
    "TiDBStore",
]

DEFAULT_STORE_PREFIX = "store"
#: TiDB's default row limit (``txn-entry-size-limit``): 6 MiB.
DEFAULT_MAX_VALUE_BYTES = 6 * 1024 * 1024
#: Expired items deleted per statement by :meth:`AsyncTiDBStore.asweep_ttl`.
DEFAULT_SWEEP_BATCH = 1000
#: Rows per multi-row insert.
_ROWS_PER_STATEMENT = 100
#: Budget of text per multi-statement query (MariaDB's max_allowed_packet is 16 MiB).
_STATEMENT_BYTES = 12 * 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> int:
    return time.time_ns() // 1000


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


class AsyncTiDBStore(TTLSweeper, BaseStore):
    """A LangGraph store on TiDB, MySQL, MariaDB or SQLite; one object, sync and async.

    Example::

        store = AsyncTiDBStore("mysql+aiomysql://root@127.0.0.1:3306/test")
        await store.asetup()                              # once, at deployment
        await store.aput(("memories", "u1"), "lang", {"text": "prefers French"})
        await store.asearch(("memories", "u1"), filter={"text": "prefers French"})
        agent = create_agent(model, tools, checkpointer=saver, store=store)

    Args:
        connection_string: a URL as for the chat history and the saver (TiDB Cloud TLS
            parameters honoured); defaults to ``$TIDB_DATABASE_URL``, else a local SQLite file.
        engine: an ``AsyncEngine`` the application owns, instead of a URL.
        table_prefix: names the tables ``<prefix>``, ``<prefix>_vectors`` and the ledgers.
        index: LangGraph's ``{"dims": n, "embed": ..., "fields": [...]}`` for semantic search.
        ttl: LangGraph's ``{"default_ttl": minutes, "refresh_on_read": bool,
            "sweep_interval_minutes": n}``.
        approximate_search: on TiDB, also build an HNSW index (on TiFlash) and use it for
            searches over the whole store (empty prefix, no filter). Searches in a namespace
            are always exact.
        engine_args: pool settings for a URL.
        retry: the retry policy for transient errors.
        max_value_bytes: the largest JSON value accepted.

    Raises:
        ConfigurationError: the URL, engine, index or an option is invalid.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        table_prefix: str = DEFAULT_STORE_PREFIX,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        approximate_search: bool = False,
        engine_args: Mapping[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
    ) -> None:
        if not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a RetryPolicy")
        for name, number in (("max_value_bytes", max_value_bytes), ("sweep_batch", sweep_batch)):
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise InvalidInputError(f"{name} must be a positive int")
        if ttl is not None and not isinstance(ttl, Mapping):
            raise InvalidInputError("ttl must be a dict (LangGraph's TTLConfig)")
        if engine is None and connection_string is None:
            connection_string = default_url()
        self.tables = sql.StoreTables.from_prefix(table_prefix)
        self.index = parse_index(index)
        self.index_config = index
        self.ttl_config = ttl
        self.approximate_search = bool(approximate_search)
        self.db: Database = get_database(connection_string, engine=engine, engine_args=engine_args)
        self.retry = retry
        self.max_value_bytes = max_value_bytes
        self.sweep_batch = sweep_batch
        self._tidb_vectors: bool | None = None if self.backend == "mysql" else False
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchGroup] = (
            weakref.WeakKeyDictionary()
        )
        self._groups_lock = threading.Lock()
        self._sweeper: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None = None
        forget_at_fork(self)

    def _forget_process(self) -> object:
        """In a forked child (see ``tidb_memory._process``): drop the parent's write groups and
        TTL sweeper, which belong to the parent's loops; return them for the hook to keep."""
        inherited = (self._groups, self._sweeper)
        self._groups = weakref.WeakKeyDictionary()
        self._groups_lock = threading.Lock()
        self._sweeper = None
        return inherited

    def __repr__(self) -> str:
        url = self.db.spec.display
        return f"{type(self).__name__}(table_prefix={self.tables.items!r}, url={url!r})"

    # -- setup ------------------------------------------------------------------------------

    async def asetup(self) -> None:
        """Create or migrate the tables; run it once at deployment. Versioned, idempotent and
        serialised between processes (see :mod:`tidb_memory._migrations`).

        Raises:
            SchemaError: a ledger table belongs to another tool.
            StorageError: the database failed.
        """
        await self.db.run(self._setup)

    def setup(self) -> None:
        """Synchronous :meth:`asetup`."""
        self.db.run_sync(self.asetup)

    async def _setup(self) -> None:
        t = self.tables

        async def attempt() -> None:
            async with self.db.connection() as conn:
                await self._detect(conn)
                database = self.db.spec.url.database or ""
                await apply_migrations(
                    conn, database=database, ledger=t.migrations,
                    migrations=sql.store_migrations(t),
                )  # fmt: skip
                if self.index is not None:
                    await apply_migrations(
                        conn, database=database, ledger=t.vector_migrations,
                        migrations=sql.vector_migrations(
                            t, dims=self.index.dims, tidb_vectors=bool(self._tidb_vectors),
                            approximate=self.approximate_search,
                        ),
                    )  # fmt: skip

        await retrying(attempt, policy=self.retry, operation="setup", table=t.migrations)

    async def _detect(self, conn: Any) -> bool:
        """Whether the server is TiDB v8.4+ (``VECTOR``); asked once per store."""
        if self._tidb_vectors is None:
            info = self.db.server_info
            version = str(info["version"]) if info else ""
            if not version:
                version = str((await conn.fetchall("SELECT VERSION()", ()))[0][0])
            self._tidb_vectors = tidb_has_vectors(version)
        return self._tidb_vectors

    # -- erasure ----------------------------------------------------------------------------

    async def adelete_namespace(self, namespace: tuple[str, ...]) -> int:
        """Delete every item in ``namespace`` and in the namespaces below it, with their
        vectors; returns how many items. For "delete my data" requests (see
        :func:`tidb_memory.aerase_user`).

        Labels match whole: ``("memories", "u1")`` never reaches ``("memories", "u10")``.
        Expired items not yet swept are deleted too. Runs in batches of :attr:`sweep_batch`
        items, so that no statement touches an unbounded number of rows; idempotent: after a
        failure, call it again.

        Example::

            deleted = await store.adelete_namespace(("memories", "alice"))

        Raises:
            InvalidInputError: an empty or malformed namespace, before any I/O.
        """
        prefix = check_ns(namespace, what="namespace")
        if not prefix:
            raise InvalidInputError(
                "namespace must have at least one label: an empty one would delete every item"
            )
        return await self.db.run(self._delete_under, prefix)

    def delete_namespace(self, namespace: tuple[str, ...]) -> int:
        """Synchronous :meth:`adelete_namespace`."""
        return self.db.run_sync(self.adelete_namespace, namespace)

    async def _delete_under(self, prefix: tuple[str, ...]) -> int:
        backend, t = self.backend, self.tables
        select, params = sql.under_statement(backend, t, prefix)
        # A store built without ``index`` may share its tables with one that embeds: the
        # user's vectors go too, whenever their table exists.
        vectors: bool | None = True if self.index is not None else None

        async def step(conn: Connection) -> tuple[int, int]:
            nonlocal vectors
            if vectors is None:
                vectors = bool(await table_columns(conn, t.vectors))
            rows = await conn.fetchall(select, [*params, self.sweep_batch])
            keys = [(sql.decode_ns(r[0]), sql.decode_key(r[1])) for r in rows]
            if not keys:
                return 0, 0
            if vectors:  # first: a retry after the items went would no longer find them
                await conn.execute(*sql.delete_statement(backend, t.vectors, keys))
            return len(keys), await conn.execute(*sql.delete_statement(backend, t.items, keys))

        return await self._in_batches("delete_namespace", step)

    # -- batch ------------------------------------------------------------------------------

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph ops: results in op order. Reads see the state before the batch's
        writes (unless a lost connection made the retry policy run the batch again after its
        writes had landed: the writes are idempotent, the reads then see them); of two puts of
        one key, the last wins. One round trip after the embeddings, shared with the other
        calls of the same event-loop iteration.

        Raises:
            InvalidInputError: an op is invalid; nothing was written.
        """
        checked = plan(ops, max_value_bytes=self.max_value_bytes)
        if not checked.size:
            return []
        return await self.db.run(self._join, checked)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Synchronous :meth:`abatch`; also safe on a running event loop's thread."""
        return self.db.run_sync(self.abatch, list(ops))

    async def _join(self, checked: Plan) -> list[Result]:
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            with self._groups_lock:  # loops of other threads may add theirs at the same time
                group = self._groups.setdefault(loop, BatchGroup(lambda p: self._execute(p)))
        return await group.join(checked)

    async def _execute(self, p: Plan) -> list[Any]:
        vectors = await self._embed(p)
        queries = await self._embed_queries(p)
        now = _now()

        async def attempt() -> list[Any]:
            async with self.db.connection() as conn:
                tidb = await self._detect(conn) if self.index is not None else False
                script, readers = self._script(p, now, vectors, queries, tidb)
                rows = await conn.fetch_script(script, max_bytes=_STATEMENT_BYTES)
            return [
                out for reader, r in zip(readers, rows, strict=True) if reader for out in reader(r)
            ]

        results: list[Any] = [None] * p.size
        refresh: list[tuple[tuple[str, ...], str]] = []
        for index, found, to_refresh in await retrying(
            attempt, policy=self.retry, operation="store batch", table=self.tables.items
        ):
            results[index] = found
            refresh += to_refresh
        if refresh:
            statement = sql.refresh_statement(self.backend, self.tables, refresh, _now())
            await self._write([statement])
        return results

    async def _write(self, statements: list[tuple[str, list[Any]]]) -> None:
        async def attempt() -> None:
            await self.db.execute_grouped(statements, max_bytes=_STATEMENT_BYTES)

        await retrying(attempt, policy=self.retry, operation="store write", table=self.tables.items)

    # -- embeddings -------------------------------------------------------------------------

    async def _embed(
        self, p: Plan
    ) -> dict[tuple[tuple[str, ...], str], list[tuple[str, list[float]]]]:
        """One ``aembed_documents`` call for every text the batch's puts index."""
        settings = self.index
        if settings is None:
            return {}
        owners: list[tuple[tuple[tuple[str, ...], str], str]] = []
        texts: list[str] = []
        for key, put in p.puts.items():
            if put.parsed is None or put.index is False:
                continue
            fields = None if put.index is None or put.index is True else list(put.index)
            for field, text in dict(texts_to_embed(settings, put.parsed, fields)).items():
                if len(field.encode()) > sql.FIELD_MAX_BYTES:
                    raise InvalidInputError(
                        f"index field path {field[:60]!r}... is over {sql.FIELD_MAX_BYTES} bytes"
                    )
                owners.append((key, field))
                texts.append(text)
        if not texts:
            return {}
        found = check_vectors(
            await settings.embeddings.aembed_documents(texts), len(texts), settings.dims
        )
        out: dict[tuple[tuple[str, ...], str], list[tuple[str, list[float]]]] = {}
        for (key, field), vector in zip(owners, found, strict=True):
            out.setdefault(key, []).append((field, vector))
        return out

    async def _embed_queries(self, p: Plan) -> dict[str, list[float]]:
        settings = self.index
        queries = sorted({s.op.query for s in p.searches if s.op.query})
        if settings is None or not queries:
            return {}
        found = await asyncio.gather(*(settings.embeddings.aembed_query(q) for q in queries))
        checked = check_vectors(found, len(queries), settings.dims)
        return dict(zip(queries, checked, strict=True))

    # -- statements -------------------------------------------------------------------------

    def _script(
        self,
        p: Plan,
        now: int,
        vectors: Mapping[tuple[tuple[str, ...], str], list[tuple[str, list[float]]]],
        queries: Mapping[str, list[float]],
        tidb: bool,
    ) -> tuple[list[tuple[str, Sequence[Any], bool]], list[Any]]:
        """The batch's statements (reads, then writes) and a reader for each read."""
        backend, t = self.backend, self.tables
        script: list[tuple[str, Sequence[Any], bool]] = []
        readers: list[Any] = []
        if p.gets:
            text, params = sql.get_statement(backend, t, [(g.ns, g.key) for g in p.gets], now)
            script.append((text, params, True))
            readers.append(lambda rows: self._read_gets(p, rows))
        for s in p.searches:
            query = queries.get(s.op.query or "")
            whole = not s.op.namespace_prefix and not s.conditions
            if query is not None and tidb and self.approximate_search and whole:
                statement = sql.approximate_search_statement(
                    t, query_vector=vector_literal(query), now=now,
                    candidates=max(4 * (s.offset + s.limit), 40),
                )  # fmt: skip
            elif query is not None and tidb:
                statement = sql.search_statement(
                    backend, t, prefix=s.op.namespace_prefix, conditions=s.conditions, now=now,
                    limit=s.limit, offset=s.offset, query_vector=vector_literal(query),
                )  # fmt: skip
            else:
                statement = sql.search_statement(
                    backend, t, prefix=s.op.namespace_prefix, conditions=s.conditions, now=now,
                    limit=s.limit, offset=s.offset, with_vectors=query is not None,
                )  # fmt: skip
            script.append((statement.sql, statement.params, True))
            readers.append(self._search_reader(s, statement, query, tidb))
        for index, op in p.lists:
            prefix, page = _list_plan(op)
            text, params = sql.namespaces_statement(backend, t, prefix=prefix, now=now, page=page)
            script.append((text, params, True))
            readers.append(lambda rows, index=index, op=op, page=page: [
                (index, _list_result(op, rows, paged=page is not None), [])
            ])  # fmt: skip
        script += [(s, params, False) for s, params in self._writes(p, now, vectors, tidb)]
        readers += [None] * (len(script) - len(readers))
        return script, readers

    def _writes(
        self,
        p: Plan,
        now: int,
        vectors: Mapping[tuple[tuple[str, ...], str], list[tuple[str, list[float]]]],
        tidb: bool,
    ) -> list[tuple[str, list[Any]]]:
        """Idempotent, in an order that a repeat leaves the same: old vectors out, deleted
        items out, items upserted, new vectors in."""
        if not p.puts:
            return []
        backend, t = self.backend, self.tables
        out: list[tuple[str, list[Any]]] = []
        keys = list(p.puts)
        if self.index is not None:
            out += [sql.delete_statement(backend, t.vectors, c) for c in _chunks(keys)]
        deleted = [k for k, put in p.puts.items() if put.value is None]
        out += [sql.delete_statement(backend, t.items, c) for c in _chunks(deleted)]
        rows = [self._item_row(put, now) for put in p.puts.values() if put.value is not None]
        out += [sql.upsert_statement(backend, t, c) for c in _chunks(rows)]
        vector_rows: list[list[Any]] = []
        for (ns, key), found in vectors.items():
            for field, vector in found:
                embedding: Any = vector_literal(vector) if tidb else Binary(pack(vector))
                vector_rows.append([sql.encode_ns(backend, ns), key, field, embedding])
        out += [
            sql.insert_vectors_statement(backend, t, c, tidb_vectors=tidb)
            for c in _chunks(vector_rows)
        ]
        return out

    def _item_row(self, put: Put, now: int) -> list[Any]:
        expires = None if put.ttl is None else now + math.ceil(put.ttl * 60_000_000)
        return [sql.encode_ns(self.backend, put.ns), put.key, put.value, now, now, expires, put.ttl]

    # -- results ----------------------------------------------------------------------------

    def _read_gets(self, p: Plan, rows: list[Any]) -> list[tuple[int, Any, list[Any]]]:
        found: dict[tuple[tuple[str, ...], str], tuple[Item, bool]] = {}
        for row in rows:
            item = _item(Item, row)
            found[(item.namespace, item.key)] = (item, row[5] is not None)
        out: list[tuple[int, Any, list[Any]]] = []
        for g in p.gets:
            hit = found.get((g.ns, g.key))
            refresh = [(g.ns, g.key)] if hit is not None and hit[1] and g.refresh else []
            out.append((g.index, hit[0] if hit else None, refresh))
        return out

    def _search_reader(
        self, s: Search, statement: sql.Search, query: list[float] | None, tidb: bool
    ) -> Any:
        def read(rows: list[Any]) -> list[tuple[int, list[SearchItem], list[Any]]]:
            # (row, score): items are built only for the page, values parsed only when needed.
            ranked: list[tuple[Any, float | None]]
            if query is None:
                ranked = [(row, None) for row in rows]
            elif tidb:
                ranked = [(row, None if row[6] is None else 1.0 - float(row[6])) for row in rows]
            else:
                ranked = _score(rows, query)
            page: list[tuple[SearchItem, bool]] = []
            skip = 0 if statement.paged else s.offset
            for row, score in ranked:
                if len(page) >= s.limit:
                    break
                item = _item(SearchItem, row, score)
                if not statement.paged and not client_match(item.value, s.conditions):
                    continue
                if skip:
                    skip -= 1
                    continue
                page.append((item, row[5] is not None))
            refresh = [(i.namespace, i.key) for i, has in page if has] if s.op.refresh_ttl else []
            return [(s.index, [i for i, _ in page], refresh)]

        return read


def _chunks(rows: Sequence[Any]) -> list[Sequence[Any]]:
    return [rows[i : i + _ROWS_PER_STATEMENT] for i in range(0, len(rows), _ROWS_PER_STATEMENT)]


def _item(cls: Any, row: Sequence[Any], score: float | None = None) -> Any:
    import orjson

    kwargs: dict[str, Any] = {"score": score} if cls is SearchItem else {}
    return cls(
        namespace=sql.decode_ns(row[0]),
        key=sql.decode_key(row[1]),
        value=orjson.loads(row[2]),
        created_at=_time(row[3]),
        updated_at=_time(row[4]),
        **kwargs,
    )


def _score(rows: list[Any], query: list[float]) -> list[tuple[Any, float | None]]:
    """Client-side ranking: each item's best cosine over its vectors, then the items without
    vectors; ties keep the total order the rows came in."""
    scores = iter(similarities(query, [row[6] for row in rows if row[6] is not None]))
    best: dict[tuple[bytes | str, bytes | str], list[Any]] = {}
    for row in rows:
        key = (row[0], row[1])
        entry = best.get(key)
        score = None if row[6] is None else next(scores)
        if entry is None:
            best[key] = [row, score]
        elif score is not None and (entry[1] is None or score > entry[1]):
            entry[1] = score
    entries = list(best.values())
    scored = sorted((e for e in entries if e[1] is not None), key=lambda e: -e[1])
    unscored = [e for e in entries if e[1] is None]
    return [(row, score) for row, score in scored + unscored]


def _list_plan(op: ListNamespacesOp) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The literal prefix SQL can select by, and whether SQL can page (nothing left for the
    client to filter or truncate)."""
    prefix: tuple[str, ...] = ()
    exact = op.max_depth is None
    for cond in op.match_conditions or ():
        if cond.match_type == "prefix" and not prefix:
            literal = []
            for label in cond.path:
                if label == "*":
                    exact = False
                    break
                literal.append(label)
            prefix = tuple(literal)
        else:
            exact = False
    return prefix, ((op.limit, op.offset) if exact else None)


def _matches(cond: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(cond.path)
    if len(ns) < len(path):
        return False
    part = ns[: len(path)] if cond.match_type == "prefix" else ns[len(ns) - len(path) :]
    return all(p == "*" or p == label for p, label in zip(path, part, strict=True))


def _list_result(op: ListNamespacesOp, rows: list[Any], *, paged: bool) -> list[tuple[str, ...]]:
    found = [sql.decode_ns(row[0]) for row in rows]
    if paged:
        return found
    found = [ns for ns in found if all(_matches(c, ns) for c in op.match_conditions or ())]
    if op.max_depth is not None:
        found = sorted({ns[: op.max_depth] for ns in found})
    return found[op.offset : op.offset + op.limit]


#: The same class: one object serves sync and async callers.
TiDBStore = AsyncTiDBStore
