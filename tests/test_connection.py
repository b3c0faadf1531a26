"""Writes through the engine.

* ``Connection.execute_all``: statements in order, stopping at the first error; on MySQL one
  multi-statement query per ``max_bytes`` (counted on the wire); values escaped as by execute.
* ``Database.execute_grouped``: idempotent writes submitted in the same event-loop iteration
  share one connection and one round trip; a failure is sorted out member by member.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from typing import Any

import pymysql
import pytest
from conftest import Target

from tests.infra import FaultProxy
from tidb_memory.engine import get_database

# Each is stored and read back unchanged; none may end a statement or start another.
AWKWARD = [
    "x'); DROP TABLE victim; --",
    "back\\slash and 'quotes' and \"doubles\"",
    "semi;colon; INSERT INTO victim VALUES (1)",
    "100% %s %(name)s %%",
    "nul\x00byte, newline\n, tab\t, ctrl-z\x1a",
    "emoji 🦜 and 中文",
    "",
    # Escapes next to escapes: the backslash must be doubled before the others are added.
    "ends with a backslash\\",
    "\\'\\\\'\\\\\\'''",
    r"\0 \n \r \Z \\ written out",
    "\\\x00\\\n\\\r\\\x1a'\x00'\n'",
    "x" * 30000 + "'" + "\\" * 3000,
]


def create(target: Target, table: str) -> None:
    key = "INT PRIMARY KEY" if target.name == "mysql" else "INTEGER PRIMARY KEY"
    text = "TEXT COLLATE utf8mb4_bin" if target.name == "mysql" else "TEXT"
    target.execute(f"CREATE TABLE {target.q(table)} (id {key}, v {text} NULL)")


def insert(target: Target, table: str) -> str:
    return f"INSERT INTO {target.q(table)} (id, v) VALUES ({target.ph}, {target.ph})"


async def test_statements_run_in_order_and_stop_at_the_first_error(
    backend: Target, table: str
) -> None:
    create(backend, table)
    db = get_database(backend.url)
    sql = insert(backend, table)
    async with db.connection() as conn:
        await conn.execute_all([(sql, (1, "a")), (sql, (2, "b"))], max_bytes=1 << 20)
    with pytest.raises(Exception) as raised:
        async with db.connection() as conn:
            # The second is a duplicate key: the third must not run.
            await conn.execute_all(
                [(sql, (3, "c")), (sql, (1, "dup")), (sql, (4, "d"))], max_bytes=1 << 20
            )
    assert "Duplicate" in str(raised.value) or "UNIQUE" in str(raised.value)
    assert backend.query(f"SELECT id, v FROM {backend.q(table)} ORDER BY id") == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
    ]
    # The connection that saw the error is still in step with the server.
    async with db.connection() as conn:
        await conn.execute_all([(sql, (5, "e"))], max_bytes=1 << 20)
        assert await conn.fetchall(f"SELECT COUNT(*) FROM {backend.q(table)}", ()) == [(4,)]


async def test_values_are_escaped_like_execute(backend: Target, table: str) -> None:
    create(backend, table)
    victim = backend.new_table("victim")
    backend.execute(f"CREATE TABLE {backend.q(victim)} (id INT)")
    db = get_database(backend.url)
    sql = insert(backend, table)
    values: list[Any] = [*AWKWARD, None]
    async with db.connection() as conn:
        await conn.execute_all([(sql, (i, v)) for i, v in enumerate(values)], max_bytes=1 << 20)
    rows = backend.query(f"SELECT id, v FROM {backend.q(table)} ORDER BY id")
    assert [v for _, v in rows] == values
    assert backend.table_exists(victim)
    assert backend.count(victim) == 0


async def test_one_round_trip_per_max_bytes(mysql: Target) -> None:
    table = mysql.new_table()
    create(mysql, table)
    sql = insert(mysql, table)
    async with FaultProxy.in_front_of(mysql.url) as proxy:
        url = proxy.url_for(mysql.url)
        db = get_database(url)

        async def commands(statements: list[tuple[str, Any]], max_bytes: int) -> int:
            async with db.connection() as conn:
                before = proxy.stats.commands_seen
                await conn.execute_all(statements, max_bytes=max_bytes)
                return proxy.stats.commands_seen - before

        rows = [(sql, (i, "v" * 100)) for i in range(6)]
        assert await commands(rows[:3], max_bytes=1 << 20) == 1
        # Each rendered statement is ~160 bytes: a 400-byte budget holds two of them.
        assert await commands(rows[3:], max_bytes=400) == 2
        # A statement over the budget still goes, alone.
        assert await commands([(sql, (6, "w" * 1000))], max_bytes=400) == 1
        await db.aclose()
    assert mysql.count(table) == 7


async def test_a_failed_later_statement_reports_its_error(mysql: Target) -> None:
    table = mysql.new_table()
    create(mysql, table)
    db = get_database(mysql.url)
    sql = insert(mysql, table)
    with pytest.raises(pymysql.err.ProgrammingError, match="doesn't exist"):
        async with db.connection() as conn:
            await conn.execute_all(
                [(sql, (1, "kept")), ("INSERT INTO no_such_table_zz VALUES (%s)", (1,))],
                max_bytes=1 << 20,
            )
    # Statements are not a transaction: the first one ran, as it would have alone.
    assert mysql.query(f"SELECT v FROM {mysql.q(table)}") == [("kept",)]


def upsert(target: Target, table: str) -> str:
    """An idempotent insert: execute_grouped may run it twice."""
    if target.name == "mysql":
        return insert(target, table) + " ON DUPLICATE KEY UPDATE v = VALUES(v)"
    return insert(target, table) + " ON CONFLICT (id) DO UPDATE SET v = excluded.v"


async def test_writes_of_one_iteration_share_one_round_trip(mysql: Target) -> None:
    table = mysql.new_table()
    create(mysql, table)
    sql = upsert(mysql, table)
    async with FaultProxy.in_front_of(mysql.url) as proxy:
        url = proxy.url_for(mysql.url)
        db = get_database(url)
        await db.execute_grouped([(sql, (0, "warm"))], max_bytes=1 << 20)
        before = proxy.stats.commands_seen
        await asyncio.gather(
            *(db.execute_grouped([(sql, (i, f"v{i}"))], max_bytes=1 << 20) for i in range(1, 11))
        )
        assert proxy.stats.commands_seen - before == 1
        # One after the other, each write is its own round trip.
        before = proxy.stats.commands_seen
        for i in range(11, 14):
            await db.execute_grouped([(sql, (i, f"v{i}"))], max_bytes=1 << 20)
        assert proxy.stats.commands_seen - before == 3
        await db.aclose()
    assert mysql.query(f"SELECT COUNT(*), MIN(id), MAX(id) FROM {mysql.q(table)}") == [(14, 0, 13)]


async def test_a_failing_member_gets_its_own_error_and_the_others_are_stored(
    backend: Target, table: str
) -> None:
    create(backend, table)
    db = get_database(backend.url)
    sql = upsert(backend, table)
    bad = f"INSERT INTO no_such_table_zz (id) VALUES ({backend.ph})"
    results = await asyncio.gather(
        db.execute_grouped([(sql, (1, "a"))], max_bytes=1 << 20),
        db.execute_grouped([(sql, (2, "b")), (bad, (1,))], max_bytes=1 << 20),
        db.execute_grouped([(sql, (3, "c"))], max_bytes=1 << 20),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], pymysql.err.ProgrammingError | sqlite3.OperationalError)
    # A member's statements commit together: (2, "b") was rolled back with the failed insert.
    assert backend.query(f"SELECT id, v FROM {backend.q(table)} ORDER BY id") == [
        (1, "a"),
        (3, "c"),
    ]


async def test_a_lone_failing_write_raises_at_once(mysql: Target) -> None:
    table = mysql.new_table()
    create(mysql, table)
    async with FaultProxy.in_front_of(mysql.url) as proxy:
        url = proxy.url_for(mysql.url)
        db = get_database(url)
        await db.execute_grouped([(upsert(mysql, table), (1, "warm"))], max_bytes=1 << 20)
        before = proxy.stats.commands_seen
        with pytest.raises(pymysql.err.ProgrammingError, match="doesn't exist"):
            await db.execute_grouped(
                [("INSERT INTO no_such_table_zz (id) VALUES (%s)", (1,))], max_bytes=1 << 20
            )
        assert proxy.stats.commands_seen - before == 1  # not run a second time
        await db.aclose()


# Every character MySQL escapes, both quotes, and text that is not ASCII.
_ALPHABET = "\\'\"\x00\n\r\x1a\t%;-/* abcXYZ019éü中🦜\u2028\x7f"


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(count)]


@pytest.mark.parametrize("no_backslash_escapes", [False, True], ids=["default", "ansi-quotes"])
async def test_random_text_round_trips_through_the_server(
    mysql: Target, no_backslash_escapes: bool
) -> None:
    """The engine's own escaping, checked against the server itself, in both quoting modes
    (NO_BACKSLASH_ESCAPES makes a backslash an ordinary character)."""
    table = mysql.new_table()
    create(mysql, table)
    texts = [*AWKWARD, *random_texts(300, seed=int(no_backslash_escapes))]
    db = get_database(mysql.url, engine_args={"pool_size": 1, "max_overflow": 0})
    async with db.connection() as conn:
        if no_backslash_escapes:
            await conn.execute(
                "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')", ()
            )
        try:
            sql = insert(mysql, table)
            await conn.execute_all(
                [(sql, (i, text)) for i, text in enumerate(texts)], max_bytes=1 << 20
            )
            rows = await conn.fetchall(
                f"SELECT v FROM {mysql.q(table)} WHERE v IN ({', '.join(['%s'] * len(texts))}) "
                "ORDER BY id",
                texts,
            )
        finally:
            await conn.execute("SET SESSION sql_mode = DEFAULT", ())
    assert [v for (v,) in rows] == texts


async def test_a_failed_group_leaves_no_transaction_open(backend: Target, table: str) -> None:
    """The statements of a group run in one transaction; when one fails it is rolled back, so
    the connection goes back to the pool in autocommit and its next write is committed."""
    create(backend, table)
    db = get_database(backend.url, engine_args={"pool_size": 1, "max_overflow": 0})
    sql = upsert(backend, table)
    bad = f"INSERT INTO no_such_table_zz (id) VALUES ({backend.ph})"
    with pytest.raises((pymysql.err.ProgrammingError, sqlite3.OperationalError)):
        await db.execute_grouped([(sql, (1, "a")), (bad, (1,))], max_bytes=1 << 20)
    await db.execute_grouped([(sql, (2, "b"))], max_bytes=1 << 20)
    # Read by another connection: only committed rows are visible to it.
    assert backend.query(f"SELECT id, v FROM {backend.q(table)} ORDER BY id") == [(2, "b")]
    await db.aclose()
