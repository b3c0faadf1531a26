"""The saver's SQL: its tables, their migrations, and the statement builders.

Pure text, no I/O; every identifier comes from :func:`~tidb_memory._checks.check_table_name`.
The SQL avoids what TiDB does not run (``JSON_TABLE``, the ``INSERT ... AS new`` row alias,
``RETURNING``, ``CREATE INDEX IF NOT EXISTS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

from langgraph.checkpoint.serde.types import TASKS

from tidb_memory._checks import check_table_name
from tidb_memory._dialect import quote
from tidb_memory._migrations import Migration
from tidb_memory.engine import Backend
from tidb_memory.errors import InvalidInputError

#: Longest checkpoint id, task id or channel version.
ID_MAX = 128
#: The kind column of a read row.
KIND_CHECKPOINT, KIND_BLOB, KIND_WRITE, KIND_SEND = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Tables:
    checkpoints: str
    blobs: str
    writes: str
    migrations: str
    threads: str

    @classmethod
    def from_prefix(cls, prefix: object) -> Tables:
        if not isinstance(prefix, str) or not prefix:
            raise InvalidInputError("table_prefix must be a non-empty str")
        return cls(
            checkpoints=check_table_name(f"{prefix}s"),
            blobs=check_table_name(f"{prefix}_blobs"),
            writes=check_table_name(f"{prefix}_writes"),
            migrations=check_table_name(f"{prefix}_migrations"),
            threads=check_table_name(f"{prefix}_threads"),
        )


_MYSQL_TABLE = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_CLUSTERED = " /*T![clustered_index] CLUSTERED */"


def _v1(backend: Backend, t: Tables) -> list[str]:
    """Version 1: the checkpoints, blobs and writes tables."""
    cp, bl, wr = (quote(backend, n) for n in (t.checkpoints, t.blobs, t.writes))
    if backend == "mysql":
        return [
            f"CREATE TABLE IF NOT EXISTS {cp} (\n"
            "  `thread_id` VARCHAR(255) NOT NULL,\n"
            "  `ns_hash` BINARY(16) NOT NULL,\n"
            "  `checkpoint_ns` TEXT NOT NULL,\n"
            "  `checkpoint_id` VARCHAR(128) NOT NULL,\n"
            "  `parent_checkpoint_id` VARCHAR(128) NULL,\n"
            "  `v` INT NOT NULL,\n"
            "  `checkpoint` LONGTEXT NOT NULL,\n"
            "  `metadata` JSON NOT NULL,\n"
            "  `refs` MEDIUMTEXT NOT NULL,\n"
            f"  PRIMARY KEY (`thread_id`, `ns_hash`, `checkpoint_id`){_CLUSTERED},\n"
            "  KEY `ix_checkpoint_id` (`checkpoint_id`)\n" + _MYSQL_TABLE,
            f"CREATE TABLE IF NOT EXISTS {bl} (\n"
            "  `thread_id` VARCHAR(255) NOT NULL,\n"
            "  `ns_hash` BINARY(16) NOT NULL,\n"
            "  `channel` VARCHAR(255) NOT NULL,\n"
            "  `version` VARCHAR(128) NOT NULL,\n"
            "  `type` VARCHAR(64) NOT NULL,\n"
            "  `blob` LONGBLOB NOT NULL,\n"
            f"  PRIMARY KEY (`thread_id`, `ns_hash`, `channel`, `version`){_CLUSTERED}\n"
            + _MYSQL_TABLE,
            f"CREATE TABLE IF NOT EXISTS {wr} (\n"
            "  `thread_id` VARCHAR(255) NOT NULL,\n"
            "  `ns_hash` BINARY(16) NOT NULL,\n"
            "  `checkpoint_id` VARCHAR(128) NOT NULL,\n"
            "  `task_id` VARCHAR(128) NOT NULL,\n"
            "  `idx` INT NOT NULL,\n"
            "  `task_path` TEXT NOT NULL,\n"
            "  `channel` VARCHAR(255) NOT NULL,\n"
            "  `type` VARCHAR(64) NOT NULL,\n"
            "  `blob` LONGBLOB NOT NULL,\n"
            "  PRIMARY KEY (`thread_id`, `ns_hash`, `checkpoint_id`, `task_id`, `idx`)"
            f"{_CLUSTERED}\n" + _MYSQL_TABLE,
        ]
    return [
        f"CREATE TABLE IF NOT EXISTS {cp} (\n"
        "  thread_id TEXT NOT NULL,\n"
        "  ns_hash BLOB NOT NULL,\n"
        "  checkpoint_ns TEXT NOT NULL,\n"
        "  checkpoint_id TEXT NOT NULL,\n"
        "  parent_checkpoint_id TEXT NULL,\n"
        "  v INTEGER NOT NULL,\n"
        "  checkpoint TEXT NOT NULL,\n"
        "  metadata TEXT NOT NULL,\n"
        "  refs TEXT NOT NULL,\n"
        "  PRIMARY KEY (thread_id, ns_hash, checkpoint_id)\n"
        ") WITHOUT ROWID",
        f"CREATE TABLE IF NOT EXISTS {bl} (\n"
        "  thread_id TEXT NOT NULL,\n"
        "  ns_hash BLOB NOT NULL,\n"
        "  channel TEXT NOT NULL,\n"
        "  version TEXT NOT NULL,\n"
        "  type TEXT NOT NULL,\n"
        "  blob BLOB NOT NULL,\n"
        "  PRIMARY KEY (thread_id, ns_hash, channel, version)\n"
        ") WITHOUT ROWID",
        f"CREATE TABLE IF NOT EXISTS {wr} (\n"
        "  thread_id TEXT NOT NULL,\n"
        "  ns_hash BLOB NOT NULL,\n"
        "  checkpoint_id TEXT NOT NULL,\n"
        "  task_id TEXT NOT NULL,\n"
        "  idx INTEGER NOT NULL,\n"
        "  task_path TEXT NOT NULL,\n"
        "  channel TEXT NOT NULL,\n"
        "  type TEXT NOT NULL,\n"
        "  blob BLOB NOT NULL,\n"
        "  PRIMARY KEY (thread_id, ns_hash, checkpoint_id, task_id, idx)\n"
        ") WITHOUT ROWID",
    ]


def _v2(backend: Backend, t: Tables) -> list[str]:
    """Version 2: one row per thread (owner, title, last activity, checkpoint count), filled
    from the checkpoints already stored, so that a user's threads list without an aggregate."""
    th, cp = quote(backend, t.threads), quote(backend, t.checkpoints)
    if backend == "mysql":
        user = (
            "MAX(CASE WHEN JSON_TYPE(JSON_EXTRACT(`metadata`, '$.user_id')) = 'STRING' "
            "THEN JSON_UNQUOTE(JSON_EXTRACT(`metadata`, '$.user_id')) END)"
        )
        return [
            f"CREATE TABLE IF NOT EXISTS {th} (\n"
            "  `thread_id` VARCHAR(255) NOT NULL,\n"
            "  `user_id` VARCHAR(255) NULL,\n"
            "  `title` TEXT NULL,\n"
            "  `last_activity` DATETIME(6) NOT NULL,\n"
            "  `checkpoints` BIGINT NOT NULL DEFAULT 0,\n"
            f"  PRIMARY KEY (`thread_id`){_CLUSTERED},\n"
            "  KEY `ix_user_activity` (`user_id`, `last_activity`, `thread_id`),\n"
            "  KEY `ix_activity` (`last_activity`, `thread_id`)\n" + _MYSQL_TABLE,
            f"INSERT INTO {th} (`thread_id`, `user_id`, `last_activity`, `checkpoints`) "
            f"SELECT `thread_id`, {user}, UTC_TIMESTAMP(6), COUNT(*) FROM {cp} "
            "GROUP BY `thread_id` ON DUPLICATE KEY UPDATE `checkpoints` = VALUES(`checkpoints`)",
        ]
    user = (
        "MAX(CASE WHEN json_type(`metadata`, '$.user_id') = 'text' "
        "THEN json_extract(`metadata`, '$.user_id') END)"
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {th} (\n"
        "  thread_id TEXT NOT NULL PRIMARY KEY,\n"
        "  user_id TEXT NULL,\n"
        "  title TEXT NULL,\n"
        "  last_activity TEXT NOT NULL,\n"
        "  checkpoints INTEGER NOT NULL DEFAULT 0\n"
        ") WITHOUT ROWID",
        f'CREATE INDEX IF NOT EXISTS "{t.threads}_user" '
        f"ON {th} (user_id, last_activity, thread_id)",
        f'CREATE INDEX IF NOT EXISTS "{t.threads}_activity" ON {th} (last_activity, thread_id)',
        f"INSERT INTO {th} (thread_id, user_id, last_activity, checkpoints) "
        f"SELECT thread_id, {user}, {SQLITE_NOW}, COUNT(*) FROM {cp} WHERE true "
        "GROUP BY thread_id ON CONFLICT (thread_id) "
        "DO UPDATE SET checkpoints = excluded.checkpoints",
    ]


SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


#: The schema, as (version, description, statements of a table set). Append only: a version,
#: once released, never changes. Every statement must be idempotent (``IF NOT EXISTS``, or a
#: guarded ALTER), so that a setup interrupted between a DDL and its version record can simply
#: run again. :func:`~tidb_memory._migrations.apply_migrations` runs them against the
#: ``<prefix>_migrations`` ledger.
MIGRATIONS: tuple[tuple[int, str, Callable[[Backend, Tables], list[str]]], ...] = (
    (1, "checkpoints, blobs and writes tables", _v1),
    (2, "threads table: owner, title, last activity, checkpoint count", _v2),
)


def bind_migrations(
    t: Tables, declared: Sequence[tuple[int, str, Callable[[Backend, Tables], list[str]]]]
) -> tuple[Migration, ...]:
    """``declared`` for the table set ``t``, as the shared runner takes them."""

    def on(steps: Callable[[Backend, Tables], list[str]]) -> Callable[[Backend], list[str]]:
        return lambda backend: steps(backend, t)

    return tuple(Migration(v, d, on(steps)) for v, d, steps in declared)


def placeholder(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


def hash_param(backend: Backend) -> str:
    return "UNHEX(%s)" if backend == "mysql" else "?"


@dataclass(frozen=True, slots=True)
class Select:
    """Which checkpoints a read selects (the ``c`` CTE); every field is part of the SQL text."""

    thread: bool = False
    ns: bool = False
    checkpoint_id: bool = False
    latest: bool = False
    filters: tuple[str, ...] = ()
    before: bool = False
    cursor: bool = False
    limit: bool = False


def _filter_sql(backend: Backend, filters: tuple[str, ...]) -> list[str]:
    """Conditions that keep a superset of the rows a metadata filter matches (see
    ``_saver_rows.filter_terms``); one per key, in the order of its parameters."""
    out: list[str] = []
    for kind in filters:
        if backend == "mysql":
            typ = "JSON_TYPE(JSON_EXTRACT(`metadata`, %s))"
            if kind == "text":
                out.append(
                    "(JSON_UNQUOTE(JSON_EXTRACT(`metadata`, %s)) = %s AND " + typ + " = 'STRING')"
                )
            else:
                out.append(_MYSQL_FILTER[kind].format(typ))
        else:
            typ = "json_type(`metadata`, ?)"
            if kind == "text":
                out.append(f"(json_extract(`metadata`, ?) = ? AND {typ} = 'text')")
            else:
                out.append(_SQLITE_FILTER[kind].format(typ))
    return out


_MYSQL_FILTER = {
    "null": "COALESCE({}, 'NULL') = 'NULL'",
    "number": "{} IN ('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL', 'BOOLEAN')",
    "array": "{} = 'ARRAY'",
    "object": "{} = 'OBJECT'",
}
_SQLITE_FILTER = {
    "null": "COALESCE({}, 'null') = 'null'",
    "number": "{} IN ('integer', 'real', 'true', 'false')",
    "array": "{} = 'array'",
    "object": "{} = 'object'",
}


@lru_cache(maxsize=512)
def read_statement(backend: Backend, t: Tables, sel: Select) -> str:
    """One statement returning checkpoints with their blobs, pending writes and (for
    checkpoints older than format 4) the pending sends of their parents.

    Rows: ``(fields, metadata, data)``, where ``fields`` is the JSON array ``[kind, thread_id,
    ns_hex, checkpoint_id, s1, s2, s3, s4, n]``; see ``_saver_rows.assemble``. The small
    fields travel packed because the client parses every column's description on every
    read: three columns instead of ten cost a fraction of the CPU.
    """
    p = placeholder(backend)
    cp, bl, wr = (quote(backend, n) for n in (t.checkpoints, t.blobs, t.writes))
    where: list[str] = []
    if sel.thread:
        where.append(f"`thread_id` = {p}")
    if sel.ns:
        where.append(f"`ns_hash` = {hash_param(backend)}")
    if sel.checkpoint_id:
        where.append(f"`checkpoint_id` = {p}")
    where += _filter_sql(backend, sel.filters)
    if sel.before:
        where.append(f"`checkpoint_id` < {p}")
    if sel.cursor:
        h = hash_param(backend)
        if sel.thread and sel.ns:
            where.append(f"`checkpoint_id` < {p}")
        else:
            where.append(
                f"(`checkpoint_id` < {p} OR (`checkpoint_id` = {p} AND (`thread_id` < {p} "
                f"OR (`thread_id` = {p} AND `ns_hash` < {h}))))"
            )
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    order = ""
    if sel.latest or sel.limit:
        # Newest first; ties (only across threads or namespaces) broken by the other keys. The
        # keys fixed by the WHERE clause are left out, so that MariaDB reads the primary key
        # backwards instead of sorting the thread.
        order = " ORDER BY `checkpoint_id` DESC"
        if not sel.thread:
            order += ", `thread_id` DESC"
        if not sel.ns:
            order += ", `ns_hash` DESC"
        order += " LIMIT 1" if sel.latest else f" LIMIT {p}"
    # ``c`` holds only the keys of the selected checkpoints, so that the server materialises
    # it in memory; the wide columns are read from the table by primary key.
    c = (
        "SELECT `thread_id`, `ns_hash`, `checkpoint_id`, `parent_checkpoint_id`, `v` "
        f"FROM {cp}{sql_where}{order}"
    )
    by_key = (
        "x.`thread_id` = {0}.`thread_id` AND x.`ns_hash` = {0}.`ns_hash` "
        "AND x.`checkpoint_id` = {0}.`checkpoint_id`"
    )
    head = (
        _fields(
            KIND_CHECKPOINT, "x", "x.`parent_checkpoint_id`, NULL, NULL, x.`checkpoint_ns`, x.`v`"
        )
        + ", x.`metadata`, x.`checkpoint` "
        f"FROM c JOIN {cp} x ON {by_key.format('c')}"
    )
    write_fields = "w.`task_id`, w.`channel`, w.`type`, w.`task_path`, w.`idx`"
    writes = (
        _fields(KIND_WRITE, "c", write_fields) + ", NULL, w.`blob` "
        f"FROM c JOIN {wr} w ON w.`thread_id` = c.`thread_id` "
        "AND w.`ns_hash` = c.`ns_hash` AND w.`checkpoint_id` = c.`checkpoint_id`"
    )
    sends = (
        _fields(KIND_SEND, "c", write_fields) + ", NULL, w.`blob` "
        f"FROM c JOIN {wr} w ON w.`thread_id` = c.`thread_id` "
        "AND w.`ns_hash` = c.`ns_hash` AND w.`checkpoint_id` = c.`parent_checkpoint_id` "
        f"AND w.`channel` = '{TASKS}' WHERE c.`v` < 4"
    )
    if backend == "mysql":
        # Expand refs ([[channel, version], ...]) into rows without JSON_TABLE: a recursive CTE
        # walks the array, reading refs by primary key at each step, and each (channel,
        # version) it yields is a primary-key lookup into the blobs table.
        def ref(n: str, i: int) -> str:
            size = 255 if i == 0 else ID_MAX
            return (
                f"CAST(JSON_UNQUOTE(JSON_EXTRACT(x.`refs`, CONCAT('$[', {n}, '][{i}]'))) "
                f"AS CHAR({size}) CHARACTER SET utf8mb4) COLLATE utf8mb4_bin"
            )

        k = (
            "k (`thread_id`, `ns_hash`, `checkpoint_id`, `n`, `ch`, `ver`) AS ("
            f"SELECT c.`thread_id`, c.`ns_hash`, c.`checkpoint_id`, 0, {ref('0', 0)}, "
            f"{ref('0', 1)} FROM c JOIN {cp} x ON {by_key.format('c')} "
            "WHERE JSON_LENGTH(x.`refs`) > 0 "
            "UNION ALL SELECT k.`thread_id`, k.`ns_hash`, k.`checkpoint_id`, k.`n` + 1, "
            f"{ref('k.`n` + 1', 0)}, {ref('k.`n` + 1', 1)} FROM k JOIN {cp} x "
            f"ON {by_key.format('k')} WHERE k.`n` + 1 < JSON_LENGTH(x.`refs`))"
        )
        blobs = (
            _fields(KIND_BLOB, "k", "b.`channel`, NULL, b.`type`, NULL, NULL") + ", NULL, b.`blob` "
            f"FROM k JOIN {bl} b ON b.`thread_id` = k.`thread_id` "
            "AND b.`ns_hash` = k.`ns_hash` AND b.`channel` = k.`ch` AND b.`version` = k.`ver`"
        )
        return (
            f"WITH RECURSIVE c AS ({c}), {k} "
            f"{head} UNION ALL {blobs} UNION ALL {writes} UNION ALL {sends}"
        )
    blobs = (
        _fields(KIND_BLOB, "c", "b.`channel`, NULL, b.`type`, NULL, NULL") + ", NULL, b.`blob` "
        f"FROM c JOIN {cp} x ON {by_key.format('c')} JOIN json_each(x.`refs`) AS r "
        f"JOIN {bl} b ON b.`thread_id` = c.`thread_id` AND b.`ns_hash` = c.`ns_hash` "
        "AND b.`channel` = json_extract(r.value, '$[0]') "
        "AND b.`version` = json_extract(r.value, '$[1]')"
    )
    return f"WITH c AS ({c}) {head} UNION ALL {blobs} UNION ALL {writes} UNION ALL {sends}"


def _fields(kind: int, src: str, rest: str) -> str:
    """The packed first column of a read row (JSON_ARRAY on MySQL, TiDB and SQLite alike)."""
    return (
        f"SELECT JSON_ARRAY({kind}, {src}.`thread_id`, HEX({src}.`ns_hash`), "
        f"{src}.`checkpoint_id`, {rest})"
    )


@lru_cache(maxsize=256)
def upsert_checkpoint_statement(backend: Backend, t: Tables) -> str:
    """Insert a checkpoint row, or replace its contents (a retried or repeated ``put``)."""
    p = placeholder(backend)
    head = (
        f"INSERT INTO {quote(backend, t.checkpoints)} (`thread_id`, `ns_hash`, `checkpoint_ns`, "
        "`checkpoint_id`, `parent_checkpoint_id`, `v`, `checkpoint`, `metadata`, `refs`) "
        f"VALUES ({p}, {hash_param(backend)}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    )
    cols = ("v", "checkpoint", "metadata", "refs")
    if backend == "mysql":
        return (
            head + " ON DUPLICATE KEY UPDATE " + ", ".join(f"`{c}` = VALUES(`{c}`)" for c in cols)
        )
    return (
        head
        + " ON CONFLICT (`thread_id`, `ns_hash`, `checkpoint_id`) DO UPDATE SET "
        + ", ".join(f"`{c}` = excluded.`{c}`" for c in cols)
    )


@lru_cache(maxsize=256)
def touch_thread_statement(backend: Backend, t: Tables) -> str:
    """Keep the thread's row current after a checkpoint upsert, in the same round trip.

    Parameters: thread_id, user_id (``NULL`` keeps the stored one) and, on SQLite, thread_id
    again. On MySQL and TiDB the count grows by ``ROW_COUNT() = 1``: 1 when the upsert just
    before it inserted a new checkpoint, 0 when it found it stored (a retried or repeated
    ``put``), so a retry never counts twice. On SQLite the count is taken afresh.
    """
    th = quote(backend, t.threads)
    if backend == "mysql":
        return (
            f"INSERT INTO {th} (`thread_id`, `user_id`, `last_activity`, `checkpoints`) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6), ROW_COUNT() = 1) ON DUPLICATE KEY UPDATE "
            "`user_id` = COALESCE(VALUES(`user_id`), `user_id`), "
            "`last_activity` = GREATEST(`last_activity`, VALUES(`last_activity`)), "
            "`checkpoints` = `checkpoints` + VALUES(`checkpoints`)"
        )
    return (
        f"INSERT INTO {th} (thread_id, user_id, last_activity, checkpoints) "
        f"VALUES (?, ?, {SQLITE_NOW}, (SELECT COUNT(*) FROM {quote(backend, t.checkpoints)} "
        "WHERE thread_id = ?)) ON CONFLICT (thread_id) DO UPDATE SET "
        "user_id = COALESCE(excluded.user_id, user_id), "
        "last_activity = MAX(last_activity, excluded.last_activity), "
        "checkpoints = excluded.checkpoints"
    )


@lru_cache(maxsize=1024)
def insert_blobs_statement(backend: Backend, t: Tables, rows: int) -> str:
    """Insert ``rows`` blobs; an existing (channel, version) is left as it is."""
    p = placeholder(backend)
    row = f"({p}, {hash_param(backend)}, {p}, {p}, {p}, {p})"
    head = (
        f"INSERT INTO {quote(backend, t.blobs)} "
        "(`thread_id`, `ns_hash`, `channel`, `version`, `type`, `blob`) VALUES "
        + ", ".join([row] * rows)
    )
    if backend == "mysql":
        # Not INSERT IGNORE, which would also turn real errors (data too long) into warnings.
        return head + " ON DUPLICATE KEY UPDATE `thread_id` = `thread_id`"
    return head + " ON CONFLICT DO NOTHING"


@lru_cache(maxsize=1024)
def insert_writes_statement(backend: Backend, t: Tables, rows: int) -> str:
    """Insert ``rows`` pending writes.

    A special write (negative ``idx``: error, interrupt, resume, scheduled) replaces an existing
    one; a normal write keeps the first value stored under its (task_id, idx), so a retried or
    repeated call changes nothing.
    """
    p = placeholder(backend)
    row = f"({p}, {hash_param(backend)}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    head = (
        f"INSERT INTO {quote(backend, t.writes)} (`thread_id`, `ns_hash`, `checkpoint_id`, "
        "`task_id`, `idx`, `task_path`, `channel`, `type`, `blob`) VALUES "
        + ", ".join([row] * rows)
    )
    cols = ("task_path", "channel", "type", "blob")
    if backend == "mysql":
        return (
            head
            + " ON DUPLICATE KEY UPDATE "
            + ", ".join(f"`{c}` = IF(`idx` < 0, VALUES(`{c}`), `{c}`)" for c in cols)
        )
    return (
        head
        + " ON CONFLICT (`thread_id`, `ns_hash`, `checkpoint_id`, `task_id`, `idx`) DO UPDATE SET "
        + ", ".join(f"`{c}` = excluded.`{c}`" for c in cols)
        + " WHERE excluded.`idx` < 0"
    )


@lru_cache(maxsize=256)
def row_inserter(
    builder: Callable[[Backend, Tables, int], str], backend: Backend, t: Tables
) -> Callable[[int], str]:
    """``builder`` for one table set, as the single callable per table that a grouped write
    merges inserts by (:class:`~tidb_memory._writes.RowInsert`)."""
    return partial(builder, backend, t)


@lru_cache(maxsize=256)
def delete_thread_statements(backend: Backend, t: Tables, batch: int) -> tuple[str, ...]:
    """Delete a thread, checkpoints first (readers stop seeing it), in bounded batches."""
    p = placeholder(backend)
    limit = f" LIMIT {int(batch)}" if backend == "mysql" else ""
    return tuple(
        f"DELETE FROM {quote(backend, name)} WHERE `thread_id` = {p}{limit}"
        for name in (t.checkpoints, t.writes, t.blobs)
    )
