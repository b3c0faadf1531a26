"""A user's threads, fast: ``alist_threads`` over the threads table the saver keeps current.

One statement per page, read from an index (EXPLAIN on MariaDB, EXPLAIN QUERY PLAN on SQLite);
the write path keeps its round trips; counts stay exact under repeated puts; migration 2 fills
the table from checkpoints written before it existed; erasure by user.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from test_checkpoint import (
    Recorder,
    _prefix,
    config,
    drop_tables,
    fresh_saver,
    make_checkpoint,
    recorder,
    url,
)
from test_checkpoint_graph import agent, cfg
from test_retention import chain, rows

from tidb_memory.errors import InvalidInputError
from tidb_memory.langgraph import AsyncTiDBSaver
from tidb_memory.langgraph._retention_sql import list_threads_statement
from tidb_memory.langgraph._saver_rows import prepare_put
from tidb_memory.langgraph._saver_sql import MIGRATIONS

__all__ = ["recorder", "url"]  # fixtures, imported for pytest


async def test_threads_of_a_user_newest_first_in_pages(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        alice = [f"a{i}-" + uuid.uuid4().hex[:8] for i in range(7)]
        for thread in alice:
            await saver.aput(
                {"configurable": {"thread_id": thread, "user_id": "alice"}},
                make_checkpoint({}, {}),
                {},
                {},
            )
        await saver.aput(
            {"configurable": {"thread_id": "b-" + uuid.uuid4().hex, "user_id": "bob"}},
            make_checkpoint({}, {}),
            {},
            {},
        )
        await saver.aset_thread_info(alice[2], title="Trip to Lisbon")
        recorder.clear()
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await saver.alist_threads(user_id="alice", limit=3, cursor=cursor)
            pages += 1
            seen += [t.thread_id for t in page.threads]
            assert all(t.user_id == "alice" and t.checkpoints == 1 for t in page.threads)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == 3 and len(recorder) == 3  # one statement per page
        assert seen == alice[::-1]  # most recent activity first
        everyone = await saver.alist_threads(limit=100)
        assert len(everyone.threads) == 8 and everyone.next_cursor is None
        info = await saver.aget_thread_info(alice[2])
        assert info is not None and info.title == "Trip to Lisbon" and info.user_id == "alice"
        assert saver.list_threads(user_id="bob").threads[0].user_id == "bob"
        assert saver.get_thread_info("nobody") is None
        # Activity moves a thread to the top.
        await saver.aput(config(alice[0]), make_checkpoint({}, {}), {}, {})
        top = (await saver.alist_threads(user_id="alice", limit=1)).threads[0]
        assert top.thread_id == alice[0] and top.checkpoints == 2
        for bad in ({"limit": 0}, {"limit": "5"}, {"cursor": "not a cursor"}, {"user_id": "a "}):
            with pytest.raises(InvalidInputError):
                await saver.alist_threads(**bad)  # type: ignore[arg-type]


async def test_counts_stay_exact_and_the_write_path_keeps_its_round_trips(url: str) -> None:
    async with fresh_saver(url) as saver:
        graph, thread = agent(saver), "c-" + uuid.uuid4().hex
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, cfg(thread, user_id="carol"))
        graph.invoke({"messages": [HumanMessage("again")]}, cfg(thread, user_id="carol"))
        stored = len([t async for t in saver.alist(config(thread))])
        info = await saver.aget_thread_info(thread)
        assert info is not None and (info.user_id, info.checkpoints) == ("carol", stored)
        # The same checkpoint put again (a retry) is not counted twice.
        latest = await saver.aget_tuple(config(thread))
        assert latest is not None
        for _ in range(3):
            await saver.aput(latest.parent_config or config(thread), latest.checkpoint, {}, {})
        info = await saver.aget_thread_info(thread)
        assert info is not None and info.checkpoints == stored
        await saver.aprune([thread], keep=2)
        info = await saver.aget_thread_info(thread)
        assert info is not None and info.checkpoints == 2


async def test_set_thread_info_before_any_checkpoint(url: str) -> None:
    async with fresh_saver(url) as saver:
        thread = "n-" + uuid.uuid4().hex
        await saver.aset_thread_info(thread, user_id="dave", title="New chat")
        saver.set_thread_info(thread, title="Renamed")
        info = await saver.aget_thread_info(thread)
        assert info is not None
        assert (info.user_id, info.title, info.checkpoints) == ("dave", "Renamed", 0)
        with pytest.raises(InvalidInputError, match="title"):
            await saver.aset_thread_info(thread, title="\udcc3")


async def test_erase_user_deletes_every_thread_of_theirs(url: str) -> None:
    async with fresh_saver(url) as saver:
        saver.delete_batch = 2
        eve = ["e-" + uuid.uuid4().hex for _ in range(5)]
        for thread in eve:
            await chain(saver, thread, 2)
            await saver.aset_thread_info(thread, user_id="eve")
        kept = "k-" + uuid.uuid4().hex
        await chain(saver, kept, 2)
        report = await saver.aerase_user("eve")
        assert (report.threads_deleted, report.checkpoints_deleted) == (5, 10)
        for thread in eve:
            assert await rows(saver, saver.tables.blobs, thread) == 0
            assert await rows(saver, saver.tables.writes, thread) == 0
        assert (await saver.alist_threads(user_id="eve")).threads == []
        assert len([t async for t in saver.alist(config(kept))]) == 2
        assert saver.erase_user("eve").threads_deleted == 0


#: The ledger and its record exactly as the saver wrote them before it shared
#: ``tidb_memory._migrations`` (kept literal: what is on users' disks does not change).
_OLD_LEDGER = {
    "mysql": "CREATE TABLE IF NOT EXISTS `{m}` (\n  `v` INT NOT NULL,\n"
    "  `description` VARCHAR(255) NOT NULL,\n  `applied_at` DATETIME(6) NOT NULL,\n"
    "  PRIMARY KEY (`v`) /*T![clustered_index] CLUSTERED */\n"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "sqlite": 'CREATE TABLE IF NOT EXISTS "{m}" (\n  v INTEGER NOT NULL PRIMARY KEY,\n'
    "  description TEXT NOT NULL,\n  applied_at TEXT NOT NULL\n)",
}
_OLD_RECORD = {
    "mysql": "INSERT INTO `{m}` (`v`, `description`, `applied_at`) "
    "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE `v` = `v`",
    "sqlite": 'INSERT INTO "{m}" (v, description, applied_at) '
    "VALUES (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT DO NOTHING",
}


async def old_layout(saver: AsyncTiDBSaver, versions: int) -> None:
    """The tables and ledger the previous release's setup left, at ``versions``."""
    t = saver.tables
    async with saver.db.connection() as conn:
        backend = conn.backend
        await conn.execute(_OLD_LEDGER[backend].format(m=t.migrations), ())
        for version, description, steps in MIGRATIONS[:versions]:
            for statement in steps(backend, t):
                await conn.execute(statement, ())
            await conn.execute(_OLD_RECORD[backend].format(m=t.migrations), (version, description))


async def ledger_rows(saver: AsyncTiDBSaver) -> list[tuple[int, str, str]]:
    async with saver.db.connection() as conn:
        found = await conn.fetchall(
            f"SELECT v, description, applied_at FROM {saver.tables.migrations} ORDER BY v", ()
        )
    return [(int(v), str(d), str(a)) for v, d, a in found]


async def test_setup_over_the_previous_release_tables_changes_nothing(
    url: str, recorder: Recorder
) -> None:
    """A table set at the latest version, made by the previous code: setup runs no DDL and
    leaves the ledger's rows as they were (same versions, descriptions and times)."""
    saver = AsyncTiDBSaver(url, table_prefix=_prefix())
    try:
        await old_layout(saver, len(MIGRATIONS))
        before = await ledger_rows(saver)
        assert [v for v, _, _ in before] == [v for v, _, _ in MIGRATIONS]
        await saver.aput(config("kept"), make_checkpoint({}, {}), {"user_id": "ann"}, {})
        recorder.clear()
        await saver.asetup()
        sent = [sql.split()[0].upper() for _, sql, _ in recorder.statements]
        assert sent.count("CREATE") == 1  # the ledger's IF NOT EXISTS, nothing else
        assert "ALTER" not in sent and "INSERT" not in sent and "DROP" not in sent
        assert await ledger_rows(saver) == before
        assert [t.thread_id for t in (await saver.alist_threads(user_id="ann")).threads] == ["kept"]
    finally:
        await drop_tables(saver)


async def test_migration_2_fills_the_threads_table_from_version_1(url: str) -> None:
    """A saver of the previous release wrote checkpoints; the upgrade lists them at once."""
    prefix = _prefix()
    saver = AsyncTiDBSaver(url, table_prefix=prefix)
    try:
        await old_layout(saver, 1)
        old = AsyncTiDBSaver(url, table_prefix=prefix)
        # Checkpoints written through the version-1 statements: no threads table yet.
        for thread in ["m1", "m2", "m2"]:
            cp = make_checkpoint({}, {})
            meta = {"user_id": "frank"} if thread == "m2" else {}
            statements = prepare_put(
                old._put_options(), thread, "", None, config(thread), cp, meta, {}
            )  # type: ignore[arg-type]
            async with saver.db.connection() as conn:
                for sql, params in statements.statements[:-1]:  # not the threads upsert
                    await conn.execute(sql, params)
        await saver.asetup()
        m1, m2 = await saver.aget_thread_info("m1"), await saver.aget_thread_info("m2")
        assert m1 is not None and (m1.user_id, m1.checkpoints) == (None, 1)
        assert m2 is not None and (m2.user_id, m2.checkpoints) == ("frank", 2)
        assert [x.thread_id for x in (await saver.alist_threads(user_id="frank")).threads] == ["m2"]
    finally:
        await drop_tables(saver)


# --- the plan --------------------------------------------------------------------------------


async def fill_threads(saver: AsyncTiDBSaver, users: int, per_user: int) -> None:
    p = "%s" if saver.backend == "mysql" else "?"
    th = saver.tables.threads
    values = []
    for u in range(users):
        for n in range(per_user):
            values += [f"t{u}-{n}", f"u{u}", f"2026-01-{1 + n % 28:02d} 00:00:{u % 60:02d}.000"]
    async with saver.db.connection() as conn:
        step = 300
        for at in range(0, len(values), 3 * step):
            chunk = values[at : at + 3 * step]
            row = f"({p}, {p}, {p}, 1)"
            await conn.execute(
                f"INSERT INTO {th} (thread_id, user_id, last_activity, checkpoints) VALUES "
                + ", ".join([row] * (len(chunk) // 3)),
                chunk,
            )
        await conn.execute(f"ANALYZE {'TABLE ' if saver.backend == 'mysql' else ''}{th}", ())


@pytest.mark.parametrize("after", [False, True])
async def test_a_page_of_threads_is_an_index_range(url: str, after: bool) -> None:
    async with fresh_saver(url) as saver:
        await fill_threads(saver, users=40, per_user=50)
        sql = list_threads_statement(saver.backend, saver.tables, True, after)
        when = "2026-01-10 00:00:07.000"
        params: list[Any] = ["u7", *([when, when, "t7-9"] if after else []), 21]
        async with saver.db.connection() as conn:
            if saver.backend == "mysql":
                plan = await conn.fetchall("EXPLAIN " + sql, params)
                columns = ["id", "select_type", "table", "type", "possible_keys", "key"]
                columns += ["key_len", "ref", "rows", "Extra"]
                steps = [dict(zip(columns, row, strict=False)) for row in plan]
                assert len(steps) == 1, steps
                step = steps[0]
                assert step["key"] == "ix_user_activity", steps
                assert step["type"] in ("ref", "range"), steps
                assert "filesort" not in (step["Extra"] or ""), steps
                assert int(step["rows"]) <= 2 * 50, steps  # one user's threads, not the table
            else:
                plan = await conn.fetchall("EXPLAIN QUERY PLAN " + sql, params)
                text = " | ".join(str(row[-1]) for row in plan)
                assert f"{saver.tables.threads}_user" in text, text
                assert "TEMP B-TREE" not in text, text  # no sort: the index gives the order


async def test_erasure_reaches_history_saver_and_others(url: str) -> None:
    from langchain_core.messages import AIMessage

    from tidb_memory import AsyncTiDBChatMessageHistory, SessionStore
    from tidb_memory.erasure import aerase_user, erase_user

    table = "er_" + uuid.uuid4().hex[:10]
    sessions = SessionStore(url, table_name=table)

    class Other:
        def __init__(self) -> None:
            self.calls: list[str] = []

        async def aerase_user(self, user_id: str) -> int:
            self.calls.append(user_id)
            return 7

    other = Other()
    async with fresh_saver(url) as saver:
        try:
            for n in range(3):
                history = AsyncTiDBChatMessageHistory(f"s{n}", url, table_name=table)
                await history.aadd_messages([HumanMessage("hi"), AIMessage(f"hello {n}")])
                owner = "gina" if n < 2 else "hal"
                await sessions.aset_session_info(f"s{n}", user_id=owner)
                await chain(saver, f"th{n}", 2)
                await saver.aset_thread_info(f"th{n}", user_id=owner)
            report = await aerase_user("gina", sessions=sessions, savers=[saver], others=[other])
            assert (report.sessions_deleted, report.messages_deleted) == (2, 4)
            assert (report.threads_deleted, report.checkpoints_deleted) == (2, 4)
            assert report.others == [7] and other.calls == ["gina"]
            assert (await sessions.alist_sessions(user_id="gina")).sessions == []
            assert [s.session_id for s in (await sessions.alist_sessions()).sessions] == ["s2"]
            assert (await saver.alist_threads(user_id="gina")).threads == []
            assert len((await saver.alist_threads()).threads) == 1
            again = await asyncio.to_thread(erase_user, "gina", sessions=sessions, savers=[saver])
            assert (again.sessions_deleted, again.threads_deleted) == (0, 0)
            with pytest.raises(InvalidInputError):
                await aerase_user("gina ", sessions=sessions)
        finally:
            await sessions.adelete_session("s2")
            async with saver.db.connection() as conn:
                await conn.execute(f"DROP TABLE IF EXISTS {table}", ())
