"""``tidb-memory demo``: a chat through ``RunnableWithMessageHistory``, reloaded and printed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
)

from tidb_memory.chat.history import AsyncTiDBChatMessageHistory

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.prompt_values import PromptValue

from tidb_memory._url import display_url
from tidb_memory.cli._output import PROG, Output

DEMO_SYSTEM_PROMPT = "You're an assistant who's good at coding. You're helping a startup build."


DEMO_SEED: tuple[tuple[str, str], ...] = (
    ("human", "How's our feature going?"),
    ("ai", "It's going well. We are working on testing now. It will be released in Feb."),
)


#: (how the turn is run, the question, the fake model's canned reply)
DEMO_TURNS: tuple[tuple[str, str, str], ...] = (
    (
        "invoke",
        "Today is Jan 1st. How many days until our feature is released?",
        "If it ships on Feb 1st, that is 31 days from today.",
    ),
    (
        "ainvoke",
        "And how many weeks is that?",
        "31 days is about four and a half weeks.",
    ),
    (
        "invoke",
        "Great. Please sum up what we discussed.",
        "The feature is in testing and ships in February: 31 days, about four and a half "
        "weeks, from Jan 1st.",
    ),
)


def _demo_model() -> tuple[BaseChatModel, str]:
    """A real model if ``OPENAI_API_KEY`` is set and langchain-openai is installed, else a fake."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    if os.environ.get("OPENAI_API_KEY"):
        try:
            from langchain_openai import ChatOpenAI  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            print(
                f"{PROG}: note: OPENAI_API_KEY is set but langchain-openai is not installed "
                "(pip install 'tidb-memory[openai]'); using the fake model",
                file=sys.stderr,
            )
        else:
            name = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
            model: BaseChatModel = ChatOpenAI(model=name)
            return model, f"ChatOpenAI ({name})"
    fake = GenericFakeChatModel(messages=iter([reply for _, _, reply in DEMO_TURNS]))
    return fake, "GenericFakeChatModel (canned replies)"


def _text(message: BaseMessage) -> str:
    return str(message.text)


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    """Seed a session, chat through RunnableWithMessageHistory, reload it with a new object."""
    # Imported here: they are the slow part of langchain-core, and only the demo needs them.
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables import RunnableConfig, RunnableLambda
    from langchain_core.runnables.history import RunnableWithMessageHistory

    url: str = args.url
    table: str = args.table
    session_id: str = args.session
    # Construction validates the URL, table and session id, and does no I/O.
    history = AsyncTiDBChatMessageHistory(session_id, url, table_name=table)
    model, model_name = _demo_model()
    out.document.update(
        {"url": display_url(url), "table": table, "session_id": session_id, "model": model_name}
    )
    out.line(f"{PROG} demo")
    out.line(f"  database: {display_url(url)}")
    out.line(f"  table:    {table}")
    out.line(f"  session:  {session_id}")
    out.line(f"  model:    {model_name}")
    out.line()

    # The first call creates the table if needed. Start the session afresh so reruns match.
    history.clear()
    seed: list[BaseMessage] = [
        HumanMessage(text) if role == "human" else AIMessage(text) for role, text in DEMO_SEED
    ]
    history.add_messages(seed)
    out.line(f"Seeded session {session_id!r} with {len(seed)} messages (one atomic append).")

    context_sizes: list[int] = []

    def record_context(value: PromptValue) -> PromptValue:
        context_sizes.append(len(value.to_messages()))
        return value

    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", DEMO_SYSTEM_PROMPT),
            MessagesPlaceholder(variable_name="history"),
            ("human", "{question}"),
        ]
    )
    chain = prompt | RunnableLambda(record_context) | model
    # The factory hands out the one history object: it serves invoke (sync, through the
    # background loop) and ainvoke (native async, on asyncio.run's loop) alike.
    with warnings.catch_warnings():
        # langchain-core >= 1.3.3 deprecates RunnableWithMessageHistory in favour of LangGraph;
        # the seed notebook's flow is built on it, and it works until langchain-core 2.0.
        warnings.filterwarnings("ignore", message="RunnableWithMessageHistory is deprecated")
        with_history = RunnableWithMessageHistory(
            chain,
            lambda _session_id: history,
            input_messages_key="question",
            history_messages_key="history",
        )
    config: RunnableConfig = {"configurable": {"session_id": session_id}}
    turns: list[dict[str, Any]] = []
    for call, question, _ in DEMO_TURNS:
        if call == "ainvoke":
            reply = asyncio.run(with_history.ainvoke({"question": question}, config=config))
        else:
            reply = with_history.invoke({"question": question}, config=config)
        answer = _text(reply) if isinstance(reply, BaseMessage) else str(reply)
        seen = context_sizes[-1]
        turns.append(
            {"call": call, "question": question, "reply": answer, "context_messages": seen}
        )
        out.line()
        out.line(f"[{call}] you: {question}")
        out.line(f"[{call}] ai:  {answer}")
        out.line(
            f"  (the model saw {seen} messages: system prompt + {seen - 2} from history + you)"
        )
    out.document["turns"] = turns

    # A new object, as another process would build it: everything comes from the database.
    reloaded = AsyncTiDBChatMessageHistory(session_id, url, table_name=table).messages
    out.document["history"] = [{"type": m.type, "content": _text(m)} for m in reloaded]
    out.line()
    out.line(f"Reloaded with a new history object: {len(reloaded)} messages")
    for number, message in enumerate(reloaded, 1):
        out.line(f"  {number:2}. {message.type:>5}: {_text(message)}")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session", default="demo", help="the session id to use (default: %(default)s)"
    )
