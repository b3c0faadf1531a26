"""Per-request "turn" throughput of chat-history implementations on MySQL/TiDB.

A turn is what a web backend does per request: build the history object, read the whole
session, append ``[HumanMessage, AIMessage]``. Every implementation runs the same workload
(``--sessions`` x ``--turns``, ``--concurrency`` turns in flight) on its own prefilled table;
implementations run alternately (A B C A B C ...) for ``--rounds`` rounds in one process, each
round on fresh session ids, and the table reports median turns/s over rounds plus p50/p99 turn
latency over all rounds. See benchmarks/README.md.

Run:  python benchmarks/turns.py [--only floor,lc-sql-async] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import threading
import time
import uuid
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

from _common import (
    FLOOR_DDL,
    FLOOR_INSERT,
    FLOOR_SELECT,
    Admin,
    ErrorCounter,
    bulk_insert,
    collect,
    default_url,
    drop_run_tables,
    dump_message,
    emit,
    execute,
    fmt_num,
    forget_run_rows,
    import_tidb_memory,
    median,
    note,
    percentile,
    quiet_library_noise,
    raw_pool,
    render_table,
    run_token,
    safe_url,
    server_version,
    table_name,
    threads_connected,
    turn_pair,
    utcnow_naive,
    versions,
    with_driver,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, messages_from_dict

quiet_library_noise()

PREFILL_MESSAGES_PER_SESSION = 20
DISTINCT_PAIRS = 499  # message pairs are drawn (and deep-copied) from this many distinct ones
WARM_TURNS = 2  # warm-up: `concurrency` throw-away sessions x WARM_TURNS, before every slot
MONITOR_INTERVAL_S = 0.1

ALL_IMPLS = ("floor", "tidb-memory-async", "tidb-memory-sync", "lc-sql-async", "lc-tidb-threads")

Pair = tuple[HumanMessage, AIMessage]


@dataclass(frozen=True)
class Config:
    url: str
    sessions: int
    turns: int
    concurrency: int
    prefill_rows: int
    rounds: int
    slow_sessions: int
    slow_turns: int


@dataclass
class RunResult:
    round: int
    sessions: int
    turns_per_session: int
    turns: int
    elapsed_s: float
    cpu_s: float
    errors: int
    first_error: str | None
    peak_conns: int
    latencies_ms: list[float] = field(repr=False)

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.elapsed_s if self.elapsed_s > 0 else float("nan")


# --------------------------------------------------------------------------- implementations


class Impl(ABC):
    """Uniform interface: prepare (table + prefill, once), open/close (pools, per slot), turns."""

    name: str
    mode: str  # "async" or "sync"
    slug: str
    slow = False  # workload capped by --slow-cap

    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.table = table_name(token, self.slug)

    @abstractmethod
    async def prepare(self, admin: Any, prefill: Prefill) -> None: ...

    async def open(self) -> None:
        """Create pools/engines for one measured slot (they are warmed by the driver)."""
        return None

    async def close(self) -> None:
        """Dispose pools/engines so that only one implementation holds connections at a time."""
        return None

    def take_logged_errors(self) -> tuple[int, str | None]:
        """Errors a library logged and swallowed since the last call."""
        return 0, None


class AsyncImpl(Impl):
    mode = "async"

    @abstractmethod
    async def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        """One turn; returns the number of messages read (checked against the expectation)."""


class SyncImpl(Impl):
    mode = "sync"

    @abstractmethod
    def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        """One turn, called from a worker thread; returns the number of messages read."""


class Prefill:
    """``prefill_rows`` messages spread over sessions of 20, shared by every implementation."""

    def __init__(self, rows: int, token: str, pairs: list[Pair]) -> None:
        self.sessions: list[tuple[str, list[BaseMessage]]] = []
        n = 0
        j = 0
        while n < rows:
            size = min(PREFILL_MESSAGES_PER_SESSION, rows - n)
            msgs: list[BaseMessage] = []
            for k in range(size):
                human, ai = pairs[(j * 10 + k // 2) % len(pairs)]
                msgs.append(human if k % 2 == 0 else ai)
            self.sessions.append((f"prefill-{token}-{j:06d}", msgs))
            n += size
            j += 1
        self._dumped: dict[int, str] = {}

    def rows(self) -> list[tuple[str, int, str]]:
        """(session_id, seq, json) for raw inserts; JSON produced like every baseline does."""
        out = []
        for sid, msgs in self.sessions:
            for seq, m in enumerate(msgs, start=1):
                key = id(m)
                if key not in self._dumped:
                    self._dumped[key] = dump_message(m)
                out.append((sid, seq, self._dumped[key]))
        return out


class Floor(AsyncImpl):
    """Raw aiomysql pool, one connection per turn: SELECT whole session, one 2-row INSERT."""

    name = "floor"
    slug = "floor"

    async def prepare(self, admin: Any, prefill: Prefill) -> None:
        await execute(admin, FLOOR_DDL.format(table=self.table))
        now = utcnow_naive()
        rows = [(sid, seq, msg, now) for sid, seq, msg in prefill.rows()]
        await bulk_insert(admin, FLOOR_INSERT.format(table=self.table), rows)
        self.select_sql = FLOOR_SELECT.format(table=self.table)
        self.insert_sql = FLOOR_INSERT.format(table=self.table)

    async def open(self) -> None:
        self.pool = await raw_pool(self.cfg.url, self.cfg.concurrency)

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(self.select_sql, (session_id,))
            rows = await cur.fetchall()
            messages = messages_from_dict([json.loads(r[1]) for r in rows])
            seq = rows[-1][0] + 1 if rows else 1
            now = utcnow_naive()
            await cur.executemany(
                self.insert_sql,
                [
                    (session_id, seq, dump_message(human), now),
                    (session_id, seq + 1, dump_message(ai), now),
                ],
            )
        return len(messages)


class LcSqlAsync(AsyncImpl):
    """langchain-community SQLChatMessageHistory on one shared AsyncEngine, new object per turn."""

    name = "lc-sql-async"
    slug = "lcsql"

    async def prepare(self, admin: Any, prefill: Prefill) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.cfg.url)
        try:
            await self._history("__create__", engine).aget_messages()  # library creates table
        finally:
            await engine.dispose()
        rows = [(sid, msg) for sid, _seq, msg in prefill.rows()]
        sql = f"INSERT INTO {self.table} (session_id, message) VALUES (%s, %s)"
        await bulk_insert(admin, sql, rows)

    def _history(self, session_id: str, engine: Any) -> Any:
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        return SQLChatMessageHistory(
            session_id=session_id, connection=engine, table_name=self.table, async_mode=True
        )

    async def open(self) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(self.cfg.url, pool_size=self.cfg.concurrency)

    async def close(self) -> None:
        await self.engine.dispose()

    async def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        history = self._history(session_id, self.engine)
        messages = await history.aget_messages()
        await history.aadd_messages([human, ai])
        return len(messages)


class LcTiDBThreads(SyncImpl):
    """langchain-community TiDBChatMessageHistory (sync, pymysql), new object per turn.

    Its constructor creates a new Engine (and so a new connection), runs CREATE TABLE IF NOT
    EXISTS and loads the session into a cache; we then read ``.messages`` as its users do, which
    returns that cache (and re-queries only when the session is empty). It has no batch append,
    so the two messages are two ``add_message`` calls, i.e. two INSERT+COMMIT round trips.
    """

    name = "lc-tidb-threads"
    slug = "lctidb"
    slow = True

    def __init__(self, cfg: Config, token: str) -> None:
        super().__init__(cfg, token)
        self.sync_url = with_driver(cfg.url, "mysql+pymysql")
        self.logged = ErrorCounter.attach("langchain_community.chat_message_histories.tidb")

    def _history(self, session_id: str) -> Any:
        from langchain_community.chat_message_histories import TiDBChatMessageHistory

        return TiDBChatMessageHistory(
            session_id=session_id, connection_string=self.sync_url, table_name=self.table
        )

    async def prepare(self, admin: Any, prefill: Prefill) -> None:
        history = await asyncio.to_thread(self._history, "__create__")  # library creates table
        history.engine.dispose()
        del history
        collect()
        rows = [(sid, msg) for sid, _seq, msg in prefill.rows()]
        sql = f"INSERT INTO {self.table} (session_id, message) VALUES (%s, %s)"
        await bulk_insert(admin, sql, rows)
        self.take_logged_errors()

    async def close(self) -> None:
        collect()  # its per-object engines keep connections open until garbage-collected

    def take_logged_errors(self) -> tuple[int, str | None]:
        count, first = self.logged.count, self.logged.first
        self.logged.count, self.logged.first = 0, None
        return count, first

    def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        history = self._history(session_id)
        messages = history.messages
        n = len(messages)  # `.messages` is the live cache list; add_message appends to it
        history.add_message(human)
        history.add_message(ai)
        return n


class _TiDBMemory(Impl):
    """The package under test; API per the speed issue (imported lazily)."""

    def __init__(self, cfg: Config, token: str, module: ModuleType) -> None:
        super().__init__(cfg, token)
        self.tm = module
        self.engine_args = {"pool_size": cfg.concurrency, "max_overflow": 0}

    def _history(self, session_id: str) -> Any:
        return self.tm.AsyncTiDBChatMessageHistory(
            session_id, self.cfg.url, table_name=self.table, engine_args=self.engine_args
        )

    async def prepare(self, admin: Any, prefill: Prefill) -> None:
        await self._history("__create__").acreate_tables()
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def one(session_id: str, messages: list[BaseMessage]) -> None:
            async with sem:
                await self._history(session_id).aadd_messages(messages)

        try:
            await asyncio.gather(*(one(sid, msgs) for sid, msgs in prefill.sessions))
        finally:
            await self.tm.aclose_all()

    async def close(self) -> None:
        await self.tm.aclose_all()


class TiDBMemoryAsync(_TiDBMemory, AsyncImpl):
    name = "tidb-memory-async"
    slug = "tmasync"

    async def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        history = self._history(session_id)
        messages = await history.aget_messages()
        await history.aadd_messages([human, ai])
        return len(messages)


class TiDBMemorySync(_TiDBMemory, SyncImpl):
    name = "tidb-memory-sync"
    slug = "tmsync"

    def run_turn(self, session_id: str, human: HumanMessage, ai: AIMessage) -> int:
        history = self._history(session_id)
        messages = history.messages
        history.add_messages([human, ai])
        return len(messages)


# --------------------------------------------------------------------------- drivers


class Tally:
    """Latencies and errors of one workload run (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def record(self, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latencies_ms.append(seconds * 1000.0)
            if error is not None:
                self.errors += 1
                if self.first_error is None:
                    self.first_error = error


def _check(read: int, turn: int) -> str | None:
    expected = 2 * turn
    return None if read == expected else f"read {read} messages, expected {expected}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def drive_async(
    impl: AsyncImpl, sids: list[str], pairs: list[list[Pair]], conc: int
) -> Tally:
    """`conc` workers; a session's turns run in order, sessions round-robin through a queue."""
    tally = Tally()
    work: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
    for i in range(len(sids)):
        work.put_nowait((i, 0))
    active = len(sids)

    async def worker() -> None:
        nonlocal active
        while (item := await work.get()) is not None:
            i, k = item
            human, ai = pairs[i][k]
            t0 = time.perf_counter()
            try:
                error = _check(await impl.run_turn(sids[i], human, ai), k)
            except Exception as exc:
                error = _describe(exc)
            tally.record(time.perf_counter() - t0, error)
            if k + 1 < len(pairs[i]):
                work.put_nowait((i, k + 1))
            else:
                active -= 1
                if active == 0:
                    for _ in range(conc):
                        work.put_nowait(None)

    await asyncio.gather(*(worker() for _ in range(conc)))
    return tally


def drive_sync(
    impl: SyncImpl, sids: list[str], pairs: list[list[Pair]], pool: ThreadPoolExecutor, conc: int
) -> Tally:
    """Same scheduling as `drive_async`, with `conc` threads of a ThreadPoolExecutor."""
    tally = Tally()
    work: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
    for i in range(len(sids)):
        work.put((i, 0))
    lock = threading.Lock()
    active = [len(sids)]

    def worker() -> None:
        while (item := work.get()) is not None:
            i, k = item
            human, ai = pairs[i][k]
            t0 = time.perf_counter()
            try:
                error = _check(impl.run_turn(sids[i], human, ai), k)
            except Exception as exc:
                error = _describe(exc)
            tally.record(time.perf_counter() - t0, error)
            if k + 1 < len(pairs[i]):
                work.put((i, k + 1))
            else:
                with lock:
                    active[0] -= 1
                    last = active[0] == 0
                if last:
                    for _ in range(conc):
                        work.put(None)

    for future in [pool.submit(worker) for _ in range(conc)]:
        future.result()
    return tally


class Bench:
    def __init__(self, cfg: Config, admin: Admin, base_pairs: list[Pair]) -> None:
        self.cfg = cfg
        self.admin = admin
        self.base_pairs = base_pairs

    def workload(self, impl: Impl, tag: str, sessions: int, turns: int) -> tuple[list[str], Any]:
        sids = [f"{impl.slug}-{tag}-{uuid.uuid4()}" for _ in range(sessions)]
        pairs = []
        for i in range(sessions):
            row = []
            for k in range(turns):
                human, ai = self.base_pairs[(i * turns + k) % len(self.base_pairs)]
                row.append((human.model_copy(deep=True), ai.model_copy(deep=True)))
            pairs.append(row)
        return sids, pairs

    async def _drive(
        self,
        impl: Impl,
        sids: list[str],
        pairs: list[list[Pair]],
        pool: ThreadPoolExecutor | None,
    ) -> Tally:
        conc = self.cfg.concurrency
        if isinstance(impl, AsyncImpl):
            return await drive_async(impl, sids, pairs, conc)
        assert isinstance(impl, SyncImpl) and pool is not None
        return await asyncio.to_thread(drive_sync, impl, sids, pairs, pool, conc)

    async def _monitor(self, stop: asyncio.Event) -> int:
        peak = 0
        while not stop.is_set():
            try:
                peak = max(peak, await threads_connected(await self.admin.conn()))
            except Exception:  # a lost side connection must not abort the measurement
                self.admin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MONITOR_INTERVAL_S)
        return peak

    async def slot(self, impl: Impl, rnd: int) -> RunResult:
        """open -> warm -> timed workload -> close, for one implementation in one round."""
        cfg = self.cfg
        sessions, turns = (
            (cfg.slow_sessions, cfg.slow_turns) if impl.slow else (cfg.sessions, cfg.turns)
        )
        collect()
        pool = (
            ThreadPoolExecutor(cfg.concurrency, thread_name_prefix=impl.slug)
            if isinstance(impl, SyncImpl)
            else None
        )
        await impl.open()
        try:
            wsids, wpairs = self.workload(impl, f"warm{rnd}", cfg.concurrency, WARM_TURNS)
            warm = await self._drive(impl, wsids, wpairs, pool)
            if warm.errors:
                note(f"  {impl.name}: {warm.errors} warm-up errors, first: {warm.first_error}")
            impl.take_logged_errors()

            sids, pairs = self.workload(impl, f"r{rnd}", sessions, turns)
            collect()
            stop = asyncio.Event()
            monitor = asyncio.create_task(self._monitor(stop))
            cpu0, t0 = time.process_time(), time.perf_counter()
            tally = await self._drive(impl, sids, pairs, pool)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            stop.set()
            peak = await monitor
        finally:
            await impl.close()
            if pool is not None:
                pool.shutdown(wait=True)
        logged, logged_first = impl.take_logged_errors()
        first = tally.first_error or (f"logged: {logged_first}" if logged_first else None)
        return RunResult(
            round=rnd,
            sessions=sessions,
            turns_per_session=turns,
            turns=sessions * turns,
            elapsed_s=elapsed,
            cpu_s=cpu,
            errors=tally.errors + logged,
            first_error=first,
            peak_conns=peak,
            latencies_ms=tally.latencies_ms,
        )


# --------------------------------------------------------------------------- report


def summarise(
    cfg: Config, impls: list[Impl], results: dict[str, list[RunResult]]
) -> list[dict[str, Any]]:
    floor = results.get("floor")
    floor_tps = median([r.turns_per_s for r in floor]) if floor else None
    floor_by_round = {r.round: r.turns_per_s for r in floor or []}
    rows = []
    for impl in impls:
        runs = results.get(impl.name) or []
        if not runs:
            continue
        lat = [x for r in runs for x in r.latencies_ms]
        tps = median([r.turns_per_s for r in runs])
        total_turns = sum(r.turns for r in runs)
        first_errors = [r.first_error for r in runs if r.first_error]
        # Paired per round (the floor ran minutes apart at most), then the median: robust to
        # the machine getting slower or faster during the run.
        paired = [
            r.turns_per_s / floor_by_round[r.round] for r in runs if r.round in floor_by_round
        ]
        rows.append(
            {
                "implementation": impl.name,
                "mode": impl.mode,
                "sessions": runs[0].sessions,
                "turns_per_session": runs[0].turns_per_session,
                "capped": impl.slow
                and (runs[0].sessions, runs[0].turns_per_session) != (cfg.sessions, cfg.turns),
                "turns_per_s": tps,
                "turns_per_s_rounds": [r.turns_per_s for r in runs],
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
                "ratio_to_floor": median(paired) if paired else None,
                "ratio_to_floor_rounds": paired,
                "ratio_of_medians": tps / floor_tps if floor_tps else None,
                "cpu_ms_per_turn": 1000.0 * sum(r.cpu_s for r in runs) / total_turns,
                "peak_server_conns": max(r.peak_conns for r in runs),
                "errors": sum(r.errors for r in runs),
                "first_error": first_errors[0] if first_errors else None,
            }
        )
    return rows


def print_table(
    cfg: Config, rows: list[dict[str, Any]], skipped: dict[str, str], failures: list[str]
) -> None:
    headers = [
        "implementation",
        "mode",
        "workload",
        "turns/s",
        "per round",
        "p50 ms",
        "p99 ms",
        "x floor",
        "cpu ms/turn",
        "conns",
        "errors",
    ]
    body = []
    for r in rows:
        workload = f"{r['sessions']}x{r['turns_per_session']}" + ("*" if r["capped"] else "")
        body.append(
            [
                r["implementation"],
                r["mode"],
                workload,
                fmt_num(r["turns_per_s"]),
                " / ".join(f"{x:.0f}" for x in r["turns_per_s_rounds"]),
                fmt_num(r["p50_ms"]),
                fmt_num(r["p99_ms"]),
                fmt_num(r["ratio_to_floor"], 3),
                fmt_num(r["cpu_ms_per_turn"], 2),
                str(r["peak_server_conns"]),
                str(r["errors"]),
            ]
        )
    emit(render_table(headers, body))
    emit()
    emit(
        f"{cfg.rounds} round(s), implementations alternating within each round; concurrency "
        f"{cfg.concurrency}; {cfg.prefill_rows} prefill rows per table. turns/s = median over "
        "rounds; p50/p99 = per-turn latency pooled over rounds; x floor = median over rounds of "
        "(turns/s / floor turns/s of the same round);"
    )
    emit(
        "cpu ms/turn = this process's CPU time / turns; conns = peak server Threads_connected "
        "while timing (includes the monitor's own connection)."
    )
    if any(r["capped"] for r in rows):  # only set when the cap actually shrank the workload
        emit(
            f"* capped by --slow-cap to {cfg.slow_sessions} sessions x {cfg.slow_turns} turns: "
            "it is too slow for the full workload; its turns/s is still comparable per turn."
        )
    for r in rows:
        if r["errors"]:
            emit(f"! {r['implementation']}: {r['errors']} errors, first: {r['first_error']}")
    for failure in failures:
        emit(f"! slot failed (not in the numbers): {failure}")
    for name, why in skipped.items():
        emit(f"- {name} skipped: {why}")


# --------------------------------------------------------------------------- main


def build_impls(cfg: Config, token: str, only: list[str], skipped: dict[str, str]) -> list[Impl]:
    impls: list[Impl] = []
    tm: ModuleType | None = None
    if any(n.startswith("tidb-memory") for n in only):
        tm, err = import_tidb_memory()
        if tm is None:
            note(f"tidb-memory not importable: {err}")
            for n in only:
                if n.startswith("tidb-memory"):
                    skipped[n] = f"tidb-memory not importable: {err}"
    for n in only:
        if n == "floor":
            impls.append(Floor(cfg, token))
        elif n == "lc-sql-async":
            impls.append(LcSqlAsync(cfg, token))
        elif n == "lc-tidb-threads":
            impls.append(LcTiDBThreads(cfg, token))
        elif n == "tidb-memory-async" and tm is not None:
            impls.append(TiDBMemoryAsync(cfg, token, tm))
        elif n == "tidb-memory-sync" and tm is not None:
            impls.append(TiDBMemorySync(cfg, token, tm))
    return impls


async def amain(args: argparse.Namespace) -> int:
    only = [n.strip() for n in args.only.split(",")] if args.only else list(ALL_IMPLS)
    unknown = [n for n in only if n not in ALL_IMPLS]
    if unknown:
        raise SystemExit(f"unknown implementation(s) {unknown}; choose from {list(ALL_IMPLS)}")
    only = [n for n in ALL_IMPLS if n in only]  # canonical order
    slow_sessions, slow_turns = args.slow_cap
    cfg = Config(
        url=args.url,
        sessions=args.sessions,
        turns=args.turns,
        concurrency=args.concurrency,
        prefill_rows=args.prefill_rows,
        rounds=args.rounds,
        slow_sessions=slow_sessions or min(args.sessions, args.concurrency),
        slow_turns=slow_turns or args.turns,
    )
    token = run_token()
    skipped: dict[str, str] = {}
    impls = build_impls(cfg, token, only, skipped)
    admin = Admin(cfg.url)
    server = await server_version(await admin.conn())
    note(f"server {server}; tables {table_name(token, '*')}")
    results: dict[str, list[RunResult]] = {}
    failures: list[str] = []
    try:
        base_pairs = [turn_pair(seed) for seed in range(DISTINCT_PAIRS)]
        prefill = Prefill(cfg.prefill_rows, token, base_pairs)
        ready: list[Impl] = []
        for impl in impls:
            t0 = time.perf_counter()
            try:
                await impl.prepare(await admin.conn(), prefill)
            except Exception as exc:
                skipped[impl.name] = f"prepare failed: {_describe(exc)}"
                note(f"{impl.name}: {skipped[impl.name]}")
                continue
            note(f"prepared {impl.name} ({time.perf_counter() - t0:.1f}s)")
            ready.append(impl)
        del prefill  # keep the heap small: GC pressure changes how fast lc-tidb leaks
        bench = Bench(cfg, admin, base_pairs)
        for rnd in range(cfg.rounds):
            for impl in ready:
                try:
                    res = await bench.slot(impl, rnd)
                except Exception as exc:
                    failures.append(f"round {rnd + 1} {impl.name}: {_describe(exc)}")
                    note(f"slot failed: {failures[-1]}")
                    continue
                results.setdefault(impl.name, []).append(res)
                note(
                    f"round {rnd + 1}/{cfg.rounds} {impl.name:18} {res.turns_per_s:9.1f} turns/s"
                    f"  p50 {percentile(res.latencies_ms, 50):7.1f} ms  errors {res.errors}"
                    f"  peak conns {res.peak_conns}"
                    + (f"  first error: {res.first_error}" if res.first_error else "")
                )
    finally:
        try:
            dropped = await drop_run_tables(await admin.conn(), token)
            tm = next((x.tm for x in impls if isinstance(x, _TiDBMemory)), None)
            forgotten = await forget_run_rows(await admin.conn(), token, tm)
            note(f"dropped {len(dropped)} table(s), {forgotten} bookkeeping row(s)")
        except Exception as exc:
            note(f"could not drop tables {table_name(token, '*')}: {_describe(exc)}")
        admin.close()

    rows = summarise(cfg, ready, results)
    if args.json:
        doc = {
            "benchmark": "turns",
            "config": asdict(cfg) | {"url": safe_url(cfg.url)},
            "server": server,
            "versions": versions(),
            "rows": rows,
            "skipped": skipped,
            "failed_slots": failures,
            "runs": {
                name: [
                    asdict(r) | {"latencies_ms": None, "turns_per_s": r.turns_per_s} for r in runs
                ]
                for name, runs in results.items()
            },
        }
        emit(json.dumps(doc, indent=2))
    else:
        emit(f"turns benchmark - server {server}")
        emit()
        print_table(cfg, rows, skipped, failures)
    return 1 if failures or any(r["errors"] for r in rows) else 0


def _slow_cap(text: str) -> tuple[int, int]:
    try:
        s, t = text.lower().split("x")
        return int(s), int(t)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected SESSIONSxTURNS, e.g. 32x10") from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--url",
        default=default_url(),
        help="mysql+aiomysql URL (env TIDB_MEMORY_BENCH_URL; default %(default)s)",
    )
    p.add_argument("--sessions", type=int, default=200, help="sessions per round (%(default)s)")
    p.add_argument("--turns", type=int, default=10, help="turns per session (%(default)s)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="turns in flight = pool size = threads (%(default)s)",
    )
    p.add_argument(
        "--prefill-rows",
        type=int,
        default=20000,
        help="rows written to each table before timing (%(default)s)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (%(default)s)")
    p.add_argument("--only", help=f"comma-separated subset of: {','.join(ALL_IMPLS)}")
    p.add_argument(
        "--slow-cap",
        type=_slow_cap,
        default=(0, 0),
        metavar="SxT",
        help="workload of the slow lc-tidb-threads row (default: "
        "min(sessions, concurrency) x turns)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
