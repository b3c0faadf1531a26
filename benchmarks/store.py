"""LangGraph stores side by side: a memory workload, and a semantic-search workload.

Memory workload (per round, ``--ops`` operations, ``--concurrency`` in flight): ``--users``
users, each with a namespace ``("memories", user)`` seeded with ``--seed-items`` items. The
operations, drawn from a seeded generator: 35% ``aput`` (new or updated memories), 35% ``aget``,
20% ``asearch`` with a filter (``{"kind": "fact"}``, limit 10), 10% ``alist_namespaces``
(prefix ``("memories",)``, limit 20). Stores, run alternately (A B C, then C B A, ...) for
``--rounds`` rounds in one process:

* ``tidb``      AsyncTiDBStore on MariaDB/TiDB (``--url``), a pool of ``--concurrency``.
* ``postgres``  LangGraph's AsyncPostgresStore over a psycopg AsyncConnectionPool of the same
                size (``--pg-url``; locally: ``su postgres -c "createdb test"`` once, and the
                ``postgres`` role connects over TCP with trust authentication).
* ``memory``    InMemoryStore: the upper bound (no I/O).

The "vs postgres" column is the median of per-round ratios (pairing by round cancels the machine
getting faster or slower during the run).

Semantic workload (``--semantic``): ``--items`` items over ``--sem-users`` users, ``--dims``
dimensions, a deterministic offline embedding (each word a fixed random direction, summed);
then ``--searches`` searches, each in one user's namespace with a two-word query, limit 10,
``--concurrency`` in flight: searches/s and p99 for ``tidb`` and ``memory``. On MariaDB the
cosine runs in the client over the namespace's float32 vectors; on TiDB v8.4+ in the server.

Run:  python benchmarks/store.py                     # both workloads, every round printed
      python benchmarks/store.py --rounds 9 --json   # for the record
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from _common import (
    default_url,
    emit,
    fmt_num,
    import_tidb_memory,
    median,
    note,
    percentile,
    postgres_pool,
    render_table,
    safe_url,
    versions,
)
from langchain_core.embeddings import Embeddings
from langgraph.store.memory import InMemoryStore

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
ALL_STORES = ("tidb", "postgres", "memory")
VOCABULARY = [f"w{i}" for i in range(400)]


# --------------------------------------------------------------------------- embedding


@cache
def _word(word: str, dims: int) -> Any:
    import numpy as np

    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(dims).astype("float64")


class OfflineEmbeddings(Embeddings):
    """Deterministic: a text is the sum of its words' fixed random vectors."""

    def __init__(self, dims: int) -> None:
        self.dims = dims

    def _one(self, text: str) -> list[float]:
        import numpy as np

        words = text.split() or [text]
        return list(np.sum([_word(w, self.dims) for w in words], axis=0).tolist())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)


# --------------------------------------------------------------------------- stores


@asynccontextmanager
async def tidb_store(args: argparse.Namespace, token: str, index: Any) -> AsyncIterator[Any]:
    tidb_memory, error = import_tidb_memory()
    if tidb_memory is None:
        raise RuntimeError(error)
    from tidb_memory.langgraph.store import AsyncTiDBStore

    pool = {"pool_size": args.concurrency, "max_overflow": 0}
    store = AsyncTiDBStore(
        args.url, table_prefix=f"bench_store_{token}", index=index, engine_args=pool
    )
    await store.asetup()
    try:
        yield store
    finally:
        t = store.tables
        async with store.db.connection() as conn:
            for name in (t.items, t.vectors, t.migrations, t.vector_migrations):
                await conn.execute(f"DROP TABLE IF EXISTS {name}", ())
        await store.db.aclose()


@asynccontextmanager
async def postgres_store(args: argparse.Namespace, token: str, index: Any) -> AsyncIterator[Any]:
    from langgraph.store.postgres.aio import AsyncPostgresStore

    async with postgres_pool(args.pg_url, args.concurrency, f"bench_store_{token}") as pool:
        store = AsyncPostgresStore(pool)  # type: ignore[arg-type]
        await store.setup()
        yield store


@asynccontextmanager
async def memory_store(args: argparse.Namespace, token: str, index: Any) -> AsyncIterator[Any]:
    yield InMemoryStore(index=index)


FACTORIES: dict[str, Callable[[argparse.Namespace, str, Any], Any]] = {
    "tidb": tidb_store,
    "postgres": postgres_store,
    "memory": memory_store,
}


# --------------------------------------------------------------------------- workloads


@dataclass
class Result:
    name: str
    rounds: list[float] = field(default_factory=list)  # ops/s per round
    latencies_ms: list[float] = field(default_factory=list)
    error: str | None = None


def memory_value(rng: random.Random, n: int) -> dict[str, Any]:
    words = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(5, 20)))
    return {
        "text": f"memory {n}: {words}",
        "kind": rng.choice(["fact", "preference", "instruction"]),
        "importance": rng.randint(1, 10),
        "source": {"thread": f"t{rng.randint(1, 50)}", "turn": rng.randint(1, 30)},
    }


async def seed(store: Any, args: argparse.Namespace, token: str) -> None:
    rng = random.Random(7)
    from langgraph.store.base import PutOp

    ops = [
        PutOp(("memories", f"{token}-u{u}"), f"m{i}", memory_value(rng, i))
        for u in range(args.users)
        for i in range(args.seed_items)
    ]
    for start in range(0, len(ops), 200):
        await store.abatch(ops[start : start + 200])


async def memory_round(
    store: Any, args: argparse.Namespace, token: str, round_no: int, latencies: list[float]
) -> float:
    rng = random.Random(1000 + round_no)  # the same operations for every store of a round
    plan = []
    for n in range(args.ops):
        user = ("memories", f"{token}-u{rng.randrange(args.users)}")
        roll = rng.random()
        if roll < 0.35:
            key, value = f"m{rng.randrange(args.seed_items * 2)}", memory_value(rng, n)
            plan.append(lambda user=user, key=key, value=value: store.aput(user, key, value))
        elif roll < 0.70:
            key = f"m{rng.randrange(args.seed_items)}"
            plan.append(lambda user=user, key=key: store.aget(user, key))
        elif roll < 0.90:
            plan.append(lambda user=user: store.asearch(user, filter={"kind": "fact"}, limit=10))
        else:
            plan.append(lambda: store.alist_namespaces(prefix=("memories",), limit=20))
    queue = iter(plan)

    async def worker() -> None:
        for op in queue:
            started = time.perf_counter()
            await op()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return args.ops / (time.perf_counter() - started)


async def run_memory(args: argparse.Namespace, names: list[str]) -> dict[str, Result]:
    token = uuid.uuid4().hex[:8]
    results = {name: Result(name) for name in names}
    async with AsyncExitStack() as stack:
        stores: dict[str, Any] = {}
        for name in names:
            try:
                stores[name] = await stack.enter_async_context(FACTORIES[name](args, token, None))
                await seed(stores[name], args, token)
                await memory_round(stores[name], args, token, -1, [])  # warm-up
            except Exception as exc:  # report, do not abort the others
                results[name].error = f"{type(exc).__name__}: {exc}"
                note(f"[{name}] setup failed: {results[name].error}")
        live = [n for n in names if n in stores and results[n].error is None]
        for round_no in range(args.rounds):
            for name in live if round_no % 2 == 0 else list(reversed(live)):
                rate = await memory_round(
                    stores[name], args, token, round_no, results[name].latencies_ms
                )
                results[name].rounds.append(rate)
                emit(f"memory round {round_no + 1}/{args.rounds} {name}: {rate:,.1f} ops/s")
    return results


async def run_semantic(args: argparse.Namespace) -> dict[str, Result]:
    token = uuid.uuid4().hex[:8]
    index = {"dims": args.dims, "embed": OfflineEmbeddings(args.dims), "fields": ["text"]}
    names = [n for n in ("tidb", "memory") if n in args.stores]
    results = {name: Result(name) for name in names}
    from langgraph.store.base import PutOp

    rng = random.Random(11)
    items = [
        PutOp(
            ("memories", f"u{i % args.sem_users}"),
            f"m{i}",
            {"text": " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(6, 16)))},
        )
        for i in range(args.items)
    ]
    queries = [
        (("memories", f"u{rng.randrange(args.sem_users)}"), " ".join(rng.sample(VOCABULARY, 2)))
        for _ in range(args.searches)
    ]
    async with AsyncExitStack() as stack:
        stores: dict[str, Any] = {}
        for name in names:
            store = await stack.enter_async_context(FACTORIES[name](args, token, index))
            started = time.perf_counter()
            for start in range(0, len(items), 500):
                await store.abatch(items[start : start + 500])
            note(f"[{name}] loaded {len(items):,} items in {time.perf_counter() - started:.1f} s")
            stores[name] = store
        for round_no in range(args.rounds):
            for name in names if round_no % 2 == 0 else list(reversed(names)):
                store, latencies = stores[name], results[name].latencies_ms
                queue = iter(queries)

                async def worker(
                    store: Any = store, latencies: list[float] = latencies, queue: Any = queue
                ) -> None:
                    for ns, query in queue:
                        began = time.perf_counter()
                        found = await store.asearch(ns, query=query, limit=10)
                        latencies.append((time.perf_counter() - began) * 1000)
                        assert len(found) == 10 and found[0].score is not None

                began = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                rate = len(queries) / (time.perf_counter() - began)
                results[name].rounds.append(rate)
                emit(f"semantic round {round_no + 1}/{args.rounds} {name}: {rate:,.1f} searches/s")
    return results


# --------------------------------------------------------------------------- report


def summary(results: dict[str, Result], unit: str, base: str | None) -> list[dict[str, Any]]:
    out = []
    ref = results.get(base) if base else None
    for r in results.values():
        row: dict[str, Any] = {
            "store": r.name,
            unit: median(r.rounds) if r.rounds else None,
            "p50_ms": percentile(r.latencies_ms, 50) if r.latencies_ms else None,
            "p99_ms": percentile(r.latencies_ms, 99) if r.latencies_ms else None,
            "rounds": r.rounds,
            "error": r.error,
        }
        if ref is not None and ref.rounds and r.rounds and r is not ref:
            ratios = [a / b for a, b in zip(r.rounds, ref.rounds, strict=False)]
            row[f"vs_{base}"] = median(ratios)
            row[f"vs_{base}_per_round"] = ratios
        out.append(row)
    return out


def print_table(title: str, rows: list[dict[str, Any]], unit: str, base: str | None) -> None:
    emit()
    emit(title)
    headers = ["store", unit, "p50 ms", "p99 ms"] + ([f"vs {base}"] if base else [])
    table = []
    for row in rows:
        cells = [row["store"], fmt_num(row[unit]), fmt_num(row["p50_ms"], 2)]
        cells.append(fmt_num(row["p99_ms"], 2))
        if base:
            ratio = row.get(f"vs_{base}")
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        table.append(cells)
    emit(render_table(headers, table))


async def amain(args: argparse.Namespace) -> int:
    args.stores = [n for n in args.only.split(",") if n] if args.only else list(ALL_STORES)
    note(f"url={safe_url(args.url)} pg={safe_url(args.pg_url)} versions={versions()}")
    report: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "stores"}}
    if not args.skip_memory:
        memory = await run_memory(args, args.stores)
        report["memory"] = summary(memory, "ops_per_s", "postgres")
        print_table("memory workload", report["memory"], "ops_per_s", "postgres")
    if not args.skip_semantic:
        semantic = await run_semantic(args)
        report["semantic"] = summary(semantic, "searches_per_s", None)
        print_table("semantic workload", report["semantic"], "searches_per_s", None)
    if args.json:
        emit(json.dumps(report, indent=2, default=str))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=default_url(), help="MySQL/TiDB URL (%(default)s)")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL URL (%(default)s)")
    p.add_argument("--only", default="", help="comma-separated subset of tidb,postgres,memory")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seed-items", type=int, default=20)
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--sem-users", type=int, default=100)
    p.add_argument("--dims", type=int, default=256)
    p.add_argument("--searches", type=int, default=500)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-semantic", action="store_true")
    p.add_argument("--json", action="store_true")
    return asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
