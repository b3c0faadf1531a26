"""``tidb-memory threads`` and ``tidb-memory prune``, run as the console script against MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conftest import MYSQL_URL, Target
from test_cli_commands import CLI, cli, console_script, one_line_error
from test_retention import chain

from tidb_memory.langgraph import AsyncTiDBSaver

__all__ = ["cli", "console_script"]  # fixtures, imported for pytest


@pytest.fixture
def saver(mysql: Target) -> Iterator[AsyncTiDBSaver]:
    del mysql  # the server must be up
    saver = AsyncTiDBSaver(MYSQL_URL, table_prefix="cpc_" + uuid.uuid4().hex[:10])
    saver.setup()
    yield saver
    t = saver.tables

    async def drop() -> None:
        async with saver.db.connection() as conn:
            for name in (t.checkpoints, t.blobs, t.writes, t.migrations, t.threads):
                await conn.execute(f"DROP TABLE IF EXISTS {name}", ())

    saver.db.run_sync(drop)


def fill(saver: AsyncTiDBSaver, threads: dict[str, str | None], steps: int) -> None:
    async def run() -> None:
        for thread_id, user in threads.items():
            await chain(saver, thread_id, steps)
            if user:
                await saver.aset_thread_info(thread_id, user_id=user, title=f"about {thread_id}")

    saver.db.run_sync(run)


def prefix(saver: AsyncTiDBSaver) -> str:
    return saver.tables.checkpoints[:-1]


def test_threads_list_show_delete(cli: CLI, saver: AsyncTiDBSaver) -> None:
    fill(saver, {"t1": "alice", "t2": "alice", "t3": "bob"}, 3)
    p = ["--prefix", prefix(saver)]
    listed = cli.json("threads", "list", "--user", "alice", *p)
    assert [t["thread_id"] for t in listed["threads"]] == ["t2", "t1"]
    assert listed["threads"][0]["checkpoints"] == 3 and listed["next_cursor"] is None
    paged = cli.json("threads", "list", "--limit", "2", *p)
    assert len(paged["threads"]) == 2 and paged["next_cursor"]
    rest = cli.json("threads", "list", "--limit", "2", "--cursor", paged["next_cursor"], *p)
    assert [t["thread_id"] for t in rest["threads"]] == ["t1"]
    text = cli("threads", "list", *p)
    assert text.returncode == 0 and "THREAD" in text.stdout and "about t3" in text.stdout
    shown = cli.json("threads", "show", "t3", *p)
    assert shown["thread"]["user_id"] == "bob" and len(shown["checkpoints"]) == 3
    assert shown["checkpoints"][0]["channels"] == ["big", "same"]
    deleted = cli.json("threads", "delete", "t3", *p)
    assert deleted["deleted"] == 3
    assert saver.get_thread_info("t3") is None
    assert list(saver.list({"configurable": {"thread_id": "t3"}})) == []
    one_line_error(cli("threads", "show", "t3", *p), "no thread 't3'")
    one_line_error(cli("threads", "show", *p), "needs a THREAD")
    one_line_error(cli("threads", "list", "--cursor", "garbage", *p), "cursor")


def test_prune_threads_and_all(cli: CLI, saver: AsyncTiDBSaver) -> None:
    fill(saver, {f"p{i}": None for i in range(4)}, 5)
    p = ["--prefix", prefix(saver)]
    one = cli.json("prune", "p0", "p1", "--keep", "2", *p)
    assert (one["threads"], one["checkpoints_deleted"]) == (2, 6)
    assert [saver.get_thread_info(f"p{i}").checkpoints for i in range(4)] == [2, 2, 5, 5]  # type: ignore[union-attr]
    everything = cli.json("prune", "--all", *p)
    assert everything["checkpoints_deleted"] == 1 + 1 + 4 + 4
    assert everything["threads_pruned"] == 4 and everything["threads_deleted"] == 0
    assert all(saver.get_thread_info(f"p{i}").checkpoints == 1 for i in range(4))  # type: ignore[union-attr]
    status, _, terminal = cli.on_tty("prune", "--all", "--idle", "1h", *p)
    assert status == 0 and "\rprune" in terminal and "threads" in terminal
    one_line_error(cli("prune", *p), "--all")
    one_line_error(cli("prune", "p0", "--idle", "30d", *p), "--idle")
    one_line_error(cli("prune", "--all", "--idle", "99999999999999999999d", *p), "too long")


def test_prune_idle_threads(cli: CLI, saver: AsyncTiDBSaver, mysql: Target) -> None:
    fill(saver, {"old": None, "new": None}, 2)
    mysql.execute(
        f"UPDATE `{saver.tables.threads}` SET last_activity = '2000-01-01' WHERE thread_id = 'old'"
    )
    result = cli.json("prune", "--all", "--keep", "5", "--idle", "30d", "--prefix", prefix(saver))
    assert (result["threads_deleted"], result["checkpoints_deleted"]) == (1, 2)
    assert saver.get_thread_info("old") is None and saver.get_thread_info("new") is not None


def test_threads_on_a_missing_table_is_one_line(cli: CLI) -> None:
    result = cli("threads", "list", "--prefix", "nosuch_" + uuid.uuid4().hex[:8])
    one_line_error(result)
