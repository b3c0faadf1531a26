"""The chat data commands: sessions, show, export, import, clear, purge (formatting only: each
calls MessageStore or SessionStore methods)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from langchain_core.messages import (
    BaseMessage,
    message_to_dict,
    messages_from_dict,
)

from tidb_memory._types import DEFAULT_PAGE_SIZE, MessageRecord, SessionInfo
from tidb_memory.chat._sessions import PURGE_BATCH
from tidb_memory.cli._output import (
    PROG,
    Output,
    Progress,
    activity_row,
    clip,
    iso,
    message_store,
    moment,
    page_out,
    positive_int,
    session_store,
    table_lines,
    when,
)
from tidb_memory.errors import InvalidInputError

#: An import statement is sent before its records pass this many bytes.
IMPORT_BATCH_BYTES = 4 * 1024 * 1024


def _summary(message: BaseMessage) -> str:
    """One line for a message: its text, or its tool calls."""
    text = str(message.text)
    calls = getattr(message, "tool_calls", None)
    if calls:
        names = ", ".join(
            f"{c['name']}({json.dumps(c['args'], ensure_ascii=False)})" for c in calls
        )
        text = f"{text} [calls {names}]".strip()
    return text


def _info_document(info: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": info.session_id,
        "message_count": info.message_count,
        "first_activity": iso(info.first_activity),
        "last_activity": iso(info.last_activity),
        "user_id": info.user_id,
        "title": info.title,
        "metadata": info.metadata,
    }


def export_line(session_id: str, record: MessageRecord) -> dict[str, Any]:
    """One line of ``tidb-memory export``: what ``import`` reads back."""
    return {
        "session_id": session_id,
        "seq": record.seq,
        "created_at": iso(record.created_at),
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


def cmd_sessions(args: argparse.Namespace, out: Output) -> int:
    """List sessions, most recently active first, one page at a time."""
    page = session_store(args).list_sessions(
        user_id=args.user, limit=args.limit, cursor=args.cursor
    )
    out.document.update(
        {
            "table": args.table,
            "sessions": [_info_document(s) for s in page.sessions],
            "next_cursor": page.next_cursor,
        }
    )
    rows = [
        activity_row(s.session_id, s.message_count, s.last_activity, s.user_id, s.title)
        for s in page.sessions
    ]
    headers = ["SESSION", "MESSAGES", "LAST ACTIVITY (UTC)", "USER", "TITLE"]
    more = page.next_cursor and f"sessions --cursor {page.next_cursor}"
    page_out(out, "sessions", headers, rows, more)
    return 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    """A session's info and its latest messages (or the page before ``--before``)."""
    store = message_store(args, create_table=False)

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
    out.line(f"first:    {when(info.first_activity)} UTC")
    out.line(f"last:     {when(info.last_activity)} UTC")
    if info.metadata is not None:
        out.line(f"metadata: {json.dumps(info.metadata, ensure_ascii=False)}")
    out.line()
    rows = [
        [str(r.seq), when(r.created_at), r.message.type, clip(_summary(r.message), 70)]
        for r in records
    ]
    for line in table_lines(["SEQ", "CREATED (UTC)", "TYPE", "CONTENT"], rows):
        out.line(line)
    if older is not None:
        out.line()
        out.line(f"Older: {PROG} show {args.session} --before {older}")
    return 0


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    """Write records as JSON Lines: one session (``--session``) or every session."""
    store = message_store(args, create_table=False)
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
    store = message_store(args)
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


def cmd_clear(args: argparse.Namespace, out: Output) -> int:
    """Delete a session's messages (and, with ``--with-info``, its title and metadata)."""
    store = message_store(args, create_table=False)
    if args.with_info:
        deleted = asyncio.run(store.adelete_session(args.session))
    else:
        deleted = asyncio.run(store.aclear(args.session))
    out.document.update({"table": args.table, "session_id": args.session, "deleted": deleted})
    out.line(f"Deleted {deleted} messages of session {args.session!r} from {args.table!r}.")
    return 0


def cmd_purge(args: argparse.Namespace, out: Output) -> int:
    """Delete messages stored before a time, in bounded batches (TiDB's TTL does it itself)."""
    bound = moment(args.older_than)
    store = message_store(args, create_table=False)
    progress = Progress("purge", unit="rows deleted")
    try:
        deleted = asyncio.run(
            store.apurge_expired(older_than=bound, batch=args.batch, progress=progress.update)
        )
    finally:
        progress.close()
    out.document.update({"table": args.table, "older_than": iso(bound), "deleted": deleted})
    out.line(f"Deleted {deleted} messages stored before {when(bound)} UTC from {args.table!r}.")
    return 0


def _sessions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="only this user's sessions")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_PAGE_SIZE,
        help="sessions per page (%(default)s)",
    )
    parser.add_argument("--cursor", help="the next page: the cursor a previous page printed")


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION", help="the session id")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_PAGE_SIZE,
        help="messages to show (%(default)s)",
    )
    parser.add_argument(
        "--before", type=positive_int, metavar="SEQ", help="show the messages before this seq"
    )


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", help="export this session only (default: every session)")
    parser.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="where to write (default: stdout)"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=1000, help="records per statement (%(default)s)"
    )


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON Lines from `export`; - for stdin")
    parser.add_argument(
        "--batch", type=positive_int, default=500, help="records per statement (%(default)s)"
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
        "--batch", type=positive_int, default=PURGE_BATCH, help="rows per DELETE (%(default)s)"
    )
