"""Rows read through the driver's fast path (``_driver._take_rows``) equal what PyMySQL reads.

The fast path parses row packets straight from the stream buffer; PyMySQL, a separate
implementation of the same protocol, is the reference. The cases cover every length prefix
(1, 3, 4 and 9 bytes... the last only up to the 16 MiB packet), NULLs, binary and text columns,
the converters (int, decimal, datetime), multi-byte text, and results far larger than the
stream's buffer limit, which pause and resume the socket.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conftest import MYSQL_URL, mysql_query

from tidb_memory.engine import get_database

pytestmark = pytest.mark.usefixtures("mysql_server")


@pytest.fixture
def table() -> Iterator[str]:
    name = "rows_" + uuid.uuid4().hex[:12]
    mysql_query(
        f"CREATE TABLE {name} (id INT PRIMARY KEY, n BIGINT NULL, d DECIMAL(10,3) NULL, "
        "t DATETIME(6) NULL, txt LONGTEXT NULL, bin LONGBLOB NULL) DEFAULT CHARSET=utf8mb4"
    )
    yield name
    mysql_query(f"DROP TABLE IF EXISTS {name}")


def _fill(table: str) -> None:
    lengths = [0, 1, 250, 251, 252, 300, 65535, 65536, 70000, 200_000, 1_000_000]
    for i, size in enumerate(lengths):
        mysql_query(
            f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s)",
            (
                i,
                None if i % 3 == 0 else -(2**62) + i,
                None if i % 4 == 1 else "1234.5",
                None if i % 5 == 2 else "2026-11-30 10:00:00.123456",
                None if i == 3 else ("é東😀x" * size)[:size],
                None if i % 2 else bytes(range(256)) * (size // 256 + 1),
            ),
        )
    # Many small rows after the big ones: the buffer holds a mix of complete and cut packets.
    for i in range(100, 400):
        mysql_query(f"INSERT INTO {table} (id, n, txt) VALUES (%s, %s, %s)", (i, i, "r" * i))


async def test_rows_equal_pymysqls(table: str) -> None:
    _fill(table)
    db = get_database(MYSQL_URL)
    query = f"SELECT id, n, d, t, txt, bin FROM {table} ORDER BY id"
    expected = mysql_query(query)
    try:
        async with db.connection() as conn:
            for _ in range(3):  # a reused connection stays in step
                got = await conn.fetchall(query, ())
                assert len(got) == len(expected) == 311
                for mine, theirs in zip(got, expected, strict=True):
                    assert mine == tuple(theirs)
                    assert [type(v) for v in mine] == [type(v) for v in theirs]
            assert await conn.fetchall("SELECT 1, NULL, 'ok'", ()) == [(1, None, "ok")]
    finally:
        await db.aclose()


async def test_an_error_after_some_rows_is_raised_and_the_connection_stays_in_step(
    table: str,
) -> None:
    _fill(table)
    db = get_database(MYSQL_URL)
    # Row 250's subquery returns two rows: error 1242 arrives after 150 rows were sent, a
    # packet the fast path must leave to aiomysql.
    query = (
        f"SELECT t.id, (SELECT 1 FROM {table} AS s WHERE s.id IN (t.id, t.id + 1) "
        f"AND t.id = 250) FROM {table} AS t WHERE t.id >= 100 ORDER BY t.id"
    )
    with pytest.raises(Exception, match="1242"):
        mysql_query(query)  # the reference fails the same way
    try:
        async with db.connection() as conn:
            with pytest.raises(Exception, match="1242"):
                await conn.fetchall(query, ())
            assert await conn.fetchall(f"SELECT COUNT(*) FROM {table}", ()) == [(311,)]
    finally:
        await db.aclose()


async def test_the_internals_the_fast_path_reads_exist() -> None:
    """By name, so that an aiomysql or asyncio release that renames one fails here."""
    from aiomysql.connection import MySQLResult

    for name in (
        "_read_rowdata_packet",
        "_check_packet_is_eof",
        "_read_row_from_packet",
        "read",
        "_get_descriptions",
    ):
        assert callable(getattr(MySQLResult, name)), name
    db = get_database(MYSQL_URL)
    try:
        async with db.connection() as conn:
            driver = conn.driver
            assert isinstance(driver._next_seq_id, int)
            assert isinstance(driver._reader._buffer, bytearray)
            assert callable(driver._reader._maybe_resume_transport)
            cur = driver.cursorclass(driver, False)
            await cur.execute("SELECT 1, 'a'")
            result = driver._result
            assert type(result).__mro__[1] is MySQLResult  # the library's subclass is in use
            assert [len(c) for c in result.converters] == [2, 2]
    finally:
        await db.aclose()


async def test_column_descriptions_are_skipped_only_for_the_librarys_own_reads(table: str) -> None:
    """The library's reads take only the converters (``_driver._take_descriptions``); a DB-API
    cursor on the same connection (SQLAlchemy's, an application's) still gets ``description``."""
    from tidb_memory import _driver

    _fill(table)
    db = get_database(MYSQL_URL)
    query = f"SELECT id, n, d, t, txt, bin FROM {table} WHERE id < 3 ORDER BY id"
    calls: list[object] = []
    take = _driver._take_descriptions

    def spy(*args: object) -> object:
        calls.append(result := take(*args))  # type: ignore[arg-type]
        return result

    try:
        async with db.connection() as conn:
            _driver._take_descriptions = spy  # type: ignore[assignment]
            try:
                assert await conn.fetchall(query, ()) == [tuple(r) for r in mysql_query(query)]
                assert len(calls) == 1 and calls[0] is not None
                cur = conn.driver.cursorclass(conn.driver, False)
                await cur.execute(query)
                assert [d[0] for d in cur.description] == ["id", "n", "d", "t", "txt", "bin"]
                assert len(calls) == 1  # the cursor took aiomysql's own path
            finally:
                _driver._take_descriptions = take  # type: ignore[assignment]
    finally:
        await db.aclose()


async def test_the_end_of_rows_is_read_as_aiomysql_reads_it(table: str) -> None:
    """The end-of-rows packet taken from the buffer carries the warning count and the
    more-results flag: a multi-result script still reads every result after it."""
    _fill(table)
    db = get_database(MYSQL_URL)
    try:
        async with db.connection() as conn:
            script = [
                (f"SELECT id FROM {table} WHERE id < 2 ORDER BY id", (), True),
                ("SELECT 'second'", (), True),
                ("DO 1", (), False),
                (f"SELECT COUNT(*) FROM {table}", (), True),
            ]
            got = await conn.fetch_script(script, max_bytes=1 << 20)
            assert got == [[(0,), (1,)], [("second",)], None, [(311,)]]
            cur = conn.driver.cursorclass(conn.driver, False)
            await cur.execute("SELECT CAST('x' AS UNSIGNED)")  # a warning: truncated value
            assert conn.driver._result.warning_count == 1
            assert await conn.fetchall("SELECT 5", ()) == [(5,)]
    finally:
        await db.aclose()
