"""Checkpoints that do not grow forever: prune, copy, delete runs and the retention policy.

Real graphs on MariaDB and SQLite: after a prune, ``get_state``, ``get_state_history``, resuming
an interrupted run and forking from a kept checkpoint all work; deletes and copies go in
bounded batches; every operation can run twice to the same result.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.types import Command
from test_checkpoint import Recorder, config, fresh_saver, make_checkpoint, recorder, url
from test_checkpoint_graph import TURN, agent, approval_graph, cfg, kinds

from tidb_memory.errors import InvalidInputError
from tidb_memory.langgraph import AsyncTiDBSaver
from tidb_memory.langgraph.retention import RetentionPolicy, RetentionReport

__all__ = ["recorder", "url"]  # fixtures, imported for pytest


async def rows(saver: AsyncTiDBSaver, table: str, thread_id: str | None = None) -> int:
    p = "%s" if saver.backend == "mysql" else "?"
    where, params = (f" WHERE thread_id = {p}", [thread_id]) if thread_id else ("", [])
    async with saver.db.connection() as conn:
        found = await conn.fetchall(f"SELECT COUNT(*) FROM {table}{where}", params)
    return int(found[0][0])


async def chain(saver: AsyncTiDBSaver, thread: str, steps: int, ns: str = "") -> list[Any]:
    """``steps`` checkpoints: channel "big" changes every step, "same" never (one blob shared
    by every checkpoint), and each checkpoint gets a pending write."""
    stored: list[Any] = []
    parent: Any = config(thread, ns)
    for i in range(steps):
        versions = {"big": f"{i + 1:032}.0", "same": f"{1:032}.0"}
        cp = make_checkpoint({"big": ["x"] * (i + 1), "same": {"k": "v"}}, versions)
        new = {"big": versions["big"]} if i else versions
        parent = await saver.aput(parent, cp, {"step": i, "run_id": f"run-{i % 3}"}, new)  # type: ignore[arg-type]
        await saver.aput_writes(parent, [("out", i)], f"task-{i}")
        stored.append(parent)
    return stored


# --- prune ---------------------------------------------------------------------------------


async def test_prune_keeps_the_newest_and_the_blobs_they_use(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        saver.delete_batch = 3
        thread, other = "p-" + uuid.uuid4().hex, "o-" + uuid.uuid4().hex
        stored = await chain(saver, thread, 10)
        await chain(saver, thread, 2, ns="child:1")
        await chain(saver, other, 4)
        recorder.clear()
        await saver.aprune([thread], keep=2)
        kept = [t async for t in saver.alist(config(thread, ""))]
        assert [t.config for t in kept] == [stored[9], stored[8]]
        for t, i in zip(kept, (9, 8), strict=True):
            assert t.checkpoint["channel_values"] == {"big": ["x"] * (i + 1), "same": {"k": "v"}}
            assert [w[1:] for w in t.pending_writes or []] == [("out", i)]
        assert len([t async for t in saver.alist(config(thread, "child:1"))]) == 2
        t = saver.tables
        # 2 + 2 checkpoints; blobs: "big" of each kept one, "same" once per namespace.
        assert await rows(saver, t.checkpoints, thread) == 4
        assert await rows(saver, t.writes, thread) == 4
        assert await rows(saver, t.blobs, thread) == 6
        assert await rows(saver, t.checkpoints, other) == 4  # another thread is untouched
        deletes = [(sql, p) for _, sql, p in recorder.statements if sql.startswith("DELETE")]
        assert len(deletes) >= 3 * 3  # 8 checkpoints in batches of 3: three batches
        for sql, params in deletes:  # no statement names more than a batch of rows
            assert len(params) <= 2 + 2 * 3, sql
            if url.startswith("mysql") and "_writes" in sql:
                assert sql.endswith("LIMIT 3")
        # Idempotent: a second run (or a retry) finds nothing more to delete.
        before = [await rows(saver, n) for n in (t.checkpoints, t.blobs, t.writes)]
        saver.prune([thread], keep=2)
        assert [await rows(saver, n) for n in (t.checkpoints, t.blobs, t.writes)] == before
        info = await saver.aget_thread_info(thread)
        assert info is not None and info.checkpoints == 4


async def test_prune_delete_and_bad_arguments(url: str) -> None:
    async with fresh_saver(url) as saver:
        thread = "pd-" + uuid.uuid4().hex
        await chain(saver, thread, 3)
        with pytest.raises(InvalidInputError, match="strategy"):
            await saver.aprune([thread], strategy="everything")
        with pytest.raises(InvalidInputError, match="keep"):
            await saver.aprune([thread], keep=0)
        with pytest.raises(InvalidInputError, match="thread_ids"):
            await saver.aprune(thread)  # a str is not a list of threads
        assert len([t async for t in saver.alist(config(thread))]) == 3
        await saver.aprune([thread], strategy="delete")
        assert [t async for t in saver.alist(config(thread))] == []
        assert await saver.aget_thread_info(thread) is None


@pytest.mark.parametrize("keep", [1, 2])
async def test_graph_after_prune(url: str, keep: int) -> None:
    async with fresh_saver(url) as saver:
        graph, thread = agent(saver), "g-" + uuid.uuid4().hex
        for n in range(3):
            await graph.ainvoke({"messages": [HumanMessage(f"turn {n}")]}, cfg(thread))
        before = await graph.aget_state(cfg(thread))
        assert len([s async for s in graph.aget_state_history(cfg(thread))]) > 10
        await saver.aprune([thread], keep=keep)
        # get_state: the whole conversation, from the latest checkpoint alone.
        state = await graph.aget_state(cfg(thread))
        assert state.values == before.values and kinds(state.values["messages"]) == TURN * 3
        # get_state_history: exactly the kept checkpoints, each readable whole.
        history = [s async for s in graph.aget_state_history(cfg(thread))]
        assert len(history) == keep
        assert all(kinds(s.values["messages"]) == TURN * 3 for s in history[:1])
        assert all(s.values.get("messages") for s in history)
        # Forking from the oldest kept checkpoint: new input on a finished one, or running
        # the step it had left to run.
        oldest = history[-1]
        fork_input = {"messages": [HumanMessage("fork")]} if oldest.next == () else None
        await graph.ainvoke(fork_input, oldest.config)
        forked = await graph.aget_state(cfg(thread))
        kept_messages = oldest.values["messages"]
        assert forked.values["messages"][: len(kept_messages)] == kept_messages
        assert len(forked.values["messages"]) > len(kept_messages)
        ancestry, at = [], forked.parent_config
        while at is not None:
            snapshot = await graph.aget_state(at)
            if not snapshot.values:
                break
            ancestry.append(snapshot.config["configurable"]["checkpoint_id"])
            at = snapshot.parent_config
        assert oldest.config["configurable"]["checkpoint_id"] in ancestry
        # The sync face through the same code path.
        graph.invoke({"messages": [HumanMessage("sync")]}, cfg(thread))
        saver.prune([thread])
        assert len(list(graph.get_state_history(cfg(thread)))) == 1
        assert graph.get_state(cfg(thread)).values["messages"][-4].content == "sync"


async def test_resuming_an_interrupted_run_after_prune(url: str) -> None:
    async with fresh_saver(url) as saver:
        graph, thread = approval_graph(saver), "i-" + uuid.uuid4().hex
        await graph.ainvoke({"messages": [HumanMessage("first")]}, cfg(thread))
        await graph.ainvoke(Command(resume="one"), cfg(thread))
        out = await graph.ainvoke({"messages": [HumanMessage("clean up")]}, cfg(thread))
        assert "__interrupt__" in out
        await saver.aprune([thread])
        paused = await graph.aget_state(cfg(thread))
        assert paused.next == ("approve",)
        assert paused.tasks[0].interrupts[0].value == {"question": "Delete the file?"}
        done = await graph.ainvoke(Command(resume="yes"), cfg(thread))
        assert done["messages"][-1].content == "approved=yes"
        assert [m.content for m in done["messages"]][:3] == [
            "first",
            "I will delete the file.",
            "approved=one",
        ]


# --- copy and delete runs ------------------------------------------------------------------


async def test_copy_thread_in_batches_and_twice(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        saver.delete_batch = 4
        source, target = "s-" + uuid.uuid4().hex, "t-" + uuid.uuid4().hex
        await chain(saver, source, 9)
        await chain(saver, source, 2, ns="child:1")
        await saver.aset_thread_info(source, user_id="alice", title="Trip")
        recorder.clear()
        await saver.acopy_thread(source, target)
        inserts = [(sql, p) for _, sql, p in recorder.statements if sql.startswith("INSERT")]
        assert len(inserts) >= 3 * 3  # 11 checkpoints in batches of 4
        for sql, params in inserts:
            if "SELECT" in sql:
                assert len(params) <= 3 + 2 * 4, sql
        t = saver.tables

        async def counts() -> list[int]:
            return [await rows(saver, n, target) for n in (t.checkpoints, t.blobs, t.writes)]

        copied = await counts()
        assert copied == [await rows(saver, n, source) for n in (t.checkpoints, t.blobs, t.writes)]
        saver.copy_thread(source, target)  # again: nothing twice
        assert await counts() == copied
        src = [t async for t in saver.alist(config(source))]
        dst = [t async for t in saver.alist(config(target))]
        assert [x.checkpoint for x in src] == [x.checkpoint for x in dst]
        assert [x.pending_writes for x in src] == [x.pending_writes for x in dst]
        assert [x.metadata for x in src] == [x.metadata for x in dst]
        info = await saver.aget_thread_info(target)
        assert info is not None
        assert (info.user_id, info.title, info.checkpoints) == ("alice", "Trip", 11)
        with pytest.raises(InvalidInputError, match="same thread"):
            await saver.acopy_thread(source, source)


async def test_delete_for_runs_keeps_shared_blobs(url: str) -> None:
    async with fresh_saver(url) as saver:
        saver.delete_batch = 2
        thread = "r-" + uuid.uuid4().hex
        stored = await chain(saver, thread, 7)  # runs: 0 1 2 0 1 2 0
        await saver.adelete_for_runs(["run-0", "nope"])
        left = [t async for t in saver.alist(config(thread))]
        assert [t.metadata["step"] for t in left] == [5, 4, 2, 1]
        for t in left:  # "same" was first stored by a deleted checkpoint: its blob stays
            assert t.checkpoint["channel_values"]["same"] == {"k": "v"}
        assert await saver.aget_tuple(stored[0]) is None
        saver.delete_for_runs(["run-0"])  # again: nothing changes
        assert len([t async for t in saver.alist(config(thread))]) == 4
        info = await saver.aget_thread_info(thread)
        assert info is not None and info.checkpoints == 4
        with pytest.raises(InvalidInputError, match="run_id"):
            await saver.adelete_for_runs(["bad "])


# --- the retention policy ------------------------------------------------------------------


async def test_retention_policy_keep_last_and_max_idle(url: str) -> None:
    policy = RetentionPolicy(keep_last=2, max_idle=timedelta(days=30))
    async with fresh_saver(url, retention=policy) as saver:
        saver.delete_batch = 2  # several pages of threads
        busy = ["b-" + uuid.uuid4().hex for _ in range(5)]
        idle = "idle-" + uuid.uuid4().hex
        for thread in [*busy, idle]:
            await chain(saver, thread, 4)
        p = "%s" if saver.backend == "mysql" else "?"
        old = "2000-01-01 00:00:00.000"
        async with saver.db.connection() as conn:
            await conn.execute(
                f"UPDATE {saver.tables.threads} SET last_activity = {p} WHERE thread_id = {p}",
                [old, idle],
            )
        report = await saver.aapply_retention()
        assert report == RetentionReport(
            threads_deleted=1, threads_pruned=5, checkpoints_deleted=4 + 5 * 2
        )
        for thread in busy:
            assert len([t async for t in saver.alist(config(thread))]) == 2
        assert [t async for t in saver.alist(config(idle))] == []
        assert saver.apply_retention() == RetentionReport()  # nothing left to do


async def test_retention_sweeper_runs_until_stopped(url: str) -> None:
    async with fresh_saver(url, retention=RetentionPolicy(keep_last=1)) as saver:
        thread = "sw-" + uuid.uuid4().hex
        await chain(saver, thread, 3)
        saver.start_retention_sweeper(interval=timedelta(milliseconds=50))
        with pytest.raises(InvalidInputError, match="already running"):
            saver.start_retention_sweeper()

        async def pruned() -> bool:
            for _ in range(600):  # liveness bound: 30 s
                if len([t async for t in saver.alist(config(thread))]) == 1:
                    return True
                await asyncio.sleep(0.05)
            return False

        try:
            assert await pruned()
            await chain(saver, thread, 2)  # the next sweep prunes this too
            assert await pruned()
        finally:
            await saver.astop_retention_sweeper()
        await chain(saver, thread, 2)
        await asyncio.sleep(0.2)
        assert len([t async for t in saver.alist(config(thread))]) == 3  # stopped


def test_policy_checks(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        RetentionPolicy(keep_last=0)
    with pytest.raises(InvalidInputError):
        RetentionPolicy(max_idle=timedelta(0))
    with pytest.raises(InvalidInputError, match="RetentionPolicy"):
        AsyncTiDBSaver(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", retention={"keep_last": 2})  # type: ignore[arg-type]
