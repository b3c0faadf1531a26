"""Versioned schema migrations: a ledger table, a lock, and versions recorded after success.

A subsystem (the LangGraph store, the saver) declares its schema as a tuple of
:class:`Migration`, append only: a version, once released, never changes. :func:`apply_migrations`
creates the ledger if needed, takes a server-side lock on MySQL and TiDB so that concurrent
setups run one at a time, skips the versions the ledger already holds and records each new
version only after all of its statements succeeded. Every statement must be idempotent
(``IF NOT EXISTS`` or a guarded ``ALTER``), so a setup interrupted between a statement and its
record simply runs again.

Example::

    MIGRATIONS = (Migration(1, "items table", lambda backend: [create_items(backend)]),)
    async with db.connection() as conn:
        await apply_migrations(conn, database="test", ledger="store_migrations",
                               migrations=MIGRATIONS)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ._dialect import quote, table_columns
from ._retry import Verdict, classify, error_code
from .engine import Backend, Connection
from .errors import SchemaError, StorageError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "Migration", "apply_migrations", "ledger_statement"]

#: Seconds a setup waits for another process's setup of the same ledger.
DEFAULT_LOCK_TIMEOUT = 60

_MYSQL_TABLE = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_CLUSTERED = " /*T![clustered_index] CLUSTERED */"


class Migration(NamedTuple):
    """One schema version: its number, a description for the ledger, and its statements."""

    version: int
    description: str
    statements: Callable[[Backend], Sequence[str]]


def ledger_statement(backend: Backend, ledger: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a ledger ``(v, description, applied_at)``."""
    m = quote(backend, ledger)
    if backend == "mysql":
        return (
            f"CREATE TABLE IF NOT EXISTS {m} (\n"
            "  `v` INT NOT NULL,\n"
            "  `description` VARCHAR(255) NOT NULL,\n"
            "  `applied_at` DATETIME(6) NOT NULL,\n"
            f"  PRIMARY KEY (`v`){_CLUSTERED}\n" + _MYSQL_TABLE
        )
    return (
        f"CREATE TABLE IF NOT EXISTS {m} (\n"
        "  v INTEGER NOT NULL PRIMARY KEY,\n"
        "  description TEXT NOT NULL,\n"
        "  applied_at TEXT NOT NULL\n"
        ")"
    )


def _record_statement(backend: Backend, ledger: str) -> str:
    m = quote(backend, ledger)
    if backend == "mysql":
        return (
            f"INSERT INTO {m} (`v`, `description`, `applied_at`) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE `v` = `v`"
        )
    return (
        f"INSERT INTO {m} (v, description, applied_at) "
        "VALUES (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT DO NOTHING"
    )


async def _lock(conn: Connection, name: str, wait: int, ledger: str) -> str | None:
    """Take the named lock; None when the server has no working ``GET_LOCK``."""
    try:
        row = await conn.fetchall("SELECT GET_LOCK(%s, %s)", (name, wait))
    except Exception as exc:
        code = error_code(exc)
        if code is None or code < 1000 or classify(exc) is not Verdict.FATAL:
            raise
        # Old TiDB releases make GET_LOCK a no-op that must be enabled: go on unguarded,
        # every step is idempotent.
        return None
    if not row or row[0][0] != 1:
        raise StorageError(
            f"setup waited {wait}s for another setup of {ledger!r} to finish; try again",
            operation="setup",
            table=ledger,
        )
    return name


async def apply_migrations(
    conn: Connection,
    *,
    database: str,
    ledger: str,
    migrations: Sequence[Migration],
    owner_hint: str = "choose another table prefix",
    lock_timeout: int = DEFAULT_LOCK_TIMEOUT,
) -> list[int]:
    """Apply the versions of ``migrations`` that ``ledger`` does not hold; return them.

    Raises:
        SchemaError: ``ledger`` exists but is not a tidb-memory ledger (``owner_hint`` says
            what to do).
        StorageError: another setup held the lock for longer than ``lock_timeout`` seconds.
    """
    backend = conn.backend
    await conn.execute(ledger_statement(backend, ledger), ())
    if not {"v", "description", "applied_at"} <= await table_columns(conn, ledger):
        raise SchemaError(
            f"table {ledger!r} exists but was not made by tidb-memory; {owner_hint}",
            operation="setup",
            table=ledger,
        )
    lock = None
    if backend == "mysql":
        digest = hashlib.md5(f"{database}.{ledger}".encode(), usedforsecurity=False)
        lock = await _lock(conn, "tidb_memory:" + digest.hexdigest(), lock_timeout, ledger)
    applied: list[int] = []
    try:
        m = quote(backend, ledger)
        done = {int(r[0]) for r in await conn.fetchall(f"SELECT v FROM {m}", ())}
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements(backend):
                await conn.execute(statement, ())
            await conn.execute(
                _record_statement(backend, ledger), (migration.version, migration.description)
            )
            applied.append(migration.version)
    finally:
        if lock is not None:
            await conn.fetchall("SELECT RELEASE_LOCK(%s)", (lock,))
    return applied
