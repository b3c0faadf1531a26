"""Full read of one very large session (default 10,000 messages) per implementation.

The session (alternating Human/AI messages of ~200-500 chars; every 5th AI message has a tool
call, two thirds carry usage_metadata) is written once per implementation, then full reads run
alternately (A B C D A B C D ...) for ``--rounds`` rounds. Each round does one timed read per
implementation and one separate read under tracemalloc for the peak Python memory of a read
(tracemalloc slows code down, so it never overlaps the timed read). See benchmarks/README.md.

Run:  python benchmarks/large_session.py [--messages 10000] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import tracemalloc
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from _common import (
    FLOOR_DDL,
    FLOOR_INSERT,
    Admin,
    ErrorCounter,
    bulk_insert,
    chunks,
    collect,
    default_url,
    drop_run_tables,
    dump_message,
    emit,
    execute,
    fmt_num,
    forget_run_rows,
    import_tidb_memory,
    large_session,
    median,
    note,
    quiet_library_noise,
    raw_connect,
    render_table,
    run_token,
    safe_url,
    server_version,
    table_name,
    utcnow_naive,
    versions,
    with_driver,
)
from langchain_core.messages import AIMessage, BaseMessage, messages_from_dict

quiet_library_noise()

ALL_IMPLS = ("floor", "tidb-memory-async", "lc-sql-async", "lc-tidb")
WRITE_CHUNK = 1000  # tidb-memory writes its session with aadd_messages in chunks of this size


@dataclass(frozen=True)
class Config:
    url: str
    messages: int
    rounds: int


class Reader(ABC):
    name: str
    slug: str

    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.table = table_name(token, self.slug)
        self.session_id = f"large-{token}"

    @abstractmethod
    async def write(self, admin: Any, messages: list[BaseMessage]) -> None:
        """Create the table and store the session (once)."""

    async def open(self) -> None:
        """Create connections/engines (kept for all rounds; warmed by a first read)."""
        return None

    async def close(self) -> None:
        return None

    @abstractmethod
    async def read(self) -> list[BaseMessage]:
        """One full read of the session - the measured operation."""

    def logged_errors(self) -> int:
        return 0


def _raw_rows(session_id: str, messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(session_id, dump_message(m)) for m in messages]


class Floor(Reader):
    """``SELECT message ... ORDER BY seq`` + ``messages_from_dict([json.loads(...)])``."""

    name = "floor"
    slug = "floor"

    async def write(self, admin: Any, messages: list[BaseMessage]) -> None:
        await execute(admin, FLOOR_DDL.format(table=self.table))
        now = utcnow_naive()
        rows = [
            (sid, seq, msg, now)
            for seq, (sid, msg) in enumerate(_raw_rows(self.session_id, messages), start=1)
        ]
        await bulk_insert(admin, FLOOR_INSERT.format(table=self.table), rows)
        self.select_sql = f"SELECT message FROM {self.table} WHERE session_id = %s ORDER BY seq"

    async def open(self) -> None:
        self.conn = await raw_connect(self.cfg.url)

    async def close(self) -> None:
        self.conn.close()

    async def read(self) -> list[BaseMessage]:
        async with self.conn.cursor() as cur:
            await cur.execute(self.select_sql, (self.session_id,))
            rows = await cur.fetchall()
        return messages_from_dict([json.loads(r[0]) for r in rows])


class TiDBMemoryAsync(Reader):
    """``await AsyncTiDBChatMessageHistory(...).aget_messages()`` (new object per read)."""

    name = "tidb-memory-async"
    slug = "tmasync"

    def __init__(self, cfg: Config, token: str, module: ModuleType) -> None:
        super().__init__(cfg, token)
        self.tm = module

    def _history(self) -> Any:
        return self.tm.AsyncTiDBChatMessageHistory(
            self.session_id, self.cfg.url, table_name=self.table
        )

    async def write(self, admin: Any, messages: list[BaseMessage]) -> None:
        history = self._history()
        await history.acreate_tables()
        for part in chunks(messages, WRITE_CHUNK):
            await history.aadd_messages(list(part))

    async def close(self) -> None:
        await self.tm.aclose_all()

    async def read(self) -> list[BaseMessage]:
        return list(await self._history().aget_messages())


class LcSqlAsync(Reader):
    """langchain-community ``SQLChatMessageHistory(...).aget_messages()`` on a shared engine."""

    name = "lc-sql-async"
    slug = "lcsql"

    def _history(self) -> Any:
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        return SQLChatMessageHistory(
            session_id=self.session_id,
            connection=self.engine,
            table_name=self.table,
            async_mode=True,
        )

    async def open(self) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(self.cfg.url)

    async def write(self, admin: Any, messages: list[BaseMessage]) -> None:
        await self.open()
        try:
            await self._history().aget_messages()  # the library creates its table
        finally:
            await self.close()
        sql = f"INSERT INTO {self.table} (session_id, message) VALUES (%s, %s)"
        await bulk_insert(admin, sql, _raw_rows(self.session_id, messages))

    async def close(self) -> None:
        await self.engine.dispose()

    async def read(self) -> list[BaseMessage]:
        return list(await self._history().aget_messages())


class LcTiDB(Reader):
    """langchain-community ``TiDBChatMessageHistory(...).messages`` (sync; the constructor
    creates an engine, runs CREATE TABLE IF NOT EXISTS and loads the session)."""

    name = "lc-tidb"
    slug = "lctidb"

    def __init__(self, cfg: Config, token: str) -> None:
        super().__init__(cfg, token)
        self.sync_url = with_driver(cfg.url, "mysql+pymysql")
        self.errors = ErrorCounter.attach("langchain_community.chat_message_histories.tidb")
        self._last: Any = None

    def _history(self) -> Any:
        from langchain_community.chat_message_histories import TiDBChatMessageHistory

        return TiDBChatMessageHistory(
            session_id=self.session_id, connection_string=self.sync_url, table_name=self.table
        )

    async def write(self, admin: Any, messages: list[BaseMessage]) -> None:
        self._history().engine.dispose()  # the library creates its table
        sql = f"INSERT INTO {self.table} (session_id, message) VALUES (%s, %s)"
        await bulk_insert(admin, sql, _raw_rows(self.session_id, messages))

    async def read(self) -> list[BaseMessage]:
        # Called inline (blocking the otherwise idle loop): no thread hand-off in the timing.
        history = self._history()
        messages = list(history.messages)
        self._last = history  # disposed by `after_read`, outside the measurement
        return messages

    def after_read(self) -> None:
        if self._last is not None:
            self._last.engine.dispose()
            self._last = None

    def logged_errors(self) -> int:
        return self.errors.count


def _after(reader: Reader) -> None:
    if isinstance(reader, LcTiDB):
        reader.after_read()


def verify(name: str, got: list[BaseMessage], expected: list[BaseMessage]) -> str | None:
    """Content check on the warm-up read: types, contents, tool calls, usage metadata."""
    if len(got) != len(expected):
        return f"{name}: read {len(got)} messages, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        same = g.type == e.type and g.content == e.content
        if same and isinstance(e, AIMessage):
            same = (
                isinstance(g, AIMessage)
                and g.tool_calls == e.tool_calls
                and g.usage_metadata == e.usage_metadata
            )
        if not same:
            return f"{name}: message {i} differs: {g!r:.200} != {e!r:.200}"
    return None


@dataclass
class Sample:
    round: int
    seconds: float
    cpu_seconds: float
    peak_bytes: int
    count: int


async def timed_read(reader: Reader) -> tuple[float, float, int]:
    """Wall time, CPU time of this process, and message count of one full read."""
    collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    messages = await reader.read()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    count = len(messages)
    del messages
    _after(reader)
    return elapsed, cpu, count


async def traced_read(reader: Reader) -> int:
    collect()
    tracemalloc.start()
    try:
        messages = await reader.read()
        peak = tracemalloc.get_traced_memory()[1]
        del messages
    finally:
        tracemalloc.stop()
    _after(reader)
    return peak


def build(cfg: Config, token: str, only: list[str], skipped: dict[str, str]) -> list[Reader]:
    readers: list[Reader] = []
    for n in only:
        if n == "floor":
            readers.append(Floor(cfg, token))
        elif n == "tidb-memory-async":
            tm, err = import_tidb_memory()
            if tm is None:
                note(f"tidb-memory not importable: {err}")
                skipped[n] = f"tidb-memory not importable: {err}"
            else:
                readers.append(TiDBMemoryAsync(cfg, token, tm))
        elif n == "lc-sql-async":
            readers.append(LcSqlAsync(cfg, token))
        elif n == "lc-tidb":
            readers.append(LcTiDB(cfg, token))
    return readers


async def amain(args: argparse.Namespace) -> int:
    only = [n.strip() for n in args.only.split(",")] if args.only else list(ALL_IMPLS)
    unknown = [n for n in only if n not in ALL_IMPLS]
    if unknown:
        raise SystemExit(f"unknown implementation(s) {unknown}; choose from {list(ALL_IMPLS)}")
    cfg = Config(url=args.url, messages=args.messages, rounds=args.rounds)
    token = run_token()
    skipped: dict[str, str] = {}
    readers = build(cfg, token, [n for n in ALL_IMPLS if n in only], skipped)
    expected = large_session(cfg.messages)
    payload = sum(len(dump_message(m)) for m in expected)
    admin = Admin(cfg.url)
    server = await server_version(await admin.conn())
    note(f"server {server}; {cfg.messages} messages, {payload / 2**20:.1f} MiB of JSON")
    samples: dict[str, list[Sample]] = {}
    problems: list[str] = []
    failures: list[str] = []
    ready: list[Reader] = []
    try:
        for reader in readers:
            t0 = time.perf_counter()
            try:
                await reader.write(await admin.conn(), expected)
                await reader.open()
                problem = verify(reader.name, await reader.read(), expected)  # + warm-up
                _after(reader)
            except Exception as exc:
                skipped[reader.name] = f"setup failed: {type(exc).__name__}: {exc}"[:300]
                note(f"{reader.name}: {skipped[reader.name]}")
                continue
            if problem:
                problems.append(problem)
                note(problem)
            note(f"wrote + verified {reader.name} ({time.perf_counter() - t0:.1f}s)")
            ready.append(reader)

        for rnd in range(cfg.rounds):
            for reader in ready:
                try:
                    seconds, cpu, count = await timed_read(reader)
                    peak = await traced_read(reader)
                except Exception as exc:  # e.g. a shared server killing connections
                    failures.append(f"round {rnd + 1} {reader.name}: {type(exc).__name__}: {exc}")
                    note(f"read failed: {failures[-1]}")
                    with contextlib.suppress(Exception):
                        await reader.close()
                        await reader.open()
                    continue
                samples.setdefault(reader.name, []).append(Sample(rnd, seconds, cpu, peak, count))
                note(
                    f"round {rnd + 1}/{cfg.rounds} {reader.name:18} {seconds * 1000:8.1f} ms"
                    f"  cpu {cpu * 1000:8.1f} ms"
                    f"  peak {peak / 2**20:6.1f} MiB  {count} msgs"
                )
    finally:
        for reader in ready:
            try:
                await reader.close()
            except Exception as exc:
                note(f"{reader.name}: close failed: {exc}")
        try:
            dropped = await drop_run_tables(await admin.conn(), token)
            tm = next((x.tm for x in readers if isinstance(x, TiDBMemoryAsync)), None)
            forgotten = await forget_run_rows(await admin.conn(), token, tm)
            note(f"dropped {len(dropped)} table(s), {forgotten} bookkeeping row(s)")
        except Exception as exc:
            note(f"could not drop tables {table_name(token, '*')}: {exc}")
        admin.close()

    floor = samples.get("floor")
    floor_s = median([s.seconds for s in floor]) if floor else None
    floor_by_round = {s.round: s.seconds for s in floor or []}
    rows: list[dict[str, Any]] = []
    for reader in ready:
        ss = samples.get(reader.name) or []
        if not ss:
            continue
        med = median([s.seconds for s in ss])
        bad = [s.count for s in ss if s.count != cfg.messages]
        paired = [s.seconds / floor_by_round[s.round] for s in ss if s.round in floor_by_round]
        rows.append(
            {
                "implementation": reader.name,
                "median_ms": med * 1000,
                "min_ms": min(s.seconds for s in ss) * 1000,
                "rounds_ms": [s.seconds * 1000 for s in ss],
                "ratio_to_floor": median(paired) if paired else None,
                "ratio_to_floor_rounds": paired,
                "ratio_of_medians": med / floor_s if floor_s else None,
                "cpu_ms": median([s.cpu_seconds for s in ss]) * 1000,
                "peak_mib": median([s.peak_bytes for s in ss]) / 2**20,
                "messages": ss[0].count,
                "bad_reads": len(bad),
                "logged_errors": reader.logged_errors(),
            }
        )
    if args.json:
        doc = {
            "benchmark": "large_session",
            "config": asdict(cfg) | {"url": safe_url(cfg.url)},
            "json_payload_bytes": payload,
            "server": server,
            "versions": versions(),
            "rows": rows,
            "skipped": skipped,
            "problems": problems,
            "failed_reads": failures,
        }
        emit(json.dumps(doc, indent=2))
    else:
        emit(
            f"large-session read - server {server}; {cfg.messages} messages "
            f"({payload / 2**20:.1f} MiB JSON)"
        )
        emit()
        headers = [
            "implementation",
            "median ms",
            "min ms",
            "per round ms",
            "x floor time",
            "cpu ms",
            "peak MiB",
            "msgs",
        ]
        body = [
            [
                r["implementation"],
                fmt_num(r["median_ms"]),
                fmt_num(r["min_ms"]),
                " / ".join(f"{x:.0f}" for x in r["rounds_ms"]),
                fmt_num(r["ratio_to_floor"], 2),
                fmt_num(r["cpu_ms"]),
                fmt_num(r["peak_mib"]),
                str(r["messages"]),
            ]
            for r in rows
        ]
        emit(render_table(headers, body))
        emit()
        emit(
            f"{cfg.rounds} round(s), alternating. median/min = wall time of one full read; "
            "x floor time = median over rounds of (time / floor time of the same round), "
            ">1 is slower; cpu ms = median CPU time of this process during the timed read "
            "(less sensitive to a busy machine than wall time); "
            "peak MiB = median tracemalloc peak of a separate, traced read (Python allocations "
            "only, result included)."
        )
        for p in problems:
            emit(f"! {p}")
        for f in failures:
            emit(f"! read failed (not in the numbers): {f}")
        for r in rows:
            if r["bad_reads"] or r["logged_errors"]:
                emit(
                    f"! {r['implementation']}: {r['bad_reads']} short reads, "
                    f"{r['logged_errors']} logged errors"
                )
        for name, why in skipped.items():
            emit(f"- {name} skipped: {why}")
    return (
        1 if problems or failures or any(r["bad_reads"] or r["logged_errors"] for r in rows) else 0
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--url",
        default=default_url(),
        help="mysql+aiomysql URL (env TIDB_MEMORY_BENCH_URL; default %(default)s)",
    )
    p.add_argument("--messages", type=int, default=10000, help="session size (%(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (%(default)s)")
    p.add_argument("--only", help=f"comma-separated subset of: {','.join(ALL_IMPLS)}")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
