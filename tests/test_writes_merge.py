"""Grouped writes merge the multi-row inserts of their members (``tidb_memory._writes``):
counted as INSERT statements the server ran (the session's ``Com_insert`` on the pool's only
connection), never timed."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pymysql
import pytest
from conftest import Target

from tests.test_checkpoint import config, fresh_saver, make_checkpoint
from tidb_memory._writes import RowInsert, merge_inserts
from tidb_memory.engine import Database, get_database


def create(target: Target, table: str) -> None:
    key = "INT PRIMARY KEY" if target.name == "mysql" else "INTEGER PRIMARY KEY"
    target.execute(f"CREATE TABLE {target.q(table)} (id {key}, v INT NOT NULL)")


def inserter(target: Target, table: str) -> Any:
    """One builder per table, as :class:`RowInsert` merges by identity."""
    row = f"({target.ph}, {target.ph})"
    tail = (
        " ON DUPLICATE KEY UPDATE v = VALUES(v)"
        if target.name == "mysql"
        else " ON CONFLICT (id) DO UPDATE SET v = excluded.v"
    )

    def build(rows: int) -> str:
        return f"INSERT INTO {target.q(table)} (id, v) VALUES " + ", ".join([row] * rows) + tail

    return build


def rows(kind: Any, *ids: int, weight: int = 10) -> RowInsert:
    return RowInsert(kind, [value for i in ids for value in (i, i)], len(ids), weight)


async def inserts_run(db: Database) -> int:
    async with db.connection() as conn:
        [(_, count)] = await conn.fetchall("SHOW SESSION STATUS LIKE 'Com_insert'", ())
    return int(count)


def test_merge_keeps_every_other_statement_and_its_neighbour() -> None:
    a, b = (lambda n: f"A{n}"), (lambda n: f"B{n}")
    plain = [("cp1", [1]), ("touch1", [2]), ("cp2", [3]), ("touch2", [4])]
    merged = merge_inserts(
        [rows(a, 1), plain[0], plain[1], rows(b, 2), rows(a, 3, 4), plain[2], plain[3]],
        max_bytes=1000,
    )
    assert merged == [("A3", [1, 1, 3, 3, 4, 4]), *plain[:2], ("B1", [2, 2]), *plain[2:]]


def test_merge_respects_the_byte_budget() -> None:
    a = lambda n: f"A{n}"  # noqa: E731
    merged = merge_inserts([rows(a, i, weight=40) for i in range(5)], max_bytes=100)
    # 40 + 40 fit in 100, a third does not: a new statement of the kind starts.
    assert merged == [
        ("A2", [0, 0, 1, 1]),
        ("A2", [2, 2, 3, 3]),
        ("A1", [4, 4]),
    ]


async def test_concurrent_inserts_run_as_one_statement(mysql: Target) -> None:
    table = mysql.new_table()
    create(mysql, table)
    kind = inserter(mysql, table)
    db = get_database(mysql.url, engine_args={"pool_size": 1, "max_overflow": 0})
    touch = f"INSERT INTO {mysql.q(table)} (id, v) VALUES (%s, ROW_COUNT())"
    await db.execute_grouped([rows(kind, 0)], max_bytes=1 << 20)
    before = await inserts_run(db)
    # Ten members, each a merged insert then a statement reading ROW_COUNT() of the statement
    # just before it: the merge must not slip between them.
    await asyncio.gather(
        *(
            db.execute_grouped(
                [
                    rows(kind, i, i + 100),
                    ("UPDATE " + mysql.q(table) + " SET v = v", ()),
                    (touch, (1000 + i,)),
                ],
                max_bytes=1 << 20,
            )
            for i in range(1, 11)
        )
    )
    # 1 merged insert + 10 touches (the SHOW itself is not an insert).
    assert await inserts_run(db) - before == 11
    await db.aclose()
    stored = dict(mysql.query(f"SELECT id, v FROM {mysql.q(table)}"))
    assert sorted(stored) == sorted([0, *range(1, 11), *range(101, 111), *range(1001, 1011)])
    # UPDATE ... SET v = v changes no row: ROW_COUNT() is 0 for every touch.
    assert all(stored[1000 + i] == 0 for i in range(1, 11))


async def test_a_failing_member_reruns_alone_and_the_others_are_stored(
    backend: Target, table: str
) -> None:
    create(backend, table)
    kind = inserter(backend, table)
    db = get_database(backend.url)
    bad = f"INSERT INTO no_such_table_zz (id) VALUES ({backend.ph})"
    results = await asyncio.gather(
        db.execute_grouped([rows(kind, 1, 2)], max_bytes=1 << 20),
        db.execute_grouped([rows(kind, 3), (bad, (1,))], max_bytes=1 << 20),
        db.execute_grouped([rows(kind, 4)], max_bytes=1 << 20),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], pymysql.err.ProgrammingError | sqlite3.OperationalError)
    assert backend.query(f"SELECT id FROM {backend.q(table)} ORDER BY id") == [(1,), (2,), (4,)]
    await db.aclose()


@pytest.mark.parametrize("members", [2, 7])
async def test_merged_rows_keep_member_order_on_a_shared_key(mysql: Target, members: int) -> None:
    """Rows of different members with the same key: the later member's value wins, as if
    they had run one after the other."""
    table = mysql.new_table()
    create(mysql, table)
    kind = inserter(mysql, table)
    db = get_database(mysql.url)
    await asyncio.gather(
        *(
            db.execute_grouped([RowInsert(kind, [1, m], 1, 10)], max_bytes=1 << 20)
            for m in range(members)
        )
    )
    await db.aclose()
    assert mysql.query(f"SELECT v FROM {mysql.q(table)}") == [(members - 1,)]


async def test_a_saver_iteration_inserts_blobs_and_writes_once(mysql: Target) -> None:
    """Six graph runs writing in the same iteration: one blobs insert and one writes insert
    for all of them (the checkpoint upserts and thread touches stay one per run)."""
    runs = 6
    async with fresh_saver(
        mysql.url, inline_primitives=False, engine_args={"pool_size": 1, "max_overflow": 0}
    ) as saver:
        cps = [
            make_checkpoint({"a": [run], "b": f"b{run}"}, {"a": "1", "b": "1"})
            for run in range(runs)
        ]
        before = await inserts_run(saver.db)
        configs = await asyncio.gather(
            *(
                saver.aput(config(f"t{run}"), cps[run], {}, {"a": "1", "b": "1"})
                for run in range(runs)
            )
        )
        assert await inserts_run(saver.db) - before == 1 + 2 * runs
        before = await inserts_run(saver.db)
        await asyncio.gather(
            *(
                saver.aput_writes(configs[run], [("a", run), ("b", -run)], f"task{run}")
                for run in range(runs)
            )
        )
        assert await inserts_run(saver.db) - before == 1
        for run in range(runs):
            got = await saver.aget_tuple(config(f"t{run}"))
            assert got is not None
            assert got.checkpoint["channel_values"] == {"a": [run], "b": f"b{run}"}
            assert got.pending_writes == [(f"task{run}", "a", run), (f"task{run}", "b", -run)]
