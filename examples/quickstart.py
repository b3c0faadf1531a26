"""Quickstart: persist a LangChain conversation in TiDB, MySQL, MariaDB or SQLite.

This is the flow of LangChain's TiDB notebook, with tidb-memory in place of
langchain-community's class:

1. write some history for a session;
2. chat through ``RunnableWithMessageHistory``, once with ``invoke`` and once with ``ainvoke``;
3. read the session back with a new history object.

Run it::

    python examples/quickstart.py                      # a SQLite file in the working directory
    TIDB_DATABASE_URL='mysql+aiomysql://root@127.0.0.1:3306/test' python examples/quickstart.py

The model is langchain-core's fake chat model with canned replies, unless ``OPENAI_API_KEY`` is
set and ``langchain-openai`` is installed (``pip install 'tidb-memory[openai]'``).
"""

from __future__ import annotations

import asyncio
import os
import warnings

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

import tidb_memory
from tidb_memory import TiDBChatMessageHistory

# $TIDB_DATABASE_URL if set, else sqlite+aiosqlite:///tidb_memory.sqlite3
DATABASE_URL = tidb_memory.default_url()
SESSION_ID = "code_gen"


def get_session_history(session_id: str) -> BaseChatMessageHistory:
    # Called on every turn. Construction does no I/O, and histories built from the same URL
    # share one connection pool.
    return TiDBChatMessageHistory(session_id=session_id, connection_string=DATABASE_URL)


def make_model() -> BaseChatModel:
    if os.environ.get("OPENAI_API_KEY"):
        try:
            from langchain_openai import ChatOpenAI  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            print("OPENAI_API_KEY is set; pip install 'tidb-memory[openai]' to use it")
        else:
            model: BaseChatModel = ChatOpenAI(model="gpt-4o-mini")
            return model
    return GenericFakeChatModel(
        messages=iter(
            [
                "If it ships on Feb 1st, that is 31 days from today.",
                "31 days is about four and a half weeks.",
            ]
        )
    )


def main() -> None:
    # 1. Some history to start from (cleared first, so every run prints the same).
    history = get_session_history(SESSION_ID)
    print(repr(history))  # the URL is shown with its password masked
    history.clear()
    history.add_user_message("How's our feature going?")
    history.add_ai_message(
        "It's going well. We are working on testing now. It will be released in Feb."
    )
    print(f"Stored {len(history.messages)} messages in session {SESSION_ID!r}")

    # 2. A chain that reads the session before each turn and appends the turn after it.
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You're an assistant who's good at coding. You're helping a startup build."),
            MessagesPlaceholder(variable_name="history"),
            ("human", "{question}"),
        ]
    )
    with warnings.catch_warnings():
        # langchain-core >= 1.3.3 marks RunnableWithMessageHistory deprecated in favour of
        # LangGraph persistence; it keeps working until langchain-core 2.0.
        warnings.filterwarnings("ignore", message="RunnableWithMessageHistory is deprecated")
        chain_with_history = RunnableWithMessageHistory(
            prompt | make_model(),
            get_session_history,
            input_messages_key="question",
            history_messages_key="history",
        )
    config: RunnableConfig = {"configurable": {"session_id": SESSION_ID}}

    question = "Today is Jan 1st. How many days until our feature is released?"
    reply = chain_with_history.invoke({"question": question}, config=config)
    print(f"\nyou (invoke):  {question}\nai:            {reply.content}")

    # The same chain and history class from async code, on a fresh event loop.
    question = "And how many weeks is that?"
    reply = asyncio.run(chain_with_history.ainvoke({"question": question}, config=config))
    print(f"\nyou (ainvoke): {question}\nai:            {reply.content}")

    # 3. A new object reads everything back from the database.
    reloaded = get_session_history(SESSION_ID).messages
    print(f"\nReloaded {len(reloaded)} messages:")
    for message in reloaded:
        print(f"  {message.type:>5}: {message.content}")

    # Close the pools (this also runs at interpreter exit).
    tidb_memory.close_all()


if __name__ == "__main__":
    main()
