"""Per-request "turn" throughput of chat-history implementations on MySQL/TiDB.

A turn is what a web backend does per request: build the history object, read the whole
session, append ``[HumanMessage, AIMessage]``. Every implementation runs the same workload
(``--sessions`` x ``--turns``, ``--concurrency`` turns in flight) on its own table, which holds
``--prefill-rows`` unrelated rows. It runs for every combination of

* a workload: ``empty`` (sessions start empty) or ``prefilled`` (each session starts with 20
  stored messages, written before the clock starts), and
* a message shape: ``plain`` (text only) or ``rich`` (AI replies with an id, usage and response
  metadata, and every 7th with a tool call).

Implementations run alternately (A B C A B C ...) for ``--rounds`` rounds in one process, each
round on fresh session ids; tidb-memory runs with its defaults (no ``engine_args``). The tables
report median turns/s over rounds, p50/p99 turn latency, the median of per-round ratios to the
floor, client CPU per turn and new server connections per 1,000 turns. Every round is printed.
See benchmarks/README.md.

Run:  python benchmarks/turns.py [--only floor,tidb-memory-async] [--workload empty] [--json]
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
from dataclasses import asdict, dataclass, field, replace
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
    connections_opened,
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
    plain_pair,
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

PREFILL_MESSAGES_PER_SESSION = 20  # unrelated prefill sessions, and timed sessions of "prefilled"
DISTINCT_PAIRS = 499  # message pairs are drawn (and deep-copied) from this many distinct ones
WARM_TURNS = 2  # warm-up pass: `concurrency` throw-away sessions x WARM_TURNS
# Warm-up passes run until one opens no server connection (at most this many), so that "new
# conns/1k" counts connections opened under a steady load, not the pool growing to its working
# set (a thread pool's bursts can need a few more connections than one pass reached).
WARM_PASSES_MAX = 5
MONITOR_INTERVAL_S = 0.1

ALL_IMPLS = ("floor", "tidb-memory-async", "tidb-memory-sync", "lc-sql-async", "lc-tidb-threads")
DEFAULT_IMPLS = ("floor", "tidb-memory-async", "tidb-memory-sync")
WORKLOADS = ("empty", "prefilled")
SHAPES = ("plain", "rich")

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
    workloads: tuple[str, ...] = WORKLOADS
    shapes: tuple[str, ...] = SHAPES
    tm_engine_args: dict[str, Any] | None = None


@dataclass
class RunResult:
    round: int
    workload: str
    shape: str
    sessions: int
    turns_per_session: int
    turns: int
    elapsed_s: float
    cpu_s: float
    errors: int
    first_error: str | None
    peak_conns: int
    new_conns: int  # the server's Connections delta while timing
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

    @abstractmethod
    async def seed(self, admin: Any, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
        """Store ``sessions`` before the clock starts (the ``prefilled`` workload)."""

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

    async def seed(self, admin: Any, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
        now = utcnow_naive()
        rows = [
            (sid, seq, dump_message(m), now)
            for sid, msgs in sessions
            for seq, m in enumerate(msgs, start=1)
        ]
        await bulk_insert(admin, self.insert_sql, rows)

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


async def _seed_lc(admin: Any, table: str, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
    """Rows of the langchain-community tables: ``(session_id, message)``, in order."""
    rows = [(sid, dump_message(m)) for sid, msgs in sessions for m in msgs]
    await bulk_insert(admin, f"INSERT INTO {table} (session_id, message) VALUES (%s, %s)", rows)


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

    async def seed(self, admin: Any, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
        await _seed_lc(admin, self.table, sessions)

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

    async def seed(self, admin: Any, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
        await _seed_lc(admin, self.table, sessions)

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
    """The package under test, with its defaults unless ``--tm-engine-args`` (imported lazily)."""

    def __init__(self, cfg: Config, token: str, module: ModuleType) -> None:
        super().__init__(cfg, token)
        self.tm = module
        self.engine_args = cfg.tm_engine_args

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

    async def seed(self, admin: Any, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def one(session_id: str, messages: list[BaseMessage]) -> None:
            async with sem:
                await self._history(session_id).aadd_messages(messages)

        await asyncio.gather(*(one(sid, msgs) for sid, msgs in sessions))

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

    async def seed(self, admin: Any, sessions: list[tuple[str, list[BaseMessage]]]) -> None:
        # Through the sync face, so only the pool the timed turns use is opened.
        def write() -> None:
            for sid, msgs in sessions:
                self._history(sid).add_messages(msgs)

        await asyncio.to_thread(write)

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


def _check(read: int, turn: int, base: int) -> str | None:
    expected = base + 2 * turn
    return None if read == expected else f"read {read} messages, expected {expected}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def drive_async(
    impl: AsyncImpl, sids: list[str], pairs: list[list[Pair]], conc: int, base: int
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
                error = _check(await impl.run_turn(sids[i], human, ai), k, base)
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
    impl: SyncImpl,
    sids: list[str],
    pairs: list[list[Pair]],
    pool: ThreadPoolExecutor,
    conc: int,
    base: int,
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
                error = _check(impl.run_turn(sids[i], human, ai), k, base)
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


Scenario = tuple[str, str]  # (workload, shape)


class Bench:
    def __init__(self, cfg: Config, admin: Admin, pairs: dict[str, list[Pair]]) -> None:
        self.cfg = cfg
        self.admin = admin
        self.pairs = pairs

    def workload(
        self, impl: Impl, tag: str, sessions: int, turns: int, shape: str
    ) -> tuple[list[str], Any]:
        sids = [f"{impl.slug}-{tag}-{uuid.uuid4()}" for _ in range(sessions)]
        base = self.pairs[shape]
        pairs = []
        for i in range(sessions):
            row = []
            for k in range(turns):
                human, ai = base[(i * turns + k) % len(base)]
                row.append((human.model_copy(deep=True), ai.model_copy(deep=True)))
            pairs.append(row)
        return sids, pairs

    def history_of(self, sids: list[str], shape: str) -> list[tuple[str, list[BaseMessage]]]:
        """The 20 messages each session of the ``prefilled`` workload starts with."""
        base = self.pairs[shape]
        out = []
        for i, sid in enumerate(sids):
            msgs: list[BaseMessage] = []
            for k in range(PREFILL_MESSAGES_PER_SESSION // 2):
                msgs.extend(base[(7 * i + k) % len(base)])
            out.append((sid, msgs))
        return out

    async def _drive(
        self,
        impl: Impl,
        sids: list[str],
        pairs: list[list[Pair]],
        pool: ThreadPoolExecutor | None,
        base: int,
    ) -> Tally:
        conc = self.cfg.concurrency
        if isinstance(impl, AsyncImpl):
            return await drive_async(impl, sids, pairs, conc, base)
        assert isinstance(impl, SyncImpl) and pool is not None
        return await asyncio.to_thread(drive_sync, impl, sids, pairs, pool, conc, base)

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

    async def slot(self, impl: Impl, rnd: int, workload: str, shape: str) -> RunResult:
        """open -> warm (-> seed) -> timed workload -> close, for one implementation."""
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
            for rep in range(WARM_PASSES_MAX):
                before = await connections_opened(await self.admin.conn())
                wsids, wpairs = self.workload(
                    impl, f"warm{rnd}.{rep}", cfg.concurrency, WARM_TURNS, shape
                )
                wbase = 0
                if workload == "prefilled":  # warm on reads as long as the timed ones
                    await impl.seed(await self.admin.conn(), self.history_of(wsids, shape))
                    wbase = PREFILL_MESSAGES_PER_SESSION
                warm = await self._drive(impl, wsids, wpairs, pool, wbase)
                if warm.errors:
                    note(f"  {impl.name}: {warm.errors} warm-up errors, first: {warm.first_error}")
                if rep and await connections_opened(await self.admin.conn()) == before:
                    break
            impl.take_logged_errors()

            sids, pairs = self.workload(impl, f"r{rnd}", sessions, turns, shape)
            base = 0
            if workload == "prefilled":
                await impl.seed(await self.admin.conn(), self.history_of(sids, shape))
                base = PREFILL_MESSAGES_PER_SESSION
            collect()
            opened = await connections_opened(await self.admin.conn())
            stop = asyncio.Event()
            monitor = asyncio.create_task(self._monitor(stop))
            cpu0, t0 = time.process_time(), time.perf_counter()
            tally = await self._drive(impl, sids, pairs, pool, base)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            stop.set()
            peak = await monitor
            opened = await connections_opened(await self.admin.conn()) - opened
        finally:
            await impl.close()
            if pool is not None:
                pool.shutdown(wait=True)
        logged, logged_first = impl.take_logged_errors()
        first = tally.first_error or (f"logged: {logged_first}" if logged_first else None)
        return RunResult(
            round=rnd,
            workload=workload,
            shape=shape,
            sessions=sessions,
            turns_per_session=turns,
            turns=sessions * turns,
            elapsed_s=elapsed,
            cpu_s=cpu,
            errors=tally.errors + logged,
            first_error=first,
            peak_conns=peak,
            new_conns=opened,
            latencies_ms=tally.latencies_ms,
        )


# --------------------------------------------------------------------------- report


def summarise(
    cfg: Config, impls: list[Impl], results: dict[str, list[RunResult]]
) -> list[dict[str, Any]]:
    """One row per implementation, for the results of one scenario."""
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
        # Paired per round (the floor ran seconds apart at most), then the median: robust to
        # the machine getting slower or faster during the run.
        paired = [
            r.turns_per_s / floor_by_round[r.round] for r in runs if r.round in floor_by_round
        ]
        rows.append(
            {
                "implementation": impl.name,
                "mode": impl.mode,
                "workload": runs[0].workload,
                "shape": runs[0].shape,
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
                "cpu_us_per_turn": 1e6 * sum(r.cpu_s for r in runs) / total_turns,
                "cpu_us_per_turn_rounds": [1e6 * r.cpu_s / r.turns for r in runs],
                "new_conns_per_1k_turns": 1000.0 * sum(r.new_conns for r in runs) / total_turns,
                "peak_server_conns": max(r.peak_conns for r in runs),
                "errors": sum(r.errors for r in runs),
                "first_error": first_errors[0] if first_errors else None,
            }
        )
    return rows


def print_table(cfg: Config, rows: list[dict[str, Any]]) -> None:
    headers = [
        "implementation",
        "workload",
        "turns/s",
        "p50 ms",
        "p99 ms",
        "x floor",
        "x floor per round",
        "cpu us/turn",
        "new conns/1k",
        "errors",
    ]
    body = []
    for r in rows:
        workload = f"{r['sessions']}x{r['turns_per_session']}" + ("*" if r["capped"] else "")
        body.append(
            [
                r["implementation"],
                workload,
                fmt_num(r["turns_per_s"]),
                fmt_num(r["p50_ms"]),
                fmt_num(r["p99_ms"]),
                fmt_num(r["ratio_to_floor"], 2),
                " ".join(f"{x:.2f}" for x in r["ratio_to_floor_rounds"]),
                fmt_num(r["cpu_us_per_turn"], 0),
                fmt_num(r["new_conns_per_1k_turns"], 1),
                str(r["errors"]),
            ]
        )
    emit(render_table(headers, body))
    for r in rows:
        emit(
            f"  {r['implementation']} turns/s per round: "
            + " / ".join(f"{x:.0f}" for x in r["turns_per_s_rounds"])
            + "; cpu us/turn per round: "
            + " / ".join(f"{x:.0f}" for x in r["cpu_us_per_turn_rounds"])
        )
    for r in rows:
        if r["errors"]:
            emit(f"! {r['implementation']}: {r['errors']} errors, first: {r['first_error']}")


def print_legend(cfg: Config, failures: list[str], skipped: dict[str, str]) -> None:
    emit(
        f"{cfg.rounds} round(s), implementations alternating within each round; concurrency "
        f"{cfg.concurrency}; {cfg.prefill_rows} unrelated rows per table; tidb-memory engine_args "
        f"{cfg.tm_engine_args or 'none (defaults)'}."
    )
    emit(
        "turns/s = median over rounds; p50/p99 = per-turn latency pooled over rounds; x floor = "
        "median over rounds of (turns/s / floor turns/s of the same round); cpu us/turn = this "
        "process's CPU time / turns; new conns/1k = the server's Connections delta while timing "
        "per 1,000 turns, after warm-up passes until one opened none (any client of the server "
        "counts)."
    )
    if cfg.slow_sessions != cfg.sessions or cfg.slow_turns != cfg.turns:
        emit(
            f"* capped by --slow-cap to {cfg.slow_sessions} sessions x {cfg.slow_turns} turns "
            "(where marked): too slow for the full workload; turns/s is still comparable."
        )
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


def _choices(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}(s) {unknown}; choose from {list(allowed)}")
    return tuple(n for n in allowed if n in chosen)  # canonical order


async def amain(args: argparse.Namespace) -> int:
    only = list(_choices(args.only, ALL_IMPLS, "implementation"))
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
        workloads=_choices(args.workload, WORKLOADS, "workload"),
        shapes=_choices(args.shape, SHAPES, "shape"),
        tm_engine_args=json.loads(args.tm_engine_args) if args.tm_engine_args else None,
    )
    if not any(n == "lc-tidb-threads" for n in only):
        cfg = replace(cfg, slow_sessions=cfg.sessions, slow_turns=cfg.turns)
    token = run_token()
    skipped: dict[str, str] = {}
    impls = build_impls(cfg, token, only, skipped)
    admin = Admin(cfg.url)
    server = await server_version(await admin.conn())
    note(f"server {server}; tables {table_name(token, '*')}")
    scenarios: list[Scenario] = [(w, s) for w in cfg.workloads for s in cfg.shapes]
    results: dict[Scenario, dict[str, list[RunResult]]] = {sc: {} for sc in scenarios}
    failures: list[str] = []
    ready: list[Impl] = []
    try:
        rich = [turn_pair(seed) for seed in range(DISTINCT_PAIRS)]
        prefill = Prefill(cfg.prefill_rows, token, rich)
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
        pairs = {"rich": rich, "plain": [plain_pair(seed) for seed in range(DISTINCT_PAIRS)]}
        bench = Bench(cfg, admin, pairs)
        for rnd in range(cfg.rounds):
            for workload, shape in scenarios:
                for impl in ready:
                    label = f"round {rnd + 1}/{cfg.rounds} {workload:9} {shape:5} {impl.name:18}"
                    try:
                        res = await bench.slot(impl, rnd, workload, shape)
                    except Exception as exc:
                        failures.append(f"{label}: {_describe(exc)}")
                        note(f"slot failed: {failures[-1]}")
                        continue
                    results[(workload, shape)].setdefault(impl.name, []).append(res)
                    emit(
                        f"{label} {res.turns_per_s:8.1f} turns/s  cpu "
                        f"{1e6 * res.cpu_s / res.turns:6.0f} us/turn  p50 "
                        f"{percentile(res.latencies_ms, 50):6.1f} ms  new conns {res.new_conns}"
                        f"  errors {res.errors}"
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

    tables = {sc: summarise(cfg, ready, results[sc]) for sc in scenarios}
    if args.json:
        doc = {
            "benchmark": "turns",
            "config": asdict(cfg) | {"url": safe_url(cfg.url)},
            "server": server,
            "versions": versions(),
            "scenarios": [
                {"workload": w, "shape": s, "rows": tables[(w, s)]} for w, s in scenarios
            ],
            "skipped": skipped,
            "failed_slots": failures,
            "runs": [
                asdict(r) | {"implementation": name, "latencies_ms": None}
                for sc in scenarios
                for name, runs in results[sc].items()
                for r in runs
            ],
        }
        emit(json.dumps(doc, indent=2))
    else:
        emit()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        emit(f"turns benchmark - server {server} - {when}")
        for workload, shape in scenarios:
            emit()
            start = "start empty" if workload == "empty" else "start with 20 messages"
            emit(f"== sessions {start}, {shape} messages")
            print_table(cfg, tables[(workload, shape)])
        emit()
        print_legend(cfg, failures, skipped)
    bad = any(r["errors"] for rows in tables.values() for r in rows)
    return 1 if failures or bad else 0


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
        help="turns in flight = the floor's pool size = threads (%(default)s)",
    )
    p.add_argument(
        "--prefill-rows",
        type=int,
        default=20000,
        help="rows written to each table before timing (%(default)s)",
    )
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (%(default)s)")
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_IMPLS),
        help=f"comma-separated subset of: {','.join(ALL_IMPLS)} (default %(default)s)",
    )
    p.add_argument(
        "--workload",
        default=",".join(WORKLOADS),
        help="sessions start empty, or with 20 stored messages (default %(default)s)",
    )
    p.add_argument(
        "--shape",
        default=",".join(SHAPES),
        help="plain text messages, or AI replies with metadata and tool calls "
        "(default %(default)s)",
    )
    p.add_argument(
        "--tm-engine-args",
        metavar="JSON",
        help='tidb-memory engine_args, e.g. \'{"pool_size": 32, "max_overflow": 0}\' '
        "(default: none, the library's defaults)",
    )
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
