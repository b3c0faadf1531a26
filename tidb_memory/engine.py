"""The shared handle: :class:`Database` (an engine per event loop, checkout, crossing loops and
threads, closing), :func:`get_database`, :func:`create_engine` and :func:`aclose_all`.

* :class:`Database` is the shared handle for one URL and pool configuration. An ``AsyncEngine``'s
  connections belong to the event loop that opened them, so a URL gets one pool per running loop,
  created on first use and disposed when that loop shuts down (``asyncio.run``, ``Runner.close``,
  pytest-asyncio). Synchronous callers run on the bridge's background loop, which is just another
  loop here. An engine passed in by the application is used as is, pinned to the loop that first
  uses it.
* :meth:`Database.connection` hands out the driver's own connection from SQLAlchemy's pool. The
  two hot statements run on the driver's cursor: SQLAlchemy keeps the pool, URLs, dialects and DDL,
  and the per-statement overhead of Core is skipped where it would double the cost of a turn.

The parts live beside it: URLs in ``_url``, TLS in ``_tls``, drivers in ``_driver``, statement
text in ``_render``, per-process registries in ``_process``, write grouping in ``_writes``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool
from sqlalchemy.util import greenlet_spawn

from . import _bridge, _process
from ._driver import INIT_COMMAND as INIT_COMMAND
from ._driver import Connection as Connection
from ._driver import _checkin, _discard, _reusable, in_transaction, load_aiomysql
from ._driver import _mysql_creator as _mysql_creator
from ._driver import _sqlite_creator as _sqlite_creator
from ._idle import IdleConnections
from ._process import _databases as _databases
from ._process import _dispose, _resources_for, track_tls
from ._process import _loops as _loops
from ._render import Binary as Binary
from ._tls import TLS_CLOSE_GRACE as TLS_CLOSE_GRACE
from ._tls import TLSSettings as TLSSettings
from ._url import DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT
from ._url import DEFAULT_MAX_OVERFLOW as DEFAULT_MAX_OVERFLOW
from ._url import DEFAULT_POOL_IDLE_TIMEOUT as DEFAULT_POOL_IDLE_TIMEOUT
from ._url import DEFAULT_POOL_RECYCLE as DEFAULT_POOL_RECYCLE
from ._url import DEFAULT_POOL_SIZE as DEFAULT_POOL_SIZE
from ._url import DEFAULT_POOL_TIMEOUT as DEFAULT_POOL_TIMEOUT
from ._url import DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT
from ._url import TIDB_CLOUD_POOL_RECYCLE as TIDB_CLOUD_POOL_RECYCLE
from ._url import Backend as Backend
from ._url import ConnectionSpec as ConnectionSpec
from ._url import _engine_kwargs
from ._url import parse_url as parse_url
from ._writes import _WriteGroup, execute_atomic
from .errors import ConfigurationError, SyncCallError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_IDLE_TIMEOUT",
    "DEFAULT_POOL_RECYCLE",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "TIDB_CLOUD_POOL_RECYCLE",
    "Binary",
    "ConnectionSpec",
    "Database",
    "aclose_all",
    "close_all",
    "create_engine",
    "get_database",
    "parse_url",
]

T = TypeVar("T")


def create_engine(url: str | URL, *, engine_args: Mapping[str, Any] | None = None) -> AsyncEngine:
    """Create an ``AsyncEngine`` configured the way tidb-memory needs it.

    Use this when the application wants to own the engine (and pass it as ``engine=``): TLS
    parameters become a verifying ``SSLContext``, connections run in autocommit under READ
    COMMITTED, and returning a connection to the pool costs no round trip.

    Example::

        engine = create_engine("mysql+aiomysql://root@127.0.0.1:3306/test")
        history = AsyncTiDBChatMessageHistory("s1", engine=engine)
        ...
        await engine.dispose()

    Raises:
        ConfigurationError: the URL or an engine argument is not supported.
    """
    spec = parse_url(url)
    if engine_args and "pool_idle_timeout" in engine_args:
        raise ConfigurationError(
            "pool_idle_timeout applies to URLs only: an engine you own keeps SQLAlchemy's pool"
        )
    engine = _create_engine(spec, _engine_kwargs(spec, engine_args or {}))
    _created.add(engine.sync_engine)
    return engine


#: The engines :func:`create_engine` made: their connections autocommit, and their pool returns
#: a connection without a reset.
_created: weakref.WeakSet[Engine] = weakref.WeakSet()


def _create_engine(spec: ConnectionSpec, kwargs: Mapping[str, Any]) -> AsyncEngine:
    kwargs = {k: v for k, v in kwargs.items() if k != "pool_idle_timeout"}
    if spec.backend == "mysql":
        creator = _mysql_creator(spec, track_tls)
        # The URL is kept only for the dialect; the creator makes every connection.
        return create_async_engine(spec.url, async_creator=creator, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "pool_recycle"}
    return create_async_engine(spec.url, async_creator=_sqlite_creator(spec), **kwargs)


class Database:
    """The shared handle for one URL (or one application engine) and its pool settings.

    Histories built from equal URLs get the same ``Database`` and so share pools. Nothing here
    connects until a coroutine asks for a :meth:`connection`.
    """

    def __init__(
        self,
        spec: ConnectionSpec,
        *,
        key: str,
        engine_kwargs: Mapping[str, Any] | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.spec = spec
        self.key = key
        self.backend: Backend = spec.backend
        self._engine_kwargs = dict(engine_kwargs or {})
        self._pinned_engine = engine
        #: An engine the application configured itself (not by :func:`create_engine`): its
        #: connections may be in a transaction after our statements, and its pool may reset
        #: (roll back) a connection when it is returned, which needs a greenlet.
        self._app_pool = engine is not None and engine.sync_engine not in _created
        self._pinned_loop: asyncio.AbstractEventLoop | None = None
        self._pin_lock = threading.Lock()
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _WriteGroup] = (
            weakref.WeakKeyDictionary()
        )
        self._groups_lock = threading.Lock()
        self.server_info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Database {self.spec.display}>"

    def _forget_process(self) -> object:
        """In a forked child: drop the parent's write groups and, for an application engine,
        its loop and pooled connections (the engine gets an empty pool, as SQLAlchemy's
        ``dispose(close=False)`` gives). Returns what was dropped, for the caller to keep."""
        inherited: list[object] = [self._groups]
        self._groups = weakref.WeakKeyDictionary()
        self._groups_lock = threading.Lock()
        if self._pinned_engine is not None:
            inherited += [self._pinned_loop, self._pinned_engine.sync_engine.pool]
            self._pinned_loop = None
            self._pin_lock = threading.Lock()
            self._pinned_engine.sync_engine.dispose(close=False)
        return inherited

    # -- engines

    async def engine(self) -> AsyncEngine:
        """The engine to use from the running loop (created on first use)."""
        loop = asyncio.get_running_loop()
        if self._pinned_engine is not None:
            if self._pinned_loop is None:
                self._pinned_loop = loop
            return self._pinned_engine
        resources = _loops.get(loop)
        if resources is None:
            resources = await _resources_for(loop)
        engine = resources.engines.get(self.key)
        if engine is None:
            # Off the loop: building an engine reads files (a TLS context loads its CA and key;
            # SQLAlchemy's SQLite dialect calls os.path.abspath). Once per loop and database.
            created = await asyncio.to_thread(_create_engine, self.spec, self._engine_kwargs)
            engine = resources.engines.setdefault(self.key, created)
        return engine

    async def _source(self) -> tuple[Pool, IdleConnections | None]:
        """The pool to check connections out of on the running loop, and the idle connections
        kept in front of it: none for an engine the application passed in (its owner disposes
        it), nor with ``pool_pre_ping`` (a ping per checkout is what that asks for)."""
        if self._pinned_engine is None:
            resources = _loops.get(asyncio.get_running_loop())
            idle = None if resources is None else resources.idle.get(self.key)
            if idle is not None:
                return idle.pool, idle
        pool = (await self.engine()).sync_engine.pool
        if self._pinned_engine is not None or pool._pre_ping:
            return pool, None
        resources = _loops[asyncio.get_running_loop()]
        idle = resources.idle.get(self.key)
        if idle is None or idle.pool is not pool:
            timeout = float(self._engine_kwargs.get("pool_idle_timeout", DEFAULT_POOL_IDLE_TIMEOUT))
            idle = resources.idle[self.key] = IdleConnections(pool, timeout)
        return pool, idle

    def connection(self) -> _Checkout:
        """Check a driver connection out of the pool for the running loop:
        ``async with db.connection() as conn: ...``.

        A connection whose use ended in a broken state (a lost connection, a cancelled query,
        anything but a complete server reply) is discarded instead of being returned. A lost
        connection also marks every older connection of the pool stale, as SQLAlchemy does, so
        a server restart costs one failed attempt, not one per pooled connection.
        """
        return _Checkout(self)

    async def execute_grouped(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, max_bytes: int
    ) -> None:
        """Run idempotent write ``statements`` in order, sharing one connection and one
        round trip with the other writes submitted in the same event-loop iteration.

        Concurrent writers (the pending writes and checkpoints of many graph runs) then cost a
        round trip per iteration instead of one each. If a shared attempt fails, nobody can tell
        which statements ran, so every member runs its own statements again, alone: that is
        only safe for statements that change nothing when repeated, which is why only those may
        come here. A member's error is then its own, as if it had never shared.
        """
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            with self._groups_lock:
                group = self._groups.setdefault(loop, _WriteGroup(self))
        if await group.join(statements, max_bytes):
            return
        async with self.connection() as conn:
            await execute_atomic(conn, statements, max_bytes)

    # -- crossing loops and threads

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the loop that owns this database's engine.

        A URL has an engine on every loop, so this is a plain await. An application engine is
        pinned to the loop that first used it; callers on other loops are sent there.
        """
        if self._pinned_engine is None:
            return await fn(*args)
        loop = asyncio.get_running_loop()
        target = self._pinned_loop
        if target is None:
            # Pin now, not at the first checkout: two first calls from two loops at once would
            # otherwise both run on their own loop and mix loops in one pool.
            with self._pin_lock:
                if self._pinned_loop is None:
                    self._pinned_loop = loop
                target = self._pinned_loop
        if target is loop:
            return await fn(*args)
        if target.is_closed() or not target.is_running():
            raise ConfigurationError(
                "the AsyncEngine passed as engine= belongs to an event loop that is no longer "
                "running; pass a connection URL instead to get a pool per event loop"
            )
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args), target))

    def run_sync(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` to completion from synchronous code, on the right loop."""
        if self._pinned_engine is not None and self._pinned_loop is not None:
            target = self._pinned_loop
            if target is not _bridge.BRIDGE.loop_or_none():
                return _bridge.call_on(target, fn, *args, **kwargs)
        return _bridge.BRIDGE.call(fn, *args, **kwargs)

    # -- lifecycle

    async def aclose(self, *, _blocked: asyncio.AbstractEventLoop | None = None) -> None:
        """Close every pooled connection of this database, on every loop that has some.

        The handle stays usable: the next call opens new connections. An engine passed in by
        the application is left alone; its owner disposes it.
        """
        if self._pinned_engine is not None:
            return
        current = asyncio.get_running_loop()
        for loop, resources in list(_loops.items()):
            engine = resources.engines.pop(self.key, None)
            idle = resources.idle.pop(self.key, None)
            if engine is None:
                continue
            if loop is current:
                await _dispose(engine, resources, idle)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(_dispose(engine, resources, idle), loop)
                # A loop whose thread is blocked waiting for us (a sync close_all() called from
                # a notebook cell) runs the dispose when it resumes; waiting would deadlock.
                if loop is not _blocked:
                    await asyncio.wrap_future(future)
            else:
                # A stopped loop cannot run the close handshake; forget the connections and let
                # that loop's shutdown (or the process exit) drop them.
                await greenlet_spawn(engine.sync_engine.dispose, False)

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        _bridge.BRIDGE.call(self.aclose, _blocked=_caller_loop())


class _Checkout:
    """The context manager :meth:`Database.connection` returns (a class, not a generator: it
    runs on every call, and a generator-based one costs more than the checkout itself)."""

    __slots__ = ("_db", "_fairy", "_idle", "_pool")

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __aenter__(self) -> Connection:
        db = self._db
        self._pool, self._idle = pool, idle = await db._source()
        if idle is not None:
            self._fairy = fairy = await idle.connect()
        else:
            self._fairy = fairy = await greenlet_spawn(pool.connect)
        return Connection(fairy, db.backend, db.spec.read_timeout)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._db._app_pool:
            await self._return_to_app_pool(exc)
            return
        idle = self._idle
        if exc is None or _reusable(exc):
            if idle is not None:
                idle.put(self._fairy)
            else:
                await _checkin(self._pool, self._fairy)
            return
        try:
            await greenlet_spawn(_discard, self._pool, self._fairy, exc)
        finally:
            if idle is not None:
                idle.wake()  # the pool has room for a new connection

    async def _return_to_app_pool(self, exc: BaseException | None) -> None:
        """End what our statements left open on an application engine's connection (commit
        after success, roll back after an error), then return it through the pool's own reset,
        in a greenlet: the connection is then as the application's pool expects it."""
        db, pool, fairy = self._db, self._pool, self._fairy
        if exc is not None and not _reusable(exc):
            await greenlet_spawn(_discard, pool, fairy, exc)
            return
        driver: Any = fairy.driver_connection
        if in_transaction(driver, db.backend):
            try:
                async with asyncio.timeout(db.spec.read_timeout):
                    await (driver.commit() if exc is None else driver.rollback())
            except BaseException as end_exc:
                await greenlet_spawn(_discard, pool, fairy, end_exc)
                raise
        await greenlet_spawn(fairy.close)


def get_database(
    url: str | URL | None = None,
    *,
    engine: AsyncEngine | None = None,
    engine_args: Mapping[str, Any] | None = None,
) -> Database:
    """The shared :class:`Database` for a URL (or an application engine). No I/O.

    Raises:
        ConfigurationError: neither or both of ``url`` and ``engine`` were given, or the URL or an
            engine argument is not supported.
    """
    if engine is not None:
        if url is not None:
            raise ConfigurationError("pass either connection_string or engine, not both")
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"engine must be a sqlalchemy AsyncEngine, not {type(engine).__name__}"
            )
        if engine_args:
            raise ConfigurationError("engine_args apply to URLs only; configure your engine")
        backend = engine.dialect.name
        drivername = {"mysql": "mysql+aiomysql", "sqlite": "sqlite+aiosqlite"}.get(backend)
        if drivername is None or engine.url.drivername != drivername:
            raise ConfigurationError(
                f"engine uses {engine.url.drivername!r}; tidb-memory needs mysql+aiomysql "
                "or sqlite+aiosqlite"
            )
        if backend == "mysql":
            load_aiomysql()  # our statements run on our cursor class, on any engine
        key = f"engine:{id(engine):x}"
        with _process._databases_lock:
            db = _databases.get(key)
            if db is None or db._pinned_engine is not engine:
                db = Database(parse_url(engine.url), key=key, engine=engine)
                _databases[key] = db
        return db
    if url is None:
        raise ConfigurationError("a connection_string or an engine is required")
    args = dict(engine_args or {})
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    # A digest, not the text: the registry must not hold the password in clear.
    key = hashlib.sha256(f"{text}\x00{sorted(args.items())!r}".encode()).hexdigest()
    db = _databases.get(key)
    if db is not None:
        return db
    spec = parse_url(url)
    if spec.backend == "sqlite":
        _sqlite_creator(spec)  # refuses an in-memory database at construction (no I/O)
    kwargs = _engine_kwargs(spec, args)
    with _process._databases_lock:
        db = _databases.get(key)
        if db is None:
            db = Database(spec, key=key, engine_kwargs=kwargs)
            _databases[key] = db
    return db


def _caller_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def aclose_all(*, _blocked: asyncio.AbstractEventLoop | None = None) -> None:
    """Close every pool tidb-memory opened, on every loop. For application shutdown.

    Example (a FastAPI lifespan)::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            await tidb_memory.aclose_all()
    """
    for db in list(_databases.values()):
        await db.aclose(_blocked=_blocked)


def close_all() -> None:
    """Close every pool and stop the background loop; the synchronous :func:`aclose_all`.

    It also runs at interpreter exit. tidb-memory stays usable afterwards: the next call starts
    over.
    """
    if _bridge.BRIDGE.running:
        with contextlib.suppress(SyncCallError):
            _bridge.BRIDGE.call(aclose_all, _blocked=_caller_loop())
    _bridge.BRIDGE.stop()


atexit.register(close_all)
