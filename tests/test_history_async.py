"""The history's behaviour through its async API, on MariaDB and SQLite.

The cases are written once, here, against a small adapter (:class:`Api`): this module runs them
through ``aget_messages``/``aadd_messages``/``aclear``, and ``test_history_sync.py`` runs the very
same list through ``messages``/``add_messages``/``clear``, called from plain worker threads as
LangChain's executor calls them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
from conftest import Target, big_message, sample_messages
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, messages_from_dict

from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    InvalidInputError,
    MessageTooLargeError,
    SchemaError,
    TiDBMemoryError,
)
from tidb_memory import engine as engine_mod

# --- the adapters --------------------------------------------------------------------------


class Api:
    """One history, driven through one of its two APIs."""

    kind: ClassVar[str]

    def __init__(self, history: AsyncTiDBChatMessageHistory, ctx: Ctx) -> None:
        self.history = history
        self.ctx = ctx

    async def get(self) -> list[BaseMessage]:
        raise NotImplementedError

    async def add(self, messages: Sequence[BaseMessage]) -> None:
        raise NotImplementedError

    async def clear(self) -> None:
        raise NotImplementedError

    async def create_tables(self) -> None:
        raise NotImplementedError


class AsyncApi(Api):
    kind = "async"

    async def get(self) -> list[BaseMessage]:
        return await self.history.aget_messages()

    async def add(self, messages: Sequence[BaseMessage]) -> None:
        await self.history.aadd_messages(messages)

    async def clear(self) -> None:
        await self.history.aclear()

    async def create_tables(self) -> None:
        await self.history.acreate_tables()


class SyncApi(Api):
    """The sync methods, each called from a worker thread that has no event loop."""

    kind = "sync"

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.executor(), fn, *args)

    async def get(self) -> list[BaseMessage]:
        return await self._call(lambda: self.history.messages)  # type: ignore[no-any-return]

    async def add(self, messages: Sequence[BaseMessage]) -> None:
        await self._call(self.history.add_messages, messages)

    async def clear(self) -> None:
        await self._call(self.history.clear)

    async def create_tables(self) -> None:
        await self._call(self.history.create_tables)


@dataclass
class Ctx:
    """What a case gets: the backend, a fresh table, and a way to make histories."""

    backend: Target
    table: str
    api: type[Api]
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    def make(self, session_id: str = "session-1", **options: Any) -> Api:
        options.setdefault("table_name", self.table)
        history = AsyncTiDBChatMessageHistory(session_id, self.backend.url, **options)
        return self.api(history, self)

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sync-caller")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def count(self, session_id: str | None = None) -> int:
        return self.backend.count(self.table, session_id)

    def seqs(self, session_id: str) -> list[int]:
        return [int(row[0]) for row in self.backend.rows(self.table, session_id)]

    def created_at(self, session_id: str) -> list[datetime]:
        out = []
        for row in self.backend.rows(self.table, session_id):
            value = row[2]
            out.append(datetime.fromisoformat(value) if isinstance(value, str) else value)
        return out


Case = Callable[[Ctx], Awaitable[None]]
CASES: list[Case] = []


def case(fn: Case) -> Case:
    CASES.append(fn)
    return fn


async def run_case(fn: Case, backend: Target, table: str, api: type[Api]) -> None:
    ctx = Ctx(backend, table, api)
    try:
        await fn(ctx)
    finally:
        ctx.close()


# --- the cases -----------------------------------------------------------------------------


@case
async def empty_session_reads_empty(ctx: Ctx) -> None:
    assert await ctx.make("nobody-here").get() == []
    assert ctx.backend.table_exists(ctx.table)  # created on first use


@case
async def order_holds_across_batches(ctx: Ctx) -> None:
    h = ctx.make()
    turns: list[BaseMessage] = []
    for i in range(6):
        batch = [HumanMessage(f"q{i}"), AIMessage(f"a{i}")][: 1 + i % 2]
        await h.add(batch)
        turns += batch
        if i == 2:
            assert await h.get() == turns  # a read in between (it primes the cheap append path)
    await h.add([])  # an empty batch writes nothing
    assert await h.get() == turns
    assert await ctx.make().get() == turns  # and a fresh object reads the same
    assert ctx.seqs("session-1") == list(range(1, len(turns) + 1))


@case
async def every_message_type_round_trips(ctx: Ctx) -> None:
    messages = sample_messages()
    h = ctx.make("fidelity")
    await h.add(messages)
    got = await ctx.make("fidelity").get()
    assert got == messages
    assert [type(m) for m in got] == [type(m) for m in messages]
    # The rows are langchain's own serialisation: readable without tidb-memory.
    rows = ctx.backend.rows(ctx.table, "fidelity")
    assert messages_from_dict([json.loads(row[1]) for row in rows]) == messages


@case
async def one_megabyte_message_round_trips(ctx: Ctx) -> None:
    big = big_message(1024 * 1024)
    h = ctx.make("big")
    await h.add([HumanMessage("before"), big, AIMessage("after")])
    got = await ctx.make("big").get()
    assert got[1] == big
    assert got == [HumanMessage("before"), big, AIMessage("after")]


@case
async def sessions_are_isolated_and_exact(ctx: Ctx) -> None:
    upper, lower, accent = ctx.make("A"), ctx.make("a"), ctx.make("á")
    await upper.add([HumanMessage("upper")])
    await lower.add([HumanMessage("lower")])
    await accent.add([HumanMessage("accent")])
    assert await upper.get() == [HumanMessage("upper")]
    assert await lower.get() == [HumanMessage("lower")]
    assert await accent.get() == [HumanMessage("accent")]
    await lower.clear()
    assert await lower.get() == []
    assert await upper.get() == [HumanMessage("upper")]
    assert await accent.get() == [HumanMessage("accent")]
    with pytest.raises(InvalidInputError):
        ctx.make("a ")  # PAD SPACE collations would make it equal to "a"


@case
async def clear_empties_the_session_and_seq_restarts(ctx: Ctx) -> None:
    h = ctx.make()
    await h.add([HumanMessage("1"), AIMessage("2")])
    assert await h.get() == [HumanMessage("1"), AIMessage("2")]
    await h.clear()
    assert await h.get() == []
    assert ctx.count("session-1") == 0
    await h.clear()  # clearing an empty session is fine
    await h.add([HumanMessage("3")])
    assert await h.get() == [HumanMessage("3")]
    assert ctx.seqs("session-1") == [1]


@case
async def a_bad_item_rejects_the_whole_batch(ctx: Ctx) -> None:
    h = ctx.make()
    await h.add([HumanMessage("kept")])
    bad_batches: list[list[Any]] = [
        [HumanMessage("ok"), "not a message"],
        [HumanMessage("ok"), {"role": "user", "content": "dict"}],
        [HumanMessage("ok"), AIMessage("nan", additional_kwargs={"x": float("nan")})],
        [HumanMessage("ok"), AIMessage("tuple", additional_kwargs={"x": (1, 2)})],
        [HumanMessage("ok"), AIMessage("inf", response_metadata={"x": float("inf")})],
        [HumanMessage("ok"), None],
    ]
    for batch in bad_batches:
        with pytest.raises(InvalidInputError):
            await h.add(batch)
    with pytest.raises(InvalidInputError):
        await h.add(HumanMessage("a single message is not a batch"))  # type: ignore[arg-type]
    small = ctx.make(max_message_bytes=2000)
    with pytest.raises(MessageTooLargeError):
        await small.add([HumanMessage("fits"), HumanMessage("x" * 5000)])
    assert ctx.count() == 1
    assert await h.get() == [HumanMessage("kept")]


@case
async def injection_shaped_values_are_just_data(ctx: Ctx) -> None:
    nasty = f"'; DROP TABLE {ctx.table}; -- \" ` \\ %s ? :name"
    h = ctx.make(nasty)
    messages = [HumanMessage(nasty, name=nasty, additional_kwargs={nasty: nasty}), AIMessage(nasty)]
    await h.add(messages)
    assert await ctx.make(nasty).get() == messages
    since = ctx.make(nasty, earliest_time=datetime(2000, 1, 1))
    assert await since.get() == messages
    assert ctx.backend.table_exists(ctx.table)
    assert ctx.count(nasty) == 2
    assert ctx.count() == 2
    await h.clear()
    assert ctx.backend.table_exists(ctx.table)


@case
async def earliest_time_filters_by_stored_utc_microseconds(ctx: Ctx) -> None:
    h = ctx.make()
    before = datetime.now(UTC).replace(tzinfo=None)
    for i in range(3):
        await h.add([HumanMessage(f"batch{i}-a"), AIMessage(f"batch{i}-b")])
        await asyncio.sleep(0.003)
    after = datetime.now(UTC).replace(tzinfo=None)
    stamps = ctx.created_at("session-1")
    assert len(stamps) == 6
    # Stored in UTC (whatever the server's or this machine's time zone), to the microsecond.
    assert all(before - timedelta(seconds=1) <= t <= after + timedelta(seconds=1) for t in stamps)
    assert stamps[0] == stamps[1] < stamps[2] == stamps[3] < stamps[4] == stamps[5]
    t1 = stamps[2]
    assert t1.microsecond or stamps[4].microsecond  # microseconds are kept, not truncated

    async def since(value: datetime) -> list[str]:
        return [str(m.content) for m in await ctx.make(earliest_time=value).get()]

    tail = ["batch1-a", "batch1-b", "batch2-a", "batch2-b"]
    assert await since(t1) == tail  # inclusive, exact to the microsecond
    assert await since(t1 - timedelta(microseconds=1)) == tail
    assert await since(t1 + timedelta(microseconds=1)) == ["batch2-a", "batch2-b"]
    # Aware datetimes are converted to UTC; naive ones are UTC already.
    ist = timezone(timedelta(hours=5, minutes=30))
    assert await since(t1.replace(tzinfo=UTC).astimezone(ist)) == tail
    assert await since((t1 + timedelta(microseconds=1)).replace(tzinfo=UTC).astimezone(ist)) == [
        "batch2-a",
        "batch2-b",
    ]
    assert await since(datetime(1970, 1, 1)) == [f"batch{i // 2}-{'ab'[i % 2]}" for i in range(6)]
    assert await since(after + timedelta(hours=1)) == []
    with pytest.raises(InvalidInputError):
        ctx.make(earliest_time="2024-01-01")  # type: ignore[arg-type]


@case
async def concurrent_writers_keep_batches_whole_and_ordered(ctx: Ctx) -> None:
    writers, appends = 10, 20
    shared = ctx.make("busy")  # half the writers share one object (and its last-seq hint)

    async def writer(w: int) -> None:
        h = shared if w < writers // 2 else ctx.make("busy")
        for j in range(appends):
            await h.add(
                [HumanMessage(f"{w}:{j}:0"), AIMessage(f"{w}:{j}:1"), HumanMessage(f"{w}:{j}:2")]
            )
            if j % 5 == 4:
                await h.get()  # refresh the hint; other writers make it stale at once

    await asyncio.gather(*(writer(w) for w in range(writers)))
    messages = await ctx.make("busy").get()
    total = writers * appends * 3
    assert len(messages) == total
    assert ctx.seqs("busy") == list(range(1, total + 1))  # dense and unique
    contents = [str(m.content) for m in messages]
    assert len(set(contents)) == total
    position = {c: i for i, c in enumerate(contents)}
    for w in range(writers):
        starts = []
        for j in range(appends):
            start = position[f"{w}:{j}:0"]
            assert position[f"{w}:{j}:1"] == start + 1  # each batch is contiguous, in order
            assert position[f"{w}:{j}:2"] == start + 2
            starts.append(start)
        assert starts == sorted(starts)  # and a writer's batches keep their order


@case
async def a_stale_object_appends_after_the_others(ctx: Ctx) -> None:
    a, b = ctx.make(), ctx.make()
    assert await a.get() == []  # a now believes the session is empty
    await b.add([HumanMessage("b1"), AIMessage("b2")])
    await a.add([HumanMessage("a1")])  # its hint is stale: it must not overwrite or reorder
    expected = [HumanMessage("b1"), AIMessage("b2"), HumanMessage("a1")]
    assert await a.get() == expected
    assert await b.get() == expected
    await b.add([AIMessage("b3")])
    assert await a.get() == [*expected, AIMessage("b3")]
    assert ctx.seqs("session-1") == [1, 2, 3, 4]


@case
async def missing_table_without_create_table(ctx: Ctx) -> None:
    h = ctx.make(create_table=False)
    with pytest.raises(SchemaError) as info:
        await h.get()
    assert "create_tables" in str(info.value)
    assert ctx.table in str(info.value)
    assert info.value.table == ctx.table
    with pytest.raises(SchemaError):
        await h.add([HumanMessage("x")])
    assert not ctx.backend.table_exists(ctx.table)
    await h.create_tables()
    assert ctx.backend.table_exists(ctx.table)
    await h.create_tables()  # idempotent
    assert await h.get() == []
    await h.add([HumanMessage("x")])
    assert await ctx.make(create_table=False).get() == [HumanMessage("x")]


@case
async def table_setup_runs_once_per_process(ctx: Ctx) -> None:
    statements: list[str] = []
    real_execute = engine_mod.Connection.execute

    async def spy(self: engine_mod.Connection, sql: str, params: Any) -> int:
        statements.append(sql)
        return await real_execute(self, sql, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine_mod.Connection, "execute", spy)
        first = ctx.make("one")
        assert not ctx.backend.table_exists(ctx.table)  # construction did nothing
        await first.add([HumanMessage("1")])
        await first.get()
        await ctx.make("two").add([HumanMessage("2")])
        await ctx.make("three").get()
        await ctx.make("one").clear()
    creates = [s for s in statements if s.lstrip().upper().startswith("CREATE TABLE")]
    ddl_for_table = [s for s in creates if ctx.table in s]
    assert len(ddl_for_table) == 1, statements
    assert not [s for s in statements if s.lstrip().upper().startswith(("ALTER", "DROP"))]


@case
async def invalid_session_ids_are_refused_before_io(ctx: Ctx) -> None:
    for bad in ["", "x" * 256, "trailing ", "tab\t ", "lone \ud800 surrogate", None, 42, b"bytes"]:
        with pytest.raises(InvalidInputError):
            ctx.make(bad)  # type: ignore[arg-type]
    assert await ctx.make("x" * 255).get() == []  # 255 characters is the limit, inclusive
    await ctx.make("😀" * 255).add([HumanMessage("4-byte id")])
    assert await ctx.make("😀" * 255).get() == [HumanMessage("4-byte id")]
    for bad_table in ["", "1abc", "a-b", "a b", "t;drop", "x" * 65, "ta`ble", 'ta"ble', None]:
        with pytest.raises(InvalidInputError):
            ctx.make(table_name=bad_table)
    assert ctx.make(table_name="x" * 64)  # 64 characters is the limit, inclusive
    assert ctx.count() == 1


@case
async def errors_are_typed_and_name_operation_and_table(ctx: Ctx) -> None:
    # Only a history without create_table fails on a dropped table; others set it up again.
    h = ctx.make(create_table=False)
    await ctx.make().add([HumanMessage("x")])
    ctx.backend.execute(f"DROP TABLE {ctx.backend.q(ctx.table)}")  # behind the library's back
    with pytest.raises(SchemaError) as info:
        await h.get()
    error = info.value
    assert isinstance(error, TiDBMemoryError)
    assert error.operation == "aget_messages"
    assert "aget_messages" in str(error) and ctx.table in str(error)
    assert error.__cause__ is not None
    with pytest.raises(SchemaError) as info:
        await h.add([HumanMessage("y")])
    assert info.value.operation == "aadd_messages"
    assert info.value.__cause__ is not None
    with pytest.raises(SchemaError) as info:
        await h.clear()
    assert info.value.operation == "aclear"


# --- the async runs ------------------------------------------------------------------------


@pytest.mark.parametrize("case_fn", CASES, ids=[c.__name__ for c in CASES])
async def test_async_api(case_fn: Case, backend: Target, table: str) -> None:
    await run_case(case_fn, backend, table, AsyncApi)
