"""The seed-table conversion (``tidb-memory migrate``), from langchain-community's layout.

The seed class stores ``(id INT AUTO_INCREMENT, session_id, message JSON, create_time
TIMESTAMP)`` and orders a session by ``id``, which TiDB does not keep monotonic across servers.
tidb-memory refuses to use such a table (see :func:`tidb_memory.chat._schema.check_layout`); this
module converts it, without loss:

1. **Copy.** Rows are read in ``id`` order, in keyset batches. Each session's rows get
   ``seq`` 1..n in that order; ``create_time`` is read as UTC (``UNIX_TIMESTAMP``, which does not
   depend on the session time zone) into ``created_at``; each message is decoded with langchain's
   ``messages_from_dict`` (what the seed class itself read it with) and re-encoded with
   tidb-memory's codec, so migrated rows are read back by the codec's fast path. The rows go to a
   new table (``<table>_migrated``) in multi-row INSERTs, each atomic, in ``id`` order.
2. **Resume.** Every copied row carries a ``msg_key`` derived from its old id
   (``seed`` + the id, zero-padded). A run that was interrupted starts again after the highest
   id already copied, and continues each session at its highest seq: running the migration
   again always converges.
3. **Verify.** Both tables are read again in full: their row counts must match, and so must a
   digest of (session id, position in the session, canonical message JSON) over every row.
4. **Swap.** ``RENAME TABLE <table> TO <table>_seed_backup, <table>_migrated TO <table>``, one
   atomic statement: readers see the old table or the new one, never neither. With
   ``swap=False`` both tables stay side by side.

The seed layout only exists on MySQL, MariaDB and TiDB; SQLite is not supported here. The
statements are built in :mod:`~tidb_memory.chat._sql`.
Stop the applications writing the old table first: rows written during the copy with an id
lower than one already copied would be missed, and the verification would say so.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from langchain_core.messages import messages_from_dict

from .._checks import as_count
from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy, retrying, translate
from ..codec import decode, encode
from ..engine import Database
from ..errors import InvalidInputError, SchemaError, TiDBMemoryError
from ._schema import (
    COLUMNS,
    MIGRATIONS,
    SEED_COLUMNS,
    _record_version_statement,
    check_table_name,
    create_table_statements,
    forget,
    table_columns,
)
from ._sql import (
    _bad_ids_sql,
    _forget_versions_sql,
    _session_seqs_sql,
    _source_batch_sql,
    _source_count_sql,
    _swap_sql,
    _target_batch_sql,
    _target_state_sql,
    duplicate_of,
    insert_values_statement,
)

__all__ = [
    "DEFAULT_BATCH",
    "MigrationReport",
    "ProgressCallback",
    "amigrate_seed_table",
    "seed_key",
]

#: Rows read, converted and inserted per statement.
DEFAULT_BATCH = 500
#: A copy statement is split before its payload passes this many bytes (max_allowed_packet).
MAX_BATCH_BYTES = 4 * 1024 * 1024
_KEY_PREFIX = "seed"
_OP = "migrate"

#: ``progress(phase, done, total)``: ``phase`` is ``"copy"`` or ``"verify"``; ``done`` and
#: ``total`` count rows (verification reads both tables, so its total is twice the rows).
ProgressCallback = Callable[[str, int, int], None]


def seed_key(old_id: int) -> str:
    """The ``msg_key`` of the row migrated from old id ``old_id``: 32 ASCII characters.

    The ``seed`` prefix is not hexadecimal, so it never collides with the random keys appends
    use, and zero padding makes text order equal id order (``MAX(msg_key)`` is the resume point).
    """
    return f"{_KEY_PREFIX}{old_id:028d}"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a migration did.

    Attributes:
        table: the table migrated (after a swap, it holds the new layout).
        target: the table the rows were copied into (``table`` itself after a swap).
        backup: where the old table is now, or ``None`` when it was not swapped.
        rows: rows in the old table (and, verified, in the new one).
        copied: rows copied by this run; fewer than ``rows`` when it resumed.
        resumed_after: the old id this run resumed after (0 for a fresh start).
        sessions: sessions in the new table.
        case_variants: session ids that the old table's collation compared equal to another
            (``"Alice"`` and ``"alice"`` under MySQL's or MariaDB's case-insensitive default):
            the seed class read them as one session; tidb-memory keeps them apart, exactly as
            stored (it compares ids with ``utf8mb4_bin``, TiDB's default).
        digest: the verified digest, as hex.
        swapped: the tables were swapped.
        already_migrated: ``table`` had the current layout already; nothing was done.
        seconds: how long the run took.
    """

    table: str
    target: str
    backup: str | None
    rows: int
    copied: int
    resumed_after: int
    sessions: int
    case_variants: int
    digest: str
    swapped: bool
    already_migrated: bool
    seconds: float


def _error(message: str, table: str) -> SchemaError:
    return SchemaError(message, operation=_OP, table=table)


def _derived(table: str, suffix: str, option: str) -> str:
    name = table + suffix
    if len(name) > 64:
        raise InvalidInputError(f"{name!r} is longer than 64 characters; name it with {option}")
    return name


# --- conversion ----------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def convert_message(old_id: int, raw: Any, table: str) -> str:
    """The seed row's message, as tidb-memory stores it (see :func:`tidb_memory.codec.encode`).

    Raises:
        SchemaError: the row does not hold a message; names the old id.
    """
    try:
        message = messages_from_dict([orjson.loads(_text(raw))])[0]
        return encode(message)
    except TiDBMemoryError as exc:
        raise _error(
            f"row id={old_id} of {table!r} cannot be stored exactly: {exc}", table
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _error(
            f"row id={old_id} of {table!r} does not hold a LangChain message "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); fix or "
            "delete that row, then run the migration again (it resumes)",
            table,
        ) from exc


def _utc_text(epoch: Any, fallback: datetime) -> str:
    stamp = fallback if epoch is None else datetime.fromtimestamp(float(epoch), UTC)
    return stamp.replace(tzinfo=None).isoformat(" ", "microseconds")


class _Digest:
    """An order-independent digest over (session id, position, canonical message) triples.

    Each row hashes to a sha256 value; the digest is their sum modulo 2**256, so the old table
    (read by id) and the new one (read by key) can be compared without sorting either, while
    a message at another position, in another session, changed, missing or extra changes it.
    """

    __slots__ = ("rows", "total")

    def __init__(self) -> None:
        self.total = 0
        self.rows = 0

    def add(self, session_id: str, position: int, canonical: str) -> None:
        sid = session_id.encode()
        h = hashlib.sha256(len(sid).to_bytes(4, "big") + sid + position.to_bytes(8, "big"))
        h.update(canonical.encode())
        self.total = (self.total + int.from_bytes(h.digest(), "big")) % (1 << 256)
        self.rows += 1

    def hexdigest(self) -> str:
        return f"{self.total:064x}"


# --- the migration -------------------------------------------------------------------------


class _Migration:
    """One run: the statements it sends, the progress it reports."""

    def __init__(
        self,
        db: Database,
        source: str,
        target: str,
        batch: int,
        progress: ProgressCallback | None,
        retry: RetryPolicy,
    ) -> None:
        self.db = db
        self.source = source
        self.target = target
        self.batch = batch
        self.progress = progress
        self.retry = retry
        self.started = datetime.now(UTC)

    def report(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    async def columns(self, table: str) -> set[str]:
        async def attempt() -> set[str]:
            async with self.db.connection() as conn:
                return await table_columns(conn, table)

        return await retrying(attempt, policy=self.retry, operation=_OP, table=self.source)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One read, on a pooled connection, retried on transient errors."""

        async def attempt() -> list[Any]:
            async with self.db.connection() as conn:
                return await conn.fetchall(sql, params)

        return await retrying(attempt, policy=self.retry, operation=_OP, table=self.source)

    async def execute(self, sql: str, params: Sequence[Any] = (), *, retry: bool = True) -> int:
        """One idempotent write (or, with ``retry=False``, one that must not be repeated)."""

        async def attempt() -> int:
            async with self.db.connection() as conn:
                return await conn.execute(sql, params)

        if retry:
            return await retrying(attempt, policy=self.retry, operation=_OP, table=self.source)
        try:
            return await attempt()
        except Exception as exc:
            raise translate(exc, operation=_OP, table=self.source) from exc

    async def copy(self, total: int) -> tuple[int, int]:
        """Copy every row after the resume point; returns (resumed after id, rows copied)."""
        [(present, top_key)] = await self.fetch(_target_state_sql(self.target))
        resumed_after = after = 0 if top_key is None else int(_text(top_key)[len(_KEY_PREFIX) :])
        # Sessions whose last seq is known; a fresh target starts every session at 0.
        seqs: dict[str, int] = {}
        resuming = int(present) > 0
        done = int(present)
        copied = 0
        self.report("copy", done, total)
        while True:
            rows = await self.fetch(_source_batch_sql(self.source), (after, self.batch))
            if not rows:
                return resumed_after, copied
            if resuming:
                unseen = sorted({_text(r[1]) for r in rows} - seqs.keys())
                if unseen:
                    found = await self.fetch(_session_seqs_sql(self.target, len(unseen)), unseen)
                    seqs.update({_text(sid): int(seq) for sid, seq in found})
            pending: list[tuple[str, int, str, str, str]] = []
            size = 0
            for old_id, raw_sid, raw_message, epoch in rows:
                sid = _text(raw_sid)
                payload = convert_message(int(old_id), raw_message, self.source)
                seq = seqs.get(sid, 0) + 1
                seqs[sid] = seq
                pending.append(
                    (sid, seq, seed_key(int(old_id)), payload, _utc_text(epoch, self.started))
                )
                size += len(payload) + len(sid)
                if size >= MAX_BATCH_BYTES:
                    await self._insert(pending)
                    copied += len(pending)
                    pending, size = [], 0
            if pending:
                await self._insert(pending)
                copied += len(pending)
            after = int(rows[-1][0])
            done += len(rows)
            self.report("copy", done, total)

    async def _insert(self, rows: Sequence[tuple[str, int, str, str, str]]) -> None:
        params: list[Any] = []
        for sid, seq, key, payload, created in rows:
            params += (sid, seq, key, payload, None, created)
        sql = insert_values_statement("mysql", self.target, len(rows))
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            async with self.db.connection() as conn:
                try:
                    await conn.execute(sql, params)
                except Exception as exc:
                    clash = duplicate_of(exc, self.target)
                    if clash == "msg_key" and attempts > 1:
                        return  # an earlier attempt committed (the insert is atomic)
                    if clash is not None:
                        raise _error(
                            f"table {self.target!r} holds rows that clash with the copy (it was "
                            "written by something other than this migration); drop it and run "
                            "the migration again",
                            self.source,
                        ) from exc
                    raise

        await retrying(attempt, policy=self.retry, operation=_OP, table=self.source)

    async def verify(self, total: int) -> tuple[str, int]:
        """Compare counts and digests of both tables; returns (digest, sessions)."""
        old = _Digest()
        positions: dict[str, int] = {}
        after = 0
        done = 0
        self.report("verify", done, 2 * total)
        while True:
            rows = await self.fetch(_source_batch_sql(self.source), (after, self.batch))
            if not rows:
                break
            for old_id, raw_sid, raw_message, _epoch in rows:
                sid = _text(raw_sid)
                position = positions.get(sid, 0) + 1
                positions[sid] = position
                old.add(sid, position, convert_message(int(old_id), raw_message, self.source))
            after = int(rows[-1][0])
            done += len(rows)
            self.report("verify", done, 2 * total)
        new = _Digest()
        sessions: set[str] = set()
        key = ""
        while True:
            rows = await self.fetch(_target_batch_sql(self.target), (key, self.batch))
            if not rows:
                break
            for _key, raw_sid, seq, raw_message in rows:
                sid = _text(raw_sid)
                sessions.add(sid)
                new.add(sid, int(seq), encode(decode(_text(raw_message))))
            key = _text(rows[-1][0])
            done += len(rows)
            self.report("verify", done, 2 * total)
        if old.rows != new.rows:
            raise _error(
                f"verification failed: {self.source!r} has {old.rows} rows but {self.target!r} "
                f"has {new.rows}. Was the old table written during the copy? Stop its writers, "
                f"drop {self.target!r} and run the migration again",
                self.source,
            )
        if old.hexdigest() != new.hexdigest():
            raise _error(
                f"verification failed: {self.source!r} and {self.target!r} have {old.rows} rows "
                f"each but their digests differ. Drop {self.target!r} and run the migration again",
                self.source,
            )
        return new.hexdigest(), len(sessions)


async def amigrate_seed_table(
    db: Database,
    table: str,
    *,
    target: str | None = None,
    backup: str | None = None,
    swap: bool = True,
    batch: int = DEFAULT_BATCH,
    progress: ProgressCallback | None = None,
    retry: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> MigrationReport:
    """Convert ``table`` from langchain-community's layout to tidb-memory's, without loss.

    Example::

        db = get_database("mysql+aiomysql://root@127.0.0.1:3306/test")
        report = await amigrate_seed_table(db, "langchain_message_store")
        print(report.rows, report.digest, report.backup)

    Costs: about two statements per ``batch`` rows to copy, one per ``batch`` rows of each
    table to verify, and one ``RENAME TABLE``. Safe to interrupt and to run again: it resumes
    after the last copied row; a table already migrated is reported, not touched.

    Args:
        db: the database (MySQL, MariaDB or TiDB).
        table: the seed table.
        target: where to copy the rows; default ``<table>_migrated``.
        backup: the old table's name after the swap; default ``<table>_seed_backup``.
        swap: swap the tables once verified; if false, leave both side by side.
        batch: rows per statement.
        progress: called as ``progress(phase, done, total)`` after each batch; an exception
            it raises stops the run (which can be resumed) and propagates unchanged.
        retry: the retry policy for each statement.

    Raises:
        SchemaError: the table is missing or not in the seed layout, a name is taken, a row
            holds no message, or the verification failed. Nothing is swapped then.
        InvalidInputError: a name or ``batch`` is invalid.
    """
    started = time.monotonic()
    source = check_table_name(table)
    target = check_table_name(target or _derived(source, "_migrated", "target="))
    backup = check_table_name(backup or _derived(source, "_seed_backup", "backup="))
    if len({source, target, backup}) != 3:
        raise InvalidInputError("table, target and backup must be three different names")
    batch = as_count("batch", batch, high=10_000)  # an IntEnum must not reach LIMIT as text
    if db.backend != "mysql":
        raise InvalidInputError(
            "the langchain-community layout exists on MySQL, MariaDB and TiDB only; "
            "there is nothing to migrate on SQLite"
        )
    run = _Migration(db, source, target, batch, progress, retry)
    layout = await run.columns(source)
    if not layout:
        raise _error(f"table {source!r} does not exist", source)
    if set(COLUMNS) <= layout:
        return MigrationReport(
            source, source, None, 0, 0, 0, 0, 0, "", False, True, time.monotonic() - started
        )
    if not (layout >= SEED_COLUMNS and "seq" not in layout):
        raise _error(
            f"table {source!r} is neither a langchain-community TiDBChatMessageHistory "
            "table nor a tidb-memory table; there is nothing to migrate",
            source,
        )
    existing = await run.columns(target)
    if existing and not set(COLUMNS) <= existing:
        raise _error(f"table {target!r} exists and is not a tidb-memory table", source)
    if swap and await run.columns(backup):
        raise _error(f"the backup name {backup!r} is taken; choose another", source)
    bad = [_text(r[0]) for r in await run.fetch(_bad_ids_sql(source))]
    if bad:
        raise _error(
            # A message, not a statement: it names the UPDATE the user runs (S608 reads SQL).
            f"{source!r} has session ids tidb-memory cannot keep exactly (empty, or ending "  # noqa: S608
            f"in a space, which MySQL compares equal to the id without it): {bad!r}. "
            "Rename them (UPDATE ... SET session_id = ...) and run the migration again",
            source,
        )
    for statement in create_table_statements("mysql", target):
        await run.execute(statement)
    if not existing:
        for version, _description, _statements in MIGRATIONS:
            await run.execute(_record_version_statement("mysql"), (target, version))
    [(count, variants)] = await run.fetch(_source_count_sql(source))
    total = int(count)
    resumed_after, copied = await run.copy(total)
    digest, sessions = await run.verify(total)
    if swap:
        await run.execute(_swap_sql(source, backup, target), retry=False)
        forget(db.key)
        for version, _description, _statements in MIGRATIONS:
            await run.execute(_record_version_statement("mysql"), (source, version))
        await run.execute(_forget_versions_sql(), (target,))
    return MigrationReport(
        table=source,
        target=source if swap else target,
        backup=backup if swap else None,
        rows=total,
        copied=copied,
        resumed_after=resumed_after,
        sessions=sessions,
        case_variants=int(variants),
        digest=digest,
        swapped=swap,
        already_migrated=False,
        seconds=time.monotonic() - started,
    )
