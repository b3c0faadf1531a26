"""AsyncTiDBSaver under real graphs: ``create_agent`` with a fake tool-calling model.

Every durability mode, ``invoke`` and ``ainvoke``, reading back with ``get_state``/``aget_state``,
a human-in-the-loop ``interrupt`` resumed by a *new* saver object (as after a restart), forks
from a past checkpoint, ``delete_thread``, and an ``EncryptedSerializer`` end to end. MariaDB and
SQLite, uuid-suffixed tables dropped afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from tidb_memory.langgraph import AsyncTiDBSaver

MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL") or "mysql+aiomysql://root@127.0.0.1:3306/test"
DURABILITY = ["sync", "async", "exit"]


@pytest.fixture(params=["mysql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "mysql":
        return MYSQL_URL
    return f"sqlite+aiosqlite:///{tmp_path / 'graph.db'}"


async def drop_tables(saver: AsyncTiDBSaver) -> None:
    t = saver.tables
    async with saver.db.connection() as conn:
        for name in (t.checkpoints, t.blobs, t.writes, t.migrations, t.threads):
            await conn.execute(f"DROP TABLE IF EXISTS {name}", ())


@asynccontextmanager
async def saver_for(url: str, **kwargs: Any) -> AsyncIterator[AsyncTiDBSaver]:
    kwargs.setdefault("table_prefix", "cpg_" + uuid.uuid4().hex[:10])
    saver = AsyncTiDBSaver(url, **kwargs)
    await saver.asetup()
    try:
        yield saver
    finally:
        await drop_tables(saver)


# --- the agent ----------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"It is always sunny in {city}."


class ToolCallingFakeModel(GenericFakeChatModel):
    """GenericFakeChatModel that accepts tools, as create_agent requires."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolCallingFakeModel:
        return self


def fake_model() -> ToolCallingFakeModel:
    """Each turn: a tool call, then an answer that uses the tool's result."""

    def replies() -> Iterator[AIMessage]:
        for n in itertools.count():
            call = {"name": "get_weather", "args": {"city": f"city{n}"}, "id": f"call_{n}"}
            yield AIMessage(content="", tool_calls=[call])
            yield AIMessage(content=f"answer {n}")

    return ToolCallingFakeModel(messages=replies())


def agent(saver: AsyncTiDBSaver) -> Any:
    return create_agent(fake_model(), [get_weather], checkpointer=saver)


def cfg(thread_id: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread_id, **extra}}


def kinds(messages: Sequence[BaseMessage]) -> list[str]:
    return [m.type for m in messages]


TURN = ["human", "ai", "tool", "ai"]


@pytest.mark.parametrize("durability", DURABILITY)
async def test_agent_ainvoke_every_durability(url: str, durability: str) -> None:
    async with saver_for(url) as saver:
        graph, thread = agent(saver), "a-" + uuid.uuid4().hex
        out = await graph.ainvoke(
            {"messages": [HumanMessage("weather?")]}, cfg(thread), durability=durability
        )
        assert out["messages"][-1].content == "answer 0"
        await graph.ainvoke(
            {"messages": [HumanMessage("and now?")]}, cfg(thread), durability=durability
        )
        state = await graph.aget_state(cfg(thread))
        assert kinds(state.values["messages"]) == TURN * 2
        assert isinstance(state.values["messages"][2], ToolMessage)
        assert state.values["messages"][2].content == "It is always sunny in city0."
        assert state.values["messages"][-1].content == "answer 1"
        assert state.next == ()
        # A new saver object (a restarted process) reads the same conversation.
        again = AsyncTiDBSaver(url, table_prefix=saver.tables.checkpoints[:-1])
        fresh = await agent(again).aget_state(cfg(thread))
        assert fresh.values["messages"] == state.values["messages"]
        history = [s async for s in graph.aget_state_history(cfg(thread))]
        if durability == "exit":
            assert len(history) == 2  # one checkpoint per run
        else:
            assert len(history) >= 8
        steps = [s.metadata["step"] for s in history if s.metadata]
        assert steps == sorted(steps, reverse=True)


@pytest.mark.parametrize("durability", DURABILITY)
def test_agent_invoke_every_durability(url: str, durability: str) -> None:
    saver = AsyncTiDBSaver(url, table_prefix="cpg_" + uuid.uuid4().hex[:10])
    saver.setup()
    try:
        graph, thread = agent(saver), "s-" + uuid.uuid4().hex
        for text in ("weather?", "and now?"):
            graph.invoke({"messages": [HumanMessage(text)]}, cfg(thread), durability=durability)
        state = graph.get_state(cfg(thread))
        assert kinds(state.values["messages"]) == TURN * 2
        assert state.values["messages"][-1].content == "answer 1"
        # The same saver also serves the async face, on another loop.
        loop_state = asyncio.run(graph.aget_state(cfg(thread)))
        assert loop_state.values["messages"] == state.values["messages"]
        saver.delete_thread(thread)
        assert graph.get_state(cfg(thread)).values == {}
        assert list(graph.get_state_history(cfg(thread))) == []
    finally:
        saver.db.run_sync(drop_tables, saver)


async def test_many_threads_at_once(url: str) -> None:
    async with saver_for(url) as saver:
        threads = ["m-" + uuid.uuid4().hex for _ in range(12)]

        async def converse(thread: str) -> None:
            graph = agent(saver)
            for text in ("one", "two", "three"):
                await graph.ainvoke({"messages": [HumanMessage(text)]}, cfg(thread))

        await asyncio.gather(*(converse(t) for t in threads))
        for thread in threads:
            state = await agent(saver).aget_state(cfg(thread))
            assert kinds(state.values["messages"]) == TURN * 3


# --- fork ----------------------------------------------------------------------------------


async def test_fork_from_a_past_checkpoint(url: str) -> None:
    async with saver_for(url) as saver:
        graph, thread = agent(saver), "f-" + uuid.uuid4().hex
        await graph.ainvoke({"messages": [HumanMessage("first")]}, cfg(thread))
        await graph.ainvoke({"messages": [HumanMessage("second")]}, cfg(thread))
        original = await graph.aget_state(cfg(thread))
        history = [s async for s in graph.aget_state_history(cfg(thread))]
        # The end of the first turn: four messages, nothing left to run.
        past = next(s for s in history if len(s.values.get("messages", [])) == 4 and s.next == ())
        fork_cfg = past.config
        await graph.ainvoke({"messages": [HumanMessage("instead")]}, fork_cfg)
        forked = await graph.aget_state(cfg(thread))
        messages = forked.values["messages"]
        assert kinds(messages) == TURN * 2
        assert messages[4].content == "instead" and messages[:4] == past.values["messages"]
        # The fork's ancestry runs through the chosen checkpoint ...
        ancestry = []
        config: Any = forked.config
        while config is not None:
            snapshot = await graph.aget_state(config)
            ancestry.append(snapshot.config["configurable"]["checkpoint_id"])
            config = snapshot.parent_config
        assert past.config["configurable"]["checkpoint_id"] in ancestry
        # ... and the original branch is intact: fork versions never collide with it.
        old = await graph.aget_state(original.config)
        assert old.values["messages"] == original.values["messages"]
        assert old.values["messages"][4].content == "second"
        # update_state forks too (source="update").
        await graph.aupdate_state(past.config, {"messages": [AIMessage("edited")]})
        edited = await graph.aget_state(cfg(thread))
        assert edited.values["messages"][-1].content == "edited"
        assert edited.metadata is not None and edited.metadata["source"] == "update"


# --- interrupt and resume ------------------------------------------------------------------


def approval_graph(saver: AsyncTiDBSaver) -> Any:
    def propose(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("I will delete the file.")]}

    def approve(state: MessagesState) -> dict[str, Any]:
        answer = interrupt({"question": "Delete the file?"})
        return {"messages": [AIMessage(f"approved={answer}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("propose", propose)
    builder.add_node("approve", approve)
    builder.add_edge(START, "propose")
    builder.add_edge("propose", "approve")
    builder.add_edge("approve", END)
    return builder.compile(checkpointer=saver)


@pytest.mark.parametrize("durability", DURABILITY)
async def test_interrupt_and_resume_async(url: str, durability: str) -> None:
    async with saver_for(url) as saver:
        thread = "i-" + uuid.uuid4().hex
        graph = approval_graph(saver)
        out = await graph.ainvoke(
            {"messages": [HumanMessage("clean up")]}, cfg(thread), durability=durability
        )
        assert out["__interrupt__"][0].value == {"question": "Delete the file?"}
        paused = await graph.aget_state(cfg(thread))
        assert paused.next == ("approve",)
        assert paused.tasks[0].interrupts[0].value == {"question": "Delete the file?"}
        # Resume from a new saver object, as another process would.
        other = approval_graph(AsyncTiDBSaver(url, table_prefix=saver.tables.checkpoints[:-1]))
        done = await other.ainvoke(Command(resume="yes"), cfg(thread), durability=durability)
        assert done["messages"][-1].content == "approved=yes"
        final = await graph.aget_state(cfg(thread))
        assert final.next == ()
        assert [m.content for m in final.values["messages"]] == [
            "clean up",
            "I will delete the file.",
            "approved=yes",
        ]


def test_interrupt_and_resume_sync(url: str) -> None:
    saver = AsyncTiDBSaver(url, table_prefix="cpg_" + uuid.uuid4().hex[:10])
    saver.setup()
    try:
        thread = "is-" + uuid.uuid4().hex
        graph = approval_graph(saver)
        out = graph.invoke({"messages": [HumanMessage("clean up")]}, cfg(thread))
        assert "__interrupt__" in out
        assert graph.get_state(cfg(thread)).next == ("approve",)
        done = graph.invoke(Command(resume="no"), cfg(thread))
        assert done["messages"][-1].content == "approved=no"
        saver.delete_thread(thread)
        assert graph.get_state(cfg(thread)).values == {}
    finally:
        saver.db.run_sync(drop_tables, saver)


# --- delete and encryption -----------------------------------------------------------------


async def test_delete_thread_forgets_one_conversation(url: str) -> None:
    async with saver_for(url) as saver:
        graph = agent(saver)
        gone, kept = "d-" + uuid.uuid4().hex, "k-" + uuid.uuid4().hex
        for thread in (gone, kept):
            await graph.ainvoke({"messages": [HumanMessage("hi")]}, cfg(thread))
        await saver.adelete_thread(gone)
        assert (await graph.aget_state(cfg(gone))).values == {}
        assert [s async for s in graph.aget_state_history(cfg(gone))] == []
        assert kinds((await graph.aget_state(cfg(kept))).values["messages"]) == TURN
        # The thread starts over cleanly.
        await graph.ainvoke({"messages": [HumanMessage("again")]}, cfg(gone))
        assert kinds((await graph.aget_state(cfg(gone))).values["messages"]) == TURN


async def test_encrypted_agent_end_to_end(url: str) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"A" * 16)
    async with saver_for(url, serde=serde, inline_primitives=False) as saver:
        graph, thread = agent(saver), "e-" + uuid.uuid4().hex
        await graph.ainvoke({"messages": [HumanMessage("TOP-SECRET-QUESTION")]}, cfg(thread))
        state = await graph.aget_state(cfg(thread))
        assert state.values["messages"][0].content == "TOP-SECRET-QUESTION"
        async with saver.db.connection() as conn:
            t = saver.tables
            raw = await conn.fetchall(f"SELECT `checkpoint` FROM {t.checkpoints}", ())
            raw += await conn.fetchall(f"SELECT `blob` FROM {t.blobs}", ())
            raw += await conn.fetchall(f"SELECT `blob` FROM {t.writes}", ())
        dump = b"".join(v if isinstance(v, bytes) else str(v).encode() for r in raw for v in r)
        assert b"TOP-SECRET" not in dump and b"sunny" not in dump
