"""The ``tidb-memory`` command: a thin client of the library.

Usage::

    tidb-memory demo                      # SQLite file in the working directory
    TIDB_DATABASE_URL=mysql+aiomysql://root@127.0.0.1:3306/test tidb-memory demo
    tidb-memory --json demo --session s1 --table my_messages

Options given before the subcommand (``--url``, ``--table``, ``--json``) may also be given after
it. Each subcommand is one ``cmd_<name>(args, out)`` function, registered in :data:`COMMANDS`.

Errors from tidb-memory are reported as one line on stderr (no traceback, no password) with a
non-zero exit status. A URL is only ever shown with its password masked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from sqlalchemy.engine import make_url

from . import __version__
from .engine import close_all
from .errors import TiDBMemoryError
from .history import AsyncTiDBChatMessageHistory, default_url
from .schema import DEFAULT_TABLE_NAME

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.prompt_values import PromptValue

__all__ = ["COMMANDS", "build_parser", "display_url", "main"]

PROG = "tidb-memory"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


# --- output ----------------------------------------------------------------------------------


@dataclass
class Output:
    """Where a command writes: human-readable lines, or one JSON document with ``--json``."""

    json: bool = False
    document: dict[str, Any] = field(default_factory=dict)

    def line(self, text: str = "") -> None:
        """A line for people; suppressed under ``--json``."""
        if not self.json:
            print(text, flush=True)

    def flush(self) -> None:
        """Print the JSON document, if ``--json`` was given."""
        if self.json:
            print(json.dumps(self.document, ensure_ascii=False, indent=2), flush=True)


def display_url(url: str) -> str:
    """``url`` with its password masked; safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- demo ------------------------------------------------------------------------------------

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


# --- the parser ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One subcommand: its handler, help line, and a function adding its own arguments."""

    handler: Callable[[argparse.Namespace, Output], int]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session", default="demo", help="the session id to use (default: %(default)s)"
    )


#: The subcommands, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        cmd_demo,
        "chat through RunnableWithMessageHistory, then reload and print the session",
        _demo_arguments,
    ),
}


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The same options on the main parser (with real defaults) and on every subparser (with
    # SUPPRESS, so that a subparser does not overwrite a value given before the subcommand).
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(None),
        help="database URL (default: $TIDB_DATABASE_URL, else a SQLite file here)",
    )
    parser.add_argument(
        "--table",
        default=default(DEFAULT_TABLE_NAME),
        help=f"message table (default: {DEFAULT_TABLE_NAME})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document instead of text",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Chat memory for LangChain on TiDB, MySQL, MariaDB or SQLite."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        _add_common(sub, top=False)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _report(message: str, url: str | None) -> None:
    text = _one_line(message)
    if url:
        # Messages are password-free already; this only guards against a future regression.
        try:
            password = make_url(url).password
        except Exception:
            password = None
        if password:
            text = text.replace(str(password), "***")
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.url is None:
        args.url = default_url()
    out = Output(json=args.json)
    handler: Callable[[argparse.Namespace, Output], int] = args.handler
    try:
        status = handler(args, out)
        out.flush()
        return status
    except TiDBMemoryError as exc:
        _report(str(exc) or type(exc).__name__, args.url)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _report("interrupted", None)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`tidb-memory demo | head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    finally:
        close_all()


if __name__ == "__main__":
    raise SystemExit(main())
