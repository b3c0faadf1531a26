"""Round trips per call, counted by the server (MariaDB only).

The count is the change of ``Questions + Com_admin_commands`` in ``SHOW GLOBAL STATUS``, read
from a separate raw aiomysql connection. The probe's own statements are calibrated away by
measuring an empty interval next to every measured one.

Other people may load the same server, so one sample proves little: their statements add to an
interval, and the global counters can even dip (a thread that disconnects while the server sums
them). Each figure is therefore the smallest value seen at least twice over repeated samples
(the probe's own cost: the smallest seen three times on empty intervals). Sampling goes on for at
least ``MIN_SAMPLES`` samples and until that value is at most the expectation, and the test then
asserts equality: a call that costs more than expected cannot pass (other people's load cannot
make two samples smaller), and one that costs less fails unless noise hid every quiet sample.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomysql
import pytest
from conftest import Target, mysql_params
from langchain_core.messages import AIMessage, HumanMessage

from tidb_memory import AsyncTiDBChatMessageHistory, TiDBChatMessageHistory

MAX_TRIES = 80
MIN_SAMPLES = 15
CALIBRATION_SAMPLES = 30
Op = Callable[[], Awaitable[Any]]


class Probe:
    def __init__(self, conn: aiomysql.Connection) -> None:
        self.conn = conn
        self.overhead: int | None = None
        self.samples: list[int] = []

    async def read(self) -> int:
        async with self.conn.cursor() as cur:
            await cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')"
            )
            return sum(int(value) for _name, value in await cur.fetchall())

    async def calibrate(self) -> int:
        """What the probe itself adds to an interval: measured on empty intervals."""
        if self.overhead is None:
            empty = []
            for _ in range(CALIBRATION_SAMPLES):
                a = await self.read()
                empty.append(await self.read() - a)
            self.overhead = smallest_repeated(empty, 3)
            if self.overhead is None:
                pytest.fail(f"the server is too busy to calibrate the probe: {empty}")
        return self.overhead

    async def cost(self, op: Op, expected: int, *, setup: Op | None = None) -> int | None:
        """Statements ``op`` sends, as the server counts them (see the module docstring)."""
        overhead = await self.calibrate()
        self.samples = []
        best: int | None = None
        for _ in range(MAX_TRIES):
            if setup is not None:
                await setup()
            b = await self.read()
            await op()
            self.samples.append(await self.read() - b - overhead)
            best = smallest_repeated(self.samples, 2)
            if len(self.samples) >= MIN_SAMPLES and best is not None and best <= expected:
                break
        return best


async def expect(probe: Probe, op: Op, expected: int, *, setup: Op | None = None) -> None:
    found = await probe.cost(op, expected, setup=setup)
    assert found == expected, (
        f"expected {expected} statement(s), the server counted {found}; "
        f"samples (minus the probe's {probe.overhead}): {probe.samples}"
    )


def smallest_repeated(values: list[int], times: int) -> int | None:
    """The smallest value seen at least ``times`` times, if any."""
    counts = Counter(values)
    repeated = [v for v, n in counts.items() if n >= times]
    return min(repeated) if repeated else None


@pytest.fixture
async def probe(mysql: Target) -> AsyncIterator[Probe]:
    params = mysql_params()
    params.pop("connect_timeout")
    conn = await aiomysql.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"],
        db=params["database"],
        autocommit=True,
    )
    try:
        yield Probe(conn)
    finally:
        await conn.ensure_closed()


def sync(fn: Callable[[], Any]) -> Op:
    """Run a sync method the way sync code does: from a thread with no event loop."""

    async def op() -> Any:
        return await asyncio.to_thread(fn)

    return op


async def test_the_probe_counts_one_statement(probe: Probe, mysql: Target) -> None:
    async def one_statement() -> None:
        async with probe.conn.cursor() as cur:
            await cur.execute("SELECT 1")

    await expect(probe, one_statement, 1)


async def test_async_steady_state(probe: Probe, mysql: Target) -> None:
    table = mysql.new_table()
    url = mysql.url
    warm = AsyncTiDBChatMessageHistory("warm", url, table_name=table)
    await warm.aadd_messages([HumanMessage("setup"), AIMessage("and pool")])
    await warm.aget_messages()

    def construct() -> Op:
        async def op() -> None:
            AsyncTiDBChatMessageHistory("c", url, table_name=table)
            TiDBChatMessageHistory("c", url, table)

        return op

    await expect(probe, construct(), 0)

    h = AsyncTiDBChatMessageHistory("s", url, table_name=table)
    await expect(probe, h.aget_messages, 1)

    turn = [HumanMessage("q"), AIMessage("a")]
    # An object that has just read its session (every RunnableWithMessageHistory turn).
    await expect(probe, lambda: h.aadd_messages(turn), 1, setup=h.aget_messages)

    # A fresh object, which knows nothing of the session.
    fresh: list[AsyncTiDBChatMessageHistory] = []

    async def new_object() -> None:
        fresh.append(AsyncTiDBChatMessageHistory("s", url, table_name=table))

    await expect(probe, lambda: fresh[-1].aadd_messages(turn), 1, setup=new_object)

    async def new_and_read() -> None:
        await AsyncTiDBChatMessageHistory("s", url, table_name=table).aget_messages()

    await expect(probe, new_and_read, 1)

    async def refill() -> None:
        await h.aadd_messages(turn)

    await expect(probe, h.aclear, 1, setup=refill)
    assert await h.aget_messages() == []


async def test_sync_steady_state(probe: Probe, mysql: Target) -> None:
    table = mysql.new_table()
    url = mysql.url
    warm = TiDBChatMessageHistory("warm", url, table)
    await asyncio.to_thread(warm.add_messages, [HumanMessage("setup"), AIMessage("pool")])
    await asyncio.to_thread(lambda: warm.messages)

    h = TiDBChatMessageHistory("s", url, table)
    await expect(probe, sync(lambda: h.messages), 1)

    turn = [HumanMessage("q"), AIMessage("a")]
    read = sync(lambda: h.messages)
    await expect(probe, sync(lambda: h.add_messages(turn)), 1, setup=read)

    fresh: list[TiDBChatMessageHistory] = []

    async def new_object() -> None:
        fresh.append(TiDBChatMessageHistory("s", url, table))

    await expect(probe, sync(lambda: fresh[-1].add_messages(turn)), 1, setup=new_object)
    await expect(probe, sync(lambda: TiDBChatMessageHistory("s", url, table).messages), 1)
    await expect(probe, sync(h.clear), 1, setup=sync(lambda: h.add_messages(turn)))
    assert await asyncio.to_thread(lambda: h.messages) == []
    # The drop-in's own helpers: one statement each too.
    await expect(probe, sync(lambda: h.add_user_message("hi")), 1)
    await expect(probe, sync(h.reload_cache), 1)
