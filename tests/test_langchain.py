"""LangChain integration: RunnableWithMessageHistory over invoke and ainvoke with one factory,
and TiDBChatMessageHistory as a drop-in for langchain-community's class."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Target
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from tidb_memory import AsyncTiDBChatMessageHistory, TiDBChatMessageHistory


class Chat:
    """A prompt with history, a recorder of what the model saw, and a fake model."""

    def __init__(self, backend: Target, table: str, answers: list[str]) -> None:
        self.seen: list[list[BaseMessage]] = []
        self.factory_calls: list[str] = []
        self.histories: list[AsyncTiDBChatMessageHistory] = []
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "You are terse."),
                MessagesPlaceholder("history"),
                ("human", "{input}"),
            ]
        )
        model = GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))

        def record(value: Any) -> Any:
            self.seen.append(list(value.to_messages()))
            return value

        def factory(session_id: str) -> AsyncTiDBChatMessageHistory:
            self.factory_calls.append(session_id)
            history = AsyncTiDBChatMessageHistory(session_id, backend.url, table_name=table)
            self.histories.append(history)
            return history

        self.factory = factory
        self.chain = RunnableWithMessageHistory(
            prompt | RunnableLambda(record) | model,
            factory,
            input_messages_key="input",
            history_messages_key="history",
        )

    @staticmethod
    def config(session_id: str) -> Any:
        return {"configurable": {"session_id": session_id}}


def expect_turn(chat: Chat, session: str, before: list[BaseMessage], text: str, out: Any) -> list:
    assert isinstance(out, AIMessage)
    after = chat.factory(session).messages
    assert after == [*before, HumanMessage(text), out]  # exactly this turn's two messages
    # the model saw the system prompt, the history so far and the new question
    assert chat.seen[-1] == [SystemMessage("You are terse."), *before, HumanMessage(text)]
    return after


def test_invoke_ainvoke_invoke_on_one_factory(backend: Target, table: str) -> None:
    chat = Chat(backend, table, ["one", "two", "three"])
    config = chat.config("lc")
    history: list[BaseMessage] = []
    out = chat.chain.invoke({"input": "first"}, config)
    assert out.content == "one"
    history = expect_turn(chat, "lc", history, "first", out)
    out = asyncio.run(chat.chain.ainvoke({"input": "second"}, config))
    assert out.content == "two"
    history = expect_turn(chat, "lc", history, "second", out)
    out = chat.chain.invoke({"input": "third"}, config)
    assert out.content == "three"
    history = expect_turn(chat, "lc", history, "third", out)
    assert len(history) == 6
    assert backend.count(table, "lc") == 6
    assert chat.factory_calls.count("lc") >= 3  # a new history object every turn


async def test_ainvoke_and_invoke_from_a_running_app(backend: Target, table: str) -> None:
    """An async app: ainvoke on its loop, invoke in a worker thread (a sync endpoint)."""
    chat = Chat(backend, table, ["one", "two", "three", "four", "five"])
    config = chat.config("app")
    history: list[BaseMessage] = []
    for i, text in enumerate(["a", "b", "c", "d"]):
        if i % 2 == 0:
            out = await chat.chain.ainvoke({"input": text}, config)
        else:
            out = await asyncio.to_thread(chat.chain.invoke, {"input": text}, config)
        history = await asyncio.to_thread(expect_turn, chat, "app", history, text, out)
    other = await chat.chain.ainvoke({"input": "elsewhere"}, chat.config("other"))
    assert await chat.factory("other").aget_messages() == [HumanMessage("elsewhere"), other]
    assert len(await chat.factory("app").aget_messages()) == 8


def test_concurrent_sessions_through_the_chain(backend: Target, table: str) -> None:
    chat = Chat(backend, table, [f"answer {i}" for i in range(20)])

    async def session(n: int) -> None:
        for turn in range(2):
            await chat.chain.ainvoke({"input": f"s{n} t{turn}"}, chat.config(f"s{n}"))

    async def main() -> None:
        await asyncio.gather(*(session(n) for n in range(5)))

    asyncio.run(main())
    for n in range(5):
        messages = chat.factory(f"s{n}").messages
        assert [m.content for m in messages[::2]] == [f"s{n} t0", f"s{n} t1"]
        assert all(isinstance(m, AIMessage) for m in messages[1::2])


# --- the drop-in -----------------------------------------------------------------------------

COMMUNITY_SIGNATURE = ["session_id", "connection_string", "table_name", "earliest_time"]


def test_drop_in_signature() -> None:
    params = list(inspect.signature(TiDBChatMessageHistory.__init__).parameters.values())[1:]
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == COMMUNITY_SIGNATURE
    assert positional[2].default == "langchain_message_store"
    assert positional[3].default is None
    assert issubclass(TiDBChatMessageHistory, BaseChatMessageHistory)
    assert issubclass(TiDBChatMessageHistory, AsyncTiDBChatMessageHistory)
    if importlib.util.find_spec("langchain_community") is not None:  # the bench extra
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.chat_message_histories import (
                TiDBChatMessageHistory as Community,
            )
        theirs = list(inspect.signature(Community.__init__).parameters.values())[1:]
        assert [p.name for p in theirs] == COMMUNITY_SIGNATURE
        assert [p.default for p in theirs] == [p.default for p in positional]


def test_drop_in_behaviour(backend: Target, table: str) -> None:
    history = TiDBChatMessageHistory("code_gen", backend.url, table, None)
    assert history.session_id == "code_gen"
    assert history.table_name == table
    history.reload_cache()  # the original loaded a cache here; ours reads the session once
    assert history.messages == []
    history.add_message(SystemMessage("be brief"))
    history.add_user_message("hi")
    history.add_ai_message("hello")
    history.add_messages([HumanMessage("bye"), AIMessage("ciao")])
    expected = [
        SystemMessage("be brief"),
        HumanMessage("hi"),
        AIMessage("hello"),
        HumanMessage("bye"),
        AIMessage("ciao"),
    ]
    assert history.messages == expected
    history.reload_cache()
    assert history.messages == expected
    assert "Human: hi" in str(history)  # LangChain's buffer string, read from the database
    same = TiDBChatMessageHistory("code_gen", backend.url, table_name=table)
    assert same.messages == expected
    history.clear()
    assert history.messages == []
    assert same.messages == []


def test_drop_in_earliest_time(backend: Target, table: str) -> None:
    history = TiDBChatMessageHistory("t", backend.url, table)
    history.add_user_message("old")
    later = TiDBChatMessageHistory("t", backend.url, table, datetime.now(UTC) + timedelta(hours=1))
    assert later.messages == []
    earlier = TiDBChatMessageHistory("t", backend.url, table, datetime(2000, 1, 1))
    assert earlier.messages == [HumanMessage("old")]
