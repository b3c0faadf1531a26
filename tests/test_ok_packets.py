"""Grouped writes read their replies through the driver's fast path (``_driver._run_writes``).

A write script of many statements gets one OK packet per statement. The fast path takes them
straight from the stream buffer (``_take_oks``) and leaves anything else to aiomysql: the
first reply it has to wait for, an error, a result set, a packet cut across reads. These tests
run against the real MariaDB, directly and through a proxy that dribbles the server's bytes a
few at a time, and check the connection stays in step afterwards (a parser that took one byte
too many or too few would break the next command).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pymysql
import pytest
from conftest import MYSQL_URL, mysql_query
from sqlalchemy.engine import make_url

from tidb_memory import _driver
from tidb_memory._driver import in_transaction
from tidb_memory.engine import Connection, get_database

pytestmark = [pytest.mark.usefixtures("mysql_server"), pytest.mark.timeout(60)]

BUDGET = 1 << 20


@pytest.fixture
def table() -> Iterator[str]:
    name = "oks_" + uuid.uuid4().hex[:12]
    mysql_query(f"CREATE TABLE {name} (id INT PRIMARY KEY, v TEXT) DEFAULT CHARSET=utf8mb4")
    yield name
    mysql_query(f"DROP TABLE IF EXISTS {name}")


@contextlib.asynccontextmanager
async def connection(url: str = MYSQL_URL) -> AsyncIterator[Connection]:
    db = get_database(url, engine_args={"pool_size": 1, "max_overflow": 0})
    try:
        async with db.connection() as conn:
            yield conn
    finally:
        await db.aclose()


def inserts(table: str, ids: range | list[int]) -> list[tuple[str, list[Any]]]:
    """One statement per id; every third inserts a second row (id + 1000), so that its OK
    packet carries an info message ("Records: 2  Duplicates: 0  Warnings: 0")."""
    out: list[tuple[str, list[Any]]] = []
    for i in ids:
        if i % 3:
            out.append((f"INSERT INTO {table} (id, v) VALUES (%s, %s)", [i, f"v{i} é😀'"]))
        else:
            sql = f"INSERT INTO {table} (id, v) VALUES (%s, %s), (%s, %s)"
            out.append((sql, [i, f"v{i}", i + 1000, "pair"]))
    return out


@pytest.fixture
def slow_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often aiomysql's own result reader ran (the fast path's fallback)."""
    calls: list[int] = []
    conn_class: Any = None
    original = _driver._mysql_creator

    def creator(*args: Any, **kwargs: Any) -> Any:
        connect = original(*args, **kwargs)

        async def counted() -> Any:
            nonlocal conn_class
            conn = await connect()
            if conn_class is None:
                conn_class = type(conn)
                read = conn_class._read_query_result

                async def spy(self: Any, unbuffered: bool = False) -> None:
                    calls.append(1)
                    await read(self, unbuffered)

                monkeypatch.setattr(conn_class, "_read_query_result", spy)
            return conn

        return counted

    monkeypatch.setattr(_driver, "_mysql_creator", creator)
    return calls


async def test_ok_replies_are_read_without_aiomysqls_reader(
    table: str, slow_path_calls: list[int]
) -> None:
    """Forty statements, forty OK packets: none goes through aiomysql's per-packet reader."""
    async with connection() as conn:
        slow_path_calls.clear()
        await conn.execute_all(
            [("START TRANSACTION", ()), *inserts(table, range(38)), ("COMMIT", ())],
            max_bytes=BUDGET,
        )
        assert slow_path_calls == []
        rows = await conn.fetchall(f"SELECT COUNT(*), MAX(id) FROM {table} WHERE id < 1000", ())
        assert rows == [(38, 37)]
        assert await conn.fetchall(f"SELECT COUNT(*) FROM {table} WHERE id >= 1000", ()) == [(13,)]


async def test_the_server_status_follows_the_last_reply(table: str) -> None:
    """The transaction flag comes from the OK packets the fast path read."""
    async with connection() as conn:
        await conn.execute_all(
            [("START TRANSACTION", ()), *inserts(table, range(3))], max_bytes=BUDGET
        )
        assert in_transaction(conn.driver, "mysql")
        await conn.execute_all([*inserts(table, range(3, 6)), ("COMMIT", ())], max_bytes=BUDGET)
        assert not in_transaction(conn.driver, "mysql")
    assert mysql_query(f"SELECT COUNT(*) FROM {table}") == [(8,)]


async def test_an_error_mid_script_is_raised_as_a_cursor_raises_it(table: str) -> None:
    """The server stops at the failing statement; the error is aiomysql's own, and the
    connection is in step for the next command."""
    script = [*inserts(table, [1, 2, 4]), *inserts(table, [2]), *inserts(table, [9])]
    async with connection() as conn:
        with pytest.raises(pymysql.err.IntegrityError) as raised:
            await conn.execute_all(script, max_bytes=BUDGET)
        assert raised.value.args[0] == 1062
        assert await conn.fetchall(f"SELECT id FROM {table} ORDER BY id", ()) == [(1,), (2,), (4,)]
        await conn.execute_all(inserts(table, range(10, 12)), max_bytes=BUDGET)
    assert mysql_query(f"SELECT COUNT(*) FROM {table}") == [(5,)]


async def test_a_statement_with_rows_in_a_write_script_is_read_and_skipped(table: str) -> None:
    script = [
        *inserts(table, range(2)),
        (f"SELECT id, v FROM {table} ORDER BY id", []),
        *inserts(table, range(2, 4)),
        ("SELECT 1", []),
    ]
    async with connection() as conn:
        await conn.execute_all(script, max_bytes=BUDGET)
        assert await conn.fetchall("SELECT 7", ()) == [(7,)]
    assert mysql_query(f"SELECT COUNT(*) FROM {table}") == [(6,)]


class DribblingProxy:
    """Forwards a TCP connection, the server's bytes a few at a time with a pause between, so
    that OK packets arrive cut at every offset."""

    def __init__(self, target_port: int, seed: int) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.server: asyncio.Server | None = None
        self.pieces = 0
        self.handlers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> DribblingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        # The client closed its connection: each handler ends once both pipes saw EOF.
        await asyncio.wait_for(asyncio.gather(*self.handlers), timeout=10)
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)  # type: ignore[arg-type]
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, dribble: bool) -> None:
            try:
                while data := await r.read(65536):
                    if not dribble:
                        w.write(data)
                        await w.drain()
                        continue
                    at = 0
                    while at < len(data):
                        step = self.rng.randint(1, 9)
                        w.write(data[at : at + step])
                        await w.drain()
                        self.pieces += 1
                        at += step
                        await asyncio.sleep(0.0002)
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_replies_cut_at_every_offset_are_read_in_step(table: str, seed: int) -> None:
    url = make_url(MYSQL_URL)
    async with DribblingProxy(url.port or 3306, seed) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with connection(proxied) as conn:
            for start in range(0, 60, 20):
                await conn.execute_all(
                    [("START TRANSACTION", ()), *inserts(table, range(start, start + 20)),
                     ("COMMIT", ())],
                    max_bytes=BUDGET,
                )  # fmt: skip
                assert not in_transaction(conn.driver, "mysql")
            with pytest.raises(pymysql.err.IntegrityError):
                await conn.execute_all(inserts(table, [61, 62, 1, 64]), max_bytes=BUDGET)
            rows = await conn.fetchall(f"SELECT COUNT(*), SUM(id) FROM {table} WHERE id < 1000", ())
            assert [tuple(int(v) for v in row) for row in rows] == [(62, sum(range(63)) - 60)]
        assert proxy.pieces > 250  # the replies really did arrive in pieces


async def test_the_internals_the_fast_path_uses_exist() -> None:
    """By name, so that an aiomysql or asyncio release that renames one fails here."""
    async with connection() as conn:
        driver = conn.driver
        assert callable(driver._execute_command)
        assert isinstance(driver.encoding, str)
        reader = driver._reader
        assert callable(reader._wait_for_data)
        assert reader._eof is False and reader._exception is None
        cur = driver.cursorclass(driver, False)
        await cur.execute("DO 1; DO 2")
        assert driver._result.has_next
        while await cur.nextset():
            pass
        assert not driver._result.has_next


async def test_execute_returns_the_rows_changed_as_a_cursor_does(table: str) -> None:
    """``Connection.execute`` reads its OK packet on the fast path; the count it returns is the
    packet's affected rows, whatever the length of its encoding (1, 3 or 4 bytes)."""
    async with connection() as conn:
        values = ", ".join(f"({i}, 'v')" for i in range(70_000))
        assert await conn.execute(f"INSERT INTO {table} (id, v) VALUES {values}", ()) == 70_000
        update = f"UPDATE {table} SET v = %s WHERE id < %s"
        assert await conn.execute(update, ["w", 10]) == 10
        assert await conn.execute(update, ["w", 10]) == 0  # unchanged rows are not counted
        assert await conn.execute(update, ["x", 300]) == 300
        upsert = f"INSERT INTO {table} (id, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = %s"
        assert await conn.execute(upsert, [1, "a", "b"]) == 2
        assert await conn.execute(f"DELETE FROM {table} WHERE id >= %s", [5]) == 69_995
        assert await conn.execute(f"SELECT id FROM {table}", ()) == 5  # rows, as rowcount
        assert await conn.fetchall(f"SELECT COUNT(*) FROM {table}", ()) == [(5,)]


async def test_a_write_cancelled_while_its_replies_are_awaited_is_never_reused(table: str) -> None:
    """Cancelled between the statement and its last OK packet, the connection is mid-reply: it
    must be discarded, never handed to the next caller (who would read the stale replies)."""
    db = get_database(MYSQL_URL, engine_args={"pool_size": 1, "max_overflow": 0})
    try:

        async def slow() -> None:
            async with db.connection() as conn:
                script = [*inserts(table, [1]), ("DO SLEEP(1)", ()), *inserts(table, [2])]
                await conn.execute_all(script, max_bytes=BUDGET)

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.3)  # the first OK has arrived; SLEEP's has not
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.connection() as conn:
            assert await conn.fetchall("SELECT 7", ()) == [(7,)]
            await conn.execute_all(inserts(table, [4]), max_bytes=BUDGET)
            assert await conn.fetchall("SELECT 8", ()) == [(8,)]
    finally:
        await db.aclose()


async def test_a_write_that_outlives_read_timeout_fails_as_a_lost_connection(table: str) -> None:
    """When ``read_timeout`` closes the connection under a write waiting for its replies, the
    call fails with ``TimeoutError`` caused by the driver's lost-connection error (2013), and
    the pool hands out a working connection next."""
    db = get_database(MYSQL_URL + "?read_timeout=0.5")
    try:
        with pytest.raises(TimeoutError) as raised:
            async with db.connection() as conn:
                script = [*inserts(table, [1]), ("DO SLEEP(3)", ()), *inserts(table, [2])]
                await conn.execute_all(script, max_bytes=BUDGET)
        cause = raised.value.__cause__
        assert isinstance(cause, pymysql.err.OperationalError) and cause.args[0] == 2013, cause
        async with db.connection() as conn:
            assert await conn.fetchall("SELECT 1", ()) == [(1,)]
    finally:
        await db.aclose()
