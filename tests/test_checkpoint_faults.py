"""AsyncTiDBSaver under lost connections: LangGraph threads of many super-steps while the server
KILLs the saver's pooled connections.

The saver connects as a throwaway user (``mysql_user``), so the killer finds exactly its
connections in the PROCESSLIST and never touches anyone else's on the shared server. Afterwards
every acknowledged checkpoint (an ``aput`` that returned) must be readable, with its values, its
pending writes and an intact parent chain back to the thread's first checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from tests.conftest import mysql_params, mysql_url_for
from tidb_memory import RetryPolicy
from tidb_memory.checkpoint import AsyncTiDBSaver

STEPS = 40
THREADS = 8


@dataclass(frozen=True)
class Acked:
    thread_id: str
    checkpoint_id: str
    parent_id: str | None
    count: int | None


class RecordingSaver(AsyncTiDBSaver):
    """Remembers every checkpoint whose ``aput`` returned: those were acknowledged."""

    acked: list[Acked]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        stored = await super().aput(config, checkpoint, metadata, new_versions)
        self.acked.append(
            Acked(
                thread_id=str(config["configurable"]["thread_id"]),
                checkpoint_id=stored["configurable"]["checkpoint_id"],
                parent_id=config["configurable"].get("checkpoint_id"),
                count=checkpoint["channel_values"].get("count"),
            )
        )
        return stored


class State(TypedDict):
    count: int
    trail: list[int]


def looping_graph(saver: AsyncTiDBSaver) -> Any:
    def step(state: State) -> dict[str, Any]:
        n = state["count"] + 1
        return {"count": n, "trail": [*state["trail"], n]}

    def route(state: State) -> str:
        return END if state["count"] >= STEPS else "step"

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", route)
    return builder.compile(checkpointer=saver)


def kill_connections_of(user: str) -> int:
    killed = 0
    conn = pymysql.connect(**mysql_params())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
            for (thread_id,) in cur.fetchall():
                with contextlib.suppress(pymysql.err.MySQLError):
                    cur.execute(f"KILL {int(thread_id)}")
                    killed += 1
    finally:
        conn.close()
    return killed


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_acknowledged_checkpoints_survive_killed_connections(
    mysql_user: str, durability: str
) -> None:
    saver = RecordingSaver(
        mysql_url_for(mysql_user),
        table_prefix="cpf_" + uuid.uuid4().hex[:10],
        retry=RetryPolicy(attempts=20, deadline=60.0),
    )
    saver.acked = []
    await saver.asetup()
    graph = looping_graph(saver)
    threads = [f"fault-{uuid.uuid4().hex[:8]}-{i}" for i in range(THREADS)]
    done = asyncio.Event()
    kills: list[int] = []

    async def killer() -> None:
        rng = random.Random(7)
        while not done.is_set():
            await asyncio.sleep(rng.uniform(0.02, 0.12))
            kills.append(await asyncio.to_thread(kill_connections_of, mysql_user))

    async def run(thread_id: str) -> Any:
        config: Any = {"configurable": {"thread_id": thread_id}, "recursion_limit": STEPS + 10}
        return await graph.ainvoke({"count": 0, "trail": []}, config, durability=durability)

    killing = asyncio.create_task(killer())
    try:
        results = await asyncio.gather(*(run(t) for t in threads), return_exceptions=True)
    finally:
        done.set()
        await killing
    try:
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        assert all(r["count"] == STEPS for r in results if isinstance(r, dict))
        assert sum(kills) >= 10, f"only {sum(kills)} connections were killed"

        histories: dict[str, dict[str, Any]] = {}
        for thread_id in threads:
            history = [t async for t in saver.alist({"configurable": {"thread_id": thread_id}})]
            # Input checkpoint + one per super-step; a retried put never duplicates one.
            assert len(history) == STEPS + 2
            histories[thread_id] = {t.config["configurable"]["checkpoint_id"]: t for t in history}
            assert len(histories[thread_id]) == STEPS + 2
            latest = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
            assert latest is not None
            assert latest.checkpoint["channel_values"]["trail"] == list(range(1, STEPS + 1))
        for ack in saver.acked:
            config: Any = {
                "configurable": {
                    "thread_id": ack.thread_id,
                    "checkpoint_ns": "",
                    "checkpoint_id": ack.checkpoint_id,
                }
            }
            tup = await saver.aget_tuple(config)
            assert tup is not None, f"acknowledged checkpoint {ack} is missing"
            assert tup.checkpoint["channel_values"].get("count") == ack.count
            parent = (
                tup.parent_config["configurable"]["checkpoint_id"] if tup.parent_config else None
            )
            assert parent == ack.parent_id
            # The chain back to the thread's first checkpoint is intact.
            seen = histories[ack.thread_id]
            hops = 0
            while parent is not None:
                assert parent in seen, f"parent {parent} in the chain of {ack} is missing"
                link = seen[parent].parent_config
                parent = link["configurable"]["checkpoint_id"] if link else None
                hops += 1
            # Input checkpoint (no count yet) is the root; the one with count k is k + 1 hops on.
            assert hops == (0 if ack.count is None else ack.count + 1), (ack, hops)
        print(
            f"\n[{durability}] {len(threads)} threads x {STEPS} super-steps, "
            f"{len(saver.acked)} acknowledged checkpoints, {sum(kills)} connections KILLed: "
            "all readable, chains intact"
        )
    finally:
        t = saver.tables
        async with saver.db.connection() as conn:
            for name in (t.checkpoints, t.blobs, t.writes, t.migrations):
                await conn.execute(f"DROP TABLE IF EXISTS {name}", ())
        await saver.db.aclose()
