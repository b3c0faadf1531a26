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
* aiomysql ``Connection._writer`` (0.2-0.3): the TLS transport, to wait for its close handshake
  and to read the cipher the client's socket negotiated (:meth:`Connection.tls`).
* aiomysql ``Cursor(conn, False)`` and ``Cursor._rows`` (0.2-0.3): a cursor without the
  future ``Connection.cursor()`` wraps it in, and its rows without a copy per call.
* aiomysql ``Connection._read_query_result``, ``_reader``, ``_next_seq_id`` and
  ``MySQLResult._read_rowdata_packet`` (0.2-0.3), and asyncio ``StreamReader._buffer`` and
  ``_maybe_resume_transport()`` (3.11-3.13): rows already received are parsed straight from the
  stream's buffer (see :func:`_take_rows`), instead of two awaited reads per row
  (``tests/test_rows.py`` checks them by name and against PyMySQL).
* aiomysql ``MySQLResult._get_descriptions``, ``field_count``, ``TEXT_TYPES``, ``through`` and
  ``Connection.decoders`` (0.2-0.3), overridden and read: the library's own reads take each
  column's converter straight from the buffered definitions, without the DB-API description
  (see :func:`_take_descriptions`; ``tests/test_rows.py``).
* aiomysql ``Connection._execute_command()``, ``encoding``, ``_affected_rows`` and
  ``_result.has_next`` (0.2-0.3),
  and asyncio ``StreamReader._wait_for_data()``, ``_eof`` and ``_exception`` (3.11-3.13): a
  grouped write's OK packets are read straight from the stream's buffer as they arrive (see
  :func:`_run_writes`), instead of a cursor's two awaited reads and two objects per statement
  (``tests/test_ok_packets.py``, also with the replies cut at every offset).
* SQLAlchemy ``Pool._invalidate`` (2.0-2.1): a lost connection marks its whole generation stale.
* SQLAlchemy ``QueuePool._max_overflow`` and ``_timeout``, ``Pool._recycle``, and a checked-out
  connection's ``_connection_record`` with its ``starttime`` and ``_is_hard_or_soft_invalidated()``
  (2.0-2.1): the idle connections kept in front of the pool (``_idle``) honour the pool's limit
  and wait, and make the checks ``_ConnectionRecord.get_connection`` makes at checkout
  (:func:`pool_overflow_limit`, :func:`pool_wait_timeout`, :func:`still_usable`).
* SQLAlchemy ``sqlalchemy.util.greenlet_spawn`` (2.0-2.1), undocumented: the pool's sync API
  called from a coroutine.

``tests/test_driver_reaches.py`` exercises each of them by name, on the newest and the lowest
versions pyproject.toml allows (``make test``, ``make test-lowest``).

The one reach kept elsewhere is the codec's pydantic fast path (``codec._build`` sets
``__pydantic_fields_set__``, ``__pydantic_extra__`` and ``__pydantic_private__``), which stays
beside the import-time assert that guards it (``tests/test_codec.py`` checks that decoded
messages copy, dump and compare as pydantic built them).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
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
    from aiomysql.connection import TEXT_TYPES, MySQLResult, through
    from pymysql.constants import FIELD_TYPE

    load_aiomysql()

    class Result(MySQLResult):  # type: ignore[misc]
        async def _get_descriptions(self) -> None:
            conn: Any = self.connection  # type: ignore[has-type]
            if conn._lean_results:
                converters = _take_descriptions(conn, self.field_count, TEXT_TYPES, FIELD_TYPE.JSON)
                if converters is not None:
                    self.fields: list[Any] = []
                    self.converters = [
                        (encoding, None if (c := conn.decoders.get(t)) is through else c)
                        for encoding, t in converters
                    ]
                    self.description = None
                    return
            await super()._get_descriptions()

        async def _read_rowdata_packet(self) -> None:
            conn: Any = self.connection  # type: ignore[has-type]
            rows: list[tuple[Any, ...]] = []
            while True:
                eof = _take_rows(self.converters, conn, rows)
                if eof is not None:  # the end of the rows, already received
                    self.warning_count, self.has_next = eof
                    self.connection = None
                    break
                # The next packet is incomplete, an error, or over 16 MiB: aiomysql's own reader
                # deals with it.
                packet = await conn._read_packet()
                if self._check_packet_is_eof(packet):
                    self.connection = None  # as aiomysql does: no reference cycle
                    break
                rows.append(self._read_row_from_packet(packet))
            self.affected_rows = len(rows)
            self.rows = tuple(rows)

    class DriverConnection(aiomysql.Connection):  # type: ignore[misc]
        #: Set while one of the library's own queries runs: its result needs converters, not
        #: the column descriptions (names, sizes) that a DB-API cursor exposes.
        _lean_results = False

        async def _read_query_result(self, unbuffered: bool = False) -> None:
            if unbuffered:
                await super()._read_query_result(unbuffered)
                return
            # aiomysql's own body, with Result for MySQLResult.
            self._result = None
            result = Result(self)
            await result.read()
            self._result = result
            self._affected_rows = result.affected_rows
            if result.server_status is not None:
                self.server_status = result.server_status

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


def _take_descriptions(
    conn: Any, count: int, text_types: Collection[int], json_type: int
) -> list[tuple[str | None, int]] | None:
    """``(encoding, type code)`` of each of ``count`` column definitions, and the EOF packet
    after them, consumed from ``conn``'s stream buffer; ``None`` (nothing consumed) unless they
    are all there, complete and in sequence.

    aiomysql reads each definition with two awaited reads, a packet object and a description
    tuple, about 15 µs a column; a history read or a checkpoint read has two or three. Each is
    read as ``FieldDescriptorPacket`` reads it (six length-coded strings, then the character
    set, length, type, flags and scale), and its encoding chosen as
    ``MySQLResult._get_descriptions`` chooses it (``use_unicode`` is always on here).
    """
    buf = conn._reader._buffer
    end = len(buf)
    pos = 0
    seq = conn._next_seq_id
    encoding = conn.encoding
    out: list[tuple[str | None, int]] = []
    for index in range(count + 1):
        if end - pos < 4:
            return None
        length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        p = pos + 4
        stop = p + length
        if stop > end or not 0 < length < 0xFFFFFF or buf[pos + 3] != seq:
            return None
        seq = (seq + 1) & 0xFF
        pos = stop
        if index == count:  # the EOF packet after the definitions
            if buf[p] != 0xFE or length >= 9:
                return None
            break
        for _ in range(6):  # catalog, schema, table, original table, name, original name
            n, p = _lenenc(buf, p)
            if n is None:
                return None
            p += n
            if p >= stop:
                return None
        if p + 13 > stop:
            return None
        charset = buf[p + 1] | buf[p + 2] << 8
        type_code = buf[p + 7]
        if type_code == json_type:
            out.append((encoding, type_code))
        elif type_code in text_types:
            out.append((None if charset == 63 else encoding, type_code))
        else:
            out.append(("ascii", type_code))
    del buf[:pos]
    conn._next_seq_id = seq
    conn._reader._maybe_resume_transport()
    return out


def _lenenc(buf: Any, p: int) -> tuple[int | None, int]:
    """The length-encoded integer at ``buf[p]`` and the position after it; ``None`` for the
    bytes that start no integer (251, NULL in a row; 255). Reads past the end of ``buf`` give a
    short value, never an error: the caller checks the position against its packet's end."""
    n: int = buf[p]
    if n < 251:
        return n, p + 1
    size = 2 if n == 252 else 3 if n == 253 else 8 if n == 254 else 0
    if not size:
        return None, p + 1
    return int.from_bytes(buf[p + 1 : p + 1 + size], "little"), p + 1 + size


def _take_rows(
    converters: Sequence[tuple[str | None, Callable[[Any], Any] | None]],
    conn: Any,
    rows: list[tuple[Any, ...]],
) -> tuple[int, int] | None:
    """Append to ``rows`` every complete row packet already in ``conn``'s stream buffer; if the
    end-of-rows packet follows them, consume it too and return its warning count and its
    more-results flag, as ``MySQLResult._check_packet_is_eof`` reads them.

    aiomysql reads a row as two awaited ``readexactly`` calls (header, then payload) and a
    packet object; for a session of 30 messages that was 4 µs of a row's 6. Here the rows
    received so far are parsed in one pass, each column exactly as
    ``MySQLResult._read_row_from_packet`` does. It stops, leaving the packet to aiomysql, at
    anything that is neither a plain row nor the end of the rows: an incomplete packet, an
    error packet, a sequence number out of step, an empty packet, or a packet of 16 MiB or more.
    """
    reader = conn._reader
    buf = reader._buffer
    end = len(buf)
    pos = 0
    seq = conn._next_seq_id
    eof = None
    while end - pos >= 4:
        length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        p = pos + 4
        stop = p + length
        if stop > end or not 0 < length < 0xFFFFFF or buf[pos + 3] != seq:
            break
        first = buf[p]
        if first == 0xFE and 5 <= length < 9:  # end of rows: 0xFE, warnings, status
            eof = (buf[p + 1] | buf[p + 2] << 8, buf[p + 3] & _MORE_RESULTS)
            pos = stop
            seq = (seq + 1) & 0xFF
            break
        if first == 0xFF or first == 0xFE:  # an error, or an end of rows to leave to aiomysql
            break
        row: list[Any] = []
        for encoding, converter in converters:
            if p >= stop:  # no more columns in this row (as pymysql: a shorter row)
                break
            n = buf[p]
            if n < 251:
                p += 1
            elif n == 251:  # NULL
                row.append(None)
                p += 1
                continue
            elif n == 252:
                n = buf[p + 1] | buf[p + 2] << 8
                p += 3
            elif n == 253:
                n = buf[p + 1] | buf[p + 2] << 8 | buf[p + 3] << 16
                p += 4
            else:
                n = int.from_bytes(buf[p + 1 : p + 9], "little")
                p += 9
            data: Any = buf[p : p + n].decode(encoding) if encoding else bytes(buf[p : p + n])
            p += n
            row.append(data if converter is None else converter(data))
        rows.append(tuple(row))
        pos = stop
        seq = (seq + 1) & 0xFF
    if pos:
        del buf[:pos]
        conn._next_seq_id = seq
        reader._maybe_resume_transport()  # a full buffer paused the socket: read on
    return eof


#: pymysql.constants.COMMAND.COM_QUERY and SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS, likewise.
_COM_QUERY = 3
_MORE_RESULTS = 8


async def _run_writes(driver: Any, sql: str) -> int:
    """Send ``sql`` (statements that return no rows) and read every statement's reply; the
    number of rows the last statement changed (what ``Cursor.execute`` returns).

    A cursor reads each OK packet with two awaited reads, a packet object and a result object:
    18 µs a statement, most of a grouped write's client time. Here the OK packets are taken
    straight from the stream's buffer as they arrive (:func:`_take_oks`); anything else (an
    error, a result set, a lost connection, a packet of 16 MiB) is read by aiomysql itself, one
    result at a time, so errors are raised exactly as a cursor raises them.
    """
    await driver._execute_command(_COM_QUERY, sql.encode(driver.encoding, "surrogateescape"))
    reader = driver._reader
    while (state := _take_oks(driver)) is not _DONE:
        if state is _WAIT and not reader._eof and reader._exception is None:
            await reader._wait_for_data("readexactly")
            if driver._reader is None:  # closed meanwhile (read_timeout): as aiomysql says it
                import pymysql

                raise pymysql.err.OperationalError(
                    2013, "Lost connection to MySQL server during query"
                )
            continue
        await driver._read_query_result()
        more = driver._result.has_next
        driver._result = None  # the rest is read here, not by the next command
        if not more:
            break
    count: int = driver._affected_rows
    return count


#: What :func:`_take_oks` stopped at: the last reply, an incomplete packet, anything else.
_DONE, _WAIT, _OTHER = object(), object(), object()


def _take_oks(conn: Any) -> object:
    """Consume the complete OK packets at the head of ``conn``'s stream buffer, reading each as
    ``OKPacketWrapper`` does, and say what stopped it: ``_DONE`` once the last statement's OK
    was consumed, ``_WAIT`` at a packet not yet complete, ``_OTHER`` at a packet for aiomysql
    (an error or result set, a sequence number out of step, a packet of 16 MiB or more).
    """
    reader = conn._reader
    buf = reader._buffer
    end = len(buf)
    pos = 0
    seq = conn._next_seq_id
    state = _WAIT
    while True:
        if end - pos < 4:
            break
        length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        p = pos + 4
        stop = p + length
        if length >= 0xFFFFFF or buf[pos + 3] != seq:
            state = _OTHER
            break
        if stop > end:
            break
        if length < 7 or buf[p] != 0:
            state = _OTHER
            break
        affected, p = _lenenc(buf, p + 1)
        if affected is None or p >= stop:
            state = _OTHER
            break
        insert_id, p = _lenenc(buf, p)
        if insert_id is None or p + 4 > stop:
            state = _OTHER
            break
        status = buf[p] | buf[p + 1] << 8
        conn.server_status = status
        conn._affected_rows = affected
        pos = stop
        seq = (seq + 1) & 0xFF
        if not status & _MORE_RESULTS:
            state = _DONE
            break
    if pos:
        del buf[:pos]
        conn._next_seq_id = seq
        reader._maybe_resume_transport()
    return state


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


@contextlib.contextmanager
def _lean(driver: Any) -> Iterator[None]:
    """Results read meanwhile skip the column descriptions (the library's connections only)."""
    if not hasattr(driver, "_lean_results"):
        yield
        return
    driver._lean_results = True
    try:
        yield
    finally:
        driver._lean_results = False


class _Deadline:
    """``read_timeout`` for one statement: aiomysql has none, so a peer that falls silent would
    make the call wait forever.

    When the time is up the connection is closed, which ends the wait with a lost-connection
    error, raised as :class:`TimeoutError`: the pool discards the connection and the retry
    policy decides. A timer per statement costs a third of an ``asyncio.timeout`` block, and
    no cancellation is involved.
    """

    __slots__ = ("_driver", "_expired", "_handle", "_seconds")

    def __init__(self, driver: Any, seconds: float) -> None:
        self._driver = driver
        self._seconds = seconds
        self._expired = False
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._driver.close()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._handle.cancel()
        if self._expired:
            # Also when the reply made it just in time: the connection is closed either way.
            raise TimeoutError(
                f"no reply within read_timeout={self._seconds:g}s; the connection was closed"
            ) from exc


class Connection:
    """One pooled driver connection, with the two calls the store needs.

    ``fetchall`` and ``execute`` send exactly one statement each: one round trip.
    """

    __slots__ = ("backend", "driver", "read_timeout")

    def __init__(self, fairy: PoolProxiedConnection, backend: Backend, read_timeout: float) -> None:
        self.backend = backend
        self.driver: Any = fairy.driver_connection
        self.read_timeout = read_timeout

    def tls(self) -> tuple[str, str] | None:
        """``(cipher, protocol)`` of this connection's TLS session, as the client's own socket
        negotiated it (``("TLS_AES_256_GCM_SHA384", "TLSv1.3")``); ``None`` in plaintext and on
        SQLite. No I/O. The server's ``Ssl_cipher`` is not asked: a server, or a proxy that
        terminates TLS in front of it, may state anything about a transport it does not share.
        """
        if self.backend != "mysql" or self.driver._writer is None:
            return None
        ssl_object = self.driver._writer.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        return str(ssl_object.cipher()[0]), str(ssl_object.version())

    async def fetchall(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one query and return all its rows."""
        if self.backend == "mysql":
            # The cursor class directly: Connection.cursor() wraps it in a future per call. Ours,
            # not the connection's: an application engine's connections have aiomysql's own.
            cur = _Cursor(self.driver, False)
            with _Deadline(self.driver, self.read_timeout), _lean(self.driver):
                await cur.execute(_render(self.driver, sql, params))
            return list(cur._rows or ())
        return list(await self.driver.execute_fetchall(sql, _sqlite_params(params)))

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement and return the number of rows it changed."""
        if self.backend == "mysql":
            with _Deadline(self.driver, self.read_timeout):
                return await _run_writes(self.driver, _render(self.driver, sql, params))
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
        await self.fetch_script(
            [(sql, params, False) for sql, params in statements], max_bytes=max_bytes
        )

    async def fetch_script(
        self, statements: Sequence[tuple[str, Sequence[Any], bool]], *, max_bytes: int
    ) -> list[list[Any] | None]:
        """:meth:`execute_all` for ``(sql, params, wants_rows)`` statements: the rows of those
        that want them (``None`` for the others). A batch of reads and writes is one round trip.
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
                results += await self._send(group)
                group, size = [], 0
            group.append((text, wants))
            size += len(text) + 1
        if group:
            results += await self._send(group)
        return results

    async def _send(self, group: list[tuple[str, bool]]) -> list[list[Any] | None]:
        if not any(wants for _, wants in group):
            with _Deadline(self.driver, self.read_timeout):
                await _run_writes(self.driver, ";".join(text for text, _ in group))
            return [None] * len(group)
        cur = _Cursor(self.driver, False)
        out: list[list[Any] | None] = []
        with _Deadline(self.driver, self.read_timeout), _lean(self.driver):
            await cur.execute(";".join(text for text, _ in group))
            for index, (_, wants) in enumerate(group):
                if index:
                    await cur.nextset()
                out.append(list(cur._rows or ()) if wants else None)
            while await cur.nextset():  # every result must be read, or the next call breaks
                pass
        return out


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


def pool_overflow_limit(pool: Pool) -> int:
    """The most connections ``pool`` opens above its size; negative: no limit."""
    if not isinstance(pool, QueuePool):
        return -1
    limit: int = pool._max_overflow
    return limit


def pool_wait_timeout(pool: Pool) -> float:
    """The seconds a checkout waits for a connection when ``pool`` is exhausted."""
    timeout: float = getattr(pool, "_timeout", 30.0)
    return timeout


def still_usable(pool: Pool, fairy: PoolProxiedConnection, now: float) -> bool:
    """False if ``pool`` would replace ``fairy`` at checkout: invalidated (its generation went
    stale after a lost connection) or older than ``pool_recycle``."""
    record = fairy._connection_record
    if record is None or record._is_hard_or_soft_invalidated():
        return False
    recycle: float = pool._recycle
    return recycle < 0 or now - record.starttime <= recycle
