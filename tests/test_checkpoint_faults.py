"""AsyncTiDBSaver under lost connections: LangGraph threads of many super-steps while their
connections are lost.

Two ways of losing them:

* the server KILLs the saver's pooled connections. The saver connects as a throwaway user
  (``mysql_user``), so the killer finds exactly its connections in the PROCESSLIST and never
  touches anyone else's on the shared server;
* a :class:`~tests.infra.FaultProxy` in front of a private :class:`~tests.infra.ThrowawayMariaDB`
  cuts sockets before a request, after a request but before its reply (the ambiguous case: the
  checkpoint upsert has committed and the client never heard) and in the middle of a read.

Afterwards every acknowledged checkpoint (an ``aput`` that returned, or a state the graph
listed) must be readable, with its values, its pending writes (each exactly once) and an intact
parent chain back to the thread's first checkpoint: no gap, no duplicate, no orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from tests.append_checker import RetryCounter
from tests.conftest import mysql_params, mysql_url_for
from tests.infra import CutMode, FaultProxy, ThrowawayMariaDB
from tidb_memory import RetryPolicy
from tidb_memory.langgraph import AsyncTiDBSaver

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


def looping_graph(saver: AsyncTiDBSaver, steps: int = STEPS, pause: float = 0.0) -> Any:
    """One node looping ``steps`` super-steps; each appends the step number to ``trail``."""

    async def step(state: State) -> dict[str, Any]:
        if pause:
            await asyncio.sleep(random.uniform(0, pause))
        n = state["count"] + 1
        return {"count": n, "trail": [*state["trail"], n]}

    def route(state: State) -> str:
        return END if state["count"] >= steps else "step"

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", route)
    return builder.compile(checkpointer=saver)


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> Any:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def run_threads(graph: Any, threads: Sequence[str], steps: int, durability: str) -> None:
    """One ``ainvoke`` of ``steps`` super-steps per thread, all at once; all must finish."""

    async def run(thread_id: str) -> Any:
        config: Any = {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10}
        return await graph.ainvoke({"count": 0, "trail": []}, config, durability=durability)

    results = await asyncio.gather(*(run(t) for t in threads), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert [r["count"] for r in results] == [steps] * len(threads)


def expected_writes(count: int | None, steps: int) -> list[tuple[str, Any]]:
    """The pending writes stored on the checkpoint whose state has ``count``: those of the one
    task that ran from it (the input for the first checkpoint, none for the last)."""
    if count is None:
        return [("branch:to:step", None), ("count", 0), ("trail", [])]
    if count >= steps:
        return []
    n = count + 1
    branch = [("branch:to:step", None)] if n < steps else []
    return [*branch, ("count", n), ("trail", list(range(1, n + 1)))]


@dataclass
class ChainReport:
    threads: int = 0
    checkpoints: int = 0  # stored checkpoints read back
    acknowledged: int = 0  # acknowledged checkpoints checked
    listed: int = 0  # states the graph listed while the faults went on, checked too
    writes: int = 0  # pending writes read back
    lost: int = 0
    duplicated: int = 0
    anomalies: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        if kind == "lost":
            self.lost += 1
        elif kind == "duplicated":
            self.duplicated += 1
        self.anomalies.append(f"{kind}: {text}")


def _parent_id(tup: Any) -> str | None:
    return tup.parent_config["configurable"]["checkpoint_id"] if tup.parent_config else None


async def check_threads(
    reader: AsyncTiDBSaver,
    threads: Sequence[str],
    acked: Sequence[Acked],
    steps: int,
    listed: Sequence[RunnableConfig] = (),
) -> ChainReport:
    """Read every thread back through ``reader`` and check it against what was acknowledged.

    Per thread: ``steps + 2`` checkpoints (the input, then one per super-step), each exactly
    once; a single parent chain from the newest back to the input covering all of them, the
    state one step further at each link; each checkpoint's pending writes exactly those of the
    task that ran from it, once each. Then every acknowledged checkpoint (and every listed one)
    must be readable by id, with its values and its parent, on that chain.
    """
    report = ChainReport(threads=len(threads))
    chains: dict[str, set[str]] = {}
    for thread_id in threads:
        history = [t async for t in reader.alist(thread_config(thread_id))]
        report.checkpoints += len(history)
        ids = Counter(t.config["configurable"]["checkpoint_id"] for t in history)
        for cid, n in ids.items():
            if n > 1:
                report.problem("duplicated", f"{thread_id}: checkpoint {cid} listed {n} times")
        by_id = {t.config["configurable"]["checkpoint_id"]: t for t in history}
        if not history:
            report.problem("lost", f"{thread_id}: no checkpoint at all")
            chains[thread_id] = set()
            continue
        # The parent chain, from the newest checkpoint back to the input.
        latest = history[0]
        if latest.checkpoint["channel_values"].get("trail") != list(range(1, steps + 1)):
            report.problem("lost", f"{thread_id}: latest state {latest.checkpoint}")
        chain: list[Any] = [latest]
        while (parent := _parent_id(chain[-1])) is not None:
            if parent not in by_id:
                report.problem("lost", f"{thread_id}: gap, parent {parent} is missing")
                break
            if len(chain) > len(by_id):
                report.problem("duplicated", f"{thread_id}: the parent chain loops")
                break
            chain.append(by_id[parent])
        counts = [t.checkpoint["channel_values"].get("count") for t in reversed(chain)]
        if counts != [None, *range(steps + 1)]:
            report.problem("lost", f"{thread_id}: chain counts {counts}")
        on_chain = {t.config["configurable"]["checkpoint_id"] for t in chain}
        chains[thread_id] = on_chain
        for orphan in set(by_id) - on_chain:
            report.problem("duplicated", f"{thread_id}: orphan checkpoint {orphan}")
        missing = steps + 2 - len(by_id)
        for _ in range(max(missing, 0)):
            report.problem("lost", f"{thread_id}: {len(by_id)} checkpoints, not {steps + 2}")
        # Pending writes: those of one task, each once.
        for tup in history:
            count = tup.checkpoint["channel_values"].get("count")
            got = sorted(((ch, v) for _, ch, v in tup.pending_writes), key=repr)
            want = sorted(expected_writes(count, steps), key=repr)
            report.writes += len(got)
            tasks = {task for task, _, _ in tup.pending_writes}
            if got != want or len(tasks) > 1:
                extra = len(got) - len(want)
                kind = "duplicated" if extra > 0 or len(tasks) > 1 else "lost"
                report.problem(kind, f"{thread_id} count={count}: writes {got}, want {want}")
    for ack in acked:
        report.acknowledged += 1
        tup = await reader.aget_tuple(thread_config(ack.thread_id, ack.checkpoint_id))
        if tup is None:
            report.problem("lost", f"acknowledged checkpoint {ack} is missing")
            continue
        if tup.checkpoint["channel_values"].get("count") != ack.count:
            report.problem("lost", f"{ack}: stored count {tup.checkpoint['channel_values']}")
        if _parent_id(tup) != ack.parent_id:
            report.problem("lost", f"{ack}: stored parent {_parent_id(tup)}")
        if ack.checkpoint_id not in chains.get(ack.thread_id, set()):
            report.problem("lost", f"{ack}: not on its thread's parent chain")
    for config in listed:
        report.listed += 1
        thread_id = config["configurable"]["thread_id"]
        checkpoint_id = config["configurable"]["checkpoint_id"]
        if await reader.aget_tuple(thread_config(thread_id, checkpoint_id)) is None:
            report.problem("lost", f"listed checkpoint {thread_id}/{checkpoint_id} is missing")
        elif checkpoint_id not in chains.get(thread_id, set()):
            report.problem("lost", f"listed checkpoint {thread_id}/{checkpoint_id} off chain")
    return report


async def drop_tables(saver: AsyncTiDBSaver) -> None:
    t = saver.tables
    async with saver.db.connection() as conn:
        for name in (t.checkpoints, t.blobs, t.writes, t.migrations, t.threads):
            await conn.execute(f"DROP TABLE IF EXISTS {name}", ())


# --- the server KILLs the saver's connections ----------------------------------------------


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

    killing = asyncio.create_task(killer())
    try:
        await run_threads(graph, threads, STEPS, durability)
    finally:
        done.set()
        await killing
    try:
        assert sum(kills) >= 10, f"only {sum(kills)} connections were killed"
        report = await check_threads(saver, threads, saver.acked, STEPS)
        print(
            f"\n[{durability}] {len(threads)} threads x {STEPS} super-steps, "
            f"{report.acknowledged} acknowledged checkpoints, {sum(kills)} connections KILLed: "
            f"lost={report.lost} duplicated={report.duplicated}"
        )
        assert report.anomalies == []
        assert report.acknowledged == len(threads) * (STEPS + 2)
    finally:
        await drop_tables(saver)
        await saver.db.aclose()


# --- a proxy cuts the saver's sockets ------------------------------------------------------

PROXY_THREADS = 8
PROXY_STEPS = 30
MIN_CUTS = 50
# The thread and checkpoint ids at the start of a checkpoint upsert's VALUES.
UPSERT_KEY = re.compile(r"VALUES \('([^']+)', UNHEX\('[0-9a-fA-F]*'\), '', '([0-9a-f-]{36})'")


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayMariaDB]:
    with ThrowawayMariaDB() as db:
        yield db


def statement_kind(saver: AsyncTiDBSaver, text: str) -> str:
    """What a command the proxy saw is, from its SQL text."""
    t = saver.tables
    upsert = f"INSERT INTO `{t.checkpoints}`"
    if text.startswith(upsert) or f";{upsert}" in text:
        return "checkpoint upsert"  # alone, or after the blobs' insert in one query
    if text.startswith(f"INSERT INTO `{t.blobs}`"):
        return "blobs insert"
    if text.startswith(f"INSERT INTO `{t.writes}`"):
        return "writes insert"
    if text.startswith("WITH RECURSIVE c AS") and f"`{t.checkpoints}`" in text:
        return "read"
    return "other"


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_acknowledged_checkpoints_survive_proxy_cuts(
    server: ThrowawayMariaDB, durability: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = "cpp_" + uuid.uuid4().hex[:10]
    retry = RetryPolicy(attempts=40, deadline=30.0, base_delay=0.002, max_delay=0.1)
    threads = [f"cut-{uuid.uuid4().hex[:8]}-{i}" for i in range(PROXY_THREADS)]
    rng = random.Random(11)
    started = time.monotonic()
    async with FaultProxy(server.host, server.port) as proxy:
        saver = RecordingSaver(proxy.url(), table_prefix=prefix, retry=retry)
        saver.acked = []
        await saver.asetup()
        graph = looping_graph(saver, PROXY_STEPS, pause=0.01)

        def matching(kind: str) -> Any:
            return lambda text: statement_kind(saver, text) == kind

        # (mode, statement kind, cuts wanted, skip range): each armed one cut at a time, so
        # that the cuts spread over the run.
        plan = [
            (CutMode.AFTER_REQUEST, "checkpoint upsert", 20, 6),
            (CutMode.AFTER_REQUEST, "writes insert", 5, 12),
            (CutMode.BEFORE_REQUEST, "checkpoint upsert", 10, 12),
            (CutMode.BEFORE_REQUEST, "writes insert", 5, 12),
            (CutMode.BEFORE_REQUEST, "read", 5, 4),
            (CutMode.DURING_REPLY, "read", 15, 2),
        ]
        planned = {(mode, kind): n for mode, kind, n, _ in plan}

        def fired() -> Counter[tuple[CutMode | None, str]]:
            return Counter(
                (c.mode, statement_kind(saver, c.text)) for c in proxy.cut_log if c.source == "arm"
            )

        def planned_done() -> bool:
            now = fired()
            return all(now[key] >= n for key, n in planned.items())

        writing = asyncio.Event()  # set while the graph runs
        all_fired = asyncio.Event()  # every planned cut has fired
        stop = asyncio.Event()

        async def controller() -> None:
            armed: dict[tuple[CutMode, str], Any] = {}
            while not stop.is_set():
                if planned_done():
                    all_fired.set()
                now = fired()
                for mode, kind, n, skip in plan:
                    arm = armed.get((mode, kind))
                    if arm is not None and not arm.exhausted:
                        continue
                    if now[(mode, kind)] >= n and not writing.is_set():
                        continue
                    if kind != "read" and not writing.is_set():
                        continue
                    armed[(mode, kind)] = proxy.arm(
                        mode,
                        match=matching(kind),
                        skip=rng.randint(0, skip),
                        reply_bytes=rng.randint(1, 600),
                    )
                await asyncio.sleep(0.005)
            proxy.disarm()

        reads = 0
        regressions: list[str] = []

        async def reader(seed: int) -> None:
            # Reads through the proxy all along, with its cuts: latest states, pages of history.
            nonlocal reads
            r = random.Random(seed)
            seen: dict[str, int] = {}
            while not stop.is_set():
                thread_id = r.choice(threads)
                if r.random() < 0.5:
                    tup = await saver.aget_tuple(thread_config(thread_id))
                    tuples = [tup] if tup is not None else []
                else:
                    page = saver.alist(thread_config(thread_id), limit=r.randint(1, 4))
                    tuples = [t async for t in page]
                reads += 1
                if tuples:
                    count = tuples[0].checkpoint["channel_values"].get("count")
                    count = -1 if count is None else count
                    if count < seen.get(thread_id, -1):
                        regressions.append(f"{thread_id}: {count} after {seen[thread_id]}")
                    seen[thread_id] = max(count, seen.get(thread_id, -1))
                await asyncio.sleep(r.uniform(0.002, 0.01))

        retries = RetryCounter()
        listed: list[RunnableConfig] = []
        with retries.installed():
            control = asyncio.create_task(controller())
            readers = [asyncio.create_task(reader(i)) for i in range(2)]
            try:
                writing.set()
                await run_threads(graph, threads, PROXY_STEPS, durability)
                writing.clear()
                # The graph lists each thread's states through the proxy, cuts still going on:
                # those are acknowledged too. Keep reading until the planned read cuts fired.
                for thread_id in threads:
                    states = [s async for s in graph.aget_state_history(thread_config(thread_id))]
                    listed += [s.config for s in states]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_fired.wait(), 10)
            finally:
                stop.set()
                await asyncio.gather(control, *readers, return_exceptions=True)
            read_errors = [t.exception() for t in readers if t.exception() is not None]
        cuts = dict(proxy.stats.cuts)
        by_kind = fired()
        ambiguous = [
            c.text
            for c in proxy.cut_log
            if c.mode is CutMode.AFTER_REQUEST
            and statement_kind(saver, c.text) == "checkpoint upsert"
        ]
        await saver.db.aclose()

    # Read back over a fresh saver on a direct connection.
    fresh = AsyncTiDBSaver(server.url, table_prefix=prefix)
    try:
        report = await check_threads(fresh, threads, saver.acked, PROXY_STEPS, listed)
        stored_writes = server.sync_query(f"SELECT COUNT(*) FROM `{fresh.tables.writes}`")[0][0]
    finally:
        await drop_tables(fresh)
        await fresh.db.aclose()
    elapsed = time.monotonic() - started

    kinds = ", ".join(f"{m.name} {k}={n}" for (m, k), n in sorted(by_kind.items(), key=str))
    retry_kinds = ", ".join(f"{k}={n}" for k, n in sorted(retries.by_kind.items()))
    with capsys.disabled():
        print(
            f"\n[checkpoint cuts, durability={durability}] threads={report.threads} "
            f"steps={PROXY_STEPS} checkpoints={report.checkpoints} "
            f"(acknowledged={report.acknowledged}, listed={report.listed}) "
            f"writes={report.writes} (rows={stored_writes}) reads={reads} "
            f"cuts={sum(cuts.values())} ({kinds}) retries={retries.retries} ({retry_kinds}) "
            f"lost={report.lost} duplicated={report.duplicated} "
            f"anomalies={len(report.anomalies)} in {elapsed:.1f}s"
        )
    assert not read_errors, read_errors
    assert regressions == []
    assert report.anomalies == [], report.anomalies[:10]
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.threads == PROXY_THREADS
    assert report.checkpoints == PROXY_THREADS * (PROXY_STEPS + 2)
    assert report.acknowledged == PROXY_THREADS * (PROXY_STEPS + 2)
    assert report.listed == PROXY_THREADS * (PROXY_STEPS + 2)
    assert report.writes == stored_writes
    assert sum(cuts.values()) >= MIN_CUTS, cuts
    for key, n in planned.items():
        assert by_kind[key] >= n, (key, by_kind)
    assert all(cuts[mode] > 0 for mode in CutMode), cuts
    assert retries.retries >= MIN_CUTS // 2
    # The ambiguous cuts waited for the server's reply, so each of those upserts committed and
    # the client never heard: the retry must have stored the same checkpoint, not a second one.
    acked_ids = Counter((a.thread_id, a.checkpoint_id) for a in saver.acked)
    for text in ambiguous:
        key = UPSERT_KEY.search(text)
        assert key is not None, text[:200]
        assert acked_ids[(key.group(1), key.group(2))] == 1, key.groups()
    assert len(ambiguous) >= 20
    with capsys.disabled():
        print(
            f"[checkpoint cuts, durability={durability}] ambiguous upserts committed but cut: "
            f"{len(ambiguous)}, each acknowledged once and stored once"
        )


# --- retention operations under cuts --------------------------------------------------------

RETENTION_THREADS = 12
RETENTION_STEPS = 10


def retention_kind(saver: AsyncTiDBSaver, text: str) -> str:
    """What a retention statement the proxy saw is, from its SQL text."""
    if text.startswith("DELETE FROM"):
        return "delete"
    if text.startswith("INSERT INTO") and " SELECT " in text:
        return "copy insert"
    if text.startswith("SELECT") and f"`{saver.tables.checkpoints}`" in text:
        return "retention read"
    return "other"


async def snapshot(saver: AsyncTiDBSaver, thread_id: str) -> list[Any]:
    return [
        (t.config["configurable"]["checkpoint_id"], t.checkpoint, t.metadata, t.pending_writes)
        async for t in saver.alist(thread_config(thread_id))
    ]


async def row_count(server: ThrowawayMariaDB, table: str, thread_id: str) -> int:
    sql = f"SELECT COUNT(*) FROM `{table}` WHERE thread_id = %s"
    return int(server.sync_query(sql, (thread_id,))[0][0])


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_prune_copy_and_delete_runs_survive_proxy_cuts(
    server: ThrowawayMariaDB, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every retention operation, with sockets cut before its requests, after them (the
    statement ran, the client never heard) and in the middle of its reads: each finishes
    through the retry policy, and the result is exactly what an undisturbed run gives."""
    prefix = "cpr_" + uuid.uuid4().hex[:10]
    threads = [f"ret-{uuid.uuid4().hex[:8]}-{i}" for i in range(RETENTION_THREADS)]
    direct = AsyncTiDBSaver(server.url, table_prefix=prefix)
    await direct.asetup()
    graph = looping_graph(direct, RETENTION_STEPS)
    for thread_id in threads:
        config: Any = {
            "configurable": {"thread_id": thread_id},
            "metadata": {"run_id": f"run-{thread_id}"},
            "recursion_limit": RETENTION_STEPS + 10,
        }
        await graph.ainvoke({"count": 0, "trail": []}, config)
    copy, prune, runs, delete = (threads[i : i + 3] for i in range(0, 12, 3))
    before = {t: await snapshot(direct, t) for t in threads}
    assert all(len(s) == RETENTION_STEPS + 2 for s in before.values())
    retry = RetryPolicy(attempts=40, deadline=30.0, base_delay=0.002, max_delay=0.1)
    rng = random.Random(13)
    plan = [
        (CutMode.AFTER_REQUEST, "delete", 8, 6),
        (CutMode.AFTER_REQUEST, "copy insert", 8, 6),
        (CutMode.BEFORE_REQUEST, "delete", 4, 6),
        (CutMode.BEFORE_REQUEST, "copy insert", 4, 6),
        (CutMode.DURING_REPLY, "retention read", 4, 3),
    ]
    async with FaultProxy(server.host, server.port) as proxy:
        saver = AsyncTiDBSaver(proxy.url(), table_prefix=prefix, retry=retry)
        saver.delete_batch = 2  # many small batches: many statements to cut

        def fired() -> Counter[tuple[CutMode | None, str]]:
            return Counter(
                (c.mode, retention_kind(saver, c.text)) for c in proxy.cut_log if c.source == "arm"
            )

        stop = asyncio.Event()

        async def controller() -> None:
            armed: dict[tuple[CutMode, str], Any] = {}
            while not stop.is_set():
                now = fired()
                for mode, kind, n, skip in plan:
                    arm = armed.get((mode, kind))
                    if (arm is not None and not arm.exhausted) or now[(mode, kind)] >= n:
                        continue
                    armed[(mode, kind)] = proxy.arm(
                        mode,
                        match=lambda text, kind=kind: retention_kind(saver, text) == kind,
                        skip=rng.randint(0, skip),
                        reply_bytes=rng.randint(1, 200),
                    )
                await asyncio.sleep(0.002)
            proxy.disarm()

        retries = RetryCounter()
        with retries.installed():
            control = asyncio.create_task(controller())
            try:
                for rounds in range(20):  # every operation twice at least, until all cuts fired
                    await asyncio.gather(
                        *(saver.acopy_thread(t, f"{t}-copy") for t in copy),
                        saver.aprune(prune, keep=3),
                        saver.adelete_for_runs([f"run-{t}" for t in runs]),
                        saver.aprune(delete, strategy="delete"),
                    )
                    done = fired()
                    if rounds >= 1 and all(done[(m, k)] >= n for m, k, n, _ in plan):
                        break
            finally:
                stop.set()
                await control
        by_kind = fired()
        await saver.db.aclose()

    t = direct.tables
    try:
        for thread_id in copy:
            assert await snapshot(direct, f"{thread_id}-copy") == before[thread_id]
            assert await snapshot(direct, thread_id) == before[thread_id]
            for table in (t.checkpoints, t.blobs, t.writes):
                assert await row_count(server, table, f"{thread_id}-copy") == await row_count(
                    server, table, thread_id
                )
        for thread_id in prune:
            assert await snapshot(direct, thread_id) == before[thread_id][:3]
            assert await row_count(server, t.writes, thread_id) == sum(
                len(w) for *_, w in before[thread_id][:3]
            )
        for thread_id in [*runs, *delete]:
            assert await snapshot(direct, thread_id) == []
            for table in (t.checkpoints, t.blobs, t.writes):
                assert await row_count(server, table, thread_id) == 0, table
        for thread_id in delete:
            assert await direct.aget_thread_info(thread_id) is None
        for thread_id in runs:  # the thread stays known (owner, title), with no checkpoints
            info = await direct.aget_thread_info(thread_id)
            assert info is not None and info.checkpoints == 0
        for thread_id in copy + prune:
            info = await direct.aget_thread_info(thread_id)
            assert info is not None
            assert info.checkpoints == len(await snapshot(direct, thread_id))
    finally:
        await drop_tables(direct)
        await direct.db.aclose()
    kinds = ", ".join(f"{m.name} {k}={n}" for (m, k), n in sorted(by_kind.items(), key=str))
    with capsys.disabled():
        print(
            f"\n[retention cuts] copy/prune/delete_for_runs/delete of {RETENTION_THREADS} "
            f"threads x {RETENTION_STEPS + 2} checkpoints: cuts={sum(by_kind.values())} ({kinds}) "
            f"retries={retries.retries}; every result equals an undisturbed run"
        )
    for mode, kind, n, _ in plan:
        assert by_kind[(mode, kind)] >= n, (mode, kind, by_kind)
    assert retries.retries >= 10
