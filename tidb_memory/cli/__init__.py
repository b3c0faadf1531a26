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
    tidb-memory threads list [--user U] [--limit N] [--cursor C] [--prefix P]
    tidb-memory threads show THREAD | threads delete THREAD
    tidb-memory prune THREAD... [--keep N] | prune --all [--keep N] [--idle 30d]

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
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from tidb_memory import __version__
from tidb_memory._url import default_url
from tidb_memory._url import display_url as display_url
from tidb_memory.chat._schema import DEFAULT_TABLE_NAME
from tidb_memory.cli._admin import (
    _init_arguments,
    _migrate_arguments,
    cmd_doctor,
    cmd_init,
    cmd_migrate,
)
from tidb_memory.cli._data import (
    _clear_arguments,
    _export_arguments,
    _import_arguments,
    _purge_arguments,
    _sessions_arguments,
    _show_arguments,
    cmd_clear,
    cmd_export,
    cmd_import,
    cmd_purge,
    cmd_sessions,
    cmd_show,
)
from tidb_memory.cli._demo import DEMO_SEED as DEMO_SEED
from tidb_memory.cli._demo import DEMO_TURNS as DEMO_TURNS
from tidb_memory.cli._demo import _demo_arguments, cmd_demo
from tidb_memory.cli._output import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    PROG,
    Output,
    _no_arguments,
    one_line,
)
from tidb_memory.cli._output import parse_duration as parse_duration
from tidb_memory.cli._threads import _prune_arguments, _threads_arguments, cmd_prune, cmd_threads
from tidb_memory.engine import close_all
from tidb_memory.errors import TiDBMemoryError

__all__ = ["COMMANDS", "build_parser", "display_url", "main"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its handler, help line, and a function adding its own arguments."""

    handler: Callable[[argparse.Namespace, Output], int]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]


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
    "threads": Command(
        cmd_threads,
        "LangGraph threads: list (most recent first), show one, or delete one",
        _threads_arguments,
    ),
    "prune": Command(
        cmd_prune,
        "delete old LangGraph checkpoints: keep the last N per thread, drop idle threads",
        _prune_arguments,
    ),
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
    text = one_line(message)
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
