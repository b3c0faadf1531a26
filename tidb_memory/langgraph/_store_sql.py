"""The store's tables, migrations and statements; no I/O.

Tables (``table_prefix`` defaults to ``store``)::

    store                   PK (ns, item_key)
        value, created_at, updated_at, expires_at, ttl_minutes
    store_vectors           PK (ns, item_key, field)    embedding
    store_migrations, store_vector_migrations    the ledgers (tidb_memory._migrations)

Exactness. A namespace is stored as its labels joined by NUL, which no label may contain, and
keys and namespaces are binary strings (``VARBINARY`` on MySQL-family servers, whose
``utf8mb4_bin`` would compare ``"a"`` and ``"a "`` equal; ``BLOB``/``TEXT`` with binary collation
on SQLite). Hence ``"a"``, ``"a "``, ``"A"`` and ``"á"`` are four keys, byte order is code-point
order, and the order of the stored bytes is the order of namespace tuples. A namespace prefix is
a range of whole labels: ``("a",)`` selects ``a`` and everything from ``a\\0`` below ``a\\1``, never
``ab``; ``%``, ``_`` and ``\\`` are plain bytes since no ``LIKE`` is involved.

Times are integer microseconds since the epoch (UTC), chosen by the client: exact to compare on
every backend, and ``updated_at DESC, ns, item_key`` is a total order for paging.

Filters are compiled by :mod:`tidb_memory.langgraph._store_filter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._checks import check_table_name
from .._dialect import quote
from .._migrations import Migration
from ..engine import Backend
from ..errors import InvalidInputError
from ._store_filter import Condition, condition_sql

__all__ = [
    "KEY_MAX_BYTES",
    "NS_MAX_BYTES",
    "StoreTables",
    "decode_key",
    "decode_ns",
    "encode_ns",
    "keys_condition",
    "prefix_condition",
    "store_migrations",
    "under_statement",
    "vector_migrations",
]

NS_MAX_BYTES = 800
KEY_MAX_BYTES = 1800
FIELD_MAX_BYTES = 400
SEP = "\x00"

_MYSQL_TABLE = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_CLUSTERED = " /*T![clustered_index] CLUSTERED */"


@dataclass(frozen=True, slots=True)
class StoreTables:
    items: str
    vectors: str
    migrations: str
    vector_migrations: str

    @classmethod
    def from_prefix(cls, prefix: object) -> StoreTables:
        if not isinstance(prefix, str) or not prefix:
            raise InvalidInputError("table_prefix must be a non-empty str")
        return cls(
            items=check_table_name(prefix),
            vectors=check_table_name(f"{prefix}_vectors"),
            migrations=check_table_name(f"{prefix}_migrations"),
            vector_migrations=check_table_name(f"{prefix}_vector_migrations"),
        )


def p(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


# --- tables ----------------------------------------------------------------------------------


def store_migrations(t: StoreTables) -> tuple[Migration, ...]:
    """The items table's versions. Append only."""

    def v1(backend: Backend) -> list[str]:
        items = quote(backend, t.items)
        if backend == "mysql":
            return [
                f"CREATE TABLE IF NOT EXISTS {items} (\n"
                f"  `ns` VARBINARY({NS_MAX_BYTES}) NOT NULL,\n"
                f"  `item_key` VARBINARY({KEY_MAX_BYTES}) NOT NULL,\n"
                "  `value` LONGTEXT NOT NULL,\n"
                "  `created_at` BIGINT NOT NULL,\n"
                "  `updated_at` BIGINT NOT NULL,\n"
                "  `expires_at` BIGINT NULL,\n"
                "  `ttl_minutes` DOUBLE NULL,\n"
                f"  PRIMARY KEY (`ns`, `item_key`){_CLUSTERED},\n"
                "  KEY `ix_expires_at` (`expires_at`)\n" + _MYSQL_TABLE
            ]
        return [
            f"CREATE TABLE IF NOT EXISTS {items} (\n"
            "  ns BLOB NOT NULL,\n"
            "  item_key TEXT NOT NULL,\n"
            "  value TEXT NOT NULL,\n"
            "  created_at INTEGER NOT NULL,\n"
            "  updated_at INTEGER NOT NULL,\n"
            "  expires_at INTEGER NULL,\n"
            "  ttl_minutes REAL NULL,\n"
            "  PRIMARY KEY (ns, item_key)\n"
            ") WITHOUT ROWID",
            f'CREATE INDEX IF NOT EXISTS "ix_{t.items}_expires_at" ON {items} (expires_at)',
        ]

    return (Migration(1, "store items table", v1),)


def vector_migrations(
    t: StoreTables, *, dims: int, tidb_vectors: bool, approximate: bool
) -> tuple[Migration, ...]:
    """The vectors table's versions, for an index of ``dims`` dimensions.

    On TiDB v8.4+ the embedding is a ``VECTOR(dims)``; elsewhere float32 bytes. With
    ``approximate`` (TiDB only) version 2 adds the HNSW index on TiFlash that whole-table
    approximate search uses.
    """

    def v1(backend: Backend) -> list[str]:
        vectors = quote(backend, t.vectors)
        if backend == "mysql":
            embedding = f"VECTOR({dims})" if tidb_vectors else "LONGBLOB"
            return [
                f"CREATE TABLE IF NOT EXISTS {vectors} (\n"
                f"  `ns` VARBINARY({NS_MAX_BYTES}) NOT NULL,\n"
                f"  `item_key` VARBINARY({KEY_MAX_BYTES}) NOT NULL,\n"
                f"  `field` VARBINARY({FIELD_MAX_BYTES}) NOT NULL,\n"
                f"  `embedding` {embedding} NOT NULL,\n"
                f"  PRIMARY KEY (`ns`, `item_key`, `field`){_CLUSTERED}\n" + _MYSQL_TABLE
            ]
        return [
            f"CREATE TABLE IF NOT EXISTS {vectors} (\n"
            "  ns BLOB NOT NULL,\n"
            "  item_key TEXT NOT NULL,\n"
            "  field TEXT NOT NULL,\n"
            "  embedding BLOB NOT NULL,\n"
            "  PRIMARY KEY (ns, item_key, field)\n"
            ") WITHOUT ROWID"
        ]

    def v2(backend: Backend) -> list[str]:
        vectors = quote(backend, t.vectors)
        return [
            f"ALTER TABLE {vectors} SET TIFLASH REPLICA 1",
            f"ALTER TABLE {vectors} ADD VECTOR INDEX `ix_embedding` "
            "((VEC_COSINE_DISTANCE(`embedding`))) USING HNSW",
        ]

    out = [Migration(1, "store vectors table", v1)]
    if approximate and tidb_vectors:
        out.append(Migration(2, "HNSW index for whole-table approximate search", v2))
    return tuple(out)


# --- namespaces and keys ---------------------------------------------------------------------


def encode_ns(backend: Backend, namespace: Sequence[str]) -> Any:
    """A namespace as the stored value: NUL-joined text (MySQL) or its UTF-8 bytes (SQLite)."""
    text = SEP.join(namespace)
    return text if backend == "mysql" else text.encode()


def decode_ns(raw: bytes | str) -> tuple[str, ...]:
    text = raw.decode() if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    if isinstance(text, memoryview):  # pragma: no cover - defensive
        text = bytes(text).decode()
    return tuple(str(text).split(SEP))


def decode_key(raw: bytes | str) -> str:
    """A stored key: ``VARBINARY`` comes back as bytes, SQLite's ``TEXT`` as str."""
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)


def prefix_condition(backend: Backend, column: str, prefix: Sequence[str]) -> tuple[str, list[Any]]:
    """Whole-label prefix match on ``column``: the namespace itself or any below it."""
    if not prefix:
        return "", []
    ph = p(backend)
    text = SEP.join(prefix)
    low, high = text + SEP, text + "\x01"
    params: list[Any] = [text, low, high]
    if backend == "sqlite":
        params = [v.encode() for v in (text, low, high)]
    return f"({column} = {ph} OR ({column} >= {ph} AND {column} < {ph}))", params


def keys_condition(
    backend: Backend, alias: str, keys: Sequence[tuple[tuple[str, ...], str]]
) -> tuple[str, list[Any]]:
    """``(ns = ? AND item_key IN (...)) OR ...``, one term per namespace."""
    ph = p(backend)
    by_ns: dict[tuple[str, ...], list[str]] = {}
    for ns, key in keys:
        by_ns.setdefault(ns, []).append(key)
    terms: list[str] = []
    params: list[Any] = []
    for ns, ks in by_ns.items():
        terms.append(f"({alias}ns = {ph} AND {alias}item_key IN ({', '.join([ph] * len(ks))}))")
        params.append(encode_ns(backend, ns))
        params.extend(ks)
    return "(" + " OR ".join(terms) + ")", params


# --- statements ------------------------------------------------------------------------------

#: The item columns every read returns, in this order.
ITEM_COLUMNS = "i.ns, i.item_key, i.value, i.created_at, i.updated_at, i.ttl_minutes"


def live(backend: Backend) -> str:
    """Not expired at the time bound to the placeholder, even before a sweep."""
    return f"(i.expires_at IS NULL OR i.expires_at > {p(backend)})"


def get_statement(
    backend: Backend, t: StoreTables, keys: Sequence[tuple[tuple[str, ...], str]], now: int
) -> tuple[str, list[Any]]:
    cond, params = keys_condition(backend, "i.", keys)
    return (
        f"SELECT {ITEM_COLUMNS} FROM {quote(backend, t.items)} i WHERE {cond} AND {live(backend)}",
        [*params, now],
    )


def upsert_statement(
    backend: Backend, t: StoreTables, rows: Sequence[Sequence[Any]]
) -> tuple[str, list[Any]]:
    """Rows of (ns, item_key, value, created_at, updated_at, expires_at, ttl_minutes); an
    update keeps ``created_at``."""
    ph = p(backend)
    values = ", ".join(["(" + ", ".join([ph] * 7) + ")"] * len(rows))
    head = (
        f"INSERT INTO {quote(backend, t.items)} "
        "(ns, item_key, value, created_at, updated_at, expires_at, ttl_minutes) VALUES " + values
    )
    params = [v for row in rows for v in row]
    if backend == "mysql":
        return (
            head
            + " ON DUPLICATE KEY UPDATE value = VALUES(value), updated_at = VALUES(updated_at), "
            "expires_at = VALUES(expires_at), ttl_minutes = VALUES(ttl_minutes)",
            params,
        )
    return (
        head + " ON CONFLICT (ns, item_key) DO UPDATE SET value = excluded.value, "
        "updated_at = excluded.updated_at, expires_at = excluded.expires_at, "
        "ttl_minutes = excluded.ttl_minutes",
        params,
    )


def delete_statement(
    backend: Backend, table: str, keys: Sequence[tuple[tuple[str, ...], str]]
) -> tuple[str, list[Any]]:
    cond, params = keys_condition(backend, "", keys)
    return f"DELETE FROM {quote(backend, table)} WHERE {cond}", params


def insert_vectors_statement(
    backend: Backend, t: StoreTables, rows: Sequence[Sequence[Any]], *, tidb_vectors: bool
) -> tuple[str, list[Any]]:
    """Rows of (ns, item_key, field, embedding); on TiDB the embedding is vector text."""
    ph = p(backend)
    emb = f"VEC_FROM_TEXT({ph})" if tidb_vectors else ph
    values = ", ".join([f"({ph}, {ph}, {ph}, {emb})"] * len(rows))
    return (
        f"INSERT INTO {quote(backend, t.vectors)} (ns, item_key, field, embedding) VALUES {values}",
        [v for row in rows for v in row],
    )


@dataclass(frozen=True, slots=True)
class Search:
    """A search's SQL and how the client finishes it."""

    sql: str
    params: list[Any]
    #: The statement applies offset and limit itself.
    paged: bool


def search_statement(
    backend: Backend,
    t: StoreTables,
    *,
    prefix: Sequence[str],
    conditions: Sequence[Condition],
    now: int,
    limit: int,
    offset: int,
    query_vector: str | None = None,
    with_vectors: bool = False,
) -> Search:
    """The items under ``prefix`` that pass the SQL conditions, in the total order.

    ``query_vector`` (TiDB) ranks by the best ``VEC_COSINE_DISTANCE`` of the item's vectors
    (the last column; NULL for an item without vectors, which come last). ``with_vectors``
    (elsewhere) returns one row per vector, embedding last, for the client to score.
    """
    ph = p(backend)
    where: list[str] = []
    params: list[Any] = []
    if query_vector is not None:
        params.append(query_vector)
    ns_sql, ns_params = prefix_condition(backend, "i.ns", prefix)
    if ns_sql:
        where.append(ns_sql)
        params += ns_params
    where.append(live(backend))
    params.append(now)
    for cond in conditions:
        if cond.in_sql:
            sql, cparams = condition_sql(backend, cond, "i.value")
            where.append(sql)
            params += cparams
    paged = all(c.in_sql for c in conditions) and not with_vectors
    items, vectors = quote(backend, t.items), quote(backend, t.vectors)
    order = "i.updated_at DESC, i.ns, i.item_key"
    if query_vector is not None:
        sql = (
            f"SELECT {ITEM_COLUMNS}, MIN(VEC_COSINE_DISTANCE(v.embedding, VEC_FROM_TEXT({ph}))) "
            f"AS d FROM {items} i LEFT JOIN {vectors} v ON v.ns = i.ns AND v.item_key = i.item_key "
            f"WHERE {' AND '.join(where)} GROUP BY {ITEM_COLUMNS} ORDER BY d IS NULL, d, {order}"
        )
    elif with_vectors:
        sql = (
            f"SELECT {ITEM_COLUMNS}, v.embedding FROM {items} i LEFT JOIN {vectors} v "
            f"ON v.ns = i.ns AND v.item_key = i.item_key WHERE {' AND '.join(where)} "
            f"ORDER BY {order}"
        )
    else:
        sql = f"SELECT {ITEM_COLUMNS} FROM {items} i WHERE {' AND '.join(where)} ORDER BY {order}"
    if paged:
        sql += f" LIMIT {ph} OFFSET {ph}"
        params += [limit, offset]
    return Search(sql, params, paged)


def approximate_search_statement(
    t: StoreTables, *, query_vector: str, now: int, candidates: int
) -> Search:
    """TiDB's whole-table approximate search: the HNSW index serves the inner ``ORDER BY
    distance LIMIT`` only while it has no ``WHERE``, so expiry is checked on the candidates
    and the client pages."""
    items, vectors = quote("mysql", t.items), quote("mysql", t.vectors)
    text = (
        f"SELECT {ITEM_COLUMNS}, MIN(a.d) AS d FROM (SELECT ns, item_key, "
        f"VEC_COSINE_DISTANCE(embedding, VEC_FROM_TEXT(%s)) AS d FROM {vectors} "
        f"ORDER BY d LIMIT {int(candidates)}) a JOIN {items} i ON i.ns = a.ns AND "
        f"i.item_key = a.item_key WHERE {live('mysql')} GROUP BY {ITEM_COLUMNS} "
        "ORDER BY d, i.updated_at DESC, i.ns, i.item_key"
    )
    return Search(text, [query_vector, now], paged=False)


def namespaces_statement(
    backend: Backend,
    t: StoreTables,
    *,
    prefix: Sequence[str],
    now: int,
    page: tuple[int, int] | None,
) -> tuple[str, list[Any]]:
    """The distinct live namespaces under ``prefix`` (whole labels), in tuple order; paged in
    SQL when ``page`` (limit, offset) is given."""
    ph = p(backend)
    ns_sql, params = prefix_condition(backend, "i.ns", prefix)
    where = [live(backend)]
    params = [*params, now]
    if ns_sql:
        where.insert(0, ns_sql)
    sql = (
        f"SELECT DISTINCT i.ns FROM {quote(backend, t.items)} i WHERE {' AND '.join(where)} "
        "ORDER BY i.ns"
    )
    if page is not None:
        sql += f" LIMIT {ph} OFFSET {ph}"
        params += list(page)
    return sql, params


def refresh_statement(
    backend: Backend, t: StoreTables, keys: Sequence[tuple[tuple[str, ...], str]], now: int
) -> tuple[str, list[Any]]:
    """Restart the TTL of live items that have one."""
    ph = p(backend)
    cond, params = keys_condition(backend, "", keys)
    integer = "SIGNED" if backend == "mysql" else "INTEGER"
    return (
        f"UPDATE {quote(backend, t.items)} SET expires_at = {ph} + "
        f"CAST(ttl_minutes * 60000000 AS {integer}) WHERE {cond} AND ttl_minutes IS NOT NULL "
        f"AND expires_at > {ph}",
        [now, *params, now],
    )


def under_statement(
    backend: Backend, t: StoreTables, prefix: Sequence[str]
) -> tuple[str, list[Any]]:
    """Up to N keys in ``prefix`` or below it, expired or not (parameters: these, then N)."""
    cond, params = prefix_condition(backend, "ns", prefix)
    return (
        f"SELECT ns, item_key FROM {quote(backend, t.items)} WHERE {cond} LIMIT {p(backend)}",
        params,
    )


def expired_statement(backend: Backend, t: StoreTables) -> str:
    """Up to N expired keys (parameters: now, N)."""
    ph = p(backend)
    return f"SELECT ns, item_key FROM {quote(backend, t.items)} WHERE expires_at <= {ph} LIMIT {ph}"


def sweep_statements(
    backend: Backend,
    t: StoreTables,
    keys: Sequence[tuple[tuple[str, ...], str]],
    now: int,
    *,
    vectors: bool,
) -> list[tuple[str, list[Any]]]:
    """Delete the expired ones among ``keys`` (a re-put since is kept), then their vectors."""
    ph = p(backend)
    cond, params = keys_condition(backend, "", keys)
    out: list[tuple[str, list[Any]]] = [
        (
            f"DELETE FROM {quote(backend, t.items)} WHERE {cond} AND expires_at <= {ph}",
            [*params, now],
        )
    ]
    if vectors:
        items, vec = quote(backend, t.items), quote(backend, t.vectors)
        out.append(
            (
                f"DELETE FROM {vec} WHERE {cond} AND NOT EXISTS (SELECT 1 FROM {items} i "
                f"WHERE i.ns = {vec}.ns AND i.item_key = {vec}.item_key)",
                params,
            )
        )
    return out
