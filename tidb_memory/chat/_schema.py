"""The chat schema: the message and sessions tables' DDL for each backend, their versions
(:data:`MIGRATIONS`), the layout check, and the once-per-process setup that runs them.

The message table (MySQL family; SQLite mirrors it)::

    session_id  VARCHAR(255) utf8mb4_bin   the conversation
    seq         BIGINT                     order within the session, assigned by the append
    msg_key     CHAR(32) ascii_bin         client-generated key: makes retried appends idempotent
    message     JSON                       the message, as message_to_dict() gives it
    metadata    JSON NULL                  optional per-message metadata, kept beside the message
    created_at  DATETIME(6)                UTC, microseconds
    PRIMARY KEY (session_id, seq) CLUSTERED on TiDB: a session reads as one contiguous range

TiDB-only clauses sit in executable comments (``/*T![clustered_index] ... */``), which MySQL and
MariaDB read as plain comments. Every table declares ``utf8mb4``/``utf8mb4_bin``: MariaDB's
default collation is case-insensitive, and session ids must compare exactly.

Setup (``CREATE TABLE IF NOT EXISTS``, a layout check, the schema version) runs on the first use
of a table in a process, once per (database, table), never at construction and never per call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from .._checks import ID_MAX_CHARS, ago, check_table_name
from .._dialect import quote as quote
from .._dialect import table_columns as table_columns
from .._process import _done as _done
from ..errors import InvalidInputError, SchemaError

if TYPE_CHECKING:
    from ..engine import Backend, Connection, Database

__all__ = [
    "DEFAULT_TABLE_NAME",
    "MIGRATIONS",
    "MIGRATIONS_TABLE",
    "SESSIONS_TABLE",
    "SCHEMA_VERSION",
    "applied_versions",
    "check_table_name",
    "create_table_statements",
    "describe_layout",
    "ensure_schema",
    "quote",
    "table_columns",
]

DEFAULT_TABLE_NAME = "langchain_message_store"
MIGRATIONS_TABLE = "tidb_memory_migrations"
SESSIONS_TABLE = "tidb_memory_sessions"
SESSION_ID_MAX_CHARS = ID_MAX_CHARS
MSG_KEY_INDEX = "uk_msg_key"

#: The columns this version reads and writes.
COLUMNS = ("session_id", "seq", "msg_key", "message", "metadata", "created_at")
#: Version 1's columns: every later version keeps them (migrations only add), so a table
#: without them is foreign whatever its version.
V1_COLUMNS = frozenset(("session_id", "seq", "msg_key", "message", "metadata", "created_at"))
#: langchain-community's TiDBChatMessageHistory table: id, session_id, message, create_time.
SEED_COLUMNS = frozenset({"id", "session_id", "message", "create_time"})


def ttl_clause(ttl: timedelta | None) -> str:
    """TiDB's table TTL, as executable comments that MySQL and MariaDB skip.

    Example::

        >>> ttl_clause(timedelta(days=30))
        " /*T![ttl] TTL=`created_at` + INTERVAL 30 DAY */ /*T![ttl] TTL_ENABLE='ON' */"
    """
    if ttl is None:
        return ""
    seconds = int(ttl.total_seconds())
    for unit, size in (("DAY", 86400), ("HOUR", 3600), ("MINUTE", 60), ("SECOND", 1)):
        if seconds % size == 0:
            interval = f"{seconds // size} {unit}"
            break
    return f" /*T![ttl] TTL=`created_at` + INTERVAL {interval} */ /*T![ttl] TTL_ENABLE='ON' */"


def check_ttl(ttl: object) -> timedelta | None:
    """Return ``ttl`` if it is ``None`` or a positive timedelta of whole seconds.

    Raises:
        InvalidInputError: anything else, or a ttl reaching back before year 1 (which no read
            could compute its bound for).
    """
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta) or ttl.total_seconds() < 1 or ttl.microseconds:
        raise InvalidInputError("ttl must be a timedelta of at least one whole second")
    ago(ttl, "ttl")
    return ttl


def create_table_statements(
    backend: Backend, table: str, *, ttl: timedelta | None = None
) -> list[str]:
    """The DDL that creates ``table``, the sessions table and the migrations table, in order."""
    t = quote(backend, table)
    m = quote(backend, MIGRATIONS_TABLE)
    st = quote(backend, SESSIONS_TABLE)
    if backend == "mysql":
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (\n"
            "  `session_id` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,\n"
            "  `seq` BIGINT NOT NULL,\n"
            "  `msg_key` CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,\n"
            "  `message` JSON NOT NULL,\n"
            "  `metadata` JSON NULL,\n"
            "  `created_at` DATETIME(6) NOT NULL,\n"
            "  PRIMARY KEY (`session_id`, `seq`) /*T![clustered_index] CLUSTERED */,\n"
            f"  UNIQUE KEY `{MSG_KEY_INDEX}` (`msg_key`),\n"
            "  KEY `ix_created_at` (`created_at`)\n"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" + ttl_clause(ttl),
            f"CREATE TABLE IF NOT EXISTS {st} (\n"
            "  `table_name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,\n"
            "  `session_id` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,\n"
            "  `user_id` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,\n"
            "  `title` VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,\n"
            "  `metadata` JSON NULL,\n"
            "  `updated_at` DATETIME(6) NOT NULL,\n"
            "  PRIMARY KEY (`table_name`, `session_id`) /*T![clustered_index] CLUSTERED */,\n"
            "  KEY `ix_user` (`table_name`, `user_id`)\n"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            f"CREATE TABLE IF NOT EXISTS {m} (\n"
            "  `table_name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,\n"
            "  `version` INT NOT NULL,\n"
            "  `applied_at` DATETIME(6) NOT NULL,\n"
            "  PRIMARY KEY (`table_name`, `version`) /*T![clustered_index] CLUSTERED */\n"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ]
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "  session_id TEXT NOT NULL,\n"
        "  seq INTEGER NOT NULL,\n"
        "  msg_key TEXT NOT NULL,\n"
        "  message TEXT NOT NULL,\n"
        "  metadata TEXT NULL,\n"
        "  created_at TEXT NOT NULL,\n"
        "  PRIMARY KEY (session_id, seq),\n"
        f"  CONSTRAINT {MSG_KEY_INDEX} UNIQUE (msg_key)\n"
        ") WITHOUT ROWID",
        f'CREATE INDEX IF NOT EXISTS "{table}_created_at" ON {t} (created_at)',
        f"CREATE TABLE IF NOT EXISTS {st} (\n"
        "  table_name TEXT NOT NULL,\n"
        "  session_id TEXT NOT NULL,\n"
        "  user_id TEXT NULL,\n"
        "  title TEXT NULL,\n"
        "  metadata TEXT NULL,\n"
        "  updated_at TEXT NOT NULL,\n"
        "  PRIMARY KEY (table_name, session_id)\n"
        ")",
        f'CREATE INDEX IF NOT EXISTS "{SESSIONS_TABLE}_user" ON {st} (table_name, user_id)',
        f"CREATE TABLE IF NOT EXISTS {m} (\n"
        "  table_name TEXT NOT NULL,\n"
        "  version INTEGER NOT NULL,\n"
        "  applied_at TEXT NOT NULL,\n"
        "  PRIMARY KEY (table_name, version)\n"
        ")",
    ]


#: A migration: (version, description, statements(backend, table) -> DDL). Append only: a
#: released version never changes. Statements should be idempotent where the dialect allows
#: (``IF NOT EXISTS``), because a version is recorded only after all its statements succeeded.
Migration = tuple[int, str, Callable[["Backend", str], list[str]]]


def _v1(backend: Backend, table: str) -> list[str]:
    return create_table_statements(backend, table)


#: Every schema version of the message table, oldest first. Version 1 is the baseline:
#: :func:`create_table_statements` always builds the latest layout, so a table created fresh
#: records every version at once, and only existing tables run the later entries.
MIGRATIONS: tuple[Migration, ...] = ((1, "message, sessions and migrations tables", _v1),)
#: The schema version this tidb-memory writes and reads.
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _record_version_statement(backend: Backend) -> str:
    m = quote(backend, MIGRATIONS_TABLE)
    if backend == "mysql":
        return (
            f"INSERT INTO {m} (`table_name`, `version`, `applied_at`) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE `version` = `version`"
        )
    return (
        f"INSERT INTO {m} (table_name, version, applied_at) "
        "VALUES (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT DO NOTHING"
    )


def check_layout(table: str, columns: set[str]) -> None:
    """Raise :class:`SchemaError` unless ``columns`` are this version's message table."""
    op = "schema check"
    if not columns:
        raise SchemaError(
            f"table {table!r} does not exist; create it with `tidb-memory init --table "
            f"{table}` or acreate_tables()/create_tables(), or construct the history with "
            "create_table=True",
            operation=op,
            table=table,
        )
    if columns >= SEED_COLUMNS and "seq" not in columns:
        raise SchemaError(
            f"table {table!r} has the layout of langchain-community's TiDBChatMessageHistory "
            "(id, session_id, message, create_time). tidb-memory will not alter it silently: "
            f"convert it with `tidb-memory migrate --table {table}`, or use another table_name",
            operation=op,
            table=table,
        )
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise SchemaError(
            f"table {table!r} is not a tidb-memory message table (missing columns: "
            f"{', '.join(missing)}); use another table_name",
            operation=op,
            table=table,
        )


def describe_layout(columns: set[str]) -> str:
    """``"missing"``, ``"seed"`` (langchain-community's table), ``"current"`` or ``"foreign"``."""
    if not columns:
        return "missing"
    if _is_seed(columns):
        return "seed"
    return "current" if set(COLUMNS) <= columns else "foreign"


async def ensure_schema(
    db: Database,
    table: str,
    *,
    create: bool,
    ttl: timedelta | None = None,
    upgrade: bool = False,
) -> None:
    """First use of ``table`` in this process: create it (if ``create``), check it, record it.

    Runs once per (database, table). Concurrent first uses may both run it: every step is
    idempotent. With ``upgrade``, pending :data:`MIGRATIONS` are applied (what ``tidb-memory
    init`` and ``acreate_tables()`` do); without it, a table behind this version raises
    :class:`SchemaError` naming ``tidb-memory init``: no request of a web app ever runs an
    ``ALTER TABLE`` as a side effect.
    """
    if (db.key, table) in _done:
        return
    async with db.connection() as conn:
        await _setup(conn, db, table, create=create, ttl=ttl, upgrade=upgrade)
    _done.add((db.key, table))


def _is_seed(columns: set[str]) -> bool:
    return columns >= SEED_COLUMNS and "seq" not in columns


async def _setup(
    conn: Connection,
    db: Database,
    table: str,
    *,
    create: bool,
    ttl: timedelta | None,
    upgrade: bool = False,
) -> None:
    backend = conn.backend
    columns = await table_columns(conn, table)
    if columns and not columns >= V1_COLUMNS:
        # Seed layout or foreign: raise before anything is created or recorded beside it.
        check_layout(table, columns)
    if create:
        for statement in create_table_statements(backend, table, ttl=ttl):
            await conn.execute(statement, ())
        if not columns:
            # Created just now, at the latest layout: every version is in it.
            columns = await table_columns(conn, table)
            for number, _description, _statements in MIGRATIONS:
                await conn.execute(_record_version_statement(backend), (table, number))
        else:
            columns = await _upgrade(conn, table, columns, apply=upgrade)
    check_layout(table, columns)
    if backend == "mysql" and db.server_info is None:
        row = (await conn.fetchall("SELECT VERSION(), @@max_allowed_packet", ()))[0]
        server = str(row[0])
        db.server_info = {
            "version": server,
            "tidb": "tidb" in server.lower(),
            "max_allowed_packet": int(row[1]),
        }


def _versions_statement(backend: Backend) -> str:
    m = quote(backend, MIGRATIONS_TABLE)
    return f"SELECT version FROM {m} WHERE table_name = {'%s' if backend == 'mysql' else '?'}"


async def applied_versions(conn: Connection, table: str) -> set[int]:
    """The schema versions recorded for ``table``. One round trip."""
    rows = await conn.fetchall(_versions_statement(conn.backend), (table,))
    return {int(row[0]) for row in rows}


#: A lock name under MySQL's 64 characters, per (database, table).
_LOCK_NAME = "CONCAT('tidb_memory:', MD5(CONCAT(DATABASE(), '.', %s)))"


async def _upgrade(conn: Connection, table: str, columns: set[str], *, apply: bool) -> set[str]:
    """Bring an existing table to :data:`SCHEMA_VERSION`; returns its columns afterwards.

    Each pending migration runs in version order and is recorded only after all its
    statements succeeded, so an interrupted upgrade resumes at the migration that failed.
    """
    backend = conn.backend
    applied = await applied_versions(conn, table)
    if not applied:
        # A table made before versions were recorded (or by hand, with this DDL): the baseline.
        await conn.execute(_record_version_statement(backend), (table, MIGRATIONS[0][0]))
        applied = {MIGRATIONS[0][0]}
    current = max(applied)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"table {table!r} is at schema version {current}, newer than this tidb-memory "
            f"understands ({SCHEMA_VERSION}); upgrade tidb-memory",
            operation="schema check",
            table=table,
        )
    if current == SCHEMA_VERSION:
        return columns
    if not apply:
        raise SchemaError(
            f"table {table!r} is at schema version {current}; this tidb-memory needs "
            f"{SCHEMA_VERSION}. Upgrade it with `tidb-memory init --table {table}` (or "
            "acreate_tables())",
            operation="schema check",
            table=table,
        )
    locked = False
    if backend == "mysql":
        # Two upgraders at once would run the same ALTER twice: serialise them.
        row = await conn.fetchall(f"SELECT GET_LOCK({_LOCK_NAME}, 60)", (table,))
        if not row or row[0][0] != 1:
            raise SchemaError(
                f"another upgrade of {table!r} held its lock for 60 s; try again",
                operation="upgrade",
                table=table,
            )
        locked = True
    try:
        newest = max(await applied_versions(conn, table))  # another upgrader may have run
        for version, _description, statements in MIGRATIONS:
            if version <= newest:
                continue
            for statement in statements(backend, table):
                await conn.execute(statement, ())
            await conn.execute(_record_version_statement(backend), (table, version))
    finally:
        if locked:
            await conn.fetchall(f"SELECT RELEASE_LOCK({_LOCK_NAME})", (table,))
    return await table_columns(conn, table)


def forget(db_key: str | None = None) -> None:
    """Forget which tables were set up (all, or one database's), so setup runs again."""
    if db_key is None:
        _done.clear()
    else:
        for item in [d for d in _done if d[0] == db_key]:
            _done.discard(item)
