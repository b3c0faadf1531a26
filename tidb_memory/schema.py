"""Table definitions: the DDL for each backend, and the once-per-process setup that runs it.

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

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError, SchemaError

if TYPE_CHECKING:
    from .engine import Backend, Connection, Database

__all__ = [
    "DEFAULT_TABLE_NAME",
    "MIGRATIONS_TABLE",
    "SESSIONS_TABLE",
    "SCHEMA_VERSION",
    "check_table_name",
    "create_table_statements",
    "ensure_schema",
    "quote",
]

DEFAULT_TABLE_NAME = "langchain_message_store"
MIGRATIONS_TABLE = "tidb_memory_migrations"
SESSIONS_TABLE = "tidb_memory_sessions"
SCHEMA_VERSION = 1
SESSION_ID_MAX_CHARS = 255
MSG_KEY_INDEX = "uk_msg_key"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: The columns this version reads and writes.
COLUMNS = ("session_id", "seq", "msg_key", "message", "metadata", "created_at")
#: langchain-community's TiDBChatMessageHistory table: id, session_id, message, create_time.
SEED_COLUMNS = frozenset({"id", "session_id", "message", "create_time"})


def check_table_name(name: object) -> str:
    """Return ``name`` if it is a plain identifier of at most 64 characters.

    Raises:
        InvalidInputError: anything else, before any I/O.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidInputError(
            f"table_name {name!r} is not a plain identifier: use 1-64 letters, digits and "
            "underscores, not starting with a digit"
        )
    return name


def quote(backend: Backend, name: str) -> str:
    """Quote a checked identifier for ``backend``."""
    return f"`{name}`" if backend == "mysql" else f'"{name}"'


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
    """Return ``ttl`` if it is ``None`` or a positive timedelta of whole seconds."""
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta) or ttl.total_seconds() < 1 or ttl.microseconds:
        raise InvalidInputError("ttl must be a timedelta of at least one whole second")
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


def _columns_statement(backend: Backend, table: str) -> tuple[str, tuple[Any, ...]]:
    if backend == "mysql":
        return (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table,),
        )
    return ("SELECT name FROM pragma_table_info(?)", (table,))


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
            f"table {table!r} does not exist; call acreate_tables()/create_tables(), or "
            "construct the history with create_table=True",
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


_done: set[tuple[str, str]] = set()


async def ensure_schema(
    db: Database, table: str, *, create: bool, ttl: timedelta | None = None
) -> None:
    """First use of ``table`` in this process: create it (if ``create``), check it, record it.

    Runs once per (database, table). Concurrent first uses may both run it: every step is
    idempotent.
    """
    if (db.key, table) in _done:
        return
    async with db.connection() as conn:
        await _setup(conn, db, table, create=create, ttl=ttl)
    _done.add((db.key, table))


async def _setup(
    conn: Connection, db: Database, table: str, *, create: bool, ttl: timedelta | None
) -> None:
    backend = conn.backend
    if create:
        for statement in create_table_statements(backend, table, ttl=ttl):
            await conn.execute(statement, ())
    sql, params = _columns_statement(backend, table)
    columns = {str(row[0]).lower() for row in await conn.fetchall(sql, params)}
    check_layout(table, columns)
    if create:
        await conn.execute(_record_version_statement(backend), (table, SCHEMA_VERSION))
    if backend == "mysql" and db.server_info is None:
        row = (await conn.fetchall("SELECT VERSION(), @@max_allowed_packet", ()))[0]
        version = str(row[0])
        db.server_info = {
            "version": version,
            "tidb": "tidb" in version.lower(),
            "max_allowed_packet": int(row[1]),
        }


def forget(db_key: str | None = None) -> None:
    """Forget which tables were set up (all, or one database's), so setup runs again."""
    if db_key is None:
        _done.clear()
    else:
        for item in [d for d in _done if d[0] == db_key]:
            _done.discard(item)
