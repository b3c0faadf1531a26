"""The ``tidb-memory`` command: a thin client of the library.

Usage::

    tidb-memory demo                      # SQLite file in the working directory
    TIDB_DATABASE_URL=mysql+aiomysql://root@127.0.0.1:3306/test tidb-memory demo
    tidb-memory --json demo --session s1 --table my_messages
    tidb-memory init [--ttl 30d]          # create the tables, or upgrade them
    tidb-memory doctor                    # server, TiDB or not, TLS, schema version, latency
    tidb-memory sessions [--user U] [--limit N] [--cursor C]
    tidb-memory show SESSION [--limit N] [--before SEQ]
    tidb-memory export [--session S] [-o FILE]     # JSON Lines
    tidb-memory import FILE                        # idempotent: first wins per (session, seq)
    tidb-memory clear SESSION [--with-info]
    tidb-memory purge --older-than 30d
    tidb-memory migrate [--no-swap] [--target T] [--backup-table B]

The data commands are thin: each calls MessageStore/SessionStore methods (no SQL here). Long
ones (export, import, purge, migrate) draw a progress bar on stderr when it is a terminal, and
write nothing there when it is not.

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
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    message_to_dict,
    messages_from_dict,
)
from sqlalchemy.engine import make_url

from . import __version__
from ._url import display_url
from .engine import close_all, get_database
from .errors import InvalidInputError, TiDBMemoryError
from .history import AsyncTiDBChatMessageHistory, SessionStore, default_url
from .migrate import DEFAULT_BATCH, amigrate_seed_table
from .schema import DEFAULT_TABLE_NAME, SCHEMA_VERSION
from .store import (
    DEFAULT_PAGE_SIZE,
    PURGE_BATCH,
    MessageRecord,
    MessageStore,
    ServerStatus,
    SessionInfo,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.prompt_values import PromptValue

__all__ = ["COMMANDS", "build_parser", "display_url", "main"]

PROG = "tidb-memory"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
PROGRESS_WIDTH = 30
#: An import statement is sent before its records pass this many bytes.
IMPORT_BATCH_BYTES = 4 * 1024 * 1024


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


# --- shared by the data commands ---------------------------------------------------------------


class Progress:
    """A progress bar on stderr when stderr is a terminal; nothing at all when it is not.

    Example::

        bar = Progress("export")
        bar.update(120, 1000)
        bar.close()
    """

    def __init__(self, label: str, *, unit: str = "rows", enabled: bool | None = None) -> None:
        self.label = label
        self.unit = unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False
        self._pending: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None = None, *, label: str | None = None) -> None:
        """Redraw (at most ten times a second, and always at 100%)."""
        if not self.enabled:
            return
        if label is not None and label != self.label:
            self.close()
            self.label = label
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            self._pending = (done, total)  # drawn by the next update, or by close()
            return
        self._last = now
        self._pending = None
        if total:
            share = min(done / total, 1.0)
            filled = int(share * PROGRESS_WIDTH)
            bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
            text = f"{self.label} [{bar}] {share:4.0%}  {done:,}/{total:,} {self.unit}"
        else:
            text = f"{self.label}  {done:,} {self.unit}"
        sys.stderr.write("\r" + text + "\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """Draw the last state, and end the bar's line."""
        if self._pending is not None:
            done, total = self._pending
            self._last = 0.0
            self.update(done, total)
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False


_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)([wdhms]))+")


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"1d12h"``, ``"90m"``, ``"45s"``, ``"2w"`` as a timedelta.

    Raises:
        InvalidInputError: anything else, or zero.
    """
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise InvalidInputError(
            f"{text!r} is not a duration; use a number and a unit (w, d, h, m, s), e.g. 30d"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([wdhms])", cleaned))
    if seconds <= 0:
        raise InvalidInputError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def _moment(text: str) -> datetime:
    """A duration before now (``30d``), or an ISO 8601 time (naive means UTC)."""
    try:
        return datetime.now(UTC) - parse_duration(text)
    except InvalidInputError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{text!r} is neither a duration (30d, 12h) nor an ISO time (2025-01-31T00:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _clip(text: str, width: int = 60) -> str:
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary(message: BaseMessage) -> str:
    """One line for a message: its text, or its tool calls."""
    text = _text(message)
    calls = getattr(message, "tool_calls", None)
    if calls:
        names = ", ".join(
            f"{c['name']}({json.dumps(c['args'], ensure_ascii=False)})" for c in calls
        )
        text = f"{text} [calls {names}]".strip()
    return text


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: a header, a rule, then the rows, columns padded to fit."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _message_store(args: argparse.Namespace, **options: Any) -> MessageStore:
    return MessageStore(get_database(args.url), args.table, **options)


def _session_store(args: argparse.Namespace) -> SessionStore:
    return SessionStore(args.url, table_name=args.table, create_table=False)


def _info_document(info: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": info.session_id,
        "message_count": info.message_count,
        "first_activity": _iso(info.first_activity),
        "last_activity": _iso(info.last_activity),
        "user_id": info.user_id,
        "title": info.title,
        "metadata": info.metadata,
    }


def export_line(session_id: str, record: MessageRecord) -> dict[str, Any]:
    """One line of ``tidb-memory export``: what ``import`` reads back."""
    return {
        "session_id": session_id,
        "seq": record.seq,
        "created_at": _iso(record.created_at),
        "message": message_to_dict(record.message),
        "metadata": record.metadata,
    }


def import_record(line: dict[str, Any], where: str) -> tuple[str, int, datetime, BaseMessage, Any]:
    """The record of one export line, checked.

    Raises:
        InvalidInputError: the line is not an export record; ``where`` says which.
    """
    try:
        session_id = line["session_id"]
        seq = line["seq"]
        created = datetime.fromisoformat(line["created_at"])
        message = messages_from_dict([line["message"]])[0]
        metadata = line.get("metadata")
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: not a tidb-memory export record ({type(exc).__name__}: {exc})"
        ) from exc
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInputError(f"{where}: metadata must be an object or null")
    if not isinstance(session_id, str) or not isinstance(seq, int):
        raise InvalidInputError(f"{where}: session_id must be a string and seq an integer")
    return (
        session_id,
        seq,
        created if created.tzinfo else created.replace(tzinfo=UTC),
        message,
        metadata,
    )


# --- init, doctor ----------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    """Create the tables, or apply the pending schema migrations in order."""
    ttl = None if args.ttl is None else parse_duration(args.ttl)
    store = _message_store(args, ttl=ttl)

    async def run() -> tuple[ServerStatus, ServerStatus]:
        before = await store.astatus(pings=1)
        await store.acreate_tables()
        return before, await store.astatus(pings=1)

    before, after = asyncio.run(run())
    if before.layout == "missing":
        action = "created"
    elif before.schema_version != after.schema_version:
        action = "upgraded"
    else:
        action = "unchanged"
    out.document.update(
        {
            "url": display_url(args.url),
            "table": args.table,
            "action": action,
            "previous_version": before.schema_version,
            "schema_version": after.schema_version,
        }
    )
    if action == "created":
        out.line(f"Created table {args.table!r} at schema version {after.schema_version}.")
    elif action == "upgraded":
        out.line(
            f"Upgraded table {args.table!r} from schema version {before.schema_version} "
            f"to {after.schema_version}."
        )
    else:
        out.line(f"Table {args.table!r} is up to date (schema version {after.schema_version}).")
    if ttl is not None and action != "created":
        out.line(
            "Note: --ttl takes effect when the table is created; on TiDB, add it to this table "
            f"with ALTER TABLE `{args.table}` TTL = `created_at` + INTERVAL ... ."
        )
    return 0


def cmd_doctor(args: argparse.Namespace, out: Output) -> int:
    """Connect, then report the server, TLS, the table's schema and the round-trip latency."""
    store = _message_store(args)
    status = asyncio.run(store.astatus())
    problems: list[str] = []
    if status.layout == "seed":
        problems.append(
            f"table {args.table!r} has langchain-community's layout: convert it with "
            f"`{PROG} migrate --table {args.table}`"
        )
    elif status.layout == "foreign":
        problems.append(f"table {args.table!r} is not a tidb-memory table; use another --table")
    elif status.layout == "current" and (status.schema_version or 0) > SCHEMA_VERSION:
        problems.append(
            f"table {args.table!r} is at schema version {status.schema_version}, newer than "
            f"this {PROG} ({SCHEMA_VERSION}); upgrade {PROG}"
        )
    elif status.layout == "current" and (status.schema_version or 0) < SCHEMA_VERSION:
        problems.append(
            f"table {args.table!r} needs an upgrade: run `{PROG} init --table {args.table}`"
        )
    kind = "TiDB" if status.tidb else ("SQLite" if status.backend == "sqlite" else "MySQL/MariaDB")
    out.document.update(
        {
            "url": display_url(args.url),
            "backend": status.backend,
            "server_version": status.server_version,
            "tidb": status.tidb,
            "tls_cipher": status.tls_cipher,
            "table": args.table,
            "layout": status.layout,
            "schema_version": status.schema_version,
            "library_schema_version": SCHEMA_VERSION,
            "latency_ms": round(status.latency_ms, 3),
            "problems": problems,
        }
    )
    tls = status.tls_cipher or (
        "n/a (local file)" if status.backend == "sqlite" else "off (plaintext)"
    )
    layout = {
        "current": f"tidb-memory, schema version {status.schema_version or '?'}",
        "missing": "missing (created on first use, or by `tidb-memory init`)",
        "seed": "langchain-community TiDBChatMessageHistory layout",
        "foreign": "not a tidb-memory table",
    }[status.layout]
    out.line(f"database: {display_url(args.url)}")
    out.line(f"server:   {status.server_version} ({kind})")
    out.line(f"TiDB:     {'yes' if status.tidb else 'no'}")
    out.line(f"TLS:      {tls}")
    out.line(f"table:    {args.table}: {layout}")
    out.line(f"latency:  {status.latency_ms:.2f} ms (median round trip of SELECT 1)")
    for problem in problems:
        out.line(f"problem:  {problem}")
    if not problems:
        out.line("ok")
    return EXIT_ERROR if problems else 0


# --- sessions, show --------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace, out: Output) -> int:
    """List sessions, most recently active first, one page at a time."""
    page = _session_store(args).list_sessions(
        user_id=args.user, limit=args.limit, cursor=args.cursor
    )
    out.document.update(
        {
            "table": args.table,
            "sessions": [_info_document(s) for s in page.sessions],
            "next_cursor": page.next_cursor,
        }
    )
    if not page.sessions:
        out.line("No sessions.")
        return 0
    rows = [
        [
            s.session_id,
            str(s.message_count),
            _when(s.last_activity),
            s.user_id or "-",
            _clip(s.title or "-", 40),
        ]
        for s in page.sessions
    ]
    for line in table_lines(["SESSION", "MESSAGES", "LAST ACTIVITY (UTC)", "USER", "TITLE"], rows):
        out.line(line)
    if page.next_cursor:
        out.line()
        out.line(f"More: {PROG} sessions --cursor {page.next_cursor}")
    return 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    """A session's info and its latest messages (or the page before ``--before``)."""
    store = _message_store(args, create_table=False)

    async def run() -> tuple[SessionInfo, list[MessageRecord]]:
        info = await store.asession_info(args.session)
        return info, await store.arecords(args.session, before=args.before, limit=args.limit)

    info, records = asyncio.run(run())
    if info.message_count == 0 and info.title is None and info.user_id is None:
        raise InvalidInputError(f"session {args.session!r} has no messages in {args.table!r}")
    older = records[0].seq if records and records[0].seq > 1 else None
    out.document.update(
        {
            "table": args.table,
            "session": _info_document(info),
            "records": [export_line(args.session, r) for r in records],
            "next_before": older,
        }
    )
    out.line(f"session:  {info.session_id}")
    out.line(f"title:    {info.title or '-'}")
    out.line(f"user:     {info.user_id or '-'}")
    out.line(f"messages: {info.message_count}")
    out.line(f"first:    {_when(info.first_activity)} UTC")
    out.line(f"last:     {_when(info.last_activity)} UTC")
    if info.metadata is not None:
        out.line(f"metadata: {json.dumps(info.metadata, ensure_ascii=False)}")
    out.line()
    rows = [
        [str(r.seq), _when(r.created_at), r.message.type, _clip(_summary(r.message), 70)]
        for r in records
    ]
    for line in table_lines(["SEQ", "CREATED (UTC)", "TYPE", "CONTENT"], rows):
        out.line(line)
    if older is not None:
        out.line()
        out.line(f"Older: {PROG} show {args.session} --before {older}")
    return 0


# --- export, import --------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    """Write records as JSON Lines: one session (``--session``) or every session."""
    store = _message_store(args, create_table=False)
    to_stdout = args.output == "-"
    progress = Progress(
        "export", enabled=sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
    )
    try:
        sink: TextIO = sys.stdout if to_stdout else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise InvalidInputError(f"cannot write {args.output!r}: {exc.strerror}") from None

    async def run() -> tuple[int, int]:
        total = None
        after: tuple[str, int] | None = None
        if args.session is not None:
            total = (await store.asession_info(args.session)).message_count
            after = (args.session, 0)
        rows = 0
        sessions: set[str] = set()
        while True:
            page = await store.ascan(after=after, limit=args.batch)
            if args.session is not None:
                page = [(sid, r) for sid, r in page if sid == args.session]
            if not page:
                return rows, len(sessions)
            for sid, record in page:
                sink.write(json.dumps(export_line(sid, record), ensure_ascii=False) + "\n")
                sessions.add(sid)
            rows += len(page)
            after = (page[-1][0], page[-1][1].seq)
            progress.update(rows, total)

    try:
        rows, sessions = asyncio.run(run())
    finally:
        progress.close()
        if to_stdout:
            sys.stdout.flush()
        else:
            sink.close()
    out.document.update(
        {"table": args.table, "output": args.output, "records": rows, "sessions": sessions}
    )
    if not to_stdout:
        out.line(
            f"Exported {rows} records of {sessions} sessions from {args.table!r} to {args.output}."
        )
    return 0


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    """Read JSON Lines written by ``export``; records already there are left as they are."""
    store = _message_store(args)
    from_stdin = args.file == "-"
    try:
        source: TextIO = sys.stdin if from_stdin else open(args.file, encoding="utf-8")  # noqa: SIM115
        size = None if from_stdin else os.fstat(source.fileno()).st_size
    except OSError as exc:
        raise InvalidInputError(f"cannot read {args.file!r}: {exc.strerror}") from None
    progress = Progress("import", unit="bytes")
    name = "<stdin>" if from_stdin else args.file

    async def run() -> tuple[int, int]:
        read = inserted = 0
        batch: list[tuple[str, int, datetime, BaseMessage, Any]] = []
        batch_bytes = 0
        done_bytes = 0
        for number, text in enumerate(source, 1):
            done_bytes += len(text.encode())
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError as exc:
                raise InvalidInputError(f"{name}:{number}: not JSON ({exc})") from None
            if not isinstance(line, dict):
                raise InvalidInputError(f"{name}:{number}: not a JSON object")
            batch.append(import_record(line, f"{name}:{number}"))
            batch_bytes += len(text)
            read += 1
            if len(batch) >= args.batch or batch_bytes >= IMPORT_BATCH_BYTES:
                inserted += await store.arestore(batch)
                batch, batch_bytes = [], 0
                progress.update(done_bytes, size)
        if batch:
            inserted += await store.arestore(batch)
        progress.update(done_bytes, size)
        return read, inserted

    try:
        read, inserted = asyncio.run(run())
    finally:
        progress.close()
        if not from_stdin:
            source.close()
    out.document.update(
        {
            "table": args.table,
            "input": args.file,
            "records": read,
            "inserted": inserted,
            "skipped": read - inserted,
        }
    )
    out.line(
        f"Imported {inserted} of {read} records into {args.table!r} "
        f"({read - inserted} already present, left as they were)."
    )
    return 0


# --- clear, purge, migrate -------------------------------------------------------------------


def cmd_clear(args: argparse.Namespace, out: Output) -> int:
    """Delete a session's messages (and, with ``--with-info``, its title and metadata)."""
    store = _message_store(args, create_table=False)
    if args.with_info:
        deleted = asyncio.run(store.adelete_session(args.session))
    else:
        deleted = asyncio.run(store.aclear(args.session))
    out.document.update({"table": args.table, "session_id": args.session, "deleted": deleted})
    out.line(f"Deleted {deleted} messages of session {args.session!r} from {args.table!r}.")
    return 0


def cmd_purge(args: argparse.Namespace, out: Output) -> int:
    """Delete messages stored before a time, in bounded batches (TiDB's TTL does it itself)."""
    bound = _moment(args.older_than)
    store = _message_store(args, create_table=False)
    progress = Progress("purge", unit="rows deleted")
    try:
        deleted = asyncio.run(
            store.apurge_expired(older_than=bound, batch=args.batch, progress=progress.update)
        )
    finally:
        progress.close()
    out.document.update({"table": args.table, "older_than": _iso(bound), "deleted": deleted})
    out.line(f"Deleted {deleted} messages stored before {_when(bound)} UTC from {args.table!r}.")
    return 0


def cmd_migrate(args: argparse.Namespace, out: Output) -> int:
    """Convert a langchain-community TiDBChatMessageHistory table (resumable, verified)."""
    progress = Progress("copy")

    def report(phase: str, done: int, total: int) -> None:
        progress.update(done, total, label=phase)

    try:
        result = asyncio.run(
            amigrate_seed_table(
                get_database(args.url),
                args.table,
                target=args.target,
                backup=args.backup_table,
                swap=not args.no_swap,
                batch=args.batch,
                progress=report,
            )
        )
    finally:
        progress.close()
    out.document.update(
        {
            "table": result.table,
            "already_migrated": result.already_migrated,
            "rows": result.rows,
            "copied": result.copied,
            "resumed_after_id": result.resumed_after,
            "sessions": result.sessions,
            "case_variants": result.case_variants,
            "digest": result.digest,
            "swapped": result.swapped,
            "new_table": result.target,
            "backup_table": result.backup,
            "seconds": round(result.seconds, 3),
        }
    )
    if result.already_migrated:
        out.line(f"Table {result.table!r} already has the tidb-memory layout; nothing to do.")
        return 0
    if result.resumed_after:
        out.line(f"Resumed after old id {result.resumed_after}.")
    out.line(
        f"Copied {result.copied} rows; verified {result.rows} rows of {result.sessions} "
        f"sessions (digest {result.digest[:16]}...)."
    )
    if result.case_variants:
        out.line(
            f"Note: {result.case_variants} session ids differ from another only in case (or "
            "accents); the old table's collation read them as one session, tidb-memory keeps "
            "them apart."
        )
    if result.swapped:
        out.line(
            f"Swapped: {result.table!r} now has the new layout; the old table is {result.backup!r}."
        )
    else:
        out.line(f"Not swapped: the new table is {result.target!r}, beside {result.table!r}.")
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


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ttl",
        metavar="DURATION",
        help="when creating the table: expire messages after this long (e.g. 30d); TiDB gets "
        "a native TTL, other servers need `purge`",
    )


def _sessions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="only this user's sessions")
    parser.add_argument(
        "--limit", type=_positive, default=DEFAULT_PAGE_SIZE, help="sessions per page (%(default)s)"
    )
    parser.add_argument("--cursor", help="the next page: the cursor a previous page printed")


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION", help="the session id")
    parser.add_argument(
        "--limit", type=_positive, default=DEFAULT_PAGE_SIZE, help="messages to show (%(default)s)"
    )
    parser.add_argument(
        "--before", type=_positive, metavar="SEQ", help="show the messages before this seq"
    )


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", help="export this session only (default: every session)")
    parser.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="where to write (default: stdout)"
    )
    parser.add_argument(
        "--batch", type=_positive, default=1000, help="records per statement (%(default)s)"
    )


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON Lines from `export`; - for stdin")
    parser.add_argument(
        "--batch", type=_positive, default=500, help="records per statement (%(default)s)"
    )


def _clear_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION", help="the session id")
    parser.add_argument(
        "--with-info", action="store_true", help="also delete its title, user and metadata"
    )


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        required=True,
        metavar="AGE|TIME",
        help="delete messages older than this: a duration (30d, 12h) or an ISO time (UTC)",
    )
    parser.add_argument(
        "--batch", type=_positive, default=PURGE_BATCH, help="rows per DELETE (%(default)s)"
    )


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="the new table's name while copying (<table>_migrated)")
    parser.add_argument(
        "--backup-table", help="the old table's name after the swap (<table>_seed_backup)"
    )
    parser.add_argument(
        "--no-swap", action="store_true", help="copy and verify, but leave both tables as they are"
    )
    parser.add_argument(
        "--batch", type=_positive, default=DEFAULT_BATCH, help="rows per statement (%(default)s)"
    )


#: The subcommands, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        cmd_demo,
        "chat through RunnableWithMessageHistory, then reload and print the session",
        _demo_arguments,
    ),
    "init": Command(
        cmd_init, "create the tables, or upgrade them to this version", _init_arguments
    ),
    "doctor": Command(
        cmd_doctor,
        "connect; report the server, TiDB or not, TLS, the table's schema and the latency",
        _no_arguments,
    ),
    "sessions": Command(
        cmd_sessions, "list sessions, most recently active first", _sessions_arguments
    ),
    "show": Command(cmd_show, "show a session's info and its latest messages", _show_arguments),
    "export": Command(cmd_export, "write sessions as JSON Lines", _export_arguments),
    "import": Command(
        cmd_import,
        "read JSON Lines from export (idempotent: re-importing changes nothing)",
        _import_arguments,
    ),
    "clear": Command(cmd_clear, "delete a session's messages", _clear_arguments),
    "purge": Command(cmd_purge, "delete messages older than a time, in batches", _purge_arguments),
    "migrate": Command(
        cmd_migrate,
        "convert a langchain-community TiDBChatMessageHistory table (resumable, verified)",
        _migrate_arguments,
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
