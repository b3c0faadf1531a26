"""The chat statements: every DML statement on the message and sessions tables, and the
statements of the seed-table conversion. Pure text, no I/O.

Each builder is a pure function of the backend, a checked table name and the statement's shape,
cached, so that a statement's text is built once per process. Values always travel as bound
parameters (``%s`` on MySQL, ``?`` on SQLite); only identifiers checked by
:func:`~tidb_memory._checks.check_table_name` and quoted by :func:`~tidb_memory.chat._schema.quote`
are formatted in. The seed-table statements (``tidb-memory migrate``, :mod:`tidb_memory.chat.seed`)
exist on MySQL only.
"""

from __future__ import annotations

import re
import sqlite3
from functools import lru_cache

from .._retry import error_code, error_text
from ..engine import Backend
from ._schema import MIGRATIONS_TABLE, MSG_KEY_INDEX, SESSIONS_TABLE, quote

__all__ = [
    "CLEAR_BATCH",
    "clear_plan",
    "clear_statement",
    "delete_session_info_statement",
    "duplicate_of",
    "insert_select_statement",
    "insert_values_statement",
    "list_sessions_statement",
    "purge_statement",
    "read_statement",
    "records_statement",
    "restore_statement",
    "scan_statement",
    "session_info_statement",
    "set_session_statement",
]

#: Rows deleted per statement when clearing a session on MySQL/TiDB (TiDB caps a transaction).
CLEAR_BATCH = 10_000


# --- messages and sessions --------------------------------------------------------------


def _p(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


def _where(backend: Backend, *, since: bool) -> str:
    p = _p(backend)
    return f"session_id = {p}" + (f" AND created_at >= {p}" if since else "")


@lru_cache(maxsize=256)
def read_statement(
    backend: Backend, table: str, *, since: bool, window: bool = False, pin: bool = False
) -> str:
    """Read a session in order: whole, or its last N messages (``window``), optionally with its
    first message alongside (``pin``, as part 0). Each form is one range scan of the primary key.
    """
    t = quote(backend, table)
    where = _where(backend, since=since)
    if not window:
        return f"SELECT seq, message FROM {t} WHERE {where} ORDER BY seq"
    last = f"SELECT seq, message FROM {t} WHERE {where} ORDER BY seq DESC LIMIT {_p(backend)}"
    if not pin:
        return f"SELECT seq, message FROM ({last}) AS w ORDER BY seq"
    first = f"SELECT seq, message FROM {t} WHERE {where} ORDER BY seq LIMIT 1"
    return (
        f"SELECT 0 AS part, seq, message FROM ({first}) AS f UNION ALL "
        f"SELECT 1 AS part, seq, message FROM ({last}) AS w ORDER BY seq, part"
    )


@lru_cache(maxsize=256)
def records_statement(backend: Backend, table: str, *, since: bool, before: bool) -> str:
    """One page of records, newest first, strictly before a seq cursor."""
    p = _p(backend)
    where = _where(backend, since=since) + (f" AND seq < {p}" if before else "")
    return (
        f"SELECT seq, message, metadata, created_at FROM {quote(backend, table)} "
        f"WHERE {where} ORDER BY seq DESC LIMIT {p}"
    )


_INSERT_COLUMNS = "(session_id, seq, msg_key, message, metadata, created_at)"


@lru_cache(maxsize=1024)
def insert_values_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert ``rows`` messages whose seqs the caller supplies."""
    p = _p(backend)
    row = f"({p}, {p}, {p}, {p}, {p}, {p})"
    return f"INSERT INTO {quote(backend, table)} {_INSERT_COLUMNS} VALUES " + ", ".join(
        [row] * rows
    )


@lru_cache(maxsize=1024)
def insert_select_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert ``rows`` messages, numbering them after the session's current ``MAX(seq)``."""
    t = quote(backend, table)
    p = _p(backend)
    base = f"(SELECT COALESCE(MAX(seq), 0) AS base FROM {t} WHERE session_id = {p}) AS b"
    if backend == "mysql":
        # UNION ALL rather than a VALUES table constructor: TiDB has none.
        first = f"SELECT 1 AS k, {p} AS msg_key, {p} AS message, {p} AS metadata"
        rest = [f" UNION ALL SELECT {k}, {p}, {p}, {p}" for k in range(2, rows + 1)]
        batch = "(" + first + "".join(rest) + ") AS v"
        return (
            f"INSERT INTO {t} {_INSERT_COLUMNS} SELECT {p}, b.base + v.k, v.msg_key, "
            f"v.message, v.metadata, {p} FROM {base} CROSS JOIN {batch}"
        )
    # SQLite caps UNION ALL at 500 terms; a VALUES list has no such cap.
    values = ", ".join(f"({k}, ?, ?, ?)" for k in range(1, rows + 1))
    return (
        f"INSERT INTO {t} {_INSERT_COLUMNS} "
        f"SELECT ?, b.base + v.column1, v.column2, v.column3, v.column4, ? FROM {base} "
        f"CROSS JOIN (VALUES {values}) AS v"
    )


@lru_cache(maxsize=256)
def clear_plan(backend: Backend, table: str) -> tuple[str, int]:
    """Delete a session: the statement, and the rows one run of it deletes at most (0: all).

    On MySQL and TiDB newest first, in batches of :data:`CLEAR_BATCH`; the caller runs it again
    while a run deletes a whole batch. The statement's ``LIMIT`` and the caller's loop read the
    batch from here, so they cannot disagree.
    """
    p = _p(backend)
    sql = f"DELETE FROM {quote(backend, table)} WHERE session_id = {p}"
    if backend == "mysql":
        # Newest first: a reader racing the clear still sees a prefix of the session.
        return f"{sql} ORDER BY seq DESC LIMIT {CLEAR_BATCH}", CLEAR_BATCH
    return sql, 0


def clear_statement(backend: Backend, table: str) -> str:
    """The statement of :func:`clear_plan`."""
    return clear_plan(backend, table)[0]


@lru_cache(maxsize=256)
def purge_statement(backend: Backend, table: str) -> str:
    """Delete up to a bounded number of rows stored before a time."""
    t = quote(backend, table)
    p = _p(backend)
    if backend == "mysql":
        return f"DELETE FROM {t} WHERE created_at < {p} ORDER BY created_at LIMIT {p}"
    return (
        f"DELETE FROM {t} WHERE (session_id, seq) IN "
        f"(SELECT session_id, seq FROM {t} WHERE created_at < ? LIMIT ?)"
    )


@lru_cache(maxsize=256)
def session_info_statement(backend: Backend, table: str, *, since: bool) -> str:
    """One session's counts and times, with its stored title and metadata."""
    p = _p(backend)
    return (
        "SELECT a.n, a.first_at, a.last_at, s.user_id, s.title, s.metadata FROM "
        "(SELECT COUNT(*) AS n, MIN(created_at) AS first_at, MAX(created_at) AS last_at "
        f"FROM {quote(backend, table)} WHERE {_where(backend, since=since)}) AS a "
        f"LEFT JOIN {quote(backend, SESSIONS_TABLE)} AS s "
        f"ON s.table_name = {p} AND s.session_id = {p}"
    )


@lru_cache(maxsize=256)
def list_sessions_statement(
    backend: Backend, table: str, *, since: bool, user: bool, cursor: bool
) -> str:
    """Sessions by last activity (newest first), keyset-paginated on (last_at, session_id)."""
    p = _p(backend)
    st = quote(backend, SESSIONS_TABLE)
    conditions = [f"created_at >= {p}"] if since else []
    if user:
        conditions.append(
            f"session_id IN (SELECT session_id FROM {st} WHERE table_name = {p} AND user_id = {p})"
        )
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    after = f" WHERE a.last_at < {p} OR (a.last_at = {p} AND a.session_id < {p})" if cursor else ""
    return (
        "SELECT a.session_id, a.n, a.first_at, a.last_at, s.user_id, s.title, s.metadata FROM "
        "(SELECT session_id, COUNT(*) AS n, MIN(created_at) AS first_at, "
        f"MAX(created_at) AS last_at FROM {quote(backend, table)}{where} "
        "GROUP BY session_id) AS a "
        f"LEFT JOIN {st} AS s ON s.table_name = {p} AND s.session_id = a.session_id"
        f"{after} ORDER BY a.last_at DESC, a.session_id DESC LIMIT {p}"
    )


@lru_cache(maxsize=64)
def set_session_statement(backend: Backend, fields: tuple[str, ...]) -> str:
    """Create or update a session's info row; only ``fields`` change on update."""
    p = _p(backend)
    st = quote(backend, SESSIONS_TABLE)
    insert = (
        f"INSERT INTO {st} (table_name, session_id, user_id, title, metadata, updated_at) "
        f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    )
    if backend == "mysql":
        sets = [f"{f} = VALUES({f})" for f in fields] + ["updated_at = VALUES(updated_at)"]
        return f"{insert} ON DUPLICATE KEY UPDATE " + ", ".join(sets)
    sets = [f"{f} = excluded.{f}" for f in fields] + ["updated_at = excluded.updated_at"]
    return f"{insert} ON CONFLICT (table_name, session_id) DO UPDATE SET " + ", ".join(sets)


@lru_cache(maxsize=8)
def delete_session_info_statement(backend: Backend) -> str:
    p = _p(backend)
    return (
        f"DELETE FROM {quote(backend, SESSIONS_TABLE)} WHERE table_name = {p} AND session_id = {p}"
    )


@lru_cache(maxsize=256)
def scan_statement(backend: Backend, table: str, *, since: bool, after: bool) -> str:
    """Every session's records in primary-key order, keyset-paginated on (session_id, seq)."""
    p = _p(backend)
    conditions = [f"created_at >= {p}"] if since else []
    if after:
        conditions.append(f"(session_id > {p} OR (session_id = {p} AND seq > {p}))")
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    return (
        f"SELECT session_id, seq, message, metadata, created_at FROM {quote(backend, table)}"
        f"{where} ORDER BY session_id, seq LIMIT {p}"
    )


@lru_cache(maxsize=1024)
def restore_statement(backend: Backend, table: str, rows: int) -> str:
    """Insert records at given seqs; a row whose seq or key is taken is skipped (first wins)."""
    sql = insert_values_statement(backend, table, rows)
    if backend == "mysql":
        return sql + " ON DUPLICATE KEY UPDATE seq = seq"
    return sql + " ON CONFLICT DO NOTHING"


_MYSQL_DUP_KEY = re.compile(r"for key '(?:[^']*\.)?([^'.]*)'\s*$")


def duplicate_of(exc: BaseException, table: str) -> str | None:
    """For a duplicate-key error: ``"msg_key"`` or ``"seq"``; ``None`` for any other error."""
    if error_code(exc) == 1062:
        match = _MYSQL_DUP_KEY.search(error_text(exc))
        if match is None:
            return None
        return "msg_key" if match.group(1) == MSG_KEY_INDEX else "seq"
    err = getattr(exc, "orig", None) or exc
    if isinstance(err, sqlite3.IntegrityError):
        text = str(err)
        if text.endswith(f"{table}.msg_key"):
            return "msg_key"
        if "UNIQUE constraint failed" in text and f"{table}.seq" in text:
            return "seq"
    return None


# --- the seed-table conversion (tidb-memory migrate) ---------------------------------------


def _source_count_sql(source: str) -> str:
    # Ids that differ only where the column's collation does not look (case, accents) were one
    # session to the seed class; tidb-memory compares them exactly (utf8mb4_bin, as TiDB does).
    return (
        "SELECT COUNT(*), COUNT(DISTINCT BINARY session_id) - COUNT(DISTINCT session_id) "
        f"FROM {quote('mysql', source)}"
    )


def _bad_ids_sql(source: str) -> str:
    # Session ids tidb-memory cannot keep exactly: empty, or ending in a space (PAD SPACE
    # collations compare 'a ' equal to 'a', so the new primary key would merge them).
    return (
        f"SELECT DISTINCT session_id FROM {quote('mysql', source)} "
        "WHERE session_id = '' OR session_id LIKE '%% ' LIMIT 5"
    )


def _source_batch_sql(source: str) -> str:
    return (
        "SELECT id, session_id, message, UNIX_TIMESTAMP(create_time) "
        f"FROM {quote('mysql', source)} WHERE id > %s ORDER BY id LIMIT %s"
    )


def _target_state_sql(target: str) -> str:
    return (
        "SELECT COUNT(*), MAX(CASE WHEN msg_key LIKE 'seed%%' THEN msg_key END) "
        f"FROM {quote('mysql', target)}"
    )


def _session_seqs_sql(target: str, count: int) -> str:
    marks = ", ".join(["%s"] * count)
    return (
        f"SELECT session_id, MAX(seq) FROM {quote('mysql', target)} "
        f"WHERE session_id IN ({marks}) GROUP BY session_id"
    )


def _target_batch_sql(target: str) -> str:
    return (
        f"SELECT msg_key, session_id, seq, message FROM {quote('mysql', target)} "
        "WHERE msg_key > %s ORDER BY msg_key LIMIT %s"
    )


def _swap_sql(source: str, backup: str, target: str) -> str:
    q = quote
    return (
        f"RENAME TABLE {q('mysql', source)} TO {q('mysql', backup)}, "
        f"{q('mysql', target)} TO {q('mysql', source)}"
    )


def _forget_versions_sql() -> str:
    return f"DELETE FROM {quote('mysql', MIGRATIONS_TABLE)} WHERE table_name = %s"
