"""URL -> engine: parsing, TLS, pool defaults, and the registry of shared pools.

* :func:`parse_url` turns a URL into a :class:`ConnectionSpec` without any I/O. It accepts
  ``mysql://``, ``mysql+pymysql://``, ``mysql+aiomysql://`` and ``sqlite+aiosqlite://``, and the
  TiDB Cloud form ``?ssl_ca=...&ssl_verify_cert=true&ssl_verify_identity=true``, whose ``ssl_*``
  parameters become a verifying :class:`ssl.SSLContext` (aiomysql accepts nothing else).
* :class:`Database` is the shared handle for one URL and pool configuration. An ``AsyncEngine``'s
  connections belong to the event loop that opened them, so a URL gets one pool per running loop,
  created on first use and disposed when that loop shuts down (``asyncio.run``, ``Runner.close``,
  pytest-asyncio). Synchronous callers run on the bridge's background loop, which is just another
  loop here. An engine passed in by the application is used as is, pinned to the loop that first
  uses it.
* :meth:`Database.connection` hands out the driver's own connection from SQLAlchemy's pool. The
  two hot statements run on the driver's cursor: SQLAlchemy keeps the pool, URLs, dialects and DDL,
  and the per-statement overhead of Core is skipped where it would double the cost of a turn.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import sqlite3
import ssl
import threading
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from . import _bridge
from ._iteration import IterationGroup
from ._retry import Verdict, classify, error_code
from .errors import ConfigurationError, InsecureTransportError, SyncCallError, TiDBMemoryError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
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

logger = logging.getLogger("tidb_memory")

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds one statement may wait for its reply. aiomysql has no read timeout of its own, so a
#: connection whose peer falls silent (a half-dead network path) would otherwise wait forever.
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 20
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_POOL_RECYCLE = 3600
#: TiDB Cloud may end connections older than 30 minutes; its docs recommend recycling at 5.
TIDB_CLOUD_POOL_RECYCLE = 300
#: The most seconds closing a pool waits for its TLS connections' close handshakes.
TLS_CLOSE_GRACE = 1.0
#: MySQL and MariaDB take gap locks under REPEATABLE READ, which makes the ``MAX(seq)`` append
#: deadlock against appends to *other* sessions. READ COMMITTED has none; TiDB has none either.
INIT_COMMAND = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
#: pymysql.constants.CLIENT.MULTI_STATEMENTS, without importing the driver for SQLite users.
_MULTI_STATEMENTS = 1 << 16
#: pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES, likewise.
_NO_BACKSLASH_ESCAPES = 1 << 9

Backend = Literal["mysql", "sqlite"]

_SCHEMES: dict[str, Backend] = {
    "mysql": "mysql",
    "mysql+pymysql": "mysql",
    "mysql+aiomysql": "mysql",
    "sqlite+aiosqlite": "sqlite",
}
_TLS_PARAMS = frozenset(
    {
        "ssl",
        "ssl_ca",
        "ssl_capath",
        "ssl_cert",
        "ssl_key",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "ssl_check_hostname",
    }
)
_OTHER_PARAMS = frozenset({"charset", "connect_timeout", "read_timeout", "unix_socket"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_ENGINE_ARGS = frozenset(
    {"pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping", "echo"}
)


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"URL parameter {name}={value!r} is not a boolean (use true or false)")


def _seconds(values: dict[str, str], name: str, default: float) -> float:
    try:
        seconds = float(values.pop(name, default))
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number of seconds") from exc
    if not 0 < seconds <= 3600:
        raise ConfigurationError(f"{name} must be between 0 and 3600 seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """What the URL asked of TLS. :meth:`context` builds the verifying ``SSLContext``."""

    ca: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None
    verify_cert: bool = True
    verify_identity: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context: system CA store unless ``ca``/``capath`` is given; hostname checked."""
        ctx = ssl.create_default_context(cafile=self.ca, capath=self.capath)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        if not self.verify_cert:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif not self.verify_identity:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """A parsed, validated URL. Building one does no I/O.

    Attributes:
        backend: ``"mysql"`` (MySQL, MariaDB, TiDB) or ``"sqlite"``.
        url: the SQLAlchemy URL for the async driver, with TLS parameters removed.
        tls: TLS settings, or ``None`` for plaintext.
        tidb_cloud: the host is a TiDB Cloud endpoint.
        connect_timeout: seconds allowed for one connection attempt.
        read_timeout: seconds one statement may wait for its reply (MySQL family).
    """

    backend: Backend
    url: URL
    tls: TLSSettings | None = None
    tidb_cloud: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    @property
    def display(self) -> str:
        """The URL with its password masked: safe for messages and logs."""
        return self.url.render_as_string(hide_password=True)


def parse_url(url: str | URL) -> ConnectionSpec:
    """Parse and check a connection URL; no I/O.

    Example::

        >>> parse_url("mysql+pymysql://u:pw@gateway01.x.prod.aws.tidbcloud.com:4000/db").tls
        TLSSettings(ca=None, capath=None, cert=None, key=None, verify_cert=True, ...)

    Raises:
        ConfigurationError: the scheme or a parameter is not supported.
    """
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a non-numeric port
            raise ConfigurationError(
                "cannot parse the connection URL; expected e.g. "
                "mysql+aiomysql://user:password@host:4000/database"
            ) from exc
    elif isinstance(url, URL):
        parsed = url
    else:
        raise ConfigurationError(
            f"connection_string must be a str or URL, not {type(url).__name__}"
        )
    backend = _SCHEMES.get(parsed.drivername)
    if backend is None:
        raise ConfigurationError(
            f"unsupported URL scheme {parsed.drivername!r}; use one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    if backend == "sqlite":
        if parsed.query:
            raise ConfigurationError("sqlite+aiosqlite URLs take no query parameters")
        return ConnectionSpec(backend="sqlite", url=parsed)

    query = dict(parsed.query)
    unknown = sorted(set(query) - _TLS_PARAMS - _OTHER_PARAMS)
    if unknown:
        raise ConfigurationError(
            f"unsupported URL parameter(s) {', '.join(unknown)}; supported: "
            + ", ".join(sorted(_TLS_PARAMS | _OTHER_PARAMS))
        )
    values: dict[str, str] = {}
    for name, value in query.items():
        if not isinstance(value, str):
            raise ConfigurationError(f"URL parameter {name} is given more than once")
        values[name] = value
    charset = values.pop("charset", "utf8mb4")
    if charset.lower() != "utf8mb4":
        raise ConfigurationError(f"charset={charset!r} is not supported; messages need utf8mb4")
    timeout = _seconds(values, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    read_timeout = _seconds(values, "read_timeout", DEFAULT_READ_TIMEOUT)

    host = parsed.host or ""
    tidb_cloud = host.lower().endswith(".tidbcloud.com")
    tls_asked = any(name in _TLS_PARAMS for name in values)
    if "ssl" in values and not _flag("ssl", values["ssl"]):
        if tidb_cloud:
            raise ConfigurationError("TiDB Cloud accepts TLS connections only; remove ssl=false")
        if len(set(values) & _TLS_PARAMS) > 1:
            raise ConfigurationError("ssl=false contradicts the other ssl_* parameters")
        tls_asked = False
    tls: TLSSettings | None = None
    if tls_asked or tidb_cloud:
        for name in ("ssl_ca", "ssl_cert", "ssl_key"):
            if name in values and not os.path.isfile(values[name]):
                raise ConfigurationError(f"{name}: no such file: {values[name]!r}")
        if "ssl_capath" in values and not os.path.isdir(values["ssl_capath"]):
            raise ConfigurationError(f"ssl_capath: no such directory: {values['ssl_capath']!r}")
        verify_cert = _flag("ssl_verify_cert", values.get("ssl_verify_cert", "true"))
        identity = values.get("ssl_verify_identity", values.get("ssl_check_hostname", "true"))
        tls = TLSSettings(
            ca=values.get("ssl_ca"),
            capath=values.get("ssl_capath"),
            cert=values.get("ssl_cert"),
            key=values.get("ssl_key"),
            verify_cert=verify_cert,
            verify_identity=verify_cert and _flag("ssl_verify_identity", identity),
        )
    kept = {"unix_socket": values["unix_socket"]} if "unix_socket" in values else {}
    normal = parsed.set(drivername="mysql+aiomysql", query=kept)
    return ConnectionSpec(
        backend="mysql",
        url=normal,
        tls=tls,
        tidb_cloud=tidb_cloud,
        connect_timeout=timeout,
        read_timeout=read_timeout,
    )


def _engine_kwargs(spec: ConnectionSpec, engine_args: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(engine_args) - _ENGINE_ARGS)
    if unknown:
        raise ConfigurationError(
            f"unsupported engine_args {', '.join(unknown)}; supported: "
            + ", ".join(sorted(_ENGINE_ARGS))
        )
    kwargs: dict[str, Any] = {
        "pool_size": DEFAULT_POOL_SIZE,
        "max_overflow": DEFAULT_MAX_OVERFLOW,
        "pool_timeout": DEFAULT_POOL_TIMEOUT,
        "pool_recycle": TIDB_CLOUD_POOL_RECYCLE if spec.tidb_cloud else DEFAULT_POOL_RECYCLE,
        # Connections run in autocommit: there is nothing to roll back when one is returned,
        # and a ROLLBACK per checkin would double the round trips of every call.
        "pool_reset_on_return": None,
        "pool_pre_ping": False,
    }
    kwargs.update(engine_args)
    return kwargs


def _mysql_creator(spec: ConnectionSpec) -> Callable[[], Awaitable[Any]]:
    import aiomysql
    import pymysql

    class Cursor(aiomysql.Cursor):  # type: ignore[misc]
        async def _show_warnings(self, conn: Any) -> None:
            # aiomysql sends SHOW WARNINGS after any statement with a warning, which is one more
            # round trip (and a Python warning) per call. Strict SQL mode, the default on TiDB,
            # MySQL and MariaDB, already turns the warnings that matter into errors.
            return None

    class DriverConnection(aiomysql.Connection):  # type: ignore[misc]
        async def ensure_closed(self) -> None:
            # The pool closes connections with ensure_closed(), which says goodbye (COM_QUIT)
            # first. On a connection the network already reset that fails, and aiomysql then
            # leaves the socket open (and the pool logs an error): close it whatever happens;
            # a goodbye the peer cannot hear is not an error.
            try:
                with contextlib.suppress(OSError):
                    await super().ensure_closed()
            finally:
                self.close()

    url = spec.url
    context = spec.tls.context() if spec.tls is not None else None
    connect_kwargs: dict[str, Any] = {
        "host": url.host or "localhost",
        "port": url.port or 3306,
        "user": url.username or "",
        "password": url.password or "",
        "db": url.database,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": spec.connect_timeout,
        "init_command": INIT_COMMAND,
        "local_infile": False,
        "ssl": context,
        "cursorclass": Cursor,
    }
    if "unix_socket" in url.query:
        connect_kwargs["unix_socket"] = url.query["unix_socket"]

    async def connect() -> Any:
        # aiomysql bounds only the TCP connect by connect_timeout; the greeting, TLS, auth and
        # init_command could wait forever on a server that accepts and never answers. Bound
        # the whole handshake, and close the half-open connection on any failure.
        conn = DriverConnection(**connect_kwargs)
        try:
            async with asyncio.timeout(spec.connect_timeout):
                await conn._connect()
                if context is not None:
                    # aiomysql quietly stays in plaintext when the server offers no TLS.
                    cur = conn.cursorclass(conn, False)
                    await cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
                    row = await cur.fetchone()
        except TimeoutError as exc:
            conn.close()
            raise pymysql.err.OperationalError(
                2003,
                f"Can't connect to MySQL server on {connect_kwargs['host']!r}: no handshake "
                f"within {spec.connect_timeout:g}s",
            ) from exc
        except BaseException:
            conn.close()
            raise
        if context is not None and (not row or not row[1]):
            conn.close()
            raise InsecureTransportError(
                f"TLS was required for {spec.display}, but the server did not enable it "
                "(Ssl_cipher is empty); refusing a plaintext session",
                operation="connect",
            )
        if context is not None:
            resources = _loops.get(asyncio.get_running_loop())
            if resources is not None:
                resources.tls.add(conn._writer.transport)
        return conn

    return connect


def _sqlite_creator(spec: ConnectionSpec) -> Callable[[], Awaitable[Any]]:
    import aiosqlite

    database = spec.url.database or ":memory:"
    if database == ":memory:":
        raise ConfigurationError(
            "an in-memory SQLite database cannot be shared between connections; "
            "use a file, e.g. sqlite+aiosqlite:///chat.db"
        )

    async def connect() -> Any:
        # isolation_level=None: autocommit, so every statement commits by itself, as on MySQL.
        conn = await aiosqlite.connect(database, isolation_level=None, timeout=30.0)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            await conn.close()
            raise
        return conn

    return connect


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
    return _create_engine(spec, _engine_kwargs(spec, engine_args or {}))


def _create_engine(spec: ConnectionSpec, kwargs: Mapping[str, Any]) -> AsyncEngine:
    if spec.backend == "mysql":
        creator = _mysql_creator(spec)
        # The URL is kept only for the dialect; the creator makes every connection.
        return create_async_engine(spec.url, async_creator=creator, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "pool_recycle"}
    return create_async_engine(spec.url, async_creator=_sqlite_creator(spec), **kwargs)


# --- the per-loop registry -----------------------------------------------------------------


@dataclass(eq=False)
class _LoopResources:
    """Everything tidb-memory holds on one event loop: an engine per Database key."""

    loop: asyncio.AbstractEventLoop
    engines: dict[str, AsyncEngine] = field(default_factory=dict)
    sentinel: AsyncGenerator[None, None] | None = None
    #: TLS transports of the connections opened here, to wait for their close handshake.
    tls: weakref.WeakSet[asyncio.BaseTransport] = field(default_factory=weakref.WeakSet)


_registry_lock = threading.Lock()
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = (
    weakref.WeakKeyDictionary()
)


async def _dispose(engine: AsyncEngine, resources: _LoopResources) -> None:
    """Dispose of ``engine``'s pool on its own loop, and let its TLS connections finish closing.

    Closing a TLS connection is a handshake (close_notify, then the server's FIN) that runs on
    the loop after ``dispose()`` returns. A loop closed before it completes leaks the sockets
    (``ResourceWarning: unclosed transport``), so wait for it, at most ``TLS_CLOSE_GRACE``.
    """
    await engine.dispose()
    step = 0.002
    for _ in range(round(TLS_CLOSE_GRACE / step)):
        if not any(map(_tls_closing, list(resources.tls))):
            return
        await asyncio.sleep(step)


def _tls_closing(transport: asyncio.BaseTransport) -> bool:
    """True while ``transport`` is closing and its socket is still open."""
    if not transport.is_closing():
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() != -1


async def _dispose_all(resources: _LoopResources) -> None:
    engines = list(resources.engines.values())
    resources.engines.clear()
    for engine in engines:
        with contextlib.suppress(Exception):
            await _dispose(engine, resources)


async def _loop_sentinel(resources: _LoopResources) -> AsyncGenerator[None, None]:
    # An async generator left suspended on the loop: the loop closes it in shutdown_asyncgens()
    # (asyncio.run, Runner.close, pytest-asyncio), while it can still run coroutines. That is
    # the last moment the loop's connections can be closed cleanly, without "Event loop is
    # closed" noise when they are collected later.
    try:
        yield
    finally:
        with _registry_lock:
            _loops.pop(resources.loop, None)
        await _dispose_all(resources)


async def _resources_for(loop: asyncio.AbstractEventLoop) -> _LoopResources:
    resources = _loops.get(loop)
    if resources is not None:
        return resources
    with _registry_lock:
        resources = _loops.get(loop)
        if resources is None:
            resources = _LoopResources(loop)
            _loops[loop] = resources
            created = True
        else:
            created = False
    if created:
        sentinel = _loop_sentinel(resources)
        resources.sentinel = sentinel
        await sentinel.__anext__()
    return resources


# --- statements ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binary:
    """A ``bytes`` parameter.

    aiomysql cannot send ``bytes`` under PyMySQL >= 1.2, so on MySQL and TiDB the value is
    written into the statement as ``FROM_BASE64('...')``: base64 needs no escaping and is half
    the size of hex. SQLite receives the bytes themselves.
    """

    data: bytes


def _render(driver: Any, sql: str, params: Sequence[Any]) -> str:
    """``sql`` with its ``%s`` placeholders replaced by ``params`` as MySQL literals.

    The driver then receives finished text and never a parameter. Text is escaped here (see
    :func:`_escape`), other types by the driver.
    """
    backslashes = not driver.server_status & _NO_BACKSLASH_ESCAPES
    literals: list[str] = []
    for value in params:
        kind = type(value)
        if kind is str:
            text = _escape(value) if backslashes else value.replace("'", "''")
            literals.append("'" + text + "'")
        elif kind is Binary:
            literals.append("FROM_BASE64('" + base64.b64encode(value.data).decode("ascii") + "')")
        elif kind is int:
            literals.append(str(value))
        elif value is None:
            literals.append("NULL")
        else:
            literals.append(driver.escape(value))
    return sql % tuple(literals)


def _escape(text: str) -> str:
    """``text`` for a single-quoted literal, with MySQL's backslash escapes.

    The characters mysql_real_escape_string escapes, less the double quote, which needs none
    inside single quotes. pymysql's ``escape_string`` (``str.translate``) takes 58 µs for a
    1.9 KB JSON document, most of it on the quotes; a C scan per character here takes 5 µs.
    """
    return (
        text.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\0", "\\0")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\x1a", "\\Z")
    )


def _sqlite_params(params: Sequence[Any]) -> list[Any]:
    return [value.data if type(value) is Binary else value for value in params]


# --- the Database handle -------------------------------------------------------------------


class Connection:
    """One pooled driver connection, with the two calls the store needs.

    ``fetchall`` and ``execute`` send exactly one statement each: one round trip.
    """

    __slots__ = ("backend", "driver", "read_timeout")

    def __init__(self, fairy: PoolProxiedConnection, backend: Backend, read_timeout: float) -> None:
        self.backend = backend
        self.driver: Any = fairy.driver_connection
        self.read_timeout = read_timeout

    async def fetchall(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one query and return all its rows."""
        if self.backend == "mysql":
            # The cursor class directly: Connection.cursor() wraps it in a future per call.
            cur = self.driver.cursorclass(self.driver, False)
            async with asyncio.timeout(self.read_timeout):
                await cur.execute(_render(self.driver, sql, params))
            return list(cur._rows or ())
        return list(await self.driver.execute_fetchall(sql, _sqlite_params(params)))

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement and return the number of rows it changed."""
        if self.backend == "mysql":
            cur = self.driver.cursorclass(self.driver, False)
            # A timed-out statement leaves the connection mid-reply: TimeoutError counts as a
            # lost connection, so the pool discards it and the retry policy decides.
            async with asyncio.timeout(self.read_timeout):
                return await cur.execute(_render(self.driver, sql, params))  # type: ignore[no-any-return]
        cursor = await self.driver.execute(sql, _sqlite_params(params))
        count: int = cursor.rowcount
        await cursor.close()
        return count

    async def execute_all(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, max_bytes: int
    ) -> None:
        """Run ``statements`` in order, stopping at the first that fails.

        On MySQL and TiDB consecutive statements travel together as one multi-statement query
        of at most ``max_bytes`` (one round trip instead of one each); the server runs them in
        order and stops at the first error, exactly as separate calls would. aiomysql always
        asks for multi-statement support; every value is escaped as in :meth:`execute`.
        """
        if self.backend != "mysql" or not self.driver.client_flag & _MULTI_STATEMENTS:
            for sql, params in statements:
                await self.execute(sql, params)
            return
        group: list[str] = []
        size = 0
        for sql, params in statements:
            text = _render(self.driver, sql, params)
            if group and size + len(text) > max_bytes:
                await self._send(";".join(group))
                group, size = [], 0
            group.append(text)
            size += len(text) + 1
        if group:
            await self._send(";".join(group))

    async def fetch_script(
        self, statements: Sequence[tuple[str, Sequence[Any], bool]], *, max_bytes: int
    ) -> list[list[Any] | None]:
        """Run ``(sql, params, wants_rows)`` statements in order, stopping at the first that
        fails, and return the rows of those that want them (``None`` for the others).

        As :meth:`execute_all`, consecutive statements travel as one multi-statement query of
        at most ``max_bytes`` on MySQL and TiDB: a batch of reads and writes is one round trip.
        """
        if self.backend != "mysql" or not self.driver.client_flag & _MULTI_STATEMENTS:
            out: list[list[Any] | None] = []
            for sql, params, wants in statements:
                if wants:
                    out.append(await self.fetchall(sql, params))
                else:
                    await self.execute(sql, params)
                    out.append(None)
            return out
        results: list[list[Any] | None] = []
        group: list[tuple[str, bool]] = []
        size = 0
        for sql, params, wants in statements:
            text = _render(self.driver, sql, params)
            if group and size + len(text) > max_bytes:
                results += await self._send_script(group)
                group, size = [], 0
            group.append((text, wants))
            size += len(text) + 1
        if group:
            results += await self._send_script(group)
        return results

    async def _send_script(self, group: list[tuple[str, bool]]) -> list[list[Any] | None]:
        cur = self.driver.cursorclass(self.driver, False)
        out: list[list[Any] | None] = []
        async with asyncio.timeout(self.read_timeout):
            await cur.execute(";".join(text for text, _ in group))
            for index, (_, wants) in enumerate(group):
                if index:
                    await cur.nextset()
                out.append(list(cur._rows or ()) if wants else None)
            while await cur.nextset():  # every result must be read, or the next call breaks
                pass
        return out

    async def _send(self, text: str) -> None:
        cur = self.driver.cursorclass(self.driver, False)
        async with asyncio.timeout(self.read_timeout):
            await cur.execute(text)
            while await cur.nextset():  # every result must be read, or the next call breaks
                pass


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
        self._pinned_loop: asyncio.AbstractEventLoop | None = None
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _WriteGroup] = (
            weakref.WeakKeyDictionary()
        )
        self._groups_lock = threading.Lock()
        self.server_info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Database {self.spec.display}>"

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
            engine = resources.engines.setdefault(
                self.key, _create_engine(self.spec, self._engine_kwargs)
            )
        return engine

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
            await conn.execute_all(statements, max_bytes=max_bytes)

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
        if target is None or target is loop:
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
            if engine is None:
                continue
            if loop is current:
                await _dispose(engine, resources)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(_dispose(engine, resources), loop)
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

    __slots__ = ("_db", "_fairy", "_pool")

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __aenter__(self) -> Connection:
        db = self._db
        self._pool = pool = (await db.engine()).sync_engine.pool
        self._fairy = fairy = await greenlet_spawn(pool.connect)
        return Connection(fairy, db.backend, db.spec.read_timeout)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or _reusable(exc):
            await _checkin(self._pool, self._fairy)
        else:
            await greenlet_spawn(_discard, self._pool, self._fairy, exc)


#: A write waiting in a :class:`_WriteGroup`: its statements, their send budget, its outcome.
_Member = tuple[Sequence[tuple[str, Sequence[Any]]], int, "asyncio.Future[bool]"]


class _WriteGroup(IterationGroup[_Member]):
    """The writes of one :class:`Database` on one event loop that wait for the next flush."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    async def join(self, statements: Sequence[tuple[str, Sequence[Any]]], max_bytes: int) -> bool:
        """Wait for ``statements`` to run with the group: True once they did, False if the
        shared attempt failed (run them alone). A group of one raises its own error."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.enqueue((statements, max_bytes, future))
        return await future

    async def run(self, members: list[_Member]) -> None:
        try:
            async with self._db.connection() as conn:
                await conn.execute_all(
                    [statement for statements, _, _ in members for statement in statements],
                    max_bytes=min(max_bytes for _, max_bytes, _ in members),
                )
        except BaseException as exc:
            for _, _, future in members:
                if future.done():
                    continue
                if len(members) == 1 and isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.set_result(False)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, _, future in members:
                if not future.done():
                    future.set_result(True)


def _reusable(exc: BaseException) -> bool:
    """True when the connection is fine after ``exc``: our own check failed before any I/O, or
    the server sent a complete error reply on a connection it keeps open."""
    if isinstance(exc, TiDBMemoryError):
        return True
    if not isinstance(exc, Exception) or classify(exc) is Verdict.DISCONNECT:
        return False
    code = error_code(exc)
    return (code is not None and code >= 1000) or isinstance(exc, sqlite3.Error)


async def _checkin(pool: Pool, fairy: PoolProxiedConnection) -> None:
    if isinstance(pool, QueuePool) and pool.checkedin() < pool.size():
        # Returning to a queue with room is pure bookkeeping: no I/O, so no greenlet hop.
        fairy.close()
    else:  # the pool would close it (overflow), which awaits the driver
        await greenlet_spawn(fairy.close)


def _discard(pool: Pool, fairy: PoolProxiedConnection, exc: BaseException) -> None:
    cause = exc if isinstance(exc, Exception) else None
    if cause is not None and classify(cause) is Verdict.DISCONNECT:
        pool._invalidate(fairy, cause)  # this connection, and mark its generation stale
    else:
        fairy.invalidate(cause)


_databases_lock = threading.Lock()
_databases: dict[str, Database] = {}


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
        key = f"engine:{id(engine):x}"
        with _databases_lock:
            db = _databases.get(key)
            if db is None or db._pinned_engine is not engine:
                db = Database(parse_url(engine.url), key=key, engine=engine)
                _databases[key] = db
        return db
    if url is None:
        raise ConfigurationError("a connection_string or an engine is required")
    args = dict(engine_args or {})
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    key = text + "\x00" + repr(sorted(args.items()))
    db = _databases.get(key)
    if db is not None:
        return db
    spec = parse_url(url)
    if spec.backend == "sqlite":
        _sqlite_creator(spec)  # refuses an in-memory database at construction (no I/O)
    kwargs = _engine_kwargs(spec, args)
    with _databases_lock:
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
