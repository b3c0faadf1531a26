"""The database drivers: connecting with aiomysql and aiosqlite, the :class:`Connection` the hot
path runs on, and whether a connection may go back to the pool after an error.

Every reach into a dependency's private parts lives in this module, each with the versions it
was written against and the reason:

* aiomysql ``Cursor._show_warnings`` (0.2-0.3), overridden: no ``SHOW WARNINGS`` round trip.
* aiomysql ``Connection._connect()`` (0.2-0.3): the handshake, bounded as a whole.
* aiomysql ``Connection._request_authentication()``, ``write_packet()``, ``server_capabilities``
  and ``_ssl_context`` (0.2-0.3), overridden and read: the TLS downgrade guard. aiomysql reads
  the greeting, then in ``_request_authentication`` upgrades to TLS (only if the server offers
  it) and writes the credentials, every packet through ``write_packet``; the guard checks each
  packet there against the socket (``_tls.check_handshake_packet``).
* aiomysql ``Connection._writer`` (0.2-0.3): the TLS transport, to wait for its close handshake.
* aiomysql ``Cursor(conn, False)`` and ``Cursor._rows`` (0.2-0.3): a cursor without the
  future ``Connection.cursor()`` wraps it in, and its rows without a copy per call.
* SQLAlchemy ``Pool._invalidate`` (2.0-2.1): a lost connection marks its whole generation stale.
* SQLAlchemy ``sqlalchemy.util.greenlet_spawn`` (2.0-2.1), undocumented: the pool's sync API
  called from a coroutine.

``tests/test_driver_reaches.py`` exercises each of them by name, on the newest and the lowest
versions pyproject.toml allows (``make test``, ``make test-lowest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from ._render import _render, _sqlite_params
from ._retry import Verdict, classify, error_code
from ._tls import check_handshake_packet
from ._url import Backend, ConnectionSpec
from .errors import ConfigurationError, TiDBMemoryError

__all__ = ["INIT_COMMAND", "Connection"]

#: Every connection's one setup statement (aiomysql sends it during the handshake).
#:
#: * Strict mode, added to the server's own modes: a server whose default is lax would truncate
#:   a long value, clamp a number or store a bad value as zero, with only a warning, which
#:   nobody reads (``Cursor._show_warnings`` below). Strict, it refuses them.
#: * READ COMMITTED: MySQL and MariaDB take gap locks under REPEATABLE READ, which makes the
#:   ``MAX(seq)`` append deadlock against appends to *other* sessions. TiDB takes none either.
#:   ``SET TRANSACTION`` cannot share a statement, and the variable is ``tx_isolation`` on
#:   MariaDB but ``transaction_isolation`` on MySQL 8: MariaDB runs only ``/*M! */``, MySQL only
#:   ``/*!50720 */`` (MariaDB skips versions 50700-99999), TiDB every ``/*! */`` and no ``/*M! */``.
INIT_COMMAND = (
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), "
    "'STRICT_TRANS_TABLES'), "
    "SESSION /*M! tx_isolation */ /*!50720 transaction_isolation */ = 'READ-COMMITTED'"
)
#: Errors the server sends and then closes the connection: a packet over max_allowed_packet
#: (1153), a network read or write that failed or was interrupted (1158-1161), the connection
#: killed (1927, MariaDB) or timed out while idle (4031, MySQL 8).
_SERVER_CLOSES = frozenset({1153, 1158, 1159, 1160, 1161, 1927, 4031})
#: pymysql.constants.CLIENT.MULTI_STATEMENTS, without importing the driver for SQLite users.
_MULTI_STATEMENTS = 1 << 16


#: The aiomysql cursor class every statement of ours runs on, on any engine's connection (set by
#: :func:`load_aiomysql`, so that SQLite users never import the MySQL driver).
_Cursor: Any = None


def load_aiomysql() -> None:
    """Import aiomysql and define our cursor class, once. No I/O."""
    global _Cursor
    if _Cursor is not None:
        return
    import aiomysql

    class Cursor(aiomysql.Cursor):  # type: ignore[misc]
        async def _show_warnings(self, conn: Any) -> None:
            # aiomysql sends SHOW WARNINGS after any statement with a warning, which is one more
            # round trip (and a Python warning) per call. Strict SQL mode, which INIT_COMMAND
            # sets on every connection, turns the warnings that matter into errors.
            return None

    _Cursor = Cursor


def _mysql_creator(
    spec: ConnectionSpec,
    track_tls: Callable[[asyncio.BaseTransport], None] | None = None,
) -> Callable[[], Awaitable[Any]]:
    """The pool's connect function for a MySQL-family ``spec``. ``track_tls`` receives the
    transport of every TLS connection, so that closing the pool can wait for its handshake."""
    import aiomysql
    import pymysql

    load_aiomysql()

    class DriverConnection(aiomysql.Connection):  # type: ignore[misc]
        _guard_handshake = False

        async def _request_authentication(self) -> None:
            # Between the greeting and the end of authentication, every packet is checked
            # (write_packet below) while TLS was asked for: aiomysql would otherwise send the
            # credentials in plaintext to a server that does not offer TLS.
            self._guard_handshake = self._ssl_context is not None
            try:
                await super()._request_authentication()
            finally:
                self._guard_handshake = False

        def write_packet(self, payload: bytes) -> None:
            if self._guard_handshake:
                check_handshake_packet(
                    self._writer.transport,
                    payload,
                    server_capabilities=self.server_capabilities,
                    display=spec.display,
                )
            super().write_packet(payload)

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
        "cursorclass": _Cursor,
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
        if context is not None and track_tls is not None:
            track_tls(conn._writer.transport)  # aiomysql 0.2-0.3: the StreamWriter it reads
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
            # The cursor class directly: Connection.cursor() wraps it in a future per call. Ours,
            # not the connection's: an application engine's connections have aiomysql's own.
            cur = _Cursor(self.driver, False)
            async with asyncio.timeout(self.read_timeout):
                await cur.execute(_render(self.driver, sql, params))
            return list(cur._rows or ())
        return list(await self.driver.execute_fetchall(sql, _sqlite_params(params)))

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement and return the number of rows it changed."""
        if self.backend == "mysql":
            cur = _Cursor(self.driver, False)
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

    async def _send(self, text: str) -> None:
        cur = _Cursor(self.driver, False)
        async with asyncio.timeout(self.read_timeout):
            await cur.execute(text)
            while await cur.nextset():  # every result must be read, or the next call breaks
                pass


#: pymysql.constants.SERVER_STATUS.SERVER_STATUS_IN_TRANS, likewise.
_IN_TRANS = 1


def in_transaction(driver: Any, backend: Backend) -> bool:
    """The connection has a transaction open (no I/O: aiomysql keeps the server's status flags
    from the last reply; sqlite3 knows its own state)."""
    if backend == "mysql":
        return bool(driver.server_status & _IN_TRANS)
    return bool(driver.in_transaction)


def _reusable(exc: BaseException) -> bool:
    """True when the connection is fine after ``exc``: our own check failed before any I/O, or
    the server sent a complete error reply on a connection it keeps open."""
    if isinstance(exc, TiDBMemoryError):
        return True
    if not isinstance(exc, Exception) or classify(exc) is Verdict.DISCONNECT:
        return False
    code = error_code(exc)
    if code in _SERVER_CLOSES:
        return False
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
