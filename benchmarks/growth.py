"""Checkpoint growth with and without retention, and the cost of listing a user's threads.

Part 1, growth: ``--threads`` conversations x ``--turns`` turns through the two-node graph of
``graph_savers.py`` (``model`` answers, ``audit`` appends a note; 4 checkpoints a turn), once
with no retention and once with ``RetentionPolicy(keep_last=--keep)`` applied by the saver's
background sweeper (every ``--sweep`` seconds) and once more at the end. Reported per run:
turns/s, then checkpoint, blob and write rows (``COUNT(*)``) and bytes (``information_schema``
data + index length after ``ANALYZE TABLE``), at the end of the run and after the last sweep.

Part 2, listing: ``alist_threads(user_id=..., limit=20)`` over tables of 10,000 and 100,000
checkpoints of ``--users`` users (10 checkpoints a thread, so 1,000 and 10,000 threads): the
statements per page (counted on the connection) and the median and p95 time per page over
``--pages`` pages of random users. The rows are written in bulk by SQL (the listing reads only
the threads table; how they were written does not matter to it).

Run:  python benchmarks/growth.py [--threads 1000 --turns 20] [--json]
      python benchmarks/growth.py --threads 50 --turns 4 --sizes 1000,5000   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from datetime import timedelta
from typing import Any

from _common import (
    Admin,
    bulk_insert,
    default_url,
    emit,
    execute,
    fmt_num,
    median,
    note,
    percentile,
    quiet_library_noise,
    render_table,
    safe_url,
    turn_pair,
    versions,
)
from graph_savers import build_graph

from tidb_memory.engine import Connection
from tidb_memory.langgraph import AsyncTiDBSaver, RetentionPolicy


async def drop(saver: AsyncTiDBSaver) -> None:
    t = saver.tables
    async with saver.db.connection() as conn:
        for name in (t.checkpoints, t.blobs, t.writes, t.migrations, t.threads):
            await conn.execute(f"DROP TABLE IF EXISTS {name}", ())


async def sizes(admin: Admin, saver: AsyncTiDBSaver) -> dict[str, Any]:
    """Rows (exact) and bytes (data + index, after ANALYZE) of the saver's tables."""
    conn = await admin.conn()
    t = saver.tables
    out: dict[str, Any] = {}
    for label, name in (("checkpoints", t.checkpoints), ("blobs", t.blobs), ("writes", t.writes)):
        await execute(conn, f"ANALYZE TABLE `{name}`")
        async with conn.cursor() as cur:
            await cur.execute(f"SELECT COUNT(*) FROM `{name}`")
            (rows,) = await cur.fetchone()
            await cur.execute(
                "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (name,),
            )
            (size,) = await cur.fetchone()
        out[label] = {"rows": int(rows), "bytes": int(size or 0)}
    out["rows"] = sum(v["rows"] for v in out.values())
    out["bytes"] = sum(v["bytes"] for k, v in out.items() if isinstance(v, dict))
    return out


async def growth_run(args: argparse.Namespace, admin: Admin, keep: int | None) -> dict[str, Any]:
    policy = RetentionPolicy(keep_last=keep) if keep else None
    saver = AsyncTiDBSaver(
        args.url,
        table_prefix=f"bench_{uuid.uuid4().hex[:8]}_gr",
        engine_args={"pool_size": args.concurrency + 2, "max_overflow": 0},
        retention=policy,
    )
    await saver.asetup()
    graph = build_graph(saver)
    gate = asyncio.Semaphore(args.concurrency)
    run = uuid.uuid4().hex[:6]
    threads = [f"g{run}-{i}" for i in range(args.threads)]
    done = 0

    async def conversation(thread_id: str) -> None:
        nonlocal done
        for n in range(args.turns):
            human, _ = turn_pair(hash((thread_id, n)) % 100_000)
            async with gate:
                await graph.ainvoke(
                    {"messages": [human]},
                    {
                        "configurable": {
                            "thread_id": thread_id,
                            "user_id": f"u{hash(thread_id) % 97}",
                        }
                    },
                )
            done += 1

    try:
        await graph.ainvoke({"messages": [turn_pair(1)[0]]}, {"configurable": {"thread_id": "w"}})
        if policy is not None:
            saver.start_retention_sweeper(interval=timedelta(seconds=args.sweep))
        started = time.perf_counter()
        work = asyncio.gather(*(conversation(t) for t in threads))
        while not work.done():
            await asyncio.wait([work], timeout=5)
            note(f"  keep={keep}: {done}/{args.threads * args.turns} turns")
        await work
        elapsed = time.perf_counter() - started
        if policy is not None:
            await saver.astop_retention_sweeper()
        at_end = await sizes(admin, saver)
        swept: dict[str, Any] | None = None
        sweep_s = None
        if policy is not None:
            t0 = time.perf_counter()
            await saver.aapply_retention()
            sweep_s = time.perf_counter() - t0
            swept = await sizes(admin, saver)
        state = await graph.aget_state({"configurable": {"thread_id": threads[-1]}})
        assert len(state.values["messages"]) == args.turns * 3, "a conversation lost turns"
        return {
            "keep_last": keep,
            "turns": args.threads * args.turns,
            "seconds": elapsed,
            "turns_per_s": args.threads * args.turns / elapsed,
            "at_end": at_end,
            "after_sweep": swept,
            "final_sweep_s": sweep_s,
        }
    finally:
        await drop(saver)
        await saver.db.aclose()


async def listing(args: argparse.Namespace, admin: Admin, checkpoints: int) -> dict[str, Any]:
    saver = AsyncTiDBSaver(args.url, table_prefix=f"bench_{uuid.uuid4().hex[:8]}_ls")
    await saver.asetup()
    t = saver.tables
    per_thread = 10
    threads = checkpoints // per_thread
    try:
        conn = await admin.conn()
        rng = random.Random(checkpoints)
        cp_rows: list[tuple[Any, ...]] = []
        th_rows: list[tuple[Any, ...]] = []
        for i in range(threads):
            thread_id, user = f"t{i}", f"u{i % args.users}"
            day = rng.randint(1, 28)
            th_rows.append((thread_id, user, f"2026-01-{day:02d} {rng.randint(0, 23):02d}:00:00"))
            for n in range(per_thread):
                cp_rows.append((thread_id, f"{n:08d}-{uuid.uuid4()}", user))
        note(f"  listing: writing {len(cp_rows):,} checkpoints, {len(th_rows):,} threads")
        await bulk_insert(
            conn,
            f"INSERT INTO `{t.checkpoints}` (thread_id, ns_hash, checkpoint_ns, checkpoint_id, "
            "parent_checkpoint_id, v, checkpoint, metadata, refs) VALUES "
            "(%s, UNHEX(MD5('')), '', %s, NULL, 4, '{}', JSON_OBJECT('user_id', %s), '[]')",
            cp_rows,
            chunk=2000,
        )
        await bulk_insert(
            conn,
            f"INSERT INTO `{t.threads}` (thread_id, user_id, last_activity, checkpoints) "
            f"VALUES (%s, %s, %s, {per_thread})",
            th_rows,
            chunk=2000,
        )
        for name in (t.checkpoints, t.threads):
            await execute(conn, f"ANALYZE TABLE `{name}`")
        statements: list[int] = []
        original = Connection.fetchall

        async def counting(self: Connection, sql: str, params: Any) -> list[Any]:
            statements[-1] += 1
            return await original(self, sql, params)

        Connection.fetchall = counting  # type: ignore[method-assign]
        try:
            times: list[float] = []
            for _ in range(args.pages + 20):
                user = f"u{rng.randrange(min(args.users, threads))}"
                statements.append(0)
                t0 = time.perf_counter()
                page = await saver.alist_threads(user_id=user, limit=20)
                times.append((time.perf_counter() - t0) * 1000)
                assert page.threads, user
        finally:
            Connection.fetchall = original  # type: ignore[method-assign]
        times, statements = times[20:], statements[20:]  # warm-up
        return {
            "checkpoints": len(cp_rows),
            "threads": threads,
            "users": args.users,
            "statements_per_page": max(statements),
            "page_ms_median": median(times),
            "page_ms_p95": percentile(times, 95),
        }
    finally:
        await drop(saver)
        await saver.db.aclose()


async def amain(args: argparse.Namespace) -> int:
    quiet_library_noise()
    admin = Admin(args.url)
    report: dict[str, Any] = {"url": safe_url(args.url), "versions": versions()}
    try:
        if not args.skip_growth:
            report["growth"] = []
            for keep in (None, args.keep):
                note(f"growth: {args.threads} threads x {args.turns} turns, keep_last={keep}")
                report["growth"].append(await growth_run(args, admin, keep))
        report["listing"] = []
        for size in (int(s) for s in args.sizes.split(",") if s):
            note(f"listing: {size:,} checkpoints")
            report["listing"].append(await listing(args, admin, size))
    finally:
        admin.close()
    if args.json:
        emit(json.dumps(report, indent=2))
        return 0
    if "growth" in report:
        rows = []
        for r in report["growth"]:
            for when, s in (("end of run", r["at_end"]), ("after sweep", r["after_sweep"])):
                if s is None:
                    continue
                rows.append(
                    [
                        f"keep_last={r['keep_last']} ({when})",
                        fmt_num(r["turns_per_s"], 1),
                        f"{s['checkpoints']['rows']:,}",
                        f"{s['blobs']['rows']:,}",
                        f"{s['writes']['rows']:,}",
                        f"{s['bytes'] / 2**20:.1f}",
                    ]
                )
        headers = ["run", "turns/s", "checkpoints", "blobs", "writes", "MiB"]
        emit(render_table(headers, rows))
        base, kept = report["growth"][0], report["growth"][-1]
        emit(f"turns/s with retention / without: {kept['turns_per_s'] / base['turns_per_s']:.3f}")
        emit()
    rows = [
        [
            f"{r['checkpoints']:,} checkpoints",
            f"{r['threads']:,}",
            str(r["statements_per_page"]),
            fmt_num(r["page_ms_median"], 2),
            fmt_num(r["page_ms_p95"], 2),
        ]
        for r in report["listing"]
    ]
    emit(render_table(["table", "threads", "stmts/page", "ms/page p50", "ms/page p95"], rows))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=default_url())
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--sweep", type=float, default=5.0, help="seconds between sweeps")
    parser.add_argument("--sizes", default="10000,100000", help="checkpoints for the listing")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--json", action="store_true")
    raise SystemExit(asyncio.run(amain(parser.parse_args())))


if __name__ == "__main__":
    main()
