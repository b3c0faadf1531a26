"""AsyncTiDBStore under real graphs, with the saver on the same URL.

A ``StateGraph`` compiled with ``store=`` and ``checkpointer=``, and ``create_agent`` with a fake
tool-calling model whose tools call the **sync** ``store.put``/``store.search`` (under
``ainvoke`` they run in worker threads; under ``invoke`` too), each under invoke and ainvoke.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from conftest import Target
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.config import get_store
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.store.base import BaseStore
from test_checkpoint_graph import ToolCallingFakeModel

import tidb_memory
from tests.graph.embeddings import WordEmbeddings
from tests.graph.stores import register
from tidb_memory.langgraph.store import AsyncTiDBStore


def parts(backend: Target, **store_kwargs: Any) -> tuple[Any, AsyncTiDBStore]:
    """A saver and a store on one URL, their tables dropped at teardown."""
    cp = backend.new_table("lgcp")
    for suffix in ("s", "_blobs", "_writes", "_migrations"):
        backend.tables.append(cp + suffix)
    prefix = backend.new_table("lgst")
    register(backend, prefix)
    saver = tidb_memory.AsyncTiDBSaver(backend.url, table_prefix=cp)
    store = AsyncTiDBStore(backend.url, table_prefix=prefix, **store_kwargs)
    return saver, store


def cfg(thread: str, user: str) -> Any:
    return {"configurable": {"thread_id": thread, "user_id": user}}


# --- a StateGraph with store= ----------------------------------------------------------------


def memory_graph(saver: Any, store: AsyncTiDBStore) -> Any:
    def remember(
        state: MessagesState, config: RunnableConfig, *, store: BaseStore
    ) -> dict[str, Any]:
        user = config["configurable"]["user_id"]
        text = str(state["messages"][-1].content)
        count = len(store.search(("memories", user), limit=100))
        store.put(("memories", user), f"m{count}", {"text": text})
        return {}

    async def arecall(
        state: MessagesState, config: RunnableConfig, *, store: BaseStore
    ) -> dict[str, Any]:
        user = config["configurable"]["user_id"]
        found = await store.asearch(("memories", user), limit=100)
        texts = sorted(i.value["text"] for i in found)
        return {"messages": [AIMessage(f"I know: {', '.join(texts)}")]}

    def recall(state: MessagesState, config: RunnableConfig, *, store: BaseStore) -> dict[str, Any]:
        user = config["configurable"]["user_id"]
        texts = sorted(i.value["text"] for i in store.search(("memories", user), limit=100))
        return {"messages": [AIMessage(f"I know: {', '.join(texts)}")]}

    def build(recall_node: Any) -> Any:
        graph = StateGraph(MessagesState)
        graph.add_node("remember", remember)
        graph.add_node("recall", recall_node)
        graph.add_edge(START, "remember")
        graph.add_edge("remember", "recall")
        graph.add_edge("recall", END)
        return graph.compile(checkpointer=saver, store=store)

    return build(arecall), build(recall)


async def test_state_graph_with_store_under_ainvoke(backend: Target) -> None:
    saver, store = parts(backend)
    await saver.asetup()
    await store.asetup()
    async_graph, _ = memory_graph(saver, store)
    out = await async_graph.ainvoke({"messages": [HumanMessage("likes tea")]}, cfg("t1", "u1"))
    assert out["messages"][-1].content == "I know: likes tea"
    # Another thread of the same user sees the memory; another user does not.
    out = await async_graph.ainvoke({"messages": [HumanMessage("lives in Lyon")]}, cfg("t2", "u1"))
    assert out["messages"][-1].content == "I know: likes tea, lives in Lyon"
    out = await async_graph.ainvoke({"messages": [HumanMessage("hi")]}, cfg("t3", "u2"))
    assert out["messages"][-1].content == "I know: hi"
    state = await async_graph.aget_state(cfg("t2", "u1"))
    assert [m.type for m in state.values["messages"]] == ["human", "ai"]


def test_state_graph_with_store_under_invoke(backend: Target) -> None:
    saver, store = parts(backend)
    saver.setup()
    store.setup()
    _, sync_graph = memory_graph(saver, store)
    out = sync_graph.invoke({"messages": [HumanMessage("likes tea")]}, cfg("t1", "u1"))
    assert out["messages"][-1].content == "I know: likes tea"
    out = sync_graph.invoke({"messages": [HumanMessage("plays go")]}, cfg("t1", "u1"))
    assert out["messages"][-1].content == "I know: likes tea, plays go"
    assert [m.type for m in sync_graph.get_state(cfg("t1", "u1")).values["messages"]] == [
        "human", "ai", "human", "ai",
    ]  # fmt: skip


# --- create_agent with sync store tools -------------------------------------------------------


@tool
def save_memory(text: str) -> str:
    """Remember a fact about the user."""
    store = get_store()
    key = f"fact{len(store.search(('facts',), limit=1000))}"
    store.put(("facts",), key, {"text": text})
    return f"saved {key}"


@tool
def search_memory(query: str) -> str:
    """Search what is known about the user."""
    found = get_store().search(("facts",), query=query, limit=1)
    return "; ".join(f"{i.value['text']} ({i.score:.2f})" for i in found) or "nothing"


def fake_model() -> ToolCallingFakeModel:
    """Each turn: save a fact, search for it, then answer."""

    def replies() -> Iterator[AIMessage]:
        for n in itertools.count():
            save = {"name": "save_memory", "args": {"text": f"fact {n} green tea"}, "id": f"s{n}"}
            yield AIMessage(content="", tool_calls=[save])
            search = {"name": "search_memory", "args": {"query": "tea"}, "id": f"q{n}"}
            yield AIMessage(content="", tool_calls=[search])
            yield AIMessage(content=f"done {n}")

    return ToolCallingFakeModel(messages=replies())


def check_turn(out: Any, n: int) -> None:
    messages = out["messages"]
    tool_texts = [str(m.content) for m in messages if m.type == "tool"]
    assert tool_texts[-2] == f"saved fact{n}"
    assert "green tea" in tool_texts[-1] and "(" in tool_texts[-1]
    assert messages[-1].content == f"done {n}"


async def test_create_agent_with_sync_store_tools_under_ainvoke(backend: Target) -> None:
    index = {"dims": 16, "embed": WordEmbeddings(16), "fields": ["text"]}
    saver, store = parts(backend, index=index)
    await saver.asetup()
    await store.asetup()
    agent = create_agent(
        fake_model(), [save_memory, search_memory], checkpointer=saver, store=store
    )
    for n in range(2):
        out = await agent.ainvoke({"messages": [HumanMessage(f"turn {n}")]}, cfg("a1", "u"))
        check_turn(out, n)
    assert sorted(i.key for i in await store.asearch(("facts",))) == ["fact0", "fact1"]


def test_create_agent_with_sync_store_tools_under_invoke(backend: Target) -> None:
    index = {"dims": 16, "embed": WordEmbeddings(16), "fields": ["text"]}
    saver, store = parts(backend, index=index)
    saver.setup()
    store.setup()
    agent = create_agent(
        fake_model(), [save_memory, search_memory], checkpointer=saver, store=store
    )
    for n in range(2):
        check_turn(agent.invoke({"messages": [HumanMessage(f"turn {n}")]}, cfg("s1", "u")), n)
    assert sorted(i.key for i in store.search(("facts",))) == ["fact0", "fact1"]
    state = agent.get_state(cfg("s1", "u"))
    assert len(state.values["messages"]) == 2 * 6
