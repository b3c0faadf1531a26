"""The SQL of the saver's retention: prune, copy a thread, delete runs, and the threads table.

Pure text, no I/O. Statements that touch many rows are written for bounded batches: each one
names its rows by key (``IN`` lists the caller bounds) or carries ``LIMIT`` on MySQL and TiDB,
so no statement holds long locks or meets TiDB's transaction size limit.
"""

from __future__ import annotations

from functools import lru_cache

from tidb_memory._dialect import quote
from tidb_memory.engine import Backend
from tidb_memory.langgraph._saver_sql import SQLITE_NOW, Tables, hash_param, placeholder


def _now(backend: Backend) -> str:
    return "UTC_TIMESTAMP(6)" if backend == "mysql" else SQLITE_NOW


@lru_cache(maxsize=64)
def thread_refs_statement(backend: Backend, t: Tables) -> str:
    """Every checkpoint of a thread: namespace, id and refs (params: thread)."""
    return (
        f"SELECT HEX(`ns_hash`), `checkpoint_id`, `refs` FROM {quote(backend, t.checkpoints)} "
        f"WHERE `thread_id` = {placeholder(backend)}"
    )


@lru_cache(maxsize=64)
def refs_statement(backend: Backend, t: Tables) -> str:
    """Every checkpoint id and refs of one namespace of a thread (params: thread, ns)."""
    p, h = placeholder(backend), hash_param(backend)
    return (
        f"SELECT `checkpoint_id`, `refs` FROM {quote(backend, t.checkpoints)} "
        f"WHERE `thread_id` = {p} AND `ns_hash` = {h}"
    )


@lru_cache(maxsize=64)
def doomed_statement(backend: Backend, t: Tables) -> str:
    """The next batch of checkpoints older than the cutoff, newest first, with their refs
    (params: thread, ns, cutoff, batch)."""
    p, h = placeholder(backend), hash_param(backend)
    return (
        f"SELECT `checkpoint_id`, `refs` FROM {quote(backend, t.checkpoints)} "
        f"WHERE `thread_id` = {p} AND `ns_hash` = {h} AND `checkpoint_id` < {p} "
        f"ORDER BY `checkpoint_id` DESC LIMIT {p}"
    )


@lru_cache(maxsize=256)
def delete_by_ids_statement(backend: Backend, t: Tables, table: str, n: int, batch: int) -> str:
    """Delete the checkpoints or the writes (``table``) of ``n`` checkpoint ids of one
    namespace (params: thread, ns, ids); writes go ``batch`` rows per statement on MySQL."""
    p, h = placeholder(backend), hash_param(backend)
    name = t.checkpoints if table == "checkpoints" else t.writes
    limit = f" LIMIT {int(batch)}" if backend == "mysql" else ""
    return (
        f"DELETE FROM {quote(backend, name)} WHERE `thread_id` = {p} AND `ns_hash` = {h} "
        f"AND `checkpoint_id` IN ({', '.join([p] * n)}){limit}"
    )


@lru_cache(maxsize=256)
def delete_blobs_statement(backend: Backend, t: Tables, n: int) -> str:
    """Delete ``n`` blobs of one namespace by key (params: thread, ns, n x (channel, version))."""
    p, h = placeholder(backend), hash_param(backend)
    pairs = ", ".join([f"({p}, {p})"] * n)
    return (
        f"DELETE FROM {quote(backend, t.blobs)} WHERE `thread_id` = {p} AND `ns_hash` = {h} "
        f"AND (`channel`, `version`) IN ({pairs})"
    )


@lru_cache(maxsize=64)
def copy_keys_statement(backend: Backend, t: Tables, after: bool) -> str:
    """The next batch of a thread's checkpoints in key order, with their refs (params: thread,
    [ns, ns, checkpoint_id of the last row copied], batch)."""
    p, h = placeholder(backend), hash_param(backend)
    cursor = f" AND (`ns_hash` > {h} OR (`ns_hash` = {h} AND `checkpoint_id` > {p}))"
    return (
        f"SELECT HEX(`ns_hash`), `checkpoint_id`, `refs` FROM {quote(backend, t.checkpoints)} "
        f"WHERE `thread_id` = {p}{cursor if after else ''} "
        f"ORDER BY `ns_hash`, `checkpoint_id` LIMIT {p}"
    )


def _keep_existing(backend: Backend, name: str) -> str:
    # A repeated copy changes nothing: the target rows, once there, are left as they are.
    if backend == "mysql":
        target = quote(backend, name)
        return f" ON DUPLICATE KEY UPDATE {target}.`thread_id` = {target}.`thread_id`"
    return " ON CONFLICT DO NOTHING"


@lru_cache(maxsize=256)
def copy_blobs_statement(backend: Backend, t: Tables, n: int) -> str:
    """Copy ``n`` blobs of one namespace to another thread, server-side (params: target,
    source, ns, n x (channel, version))."""
    p, h = placeholder(backend), hash_param(backend)
    pairs = ", ".join([f"({p}, {p})"] * n)
    return (
        f"INSERT INTO {quote(backend, t.blobs)} "
        "(`thread_id`, `ns_hash`, `channel`, `version`, `type`, `blob`) "
        f"SELECT {p}, s.`ns_hash`, s.`channel`, s.`version`, s.`type`, s.`blob` "
        f"FROM {quote(backend, t.blobs)} AS s WHERE s.`thread_id` = {p} AND s.`ns_hash` = {h} "
        f"AND (s.`channel`, s.`version`) IN ({pairs})" + _keep_existing(backend, t.blobs)
    )


@lru_cache(maxsize=256)
def copy_rows_statement(backend: Backend, t: Tables, table: str, n: int) -> str:
    """Copy the checkpoints or writes (``table``) of ``n`` checkpoint ids of one namespace to
    another thread, server-side (params: target, source, ns, ids)."""
    p, h = placeholder(backend), hash_param(backend)
    if table == "checkpoints":
        name = t.checkpoints
        cols = (
            "`ns_hash`, `checkpoint_ns`, `checkpoint_id`, `parent_checkpoint_id`, `v`, "
            "`checkpoint`, `metadata`, `refs`"
        )
    else:
        name = t.writes
        cols = (
            "`ns_hash`, `checkpoint_id`, `task_id`, `idx`, `task_path`, `channel`, `type`, `blob`"
        )
    selected = ", ".join(f"s.{c.strip()}" for c in cols.split(","))
    return (
        f"INSERT INTO {quote(backend, name)} (`thread_id`, {cols}) SELECT {p}, {selected} "
        f"FROM {quote(backend, name)} AS s WHERE s.`thread_id` = {p} AND s.`ns_hash` = {h} "
        f"AND s.`checkpoint_id` IN ({', '.join([p] * n)})" + _keep_existing(backend, name)
    )


@lru_cache(maxsize=64)
def runs_statement(backend: Backend, t: Tables, n: int, after: bool) -> str:
    """The next batch of checkpoints, in key order, whose metadata ``run_id`` is one of ``n``
    (params: n run ids, [thread, thread, ns, ns, ns, checkpoint_id], batch).

    There is no index on the run id: each statement scans the table from the cursor on.
    """
    p, h = placeholder(backend), hash_param(backend)
    if backend == "mysql":
        run = "JSON_UNQUOTE(JSON_EXTRACT(`metadata`, '$.run_id'))"
    else:
        run = "json_extract(`metadata`, '$.run_id')"
    cursor = (
        f" AND (`thread_id` > {p} OR (`thread_id` = {p} AND (`ns_hash` > {h} OR "
        f"(`ns_hash` = {h} AND `checkpoint_id` > {p}))))"
    )
    return (
        f"SELECT `thread_id`, HEX(`ns_hash`), `checkpoint_id`, {run} "
        f"FROM {quote(backend, t.checkpoints)} WHERE {run} IN ({', '.join([p] * n)})"
        f"{cursor if after else ''} ORDER BY `thread_id`, `ns_hash`, `checkpoint_id` LIMIT {p}"
    )


@lru_cache(maxsize=64)
def refresh_thread_statement(backend: Backend, t: Tables) -> str:
    """Set a thread's checkpoint count from its checkpoints, creating its row if needed, and
    its owner and title unless given ``NULL`` (params: thread, user_id, title, thread)."""
    th, cp = quote(backend, t.threads), quote(backend, t.checkpoints)
    p = placeholder(backend)
    head = (
        f"INSERT INTO {th} (`thread_id`, `user_id`, `title`, `last_activity`, `checkpoints`) "
        f"SELECT {p}, {p}, {p}, {_now(backend)}, COUNT(*) FROM {cp} WHERE `thread_id` = {p}"
    )
    if backend == "mysql":
        return head + (
            " ON DUPLICATE KEY UPDATE `checkpoints` = VALUES(`checkpoints`), "
            "`user_id` = COALESCE(VALUES(`user_id`), `user_id`), "
            "`title` = COALESCE(VALUES(`title`), `title`)"
        )
    return head + (
        " ON CONFLICT (thread_id) DO UPDATE SET checkpoints = excluded.checkpoints, "
        "user_id = COALESCE(excluded.user_id, user_id), title = COALESCE(excluded.title, title)"
    )


@lru_cache(maxsize=64)
def thread_info_statement(backend: Backend, t: Tables) -> str:
    """One thread's row (params: thread)."""
    return (
        "SELECT `thread_id`, `user_id`, `title`, `last_activity`, `checkpoints` "
        f"FROM {quote(backend, t.threads)} WHERE `thread_id` = {placeholder(backend)}"
    )


@lru_cache(maxsize=64)
def delete_thread_row_statement(backend: Backend, t: Tables) -> str:
    """Forget a thread's row (params: thread)."""
    limit = " LIMIT 1" if backend == "mysql" else ""  # the primary key: one row at most
    return (
        f"DELETE FROM {quote(backend, t.threads)} WHERE `thread_id` = {placeholder(backend)}{limit}"
    )


@lru_cache(maxsize=64)
def list_threads_statement(backend: Backend, t: Tables, by_user: bool, after: bool) -> str:
    """A page of threads, most recent activity first, read from the threads table's index
    (params: [user_id], [last_activity, last_activity, thread_id], limit)."""
    p = placeholder(backend)
    where = []
    if by_user:
        where.append(f"`user_id` = {p}")
    if after:
        where.append(f"(`last_activity` < {p} OR (`last_activity` = {p} AND `thread_id` < {p}))")
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    return (
        "SELECT `thread_id`, `user_id`, `title`, `last_activity`, `checkpoints` "
        f"FROM {quote(backend, t.threads)}{sql_where} "
        f"ORDER BY `last_activity` DESC, `thread_id` DESC LIMIT {p}"
    )


#: The batches of thread rows retention works through: columns, condition, order.
_THREAD_BATCHES = {
    # Threads idle since before a time, oldest first (params: time, batch).
    "idle": ("`thread_id`", "`last_activity` < {p}", "`last_activity`, `thread_id`"),
    # Every thread in key order, with its checkpoint count (params: after thread, batch).
    "walk": ("`thread_id`, `checkpoints`", "`thread_id` > {p}", "`thread_id`"),
    # One user's threads (params: user_id, batch).
    "user": ("`thread_id`", "`user_id` = {p}", "`thread_id`"),
}


@lru_cache(maxsize=64)
def thread_batch_statement(backend: Backend, t: Tables, kind: str) -> str:
    """A batch of thread rows for retention or erasure; ``kind`` is one of ``idle`` (threads
    idle since a time), ``walk`` (all, in key order, with counts) and ``user`` (one user's)."""
    columns, condition, order = _THREAD_BATCHES[kind]
    p = placeholder(backend)
    return (
        f"SELECT {columns} FROM {quote(backend, t.threads)} WHERE {condition.format(p=p)} "
        f"ORDER BY {order} LIMIT {p}"
    )
