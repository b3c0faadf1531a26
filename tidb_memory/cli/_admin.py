"""The administration commands: init, doctor, migrate."""

from __future__ import annotations

import argparse
import asyncio

from tidb_memory._types import ServerStatus
from tidb_memory._url import display_url
from tidb_memory.chat._schema import SCHEMA_VERSION
from tidb_memory.chat.seed import DEFAULT_BATCH, amigrate_seed_table
from tidb_memory.cli._output import (
    EXIT_ERROR,
    PROG,
    Output,
    Progress,
    message_store,
    parse_duration,
    positive_int,
)
from tidb_memory.engine import get_database


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    """Create the tables, or apply the pending schema migrations in order."""
    ttl = None if args.ttl is None else parse_duration(args.ttl)
    store = message_store(args, ttl=ttl)

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
    store = message_store(args)
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
            "tls_version": status.tls_version,
            "table": args.table,
            "layout": status.layout,
            "schema_version": status.schema_version,
            "library_schema_version": SCHEMA_VERSION,
            "latency_ms": round(status.latency_ms, 3),
            "problems": problems,
        }
    )
    if status.tls_cipher:
        tls = f"{status.tls_cipher}, {status.tls_version}"
    else:
        tls = "n/a (local file)" if status.backend == "sqlite" else "off (plaintext)"
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


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ttl",
        metavar="DURATION",
        help="when creating the table: expire messages after this long (e.g. 30d); TiDB gets "
        "a native TTL, other servers need `purge`",
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
        "--batch", type=positive_int, default=DEFAULT_BATCH, help="rows per statement (%(default)s)"
    )
