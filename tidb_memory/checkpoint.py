"""LangGraph checkpointer on TiDB, MySQL, MariaDB or SQLite: :class:`AsyncTiDBSaver`.

One object serves both faces of a graph: ``ainvoke`` calls the ``a*`` coroutines on any event
loop, and ``invoke`` calls the synchronous methods from LangGraph's executor threads. Each sync
method is one line that runs its coroutine through the shared bridge (``Database.run_sync``), so
both faces share one code path, the per-loop pools, the retry policy and the error types of the
rest of tidb-memory. There is no instance-wide lock: concurrent calls run on as many pooled
connections as they need.

Tables (``table_prefix`` defaults to ``checkpoint``, which gives LangGraph's usual names)::

    checkpoints             PK (thread_id, ns_hash, checkpoint_id)
        checkpoint_ns, parent_checkpoint_id, v, checkpoint (JSON text with the inline values),
        metadata (JSON), refs (JSON list of the [channel, version] pairs kept in blobs)
    checkpoint_blobs        PK (thread_id, ns_hash, channel, version)   type, blob
    checkpoint_writes       PK (thread_id, ns_hash, checkpoint_id, task_id, idx)
        task_path, channel, type, blob
    checkpoint_migrations   PK (v)   description, applied_at

``ns_hash`` is the 16-byte MD5 of ``checkpoint_ns``, computed client-side: nested subgraph
namespaces outgrow index limits, so the full namespace sits in its own column. Every table is
``utf8mb4``/``utf8mb4_bin`` with a ``/*T![clustered_index] CLUSTERED */`` primary key.

Round trips: ``aget_tuple`` 1 (one statement returns the checkpoint, its blobs and its pending
writes as ``UNION ALL`` rows tagged with a kind column; the blobs of exactly the versions the
checkpoint references are found by primary-key lookups, expanding ``refs`` with a recursive CTE
instead of ``JSON_TABLE``, which TiDB lacks); ``aput`` 2 (the new blobs in one multi-row insert,
then the checkpoint row) or 1 when every changed value is inline; ``aput_writes`` 1; ``alist`` 1
per page of :attr:`AsyncTiDBSaver.list_page_size` checkpoints.

Every write is keyed and idempotent, so the retry policy may repeat one after a lost connection
without duplicating or losing anything. Blobs are content-addressed by (channel, version), so
they are written first and the checkpoint row is the commit point; a blob orphaned by a failed
``aput`` is harmless and is reused by the retry. Because every write is idempotent, the writes of
concurrent calls may also share a round trip (:meth:`Database.execute_grouped`).

The SQL avoids what TiDB does not run (``JSON_TABLE``, the ``INSERT ... AS new`` row alias,
``RETURNING``, ``CREATE INDEX IF NOT EXISTS``), and never sends a ``bytes`` parameter to aiomysql
(PyMySQL 1.2 broke them): blobs travel as :class:`~tidb_memory.engine.Binary` values, which the
engine writes as ``FROM_BASE64('...')``, and the namespace hash as hex decoded by ``UNHEX``.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import TASKS
from sqlalchemy.ext.asyncio import AsyncEngine

from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy, Verdict, classify, error_code, retrying
from .engine import Backend, Binary, Connection, Database, get_database
from .errors import InvalidInputError, MessageTooLargeError, SchemaError, StorageError
from .schema import check_table_name, quote

__all__ = [
    "DEFAULT_CHECKPOINT_PREFIX",
    "DEFAULT_DELETE_BATCH",
    "DEFAULT_LIST_PAGE_SIZE",
    "DEFAULT_MAX_BLOB_BYTES",
    "MIGRATIONS",
    "AsyncTiDBSaver",
    "CheckpointTooLargeError",
    "TiDBSaver",
]

_List = builtins.list  # the saver defines a method called ``list``

DEFAULT_CHECKPOINT_PREFIX = "checkpoint"
#: TiDB's default row limit (``txn-entry-size-limit``): 6 MiB.
DEFAULT_MAX_BLOB_BYTES = 6 * 1024 * 1024
#: Checkpoints per ``alist`` statement.
DEFAULT_LIST_PAGE_SIZE = 50
#: Rows per ``DELETE`` of ``delete_thread`` on MySQL and TiDB (TiDB caps a transaction).
DEFAULT_DELETE_BATCH = 1000
#: Strings longer than this are stored as blobs even when primitives are inlined, so that the
#: checkpoint row stays small.
INLINE_STR_MAX = 4096
#: Seconds ``setup`` waits for another process's migration to finish.
SETUP_LOCK_TIMEOUT = 60
#: Budget of parameter text per insert statement (MariaDB's max_allowed_packet is 16 MiB).
_STATEMENT_BYTES = 12 * 1024 * 1024
#: SQLite's bound-parameter limit on old builds is 999.
_SQLITE_PARAMS = 900
_THREAD_ID_MAX = 255
_ID_MAX = 128
_U64 = 2**64
_I64 = -(2**63)

_KIND_CHECKPOINT, _KIND_BLOB, _KIND_WRITE, _KIND_SEND = 0, 1, 2, 3


class CheckpointTooLargeError(MessageTooLargeError):
    """A channel value, a pending write or a checkpoint row is over ``max_blob_bytes``.

    Nothing of the call was written. The message names the channel and the ways out.
    """


# --- tables and migrations -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tables:
    checkpoints: str
    blobs: str
    writes: str
    migrations: str

    @classmethod
    def from_prefix(cls, prefix: object) -> _Tables:
        if not isinstance(prefix, str) or not prefix:
            raise InvalidInputError("table_prefix must be a non-empty str")
        return cls(
            checkpoints=check_table_name(f"{prefix}s"),
            blobs=check_table_name(f"{prefix}_blobs"),
            writes=check_table_name(f"{prefix}_writes"),
            migrations=check_table_name(f"{prefix}_migrations"),
        )


_MYSQL_TABLE = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_CLUSTERED = " /*T![clustered_index] CLUSTERED */"


def _v1(backend: Backend, t: _Tables) -> list[str]:
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


#: The schema, as (version, description, statements). Append only: a version, once released,
#: never changes. Every statement must be idempotent (``IF NOT EXISTS``, or a guarded ALTER), so
#: that a setup interrupted between a DDL and its version record can simply run again.
MIGRATIONS: tuple[tuple[int, str, Any], ...] = ((1, "checkpoints, blobs and writes tables", _v1),)


def _migrations_table(backend: Backend, t: _Tables) -> str:
    m = quote(backend, t.migrations)
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


def _migrations_columns(backend: Backend, t: _Tables) -> tuple[str, tuple[Any, ...]]:
    if backend == "mysql":
        return (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (t.migrations,),
        )
    return ("SELECT name FROM pragma_table_info(?)", (t.migrations,))


def _record_version(backend: Backend, t: _Tables) -> str:
    m = quote(backend, t.migrations)
    if backend == "mysql":
        return (
            f"INSERT INTO {m} (`v`, `description`, `applied_at`) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE `v` = `v`"
        )
    return (
        f"INSERT INTO {m} (v, description, applied_at) "
        "VALUES (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT DO NOTHING"
    )


# --- statements ----------------------------------------------------------------------------


def _p(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


def _hash_param(backend: Backend) -> str:
    return "UNHEX(%s)" if backend == "mysql" else "?"


@dataclass(frozen=True, slots=True)
class _Select:
    """Which checkpoints a read selects (the ``c`` CTE); every field is part of the SQL text."""

    thread: bool = False
    ns: bool = False
    checkpoint_id: bool = False
    latest: bool = False
    filters: tuple[tuple[str, str], ...] = ()
    before: bool = False
    cursor: bool = False
    limit: bool = False


def _filter_sql(backend: Backend, filters: tuple[tuple[str, str], ...]) -> _List[str]:
    if not filters:
        return []
    if backend == "mysql":
        return ["JSON_CONTAINS(`metadata`, %s)"]
    # SQLite has no JSON containment: compare key by key, with the JSON type.
    out: _List[str] = []
    for _key, kind in filters:
        path = "json_extract(`metadata`, ?)"
        typ = "json_type(`metadata`, ?)"
        if kind == "null":
            out.append(f"{typ} = 'null'")
        elif kind == "true":
            out.append(f"{typ} = 'true'")
        elif kind == "false":
            out.append(f"{typ} = 'false'")
        elif kind == "text":
            out.append(f"({typ} = 'text' AND {path} = ?)")
        elif kind == "number":
            out.append(f"({typ} IN ('integer', 'real') AND {path} = ?)")
        else:
            out.append(f"{path} = json(?)")
    return out


@lru_cache(maxsize=512)
def read_statement(backend: Backend, t: _Tables, sel: _Select) -> str:
    """One statement returning checkpoints with their blobs, pending writes and (for
    checkpoints older than format 4) the pending sends of their parents.

    Rows: ``(fields, metadata, data)``, where ``fields`` is the JSON array ``[kind, thread_id,
    ns_hex, checkpoint_id, s1, s2, s3, s4, n]``; see :meth:`AsyncTiDBSaver._assemble`. The
    small fields travel packed because the client parses every column's description on every
    read: three columns instead of ten cost a fraction of the CPU.
    """
    p = _p(backend)
    cp, bl, wr = (quote(backend, n) for n in (t.checkpoints, t.blobs, t.writes))
    where: _List[str] = []
    if sel.thread:
        where.append(f"`thread_id` = {p}")
    if sel.ns:
        where.append(f"`ns_hash` = {_hash_param(backend)}")
    if sel.checkpoint_id:
        where.append(f"`checkpoint_id` = {p}")
    where += _filter_sql(backend, sel.filters)
    if sel.before:
        where.append(f"`checkpoint_id` < {p}")
    if sel.cursor:
        h = _hash_param(backend)
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
            _KIND_CHECKPOINT, "x", "x.`parent_checkpoint_id`, NULL, NULL, x.`checkpoint_ns`, x.`v`"
        )
        + ", x.`metadata`, x.`checkpoint` "
        f"FROM c JOIN {cp} x ON {by_key.format('c')}"
    )
    write_fields = "w.`task_id`, w.`channel`, w.`type`, w.`task_path`, w.`idx`"
    writes = (
        _fields(_KIND_WRITE, "c", write_fields) + ", NULL, w.`blob` "
        f"FROM c JOIN {wr} w ON w.`thread_id` = c.`thread_id` "
        "AND w.`ns_hash` = c.`ns_hash` AND w.`checkpoint_id` = c.`checkpoint_id`"
    )
    sends = (
        _fields(_KIND_SEND, "c", write_fields) + ", NULL, w.`blob` "
        f"FROM c JOIN {wr} w ON w.`thread_id` = c.`thread_id` "
        "AND w.`ns_hash` = c.`ns_hash` AND w.`checkpoint_id` = c.`parent_checkpoint_id` "
        f"AND w.`channel` = '{TASKS}' WHERE c.`v` < 4"
    )
    if backend == "mysql":
        # Expand refs ([[channel, version], ...]) into rows without JSON_TABLE: a recursive CTE
        # walks the array, reading refs by primary key at each step, and each (channel,
        # version) it yields is a primary-key lookup into the blobs table.
        def ref(n: str, i: int) -> str:
            size = 255 if i == 0 else _ID_MAX
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
            _fields(_KIND_BLOB, "k", "b.`channel`, NULL, b.`type`, NULL, NULL")
            + ", NULL, b.`blob` "
            f"FROM k JOIN {bl} b ON b.`thread_id` = k.`thread_id` "
            "AND b.`ns_hash` = k.`ns_hash` AND b.`channel` = k.`ch` AND b.`version` = k.`ver`"
        )
        return (
            f"WITH RECURSIVE c AS ({c}), {k} "
            f"{head} UNION ALL {blobs} UNION ALL {writes} UNION ALL {sends}"
        )
    blobs = (
        _fields(_KIND_BLOB, "c", "b.`channel`, NULL, b.`type`, NULL, NULL") + ", NULL, b.`blob` "
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
def upsert_checkpoint_statement(backend: Backend, t: _Tables) -> str:
    """Insert a checkpoint row, or replace its contents (a retried or repeated ``put``)."""
    p = _p(backend)
    head = (
        f"INSERT INTO {quote(backend, t.checkpoints)} (`thread_id`, `ns_hash`, `checkpoint_ns`, "
        "`checkpoint_id`, `parent_checkpoint_id`, `v`, `checkpoint`, `metadata`, `refs`) "
        f"VALUES ({p}, {_hash_param(backend)}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
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


@lru_cache(maxsize=1024)
def insert_blobs_statement(backend: Backend, t: _Tables, rows: int) -> str:
    """Insert ``rows`` blobs; an existing (channel, version) is left as it is."""
    p = _p(backend)
    row = f"({p}, {_hash_param(backend)}, {p}, {p}, {p}, {p})"
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
def insert_writes_statement(backend: Backend, t: _Tables, rows: int) -> str:
    """Insert ``rows`` pending writes.

    A special write (negative ``idx``: error, interrupt, resume, scheduled) replaces an existing
    one; a normal write keeps the first value stored under its (task_id, idx), so a retried or
    repeated call changes nothing.
    """
    p = _p(backend)
    row = f"({p}, {_hash_param(backend)}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
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
def delete_thread_statements(backend: Backend, t: _Tables, batch: int) -> tuple[str, ...]:
    """Delete a thread, checkpoints first (readers stop seeing it), in bounded batches."""
    p = _p(backend)
    limit = f" LIMIT {int(batch)}" if backend == "mysql" else ""
    return tuple(
        f"DELETE FROM {quote(backend, name)} WHERE `thread_id` = {p}{limit}"
        for name in (t.checkpoints, t.writes, t.blobs)
    )


# --- pure helpers --------------------------------------------------------------------------


def _weight(value: Any) -> int:
    """Roughly the bytes ``value`` adds to a MySQL statement."""
    if isinstance(value, Binary):
        return len(value.data) * 4 // 3 + 16  # base64
    return len(value) if isinstance(value, str) else 8


@lru_cache(maxsize=1024)
def _ns_hash(checkpoint_ns: str) -> bytes:
    return hashlib.md5(checkpoint_ns.encode("utf-8"), usedforsecurity=False).digest()


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def _check_thread_id(thread_id: object) -> str:
    if thread_id is None:
        raise InvalidInputError('config["configurable"]["thread_id"] is required')
    text = str(thread_id)
    if not text or len(text) > _THREAD_ID_MAX:
        raise InvalidInputError(f"thread_id must have 1-{_THREAD_ID_MAX} characters")
    if text[-1] == " ":
        raise InvalidInputError(
            "thread_id must not end with a space: MySQL and TiDB compare 'a ' equal to 'a'"
        )
    return text


def _check_id(name: str, value: object) -> str:
    text = str(value)
    if not text or len(text) > _ID_MAX:
        raise InvalidInputError(f"{name} must have 1-{_ID_MAX} characters, got {len(text)}")
    return text


def _inlinable(value: Any) -> bool:
    """Values kept in the checkpoint's JSON itself: JSON reads them back unchanged."""
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is int:
        return bool(_I64 <= value < _U64)
    if kind is float:
        return math.isfinite(value)
    if kind is str:
        if len(value) > INLINE_STR_MAX:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return False


def _filter_kind(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "number"
    return "json"


def _json(value: Any, what: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise InvalidInputError(f"{what} cannot be stored as JSON: {exc}") from exc


def _too_large(what: str, size: int, limit: int) -> CheckpointTooLargeError:
    return CheckpointTooLargeError(
        f"{what} serialises to {size:,} bytes, over max_blob_bytes={limit:,} (TiDB's default "
        "row limit is 6 MiB); nothing was written. Keep channel values small: store an "
        "append-only channel such as the message list in a DeltaChannel "
        "(langgraph.channels.DeltaChannel), so each checkpoint stores only what changed, or "
        "summarise or trim long conversations (langchain's SummarizationMiddleware, "
        "RemoveMessage), and keep large payloads outside the graph state."
    )


@dataclass(slots=True)
class _Prepared:
    """Everything an ``aput`` sends, computed before any I/O."""

    #: The changed blobs' inserts, then the checkpoint's upsert: in this order, so that a
    #: stored checkpoint never references a blob that is not there.
    statements: _List[tuple[str, _List[Any]]]


@dataclass(slots=True)
class _Query:
    """An ``alist`` request, checked and turned into SQL parameters before any I/O."""

    sel: _Select
    params: _List[Any]


# --- the saver -----------------------------------------------------------------------------


class AsyncTiDBSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on TiDB, MySQL, MariaDB or SQLite; one object, sync and async.

    Example::

        saver = AsyncTiDBSaver("mysql+aiomysql://root@127.0.0.1:3306/test")
        await saver.asetup()                  # once, at deployment: creates the tables
        agent = create_agent(model, tools, checkpointer=saver)
        await agent.ainvoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t1"}})
        agent.invoke(...)                     # the same saver serves sync callers too

    Construction does no I/O. Savers built from equal URLs share one pool per event loop with
    the chat histories.

    Args:
        connection_string: ``mysql://``, ``mysql+pymysql://``, ``mysql+aiomysql://`` or
            ``sqlite+aiosqlite://`` URL; TiDB Cloud's ``ssl_ca``/``ssl_verify_*`` parameters are
            honoured. Defaults to ``$TIDB_DATABASE_URL``, else a local SQLite file.
        engine: an ``AsyncEngine`` the application owns, instead of a URL (see
            :func:`tidb_memory.create_engine`).
        table_prefix: names the tables ``<prefix>s``, ``<prefix>_blobs``, ``<prefix>_writes`` and
            ``<prefix>_migrations``.
        serde: the serializer for channel values and writes; ``JsonPlusSerializer`` by default.
            ``EncryptedSerializer`` works as is.
        engine_args: pool settings for a URL, as for the chat history: ``pool_size``,
            ``max_overflow``, ``pool_timeout``, ``pool_recycle``, ``pool_pre_ping``, ``echo``.
        retry: the retry policy for transient errors.
        inline_primitives: keep ``None``, bool, int, float and short str channel values in the
            checkpoint row itself (as the Postgres saver does). ``False`` sends every value
            through ``serde``, so that an ``EncryptedSerializer`` covers all of them.
        max_blob_bytes: the largest serialised value, write or checkpoint row accepted.

    Raises:
        ConfigurationError: the URL, engine or an option is invalid.
        InvalidInputError: the table prefix is invalid.
    """

    list_page_size: int = DEFAULT_LIST_PAGE_SIZE
    delete_batch: int = DEFAULT_DELETE_BATCH

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        table_prefix: str = DEFAULT_CHECKPOINT_PREFIX,
        serde: SerializerProtocol | None = None,
        engine_args: Mapping[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        inline_primitives: bool = True,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        super().__init__(serde=serde)
        if not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a RetryPolicy")
        if not isinstance(max_blob_bytes, int) or max_blob_bytes < 1:
            raise InvalidInputError("max_blob_bytes must be a positive int")
        if engine is None and connection_string is None:
            from .history import default_url

            connection_string = default_url()
        self.tables = _Tables.from_prefix(table_prefix)
        self.db: Database = get_database(connection_string, engine=engine, engine_args=engine_args)
        self.retry = retry
        self.inline_primitives = bool(inline_primitives)
        self.max_blob_bytes = max_blob_bytes

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(table_prefix={self.tables.checkpoints[:-1]!r}, "
            f"url={self.db.spec.display!r})"
        )

    @property
    def backend(self) -> Backend:
        return self.db.backend

    # -- setup ------------------------------------------------------------------------------

    async def asetup(self) -> None:
        """Create or migrate the tables; run it once at deployment (LangGraph's convention).

        Versioned and idempotent: versions recorded in the migrations table are skipped, and a
        version is recorded only after its DDL succeeded. On MySQL and TiDB concurrent setups
        are serialised with ``GET_LOCK``.

        Raises:
            SchemaError: the migrations table belongs to another tool.
            StorageError: the database failed, or another setup held the lock too long.
        """
        await self.db.run(self._setup)

    def setup(self) -> None:
        """Synchronous :meth:`asetup`."""
        self.db.run_sync(self.asetup)

    async def _setup(self) -> None:
        async def attempt() -> None:
            async with self.db.connection() as conn:
                await self._migrate(conn)

        await retrying(attempt, policy=self.retry, operation="setup", table=self.tables.migrations)

    async def _migrate(self, conn: Connection) -> None:
        backend, t = conn.backend, self.tables
        await conn.execute(_migrations_table(backend, t), ())
        sql, params = _migrations_columns(backend, t)
        columns = {str(row[0]).lower() for row in await conn.fetchall(sql, params)}
        if not {"v", "description", "applied_at"} <= columns:
            raise SchemaError(
                f"table {t.migrations!r} exists but was not made by tidb-memory (another "
                "checkpointer, such as langgraph-checkpoint-mysql, uses the same names); "
                "choose another table_prefix",
                operation="setup",
                table=t.migrations,
            )
        lock = None
        if backend == "mysql":
            database = self.db.spec.url.database or ""
            digest = hashlib.md5(f"{database}.{t.migrations}".encode(), usedforsecurity=False)
            lock = "tidb_memory:" + digest.hexdigest()
            try:
                row = await conn.fetchall("SELECT GET_LOCK(%s, %s)", (lock, SETUP_LOCK_TIMEOUT))
            except Exception as exc:
                code = error_code(exc)
                if code is None or code < 1000 or classify(exc) is not Verdict.FATAL:
                    raise
                # A server without a working GET_LOCK (old TiDB releases make it a no-op that
                # must be enabled): go on unguarded, every step is idempotent.
                row, lock = [(1,)], None
            if not row or row[0][0] != 1:
                raise StorageError(
                    f"setup waited {SETUP_LOCK_TIMEOUT}s for another setup of "
                    f"{t.migrations!r} to finish; try again",
                    operation="setup",
                    table=t.migrations,
                )
        try:
            m = quote(backend, t.migrations)
            done = {int(r[0]) for r in await conn.fetchall(f"SELECT `v` FROM {m}", ())}
            for version, description, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements(backend, t):
                    await conn.execute(statement, ())
                await conn.execute(_record_version(backend, t), (version, description))
        finally:
            if lock is not None:
                await conn.fetchall("SELECT RELEASE_LOCK(%s)", (lock,))

    # -- versions ---------------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The Postgres saver's scheme: a 32-digit counter, a dot and a random fraction, so
        that two forks of one checkpoint never mint the same version."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- read -------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest; ``None`` if there is none.

        One round trip: the checkpoint row, its blobs and its pending writes come back from one
        statement.
        """
        sel, params = self._get_query(config)
        rows = await self.db.run(
            self._fetch, read_statement(self.backend, self.tables, sel), params
        )
        found = self._assemble(rows)
        return found[0] if found else None

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Synchronous :meth:`aget_tuple`."""
        return self.db.run_sync(self.aget_tuple, config)

    def _get_query(self, config: RunnableConfig) -> tuple[_Select, _List[Any]]:
        configurable = config.get("configurable") or {}
        thread_id = _check_thread_id(configurable.get("thread_id"))
        ns = str(configurable.get("checkpoint_ns") or "")
        checkpoint_id = get_checkpoint_id(config)
        params: _List[Any] = [thread_id, self._hash_value(ns)]
        if checkpoint_id:
            params.append(str(checkpoint_id))
            return _Select(thread=True, ns=True, checkpoint_id=True), params
        return _Select(thread=True, ns=True, latest=True), params

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints, newest first: of one thread (and namespace, if ``config`` names one),
        or of every thread when ``config`` is ``None``.

        One round trip per page of :attr:`list_page_size` checkpoints, blobs and writes
        included.

        Args:
            config: the thread (and optionally namespace and checkpoint) to list.
            filter: metadata equality on each key (JSON containment on MySQL and TiDB).
            before: only checkpoints older than this one.
            limit: the most checkpoints to return.
        """
        query = self._list_query(config, filter, before)
        remaining = limit
        cursor: _List[Any] | None = None
        while remaining is None or remaining > 0:
            size = self.list_page_size if remaining is None else min(remaining, self.list_page_size)
            page, cursor = await self.db.run(self._list_page, query, size, cursor)
            for item in page:
                yield item
            if cursor is None:
                return
            if remaining is not None:
                remaining -= len(page)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Synchronous :meth:`alist`; fetches one page per step of the iteration."""
        query = self._list_query(config, filter, before)
        remaining = limit
        cursor: _List[Any] | None = None
        while remaining is None or remaining > 0:
            size = self.list_page_size if remaining is None else min(remaining, self.list_page_size)
            page, cursor = self.db.run_sync(self._list_page, query, size, cursor)
            yield from page
            if cursor is None:
                return
            if remaining is not None:
                remaining -= len(page)

    def _list_query(
        self,
        config: RunnableConfig | None,
        filter: Mapping[str, Any] | None,
        before: RunnableConfig | None,
    ) -> _Query:
        params: _List[Any] = []
        thread = ns = has_id = False
        if config is not None:
            configurable = config.get("configurable") or {}
            if configurable.get("thread_id") is not None:
                params.append(_check_thread_id(configurable["thread_id"]))
                thread = True
            checkpoint_ns = configurable.get("checkpoint_ns")
            if checkpoint_ns is not None:
                params.append(self._hash_value(str(checkpoint_ns)))
                ns = True
            if checkpoint_id := get_checkpoint_id(config):
                params.append(str(checkpoint_id))
                has_id = True
        filters: tuple[tuple[str, str], ...] = ()
        if filter:
            if not isinstance(filter, Mapping):
                raise InvalidInputError("filter must be a dict of metadata keys and values")
            filters = tuple((str(k), _filter_kind(v)) for k, v in filter.items())
            if self.backend == "mysql":
                params.append(_json(dict(filter), "filter"))
            else:
                for key, value in filter.items():
                    path = '$."' + str(key).replace('"', '\\"') + '"'
                    kind = _filter_kind(value)
                    if kind in ("null", "true", "false"):
                        params.append(path)
                    elif kind in ("text", "number"):
                        params += [path, path, value]
                    else:
                        params += [path, _json(value, "filter")]
        has_before = False
        if before is not None and (before_id := get_checkpoint_id(before)):
            params.append(str(before_id))
            has_before = True
        sel = _Select(
            thread=thread, ns=ns, checkpoint_id=has_id, filters=filters, before=has_before
        )
        return _Query(sel, params)

    async def _list_page(
        self, query: _Query, size: int, cursor: _List[Any] | None
    ) -> tuple[_List[CheckpointTuple], _List[Any] | None]:
        sel = query.sel
        params = _List(query.params)
        if cursor is not None:
            cid, thread_id, ns_hex = cursor
            if sel.thread and sel.ns:
                params.append(cid)
            else:
                ns_value = ns_hex if self.backend == "mysql" else bytes.fromhex(ns_hex)
                params += [cid, cid, thread_id, thread_id, ns_value]
        sel = _Select(
            thread=sel.thread,
            ns=sel.ns,
            checkpoint_id=sel.checkpoint_id,
            filters=sel.filters,
            before=sel.before,
            cursor=cursor is not None,
            limit=True,
        )
        params.append(size)
        rows = await self._fetch(read_statement(self.backend, self.tables, sel), params)
        found = self._assemble(rows)
        if len(found) < size:
            return found, None
        last = found[-1].config["configurable"]
        return found, [last["checkpoint_id"], last["thread_id"], _ns_hex_of(found[-1])]

    async def _fetch(self, sql: str, params: Sequence[Any]) -> _List[Any]:
        async def attempt() -> _List[Any]:
            async with self.db.connection() as conn:
                return await conn.fetchall(sql, _List(params))

        return await retrying(
            attempt, policy=self.retry, operation="read checkpoints", table=self.tables.checkpoints
        )

    def _assemble(self, rows: Sequence[Sequence[Any]]) -> _List[CheckpointTuple]:
        """Rows of :func:`read_statement` -> checkpoint tuples, newest first."""
        heads: dict[tuple[str, str, str], Sequence[Any]] = {}
        blobs: dict[tuple[str, str, str], _List[Sequence[Any]]] = {}
        writes: dict[tuple[str, str, str], _List[Sequence[Any]]] = {}
        sends: dict[tuple[str, str, str], _List[Sequence[Any]]] = {}
        for fields, metadata, data in rows:
            # [kind, thread_id, ns_hex, checkpoint_id, s1, s2, s3, s4, n, data]
            row = orjson.loads(fields)
            row.append(data)
            kind = int(row[0])
            key = (_text(row[1]), _text(row[2]), _text(row[3]))
            if kind == _KIND_CHECKPOINT:
                row[5] = metadata
                heads[key] = row
            elif kind == _KIND_BLOB:
                blobs.setdefault(key, []).append(row)
            elif kind == _KIND_WRITE:
                writes.setdefault(key, []).append(row)
            else:
                sends.setdefault(key, []).append(row)
        loads = self.serde.loads_typed
        out: _List[tuple[tuple[str, str, str], CheckpointTuple]] = []
        for key, row in heads.items():
            thread_id, ns_hex, checkpoint_id = key
            checkpoint_ns = _text(row[7])
            checkpoint: dict[str, Any] = orjson.loads(row[9])
            values: dict[str, Any] = checkpoint.get("channel_values") or {}
            for b in blobs.get(key, ()):
                values[_text(b[4])] = loads((_text(b[6]), bytes(b[9])))
            checkpoint["channel_values"] = values
            if int(row[8]) < 4 and key in sends:
                self._migrate_pending_sends(checkpoint, sends[key])
            pending = sorted(
                writes.get(key, ()),
                key=lambda w: writes_sort_key(_text(w[7]), _text(w[4]), int(w[8])),
            )
            parent = row[4]
            out.append(
                (
                    (checkpoint_id, thread_id, ns_hex),
                    CheckpointTuple(
                        config=_config(thread_id, checkpoint_ns, checkpoint_id),
                        checkpoint=checkpoint,  # type: ignore[arg-type]
                        metadata=orjson.loads(row[5]),
                        parent_config=(
                            _config(thread_id, checkpoint_ns, _text(parent))
                            if parent is not None
                            else None
                        ),
                        pending_writes=[
                            (_text(w[4]), _text(w[5]), loads((_text(w[6]), bytes(w[9]))))
                            for w in pending
                        ],
                    ),
                )
            )
        out.sort(key=lambda item: item[0], reverse=True)
        return [item[1] for item in out]

    def _migrate_pending_sends(
        self, checkpoint: dict[str, Any], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Checkpoints older than format 4 keep their pending sends as the parent's writes."""
        ordered = sorted(rows, key=lambda w: (_text(w[7]), _text(w[4]), int(w[8])))
        checkpoint["channel_values"][TASKS] = [
            self.serde.loads_typed((_text(w[6]), bytes(w[9]))) for w in ordered
        ]
        versions = checkpoint.setdefault("channel_versions", {})
        versions[TASKS] = max(versions.values()) if versions else self.get_next_version(None, None)

    # -- write ------------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint; its parent is the checkpoint ``config`` names.

        One round trip on MySQL and TiDB: the changed blobs' insert and the checkpoint's upsert
        travel as one multi-statement query (on SQLite, two statements), shared with the other
        writes of the same event-loop iteration. Idempotent: storing the same checkpoint again
        changes nothing.

        Raises:
            CheckpointTooLargeError: a value is over ``max_blob_bytes``; nothing was written.
            InvalidInputError: the config or checkpoint cannot be stored.
        """
        configurable = config.get("configurable") or {}
        thread_id = _check_thread_id(configurable.get("thread_id"))
        checkpoint_ns = str(configurable.get("checkpoint_ns") or "")
        prepared = self._prepare_put(
            thread_id, checkpoint_ns, configurable.get("checkpoint_id"), config, checkpoint,
            metadata, new_versions,
        )  # fmt: skip
        await self.db.run(self._put, prepared)
        return _config(thread_id, checkpoint_ns, str(checkpoint["id"]))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Synchronous :meth:`aput`."""
        return self.db.run_sync(self.aput, config, checkpoint, metadata, new_versions)

    def _prepare_put(
        self,
        thread_id: str,
        checkpoint_ns: str,
        parent_id: object,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> _Prepared:
        backend, limit = self.backend, self.max_blob_bytes
        checkpoint_id = _check_id("checkpoint id", checkpoint["id"])
        parent = None if parent_id is None else _check_id("parent checkpoint id", parent_id)
        ns_value = self._hash_value(checkpoint_ns)
        versions = checkpoint.get("channel_versions") or {}
        inline: dict[str, Any] = {}
        refs: _List[_List[str]] = []
        rows: _List[_List[Any]] = []
        for channel, value in checkpoint["channel_values"].items():
            if self.inline_primitives and _inlinable(value):
                inline[channel] = value
                continue
            if channel not in versions:
                continue  # unversioned: nothing could find it again (as in the Postgres saver)
            version = _check_id("channel version", versions[channel])
            refs.append([channel, version])
            # Unchanged channels reuse the blob stored with their version. A primitive may have
            # been stored inline instead, by a saver with inline_primitives=True: it is small,
            # so it is (re)sent each time and the blob is sure to exist.
            if channel in new_versions or _inlinable(value):
                type_, data = self.serde.dumps_typed(value)
                if len(data) > limit:
                    raise _too_large(f"channel {channel!r}", len(data), limit)
                rows.append([thread_id, ns_value, channel, version, type_, Binary(data)])
        stored = dict(checkpoint)
        stored["channel_values"] = inline
        body = _json(stored, "the checkpoint")
        meta = _json(get_serializable_checkpoint_metadata(config, metadata), "the metadata")
        if len(body) + len(meta) > limit:
            raise _too_large(
                f"checkpoint {checkpoint_id} (inline values and metadata)",
                len(body) + len(meta),
                limit,
            )
        params = [
            thread_id, ns_value, checkpoint_ns, checkpoint_id, parent,
            int(checkpoint.get("v", 1)), body, meta, orjson.dumps(refs).decode(),
        ]  # fmt: skip
        return _Prepared(
            [
                *self._batches(rows, insert_blobs_statement),
                (upsert_checkpoint_statement(backend, self.tables), params),
            ]
        )

    async def _put(self, prepared: _Prepared) -> None:
        async def attempt() -> None:
            await self.db.execute_grouped(prepared.statements, max_bytes=_STATEMENT_BYTES)

        await retrying(attempt, policy=self.retry, operation="aput", table=self.tables.checkpoints)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names. One round trip,
        shared with the other writes of the same event-loop iteration.

        Special writes (error, interrupt, resume, scheduled) replace earlier ones of the same
        task; normal writes keep the first value stored, so a retry never duplicates them.

        Raises:
            CheckpointTooLargeError: a value is over ``max_blob_bytes``; nothing was written.
        """
        configurable = config.get("configurable") or {}
        thread_id = _check_thread_id(configurable.get("thread_id"))
        checkpoint_ns = str(configurable.get("checkpoint_ns") or "")
        checkpoint_id = _check_id("checkpoint id", configurable.get("checkpoint_id") or "")
        task = _check_id("task_id", task_id)
        ns_value = self._hash_value(checkpoint_ns)
        rows: _List[_List[Any]] = []
        for idx, (channel, value) in enumerate(writes):
            type_, data = self.serde.dumps_typed(value)
            if len(data) > self.max_blob_bytes:
                raise _too_large(f"a write to channel {channel!r}", len(data), self.max_blob_bytes)
            rows.append(
                [
                    thread_id, ns_value, checkpoint_id, task, WRITES_IDX_MAP.get(channel, idx),
                    str(task_path), channel, type_, Binary(data),
                ]
            )  # fmt: skip
        if not rows:
            return
        await self.db.run(self._put_writes, self._batches(rows, insert_writes_statement))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Synchronous :meth:`aput_writes`."""
        self.db.run_sync(self.aput_writes, config, writes, task_id, task_path)

    async def _put_writes(self, statements: _List[tuple[str, _List[Any]]]) -> None:
        async def attempt() -> None:
            await self.db.execute_grouped(statements, max_bytes=_STATEMENT_BYTES)

        await retrying(
            attempt, policy=self.retry, operation="aput_writes", table=self.tables.writes
        )

    def _batches(self, rows: _List[_List[Any]], builder: Any) -> _List[tuple[str, _List[Any]]]:
        """Multi-row inserts of ``rows``: one statement unless the rows are very large."""
        out: _List[tuple[str, _List[Any]]] = []
        batch: _List[_List[Any]] = []
        size = 0
        for row in rows:
            weight = sum(_weight(v) for v in row) + 64
            over = (
                size + weight > _STATEMENT_BYTES
                if self.backend == "mysql"
                else (len(batch) + 1) * len(row) > _SQLITE_PARAMS
            )
            if batch and over:
                out.append(self._statement(builder, batch))
                batch, size = [], 0
            batch.append(row)
            size += weight
        if batch:
            out.append(self._statement(builder, batch))
        return out

    def _statement(self, builder: Any, batch: _List[_List[Any]]) -> tuple[str, _List[Any]]:
        sql: str = builder(self.backend, self.tables, len(batch))
        return sql, [value for row in batch for value in row]

    # -- delete -----------------------------------------------------------------------------

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of a thread, in all namespaces.

        On MySQL and TiDB it deletes in batches of :attr:`delete_batch` rows per statement.
        """
        await self.db.run(self._delete_thread, _check_thread_id(thread_id))

    def delete_thread(self, thread_id: str) -> None:
        """Synchronous :meth:`adelete_thread`."""
        self.db.run_sync(self.adelete_thread, thread_id)

    async def _delete_thread(self, thread_id: str) -> None:
        batch = self.delete_batch
        statements = delete_thread_statements(self.backend, self.tables, batch)
        batched = self.backend == "mysql"

        async def attempt() -> None:
            async with self.db.connection() as conn:
                for sql in statements:
                    while True:
                        count = await conn.execute(sql, (thread_id,))
                        if not batched or count < batch:
                            break

        await retrying(
            attempt, policy=self.retry, operation="adelete_thread", table=self.tables.checkpoints
        )

    # -- parameter encodings ----------------------------------------------------------------

    def _hash_value(self, checkpoint_ns: str) -> Any:
        digest = _ns_hash(checkpoint_ns)
        # aiomysql cannot send bytes under PyMySQL >= 1.2: hex text, UNHEX() in the statement.
        return digest.hex() if self.backend == "mysql" else digest


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _ns_hex_of(item: CheckpointTuple) -> str:
    return _ns_hash(str(item.config["configurable"]["checkpoint_ns"])).hex().upper()


#: The same class: one object serves ``invoke`` and ``ainvoke``.
TiDBSaver = AsyncTiDBSaver
