"""Connection churn: new server connections per 1,000 turns, with tidb-memory's default pool.

A pool that closes the connections a burst opened pays a TCP, TLS and auth handshake per call
on the next burst; against TiDB Cloud that is a round trip across the internet, three times.
This counts them: for each concurrency (``--concurrency 32,64``) and each face (async on one
event loop; sync from as many threads), it warms the pool with ``--warm`` turns, then runs
``--turns`` turns (new history object, read the session, append ``[human, ai]``) and reads the
server's ``Connections`` status counter before and after.

By default it starts a private, throwaway mariadbd (``tests/infra``), so nobody else's
connections are counted. ``--url`` measures an existing server instead (every client of that
server then counts).

Run:  python benchmarks/churn.py [--concurrency 32,64] [--url mysql+aiomysql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    Admin,
    connections_opened,
    emit,
    import_tidb_memory,
    note,
    plain_pair,
    render_table,
    safe_url,
)

FACES = ("async", "sync")


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """``url``, or a throwaway mariadbd's URL for the duration of the block."""
    if url:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.infra import ThrowawayMariaDB

    with ThrowawayMariaDB() as db:
        yield db.url


async def run_async(tm: Any, url: str, table: str, turns: int, concurrency: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(turns):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            human, ai = plain_pair(i)
            history = tm.AsyncTiDBChatMessageHistory(f"c{i % 97}", url, table_name=table)
            await history.aget_messages()
            await history.aadd_messages([human, ai])

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def run_sync(tm: Any, url: str, table: str, turns: int, pool: ThreadPoolExecutor) -> None:
    def turn(i: int) -> None:
        human, ai = plain_pair(i)
        history = tm.TiDBChatMessageHistory(f"c{i % 97}", url, table_name=table)
        history.messages  # noqa: B018 - the read is the point
        history.add_messages([human, ai])

    list(pool.map(turn, range(turns)))


async def measure(
    tm: Any, url: str, face: str, concurrency: int, warm: int, turns: int
) -> tuple[int, float]:
    """New server connections during ``turns`` turns after ``warm`` turns, and turns/s."""
    table = f"churn_{uuid.uuid4().hex[:10]}"
    admin = Admin(url)
    try:
        pool = ThreadPoolExecutor(concurrency) if face == "sync" else None

        async def run(n: int) -> None:
            if pool is None:
                await run_async(tm, url, table, n, concurrency)
            else:
                await asyncio.to_thread(run_sync, tm, url, table, n, pool)

        await run(warm)
        before = await connections_opened(await admin.conn())
        started = time.perf_counter()
        await run(turns)
        elapsed = time.perf_counter() - started
        opened = await connections_opened(await admin.conn()) - before
        if pool is not None:
            pool.shutdown()
        await tm.aclose_all()
        async with (await admin.conn()).cursor() as cur:
            await cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        return opened, turns / elapsed
    finally:
        admin.close()


async def amain(args: argparse.Namespace) -> int:
    tm, err = import_tidb_memory()
    if tm is None:
        raise SystemExit(f"tidb-memory not importable: {err}")
    levels = [int(x) for x in args.concurrency.split(",")]
    rows = []
    with server(args.url) as url:
        note(f"server {safe_url(url)}")
        for concurrency in levels:
            for face in FACES:
                opened, rate = await measure(tm, url, face, concurrency, args.warm, args.turns)
                per_1k = 1000.0 * opened / args.turns
                emit(
                    f"concurrency {concurrency:3} {face:5}: {opened} new connections in "
                    f"{args.turns} turns ({per_1k:.1f} per 1,000), {rate:,.0f} turns/s"
                )
                rows.append([str(concurrency), face, str(args.turns), str(opened), f"{per_1k:.1f}"])
    emit()
    emit(
        render_table(
            ["concurrency", "face", "turns", "new connections", "per 1,000 turns"],
            rows,
        )
    )
    emit(
        f"tidb-memory defaults (no engine_args); {args.warm} warm-up turns first; counted by the "
        f"server's Connections status "
        + ("on a throwaway mariadbd." if not args.url else f"on {safe_url(args.url)}.")
    )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="measure this server instead of a throwaway mariadbd")
    p.add_argument("--concurrency", default="32,64", help="comma-separated (%(default)s)")
    p.add_argument("--warm", type=int, default=500, help="warm-up turns (%(default)s)")
    p.add_argument("--turns", type=int, default=2000, help="counted turns (%(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
