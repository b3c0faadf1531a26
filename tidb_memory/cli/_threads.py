"""The LangGraph checkpoint commands: ``threads`` (list, show, delete) and ``prune``.

Thin, like the chat commands: each calls the saver's methods (no SQL here). The saver's tables
are named by ``--prefix`` (``checkpoint`` by default, LangGraph's usual names).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from tidb_memory.cli._output import (
    PROG,
    Output,
    Progress,
    activity_row,
    clip,
    iso,
    page_out,
    parse_duration,
    positive_int,
    table_lines,
    when,
)
from tidb_memory.errors import InvalidInputError

THREAD_ACTIONS = ("list", "show", "delete")


def _saver(args: argparse.Namespace) -> Any:
    try:
        from tidb_memory.langgraph import AsyncTiDBSaver
    except ModuleNotFoundError as exc:
        raise InvalidInputError(
            f"`{PROG} {args.command}` needs LangGraph: pip install 'tidb-memory[langgraph]'"
        ) from exc
    return AsyncTiDBSaver(args.url, table_prefix=args.prefix)


def _info_document(info: Any) -> dict[str, Any]:
    return {
        "thread_id": info.thread_id,
        "user_id": info.user_id,
        "title": info.title,
        "last_activity": iso(info.last_activity),
        "checkpoints": info.checkpoints,
    }


def cmd_threads(args: argparse.Namespace, out: Output) -> int:
    """List a user's (or every) LangGraph thread, show one, or delete one."""
    saver = _saver(args)
    if args.action == "list":
        if args.thread is not None:
            raise InvalidInputError("`threads list` takes no THREAD; use --user to narrow it")
        page = saver.list_threads(user_id=args.user, limit=args.limit, cursor=args.cursor)
        out.document.update(
            {
                "prefix": args.prefix,
                "threads": [_info_document(t) for t in page.threads],
                "next_cursor": page.next_cursor,
            }
        )
        rows = [
            activity_row(t.thread_id, t.checkpoints, t.last_activity, t.user_id, t.title)
            for t in page.threads
        ]
        headers = ["THREAD", "CHECKPOINTS", "LAST ACTIVITY (UTC)", "USER", "TITLE"]
        more = page.next_cursor and f"threads list --cursor {page.next_cursor}"
        page_out(out, "threads", headers, rows, more)
        return 0
    if args.thread is None:
        raise InvalidInputError(f"`threads {args.action}` needs a THREAD id")
    if args.action == "show":
        return _show(saver, args, out)
    info = saver.get_thread_info(args.thread)
    saver.delete_thread(args.thread)
    deleted = 0 if info is None else info.checkpoints
    out.document.update({"prefix": args.prefix, "thread_id": args.thread, "deleted": deleted})
    out.line(f"Deleted thread {args.thread!r} ({deleted} checkpoints).")
    return 0


def _show(saver: Any, args: argparse.Namespace, out: Output) -> int:
    info = saver.get_thread_info(args.thread)
    config = {"configurable": {"thread_id": args.thread}}
    latest = [
        {
            "checkpoint_id": t.config["configurable"]["checkpoint_id"],
            "checkpoint_ns": t.config["configurable"]["checkpoint_ns"],
            "ts": t.checkpoint.get("ts"),
            "step": t.metadata.get("step"),
            "source": t.metadata.get("source"),
            "channels": sorted(t.checkpoint.get("channel_values") or {}),
            "pending_writes": len(t.pending_writes or ()),
        }
        for t in saver.list(config, limit=args.limit)
    ]
    if info is None and not latest:
        raise InvalidInputError(f"no thread {args.thread!r} in the {args.prefix!r} tables")
    out.document.update(
        {
            "prefix": args.prefix,
            "thread": _info_document(info) if info is not None else None,
            "checkpoints": latest,
        }
    )
    if info is not None:
        out.line(f"Thread:        {info.thread_id}")
        out.line(f"User:          {info.user_id or '-'}")
        out.line(f"Title:         {info.title or '-'}")
        out.line(f"Last activity: {when(info.last_activity)} UTC")
        out.line(f"Checkpoints:   {info.checkpoints}")
        out.line()
    rows = [
        [c["checkpoint_id"], c["checkpoint_ns"] or "-", str(c["step"]), str(c["source"]),
         str(c["pending_writes"]), clip(", ".join(c["channels"]) or "-", 40)]
        for c in latest
    ]  # fmt: skip
    headers = ["CHECKPOINT", "NAMESPACE", "STEP", "SOURCE", "WRITES", "CHANNELS"]
    for line in table_lines(headers, rows):
        out.line(line)
    return 0


def cmd_prune(args: argparse.Namespace, out: Output) -> int:
    """Delete old checkpoints: keep the last ``--keep`` of the given threads (or of every
    thread with ``--all``), and with ``--idle`` delete whole threads idle that long."""
    from tidb_memory.langgraph import RetentionPolicy

    if bool(args.threads) == bool(args.all):
        raise InvalidInputError("name the THREADs to prune, or pass --all for every thread")
    if args.threads and args.idle:
        raise InvalidInputError("--idle applies to every thread: use it with --all")
    saver = _saver(args)
    progress = Progress("prune", unit="threads")
    started = datetime.now(UTC)
    try:
        if args.all:
            max_idle = parse_duration(args.idle) if args.idle else None
            policy = RetentionPolicy(keep_last=args.keep, max_idle=max_idle)
            report = saver.apply_retention(policy, progress=progress.update)
            document: dict[str, Any] = {
                "threads_deleted": report.threads_deleted,
                "threads_pruned": report.threads_pruned,
                "checkpoints_deleted": report.checkpoints_deleted,
            }
        else:
            pruned = 0
            for done, thread_id in enumerate(args.threads, 1):
                before = saver.get_thread_info(thread_id)
                saver.prune([thread_id], keep=args.keep)
                after = saver.get_thread_info(thread_id)
                if before is not None and after is not None:
                    pruned += before.checkpoints - after.checkpoints
                progress.update(done, len(args.threads))
            document = {"threads": len(args.threads), "checkpoints_deleted": pruned}
    finally:
        progress.close()
    out.document.update({"prefix": args.prefix, "keep": args.keep, **document})
    seconds = (datetime.now(UTC) - started).total_seconds()
    out.line(
        f"Deleted {document['checkpoints_deleted']} checkpoints"
        + (f" and {document['threads_deleted']} idle threads" if args.all else "")
        + f", keeping the last {args.keep} of each thread ({seconds:.1f}s)."
    )
    return 0


def _prefix_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefix",
        default="checkpoint",
        help="the saver's table_prefix (default: %(default)s)",
    )


def _threads_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=THREAD_ACTIONS, help="list, show or delete")
    parser.add_argument("thread", nargs="?", metavar="THREAD", help="the thread id")
    parser.add_argument("--user", help="list: only this user's threads")
    parser.add_argument(
        "--limit", type=positive_int, default=20, help="threads or checkpoints (%(default)s)"
    )
    parser.add_argument("--cursor", help="list: the next page, as a previous page printed")
    _prefix_argument(parser)


def _prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("threads", nargs="*", metavar="THREAD", help="the threads to prune")
    parser.add_argument("--all", action="store_true", help="prune every thread")
    parser.add_argument(
        "--keep",
        type=positive_int,
        default=1,
        help="checkpoints to keep per thread and namespace (%(default)s)",
    )
    parser.add_argument(
        "--idle", metavar="DURATION", help="with --all: delete threads idle this long (30d)"
    )
    _prefix_argument(parser)
