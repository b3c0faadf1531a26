"""Fault injection with real faults on loopback, checked by a Jepsen-style append checker.

Each scenario runs at least 2,000 appends (batches of 1-3 messages) over 50 sessions, one writer
per session, with readers reading the sessions all along, while at least 50 faults hit:

a) the server KILLs the pool's connections (found in its PROCESSLIST) in the middle of the load;
b) the throwaway mariadbd is stopped and started again on the same port (and once SIGKILLed);
c) a TCP proxy cuts sockets before a request, after a request but before its reply (the
   ambiguous case: the INSERT has committed), and in the middle of large reads.

``tests/append_checker.py`` states what is checked. The figures are printed with the results.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiomysql
import pytest

import tidb_memory
from tests.append_checker import (
    AppendChecker,
    LoadResult,
    Report,
    RetryCounter,
    read_final_state,
    run_append_load,
)
from tests.infra import CutMode, FaultProxy, ThrowawayMariaDB
from tidb_memory import RetryPolicy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SESSIONS = 50
MIN_BATCHES = 40  # per session: 50 x 40 = 2,000 appends at least
MIN_FAULTS = 50
MARKER = re.compile(r"<f[0-9a-f]+\|[^>]*>")


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayMariaDB]:
    with ThrowawayMariaDB() as db:
        yield db


@pytest.fixture
def run_id() -> str:
    return "f" + uuid.uuid4().hex[:10]


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


@dataclass
class Figures:
    scenario: str
    faults: int
    fault_note: str
    retries: RetryCounter
    report: Report
    load: LoadResult
    seq_problems: list[str]

    def line(self) -> str:
        r = self.report
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(self.retries.by_kind.items()))
        return (
            f"[faults {self.scenario}] appends={r.appends} (acknowledged={r.acknowledged}, "
            f"failed={r.failed}, of which landed={r.failed_landed}) "
            f"messages={r.messages_acknowledged} reads={r.reads} "
            f"faults={self.faults} ({self.fault_note}) retries={self.retries.retries} ({kinds}) "
            f"lost={r.lost} duplicated={r.duplicated} anomalies={len(r.anomalies)} "
            f"in {self.load.elapsed:.1f}s"
        )

    def assert_clean(self, *, max_failed_share: float = 0.05) -> None:
        r = self.report
        assert not self.load.unexpected, self.load.unexpected[:5]
        assert r.lost == 0, r.anomalies
        assert r.duplicated == 0, r.anomalies
        assert r.anomalies == []
        assert self.seq_problems == []
        assert r.appends >= SESSIONS * MIN_BATCHES
        assert self.faults >= MIN_FAULTS, self.line()
        assert self.retries.retries >= 1
        # Faults are ridden out by retries: only a small share of appends may give up.
        assert r.failed <= max_failed_share * r.appends, self.line()
        assert r.reads >= 100


def finish(
    scenario: str,
    checker: AppendChecker,
    server: ThrowawayMariaDB,
    table: str,
    run_id: str,
    load: LoadResult,
    retries: RetryCounter,
    faults: int,
    note: str,
    capsys: pytest.CaptureFixture[str],
) -> Figures:
    final, seq_problems = read_final_state(server.connect_kwargs(), table, prefix=run_id)
    figures = Figures(scenario, faults, note, retries, checker.check(final), load, seq_problems)
    with capsys.disabled():
        print("\n" + figures.line())
    return figures


def sessions(run_id: str) -> list[str]:
    return [f"{run_id}-s{i:02d}" for i in range(SESSIONS)]


# --- a) the server KILLs the pool's connections --------------------------------------------


async def test_server_kills_pool_connections(
    server: ThrowawayMariaDB, run_id: str, closing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    table = f"faults_kill_{run_id}"
    checker = AppendChecker(run_id)
    kills = 0
    stop = asyncio.Event()
    rng = random.Random(1)

    async def killer() -> None:
        nonlocal kills
        conn = await aiomysql.connect(**server.connect_kwargs(), autocommit=True)
        try:
            while not stop.is_set():
                async with conn.cursor() as cur:
                    await cur.execute(
                        "SELECT ID, COMMAND FROM information_schema.PROCESSLIST "
                        "WHERE ID <> CONNECTION_ID() AND USER = 'root'"
                    )
                    rows = list(await cur.fetchall())
                    busy = [r[0] for r in rows if r[1] == "Query"]
                    pool = busy if busy and rng.random() < 0.7 else [r[0] for r in rows]
                    for victim in rng.sample(pool, min(len(pool), rng.randint(1, 2))):
                        try:
                            await cur.execute(f"KILL {int(victim)}")
                        except aiomysql.OperationalError as exc:
                            if exc.args[0] != 1094:  # unknown thread: it closed by itself
                                raise
                        else:
                            kills += 1
                await asyncio.sleep(rng.uniform(0.02, 0.08))
        finally:
            conn.close()

    retries = RetryCounter()
    with retries.installed():
        kill_task = asyncio.create_task(killer())
        try:
            load = await run_append_load(
                server.url,
                checker,
                table=table,
                sessions=sessions(run_id),
                min_batches=MIN_BATCHES,
                until=lambda: kills >= 2 * MIN_FAULTS,
                pad=200,
                retry=RetryPolicy(attempts=30, deadline=30.0, base_delay=0.005, max_delay=0.2),
            )
        finally:
            stop.set()
            await kill_task
    figures = finish(
        "a: KILL", checker, server, table, run_id, load, retries, kills,
        "KILL <id> of pool connections", capsys,
    )  # fmt: skip
    figures.assert_clean()


# --- b) the server is stopped and restarted on the same port -------------------------------


async def test_server_restarts_on_the_same_port(
    run_id: str, closing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    table = f"faults_restart_{run_id}"
    checker = AppendChecker(run_id)
    restarts: list[str] = []
    retries = RetryCounter()
    with ThrowawayMariaDB() as server:
        port = server.port

        async def restarter() -> None:
            await asyncio.sleep(0.8)
            plan = ["stop", "stop", "crash", "stop", "stop"]
            for how in plan:
                if how == "crash":  # SIGKILL: a crash; committed InnoDB data must survive
                    await server.akill()
                    await server.astart()
                else:
                    await server.arestart()
                assert server.port == port
                restarts.append(how)
                await asyncio.sleep(0.7)

        with retries.installed():
            task = asyncio.create_task(restarter())
            try:
                load = await run_append_load(
                    server.url,
                    checker,
                    table=table,
                    sessions=sessions(run_id),
                    min_batches=MIN_BATCHES,
                    until=task.done,
                    pad=200,
                    # Long enough to ride out a restart: the server is away for about a second.
                    retry=RetryPolicy(attempts=1000, deadline=60.0, base_delay=0.02, max_delay=0.3),
                    pause=lambda: asyncio.sleep(0.08),
                )
            finally:
                await task
        note = (
            f"failed attempts seen by the library across {len(restarts)} restarts "
            f"({restarts.count('stop')} stop/start, {restarts.count('crash')} SIGKILL/start)"
        )
        faults = retries.retries + checker_failed(checker)
        figures = finish(
            "b: restart", checker, server, table, run_id, load, retries, faults, note, capsys
        )
    assert len(restarts) == 5
    # Every append rides out every restart: the policy's deadline is longer than the outage.
    figures.assert_clean(max_failed_share=0.0)


def checker_failed(checker: AppendChecker) -> int:
    return sum(1 for b in checker.batches.values() if b.ok is False)


# --- c) a proxy cuts sockets at chosen moments --------------------------------------------


def is_read(text: str) -> bool:
    return text.startswith("SELECT seq, message FROM")


def is_insert(text: str) -> bool:
    return text.startswith("INSERT INTO")


async def test_proxy_cuts_before_after_and_during(
    server: ThrowawayMariaDB, run_id: str, closing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    table = f"faults_proxy_{run_id}"
    checker = AppendChecker(run_id)
    retries = RetryCounter()
    rng = random.Random(7)
    # (mode, matcher, what) -> cuts wanted; each is armed one cut at a time, spread over the load.
    plan = [
        (CutMode.BEFORE_REQUEST, is_insert, "before INSERT"),
        (CutMode.BEFORE_REQUEST, is_read, "before read"),
        (CutMode.AFTER_REQUEST, is_insert, "after INSERT, before its reply"),
        (CutMode.DURING_REPLY, is_read, "during a large read"),
    ]
    wanted = {CutMode.BEFORE_REQUEST: 50, CutMode.AFTER_REQUEST: 50, CutMode.DURING_REPLY: 50}
    fired: dict[str, int] = dict.fromkeys((what for _, _, what in plan), 0)

    async with FaultProxy(server.host, server.port) as proxy:

        def done() -> bool:
            return all(proxy.stats.cuts[mode] >= n for mode, n in wanted.items())

        async def controller() -> None:
            await asyncio.sleep(0.3)
            armed = {}
            while not done():
                for mode, match, what in plan:
                    arm = armed.get(what)
                    if arm is not None and arm.fired == 0 and not arm.cancelled:
                        continue
                    if arm is not None:
                        fired[what] += arm.fired
                    if proxy.stats.cuts[mode] >= wanted[mode]:
                        armed.pop(what, None)
                        continue
                    armed[what] = proxy.arm(
                        mode,
                        match=match,
                        skip=rng.randint(0, 3 if match is is_read else 12),
                        reply_bytes=rng.randint(1_000, 24_000),
                    )
                await asyncio.sleep(0.01)
            proxy.disarm()
            for what, arm in armed.items():
                fired[what] += arm.fired

        with retries.installed():
            task = asyncio.create_task(controller())
            try:
                load = await run_append_load(
                    proxy.url(),
                    checker,
                    table=table,
                    sessions=sessions(run_id),
                    min_batches=MIN_BATCHES,
                    until=task.done,
                    pad=1_000,  # sessions grow to tens of KB: reads span many packets
                    readers=6,
                    pause=lambda: asyncio.sleep(0.02),
                    retry=RetryPolicy(attempts=30, deadline=30.0, base_delay=0.002, max_delay=0.1),
                )
            finally:
                if not task.done():
                    task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        cuts = dict(proxy.stats.cuts)
        ambiguous = [
            c.text for c in proxy.cut_log if c.mode is CutMode.AFTER_REQUEST and is_insert(c.text)
        ]
    note = ", ".join(f"{what}: {n}" for what, n in fired.items())
    figures = finish(
        "c: proxy", checker, server, table, run_id, load, retries, sum(cuts.values()), note,
        capsys,
    )  # fmt: skip
    for mode, n in wanted.items():
        assert cuts[mode] >= n, cuts
    assert fired["after INSERT, before its reply"] >= 50
    assert fired["during a large read"] >= 50
    figures.assert_clean()
    # The ambiguous cuts waited for the server's reply, so each of those INSERTs committed and
    # the client never heard: the retry must have recognised its own rows, not written a copy.
    final, _ = read_final_state(server.connect_kwargs(), table, prefix=run_id)
    present = Counter(m for markers in final.values() for m in markers)
    landed_once = 0
    for text in ambiguous:
        marker = MARKER.search(text)
        assert marker is not None, text[:200]
        assert present[marker.group(0)] == 1, marker.group(0)
        landed_once += 1
    assert landed_once >= 50
    with capsys.disabled():
        print(
            f"[faults c: proxy] ambiguous INSERTs committed but cut: {landed_once}, "
            "each stored exactly once"
        )
