"""LangGraph checkpointers side by side: turns/s of a two-node ``MessagesState`` graph.

Workload: ``--threads`` conversations x ``--turns`` turns, ``--concurrency`` turns in flight (a
thread's turns run in order), on fresh threads. A round is ``--repeat`` workloads per saver
(8 x 250 = 2,000 turns, so that a round's ratio is stable). Each turn is one ``ainvoke`` with
a realistic human message; node ``model`` answers with a realistic AI message, node ``audit``
appends a short note. So a turn is one ``aget_tuple``, four ``aput`` (the input, then one per
super-step) and three ``aput_writes`` (durability "async", LangGraph's default).

Savers take turns workload by workload (A B C, then C B A, ...) in one process, on fresh thread
ids; a saver's round is its ``--repeat`` workloads, so every round of every saver spans the same
stretch of the run:

* ``tidb``      AsyncTiDBSaver on MariaDB/TiDB (``--url``), with the library's default pool.
* ``postgres``  AsyncPostgresSaver over a psycopg AsyncConnectionPool (``--pg-url``), same size.
* ``memory``    InMemorySaver: the upper bound (no I/O).
* ``memory+rt`` InMemorySaver that first makes one empty round trip (``SELECT 1`` on a raw
                aiomysql pool of ``--concurrency`` connections to ``--url``) in every
                ``aget_tuple``, ``aput`` and ``aput_writes``: the bound of any saver that awaits
                its database once per call, before it sends a byte of payload.
* ``mysql``     langgraph-checkpoint-mysql's AIOMySQLSaver, if installed: reported as it runs
                or fails (with aiomysql 0.3.2 and PyMySQL >= 1.2 it cannot send bytes).

The "vs" columns are the median of per-round ratios. A round's workloads of the different savers
are interleaved, about a second each, so that pairing them by round cancels drift slower than a
workload; a host whose speed changes within seconds (a shared VM's steal time) still scatters
the rounds, so read the per-round ratios. A server's own work spills over by less than 10 ms of
its CPU into the next saver's workload (/proc CPU time of mariadbd, and of PostgreSQL's
processes, in the second after each workload).

Each saver gets its own tables (a prefix on MySQL, a schema on Postgres, a database for
langgraph-checkpoint-mysql), dropped at the end.

Run:  python benchmarks/graph_savers.py [--rounds 5] [--only tidb,postgres,memory] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from _common import (
    default_url,
    emit,
    fmt_num,
    median,
    note,
    percentile,
    postgres_pool,
    quiet_library_noise,
    render_table,
    safe_url,
    turn_pair,
    versions,
)
from langchain_core.messages import AIMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
ALL_SAVERS = ("tidb", "postgres", "memory", "memory+rt", "mysql")


# --------------------------------------------------------------------------- the graph


def build_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    async def model(state: MessagesState) -> dict[str, Any]:
        seed = len(state["messages"]) * 7919 + hash(state["messages"][0].id or "") % 1000
        _, answer = turn_pair(seed)
        return {"messages": [answer]}

    async def audit(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"audited {len(state['messages'])} messages")]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("audit", audit)
    builder.add_edge(START, "model")
    builder.add_edge("model", "audit")
    builder.add_edge("audit", END)
    return builder.compile(checkpointer=saver)


# --------------------------------------------------------------------------- savers


@asynccontextmanager
async def tidb_saver(args: argparse.Namespace, token: str) -> AsyncIterator[Any]:
    from tidb_memory import AsyncTiDBSaver

    saver = AsyncTiDBSaver(args.url, table_prefix=f"bench_{token}_cp")  # default settings
    await saver.asetup()
    try:
        yield saver
    finally:
        t = saver.tables
        async with saver.db.connection() as conn:
            for name in (t.checkpoints, t.blobs, t.writes, t.migrations, t.threads):
                await conn.execute(f"DROP TABLE IF EXISTS {name}", ())
        await saver.db.aclose()


@asynccontextmanager
async def postgres_saver(args: argparse.Namespace, token: str) -> AsyncIterator[Any]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with postgres_pool(args.pg_url, args.concurrency, f"bench_{token}") as pool:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        yield saver


@asynccontextmanager
async def memory_saver(args: argparse.Namespace, token: str) -> AsyncIterator[Any]:
    yield InMemorySaver()


class RoundTripSaver(InMemorySaver):
    """InMemorySaver plus one empty round trip per saver call (see the module docstring)."""

    def __init__(self, pool: Any) -> None:
        super().__init__()
        self.pool = pool

    async def _round_trip(self) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
            await cur.fetchall()

    async def aget_tuple(self, config: Any) -> Any:
        await self._round_trip()
        return self.get_tuple(config)

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        await self._round_trip()
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: Any, writes: Any, task_id: str, task_path: str = ""
    ) -> None:
        await self._round_trip()
        self.put_writes(config, writes, task_id, task_path)


@asynccontextmanager
async def round_trip_saver(args: argparse.Namespace, token: str) -> AsyncIterator[Any]:
    import aiomysql

    u = make_url(args.url)
    pool = await aiomysql.create_pool(
        minsize=args.concurrency,
        maxsize=args.concurrency,
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        db=u.database or "test",
        autocommit=True,
    )
    try:
        yield RoundTripSaver(pool)
    finally:
        pool.close()
        await pool.wait_closed()


@asynccontextmanager
async def mysql_saver(args: argparse.Namespace, token: str) -> AsyncIterator[Any]:
    import aiomysql
    from langgraph.checkpoint.mysql.aio import AIOMySQLSaver  # type: ignore[import-not-found, unused-ignore]

    u = make_url(args.url)
    database = f"bench_{token}_lgmysql"
    admin_kwargs = {
        "host": u.host or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username or "root",
        "password": u.password or "",
        "autocommit": True,
    }
    admin = await aiomysql.connect(**admin_kwargs)
    try:
        async with admin.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {database}")
        pool = await aiomysql.create_pool(
            minsize=1, maxsize=args.concurrency, db=database, **admin_kwargs
        )
        try:
            saver = AIOMySQLSaver(conn=pool)
            await saver.setup()
            yield saver
        finally:
            pool.close()
            await pool.wait_closed()
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


FACTORIES: dict[str, Callable[[argparse.Namespace, str], Any]] = {
    "tidb": tidb_saver,
    "postgres": postgres_saver,
    "memory": memory_saver,
    "memory+rt": round_trip_saver,
    "mysql": mysql_saver,
}


# --------------------------------------------------------------------------- the workload


@dataclass
class Result:
    name: str
    rounds: list[float] = field(default_factory=list)  # turns/s per round
    cpu_us: list[float] = field(default_factory=list)  # client CPU per turn, per round
    latencies_ms: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def turns_per_s(self) -> float | None:
        return median(self.rounds) if self.rounds else None


async def run_batch(
    graph: Any, args: argparse.Namespace, tag: str, latencies: list[float]
) -> float:
    """``args.threads`` fresh conversations of ``args.turns`` turns each; the seconds it took."""
    run = uuid.uuid4().hex[:8]
    threads = [f"r{tag}-{run}-{i}" for i in range(args.threads)]
    gate = asyncio.Semaphore(args.concurrency)

    async def turn(thread_id: str, n: int) -> None:
        human, _ = turn_pair(hash((thread_id, n)) % 100_000)
        async with gate:
            started = time.perf_counter()
            await graph.ainvoke({"messages": [human]}, {"configurable": {"thread_id": thread_id}})
            latencies.append((time.perf_counter() - started) * 1000)

    async def conversation(thread_id: str) -> None:
        for n in range(args.turns):
            await turn(thread_id, n)

    started = time.perf_counter()
    await asyncio.gather(*(conversation(t) for t in threads))
    elapsed = time.perf_counter() - started
    # Correctness: every conversation holds exactly its turns.
    state = await graph.aget_state({"configurable": {"thread_id": threads[-1]}})
    expected = args.turns * 3
    got = len(state.values.get("messages", []))
    if got != expected:
        raise AssertionError(f"thread {threads[-1]} holds {got} messages, expected {expected}")
    return elapsed


async def amain(args: argparse.Namespace) -> int:
    quiet_library_noise()
    names = [n for n in (args.only.split(",") if args.only else ALL_SAVERS) if n]
    unknown = sorted(set(names) - set(ALL_SAVERS))
    if unknown:
        raise SystemExit(f"unknown saver(s): {', '.join(unknown)}")
    token = uuid.uuid4().hex[:8]
    results = {name: Result(name) for name in names}
    graphs: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        for name in names:
            try:
                saver = await stack.enter_async_context(FACTORIES[name](args, token))
                graphs[name] = build_graph(saver)
            except Exception as exc:  # report, do not abort the others
                results[name].error = f"setup: {type(exc).__name__}: {exc}"
                note(f"[{name}] setup failed: {results[name].error}")
        for name, graph in graphs.items():  # warm-up: pools, caches, tables
            try:
                await graph.ainvoke(
                    {"messages": [turn_pair(1)[0]]}, {"configurable": {"thread_id": f"w-{token}"}}
                )
            except Exception as exc:
                results[name].error = f"{type(exc).__name__}: {exc}"
                note(f"[{name}] failed: {results[name].error}")
                if args.verbose:
                    traceback.print_exc()
        live = [n for n in names if n in graphs and results[n].error is None]
        turns = args.threads * args.turns
        for round_no in range(args.rounds):
            elapsed = dict.fromkeys(live, 0.0)
            cpu = dict.fromkeys(live, 0.0)
            for batch in range(args.repeat):
                step = round_no * args.repeat + batch
                for name in live if step % 2 == 0 else list(reversed(live)):
                    if results[name].error is not None:
                        continue
                    started = time.process_time()
                    try:
                        elapsed[name] += await run_batch(
                            graphs[name], args, f"{round_no}.{batch}", results[name].latencies_ms
                        )
                    except Exception as exc:
                        results[name].error = f"{type(exc).__name__}: {exc}"
                        note(f"[{name}] failed: {results[name].error}")
                    cpu[name] += time.process_time() - started
            for name in live:
                if results[name].error is not None:
                    continue
                rate = args.repeat * turns / elapsed[name]
                cpu_us = 1e6 * cpu[name] / (args.repeat * turns)
                results[name].rounds.append(rate)
                results[name].cpu_us.append(cpu_us)
                emit(
                    f"round {round_no + 1}/{args.rounds} {name:8} {rate:8,.1f} turns/s  "
                    f"cpu {cpu_us:6,.0f} us/turn"
                )
    report(args, results)
    return 0


def report(args: argparse.Namespace, results: dict[str, Result]) -> None:
    pg = results.get("postgres")
    mem = results.get("memory")
    if args.json:
        emit(
            json.dumps(
                {
                    "workload": {
                        "threads": args.threads,
                        "turns": args.turns,
                        "repeat": args.repeat,
                        "concurrency": args.concurrency,
                        "rounds": args.rounds,
                    },
                    "versions": versions(),
                    "results": [
                        {
                            **asdict(r),
                            "turns_per_s": r.turns_per_s,
                            "vs_postgres_per_round": per_round(r, pg),
                            "vs_postgres": paired(r, pg),
                            "vs_memory": paired(r, mem),
                        }
                        for r in results.values()
                    ],
                },
                indent=2,
            )
        )
        return
    emit(
        f"graph savers: {args.threads} threads x {args.turns} turns, concurrency "
        f"{args.concurrency}, {args.repeat} workloads a round, interleaved, {args.rounds} rounds "
        f"(median turns/s; ratios: median of the per-round ratios); MySQL {safe_url(args.url)}"
    )
    rows = []
    for r in results.values():
        rate = r.turns_per_s
        lat = r.latencies_ms
        vs_pg, vs_mem = paired(r, pg), paired(r, mem)
        rows.append(
            [
                r.name,
                fmt_num(rate) if rate else "-",
                fmt_num(percentile(lat, 50), 2) if lat else "-",
                fmt_num(percentile(lat, 99), 2) if lat else "-",
                fmt_num(median(r.cpu_us), 0) if r.cpu_us else "-",
                f"{vs_pg:.2f}x" if vs_pg else "-",
                f"{vs_mem:.2f}x" if vs_mem else "-",
                "ok" if r.error is None else f"FAILED: {r.error[:90]}",
            ]
        )
    emit(
        render_table(
            [
                "saver",
                "turns/s",
                "p50 ms",
                "p99 ms",
                "cpu us/turn",
                "vs postgres",
                "vs memory",
                "status",
            ],
            rows,
        )
    )
    for base in (pg, mem):
        if base is None or not base.rounds:
            continue
        for r in results.values():
            ratios = per_round(r, base)
            if r is not base and ratios:
                emit(f"{r.name} / {base.name} per round: " + ", ".join(f"{x:.2f}" for x in ratios))


def per_round(result: Result, base: Result | None) -> list[float]:
    """``result``'s turns/s over ``base``'s, round by round (its workloads were interleaved)."""
    if base is None:
        return []
    return [a / b for a, b in zip(result.rounds, base.rounds, strict=False)]


def paired(result: Result, base: Result | None) -> float | None:
    """The median per-round ratio: pairing by round cancels the machine's drift over the run."""
    ratios = per_round(result, base)
    return median(ratios) if ratios else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=default_url(), help="MySQL/TiDB URL (%(default)s)")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL URL (%(default)s)")
    p.add_argument("--threads", type=int, default=50, help="threads per round (%(default)s)")
    p.add_argument("--turns", type=int, default=5, help="turns per thread (%(default)s)")
    p.add_argument(
        "--repeat", type=int, default=8, help="workloads per round, interleaved (%(default)s)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="turns in flight (%(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (%(default)s)")
    p.add_argument("--only", help=f"comma-separated subset of: {','.join(ALL_SAVERS)}")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
