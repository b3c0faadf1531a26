"""Checkpoints that do not grow forever: prune, copy a thread, delete runs, retention.

:class:`RetentionMixin` gives :class:`~tidb_memory.langgraph.AsyncTiDBSaver` LangGraph's
extended capabilities (``aprune``, ``acopy_thread``, ``adelete_for_runs``) and a retention
policy with an optional background sweeper; :mod:`.threads` adds the threads index. Every
operation works in bounded batches of :attr:`delete_batch` rows or keys, each batch its own
retried step, and is idempotent: a retry, or running it again, changes nothing more.

Blobs are shared between checkpoints (an unchanged channel keeps its version), so a blob is
deleted only when no remaining checkpoint of its namespace references it. A batch deletes the
doomed checkpoints' writes, then the checkpoints and the blobs nothing references any more
(the checkpoint row goes before or with its values, never after): a reader never meets a
checkpoint whose values are gone, and an interrupted run leaves at most unreferenced blobs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from tidb_memory import _checks
from tidb_memory._retry import RetryPolicy, retrying
from tidb_memory.engine import Backend, Connection, Database
from tidb_memory.errors import InvalidInputError
from tidb_memory.langgraph._retention_sql import (
    copy_blobs_statement,
    copy_keys_statement,
    copy_rows_statement,
    delete_blobs_statement,
    delete_by_ids_statement,
    delete_thread_row_statement,
    refresh_thread_statement,
    refs_statement,
    runs_statement,
    thread_batch_statement,
    thread_info_statement,
    thread_refs_statement,
)
from tidb_memory.langgraph._saver_rows import STATEMENT_BYTES, check_thread_id, text
from tidb_memory.langgraph._saver_sql import Tables, delete_thread_statements

__all__ = ["RetentionMixin", "RetentionPolicy", "RetentionReport"]

log = logging.getLogger("tidb_memory")

_PRUNE_STRATEGIES = ("keep_latest", "delete")
#: Called with (threads examined so far, total if known) as a long run goes on.
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What :meth:`RetentionMixin.aapply_retention` keeps.

    Example::

        policy = RetentionPolicy(keep_last=2, max_idle=timedelta(days=30))
        saver = AsyncTiDBSaver(url, retention=policy)

    Args:
        keep_last: checkpoints kept per thread and namespace (the newest); ``None`` keeps all.
        max_idle: threads with no checkpoint written for longer are deleted whole.
    """

    keep_last: int | None = None
    max_idle: timedelta | None = None

    def __post_init__(self) -> None:
        if self.keep_last is not None:
            object.__setattr__(self, "keep_last", _checks.as_count("keep_last", self.keep_last))
        if self.max_idle is not None and (
            not isinstance(self.max_idle, timedelta) or self.max_idle <= timedelta(0)
        ):
            raise InvalidInputError("max_idle must be a positive timedelta")


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention run, prune or erasure deleted."""

    threads_deleted: int = 0
    threads_pruned: int = 0
    checkpoints_deleted: int = 0

    def __add__(self, other: RetentionReport) -> RetentionReport:
        return RetentionReport(
            self.threads_deleted + other.threads_deleted,
            self.threads_pruned + other.threads_pruned,
            self.checkpoints_deleted + other.checkpoints_deleted,
        )


class RetentionMixin:
    """Prune, copy, delete runs and retention for the saver; see the module docstring."""

    db: Database
    tables: Tables
    retry: RetryPolicy
    delete_batch: int
    retention: RetentionPolicy | None
    _sweeper: asyncio.Task[None] | None = None

    @property
    def backend(self) -> Backend:
        return self.db.backend

    # -- LangGraph's extended capabilities ---------------------------------------------------

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep: int = 1
    ) -> None:
        """Prune the given threads: ``"keep_latest"`` keeps the newest ``keep`` checkpoints of
        each namespace (with their writes and the blobs they use), ``"delete"`` deletes the
        threads.

        Example::

            await saver.aprune(["t1", "t2"])                 # the latest checkpoint only
            await saver.aprune(["t1"], keep=5)               # the last five

        Round trips per thread: 1 read of its checkpoints' ids and refs, then per batch of
        :attr:`delete_batch` checkpoints 2 (the writes; then the checkpoints, the blobs no
        kept checkpoint uses and, with the last batch, the thread's count, together). A
        checkpoint that a kept one descends from may go: the kept checkpoints stay readable,
        resumable and forkable, but ``get_state_history`` ends at the oldest kept one. Graphs
        whose state uses LangGraph's ``DeltaChannel`` must not be pruned with
        ``"keep_latest"``: their values live in the ancestors' writes.

        Raises:
            InvalidInputError: an unknown strategy, a bad thread id or ``keep``.
        """
        await self._prune(thread_ids, strategy, keep)

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep: int = 1
    ) -> None:
        """Synchronous :meth:`aprune`."""
        self.db.run_sync(self._prune, thread_ids, strategy, keep)

    async def _prune(
        self, thread_ids: Sequence[str], strategy: str, keep: object
    ) -> RetentionReport:
        if strategy not in _PRUNE_STRATEGIES:
            raise InvalidInputError(
                f"strategy must be one of {', '.join(_PRUNE_STRATEGIES)}, not {strategy!r}"
            )
        count = _checks.as_count("keep", keep)
        threads = _thread_ids(thread_ids)
        report = RetentionReport()
        for thread_id in threads:
            if strategy == "delete":
                report += await self.db.run(self._delete_thread, thread_id)
            else:
                report += await self.db.run(self._keep_last, thread_id, count)
        return report

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of a thread to another thread id, keeping
        checkpoint ids, namespaces, parents and metadata; the source is left as it is.

        The rows are copied by the server (``INSERT ... SELECT``), in batches of
        :attr:`delete_batch` checkpoints, blobs first and checkpoints last, so the target
        never has a checkpoint without its values. Copying again adds nothing twice. The
        target's owner and title are the source's.

        Raises:
            InvalidInputError: a bad thread id, or the same thread twice.
        """
        source, target = check_thread_id(source_thread_id), check_thread_id(target_thread_id)
        if source == target:
            raise InvalidInputError("source_thread_id and target_thread_id are the same thread")
        await self.db.run(self._copy_thread, source, target)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Synchronous :meth:`acopy_thread`."""
        self.db.run_sync(self.acopy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata ``run_id`` is one of ``run_ids``, with their
        writes and the blobs nothing else references.

        No index covers run ids: each batch of :attr:`delete_batch` checkpoints scans the
        checkpoints table from where the last one stopped, so one call reads the table once.

        Raises:
            InvalidInputError: a run id that is not a valid id.
        """
        runs = [_checks.check_id(str(run), "run_id") for run in _as_list(run_ids, "run_ids")]
        if runs:
            await self.db.run(self._delete_runs, sorted(set(runs)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Synchronous :meth:`adelete_for_runs`."""
        self.db.run_sync(self.adelete_for_runs, run_ids)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of a thread, in all namespaces, and its row
        in the threads table.

        On MySQL and TiDB it deletes in batches of :attr:`delete_batch` rows per statement.
        """
        await self.db.run(self._delete_thread, check_thread_id(thread_id))

    def delete_thread(self, thread_id: str) -> None:
        """Synchronous :meth:`adelete_thread`."""
        self.db.run_sync(self.adelete_thread, thread_id)

    # -- retention ---------------------------------------------------------------------------

    async def aapply_retention(
        self, policy: RetentionPolicy | None = None, *, progress: Progress | None = None
    ) -> RetentionReport:
        """Apply ``policy`` (by default the saver's ``retention``) to every thread.

        Example::

            report = await saver.aapply_retention(RetentionPolicy(keep_last=2))
            print(report.checkpoints_deleted)

        Cost in round trips: for ``max_idle``, 1 per :attr:`delete_batch` idle threads plus
        the deletes of each; for ``keep_last``, 1 per :attr:`delete_batch` threads (a walk of
        the threads table's primary key), plus :meth:`aprune`'s cost for each thread with
        more than ``keep_last`` checkpoints. A policy applied regularly finds little to do.

        Args:
            policy: the policy to apply; the saver's ``retention`` if omitted.
            progress: called with the number of threads examined so far, after each batch.

        Raises:
            InvalidInputError: no policy was given, here or to the saver.
        """
        return await self.db.run(self._apply_retention, self._policy(policy), progress)

    def apply_retention(
        self, policy: RetentionPolicy | None = None, *, progress: Progress | None = None
    ) -> RetentionReport:
        """Synchronous :meth:`aapply_retention`."""
        return self.db.run_sync(self._apply_retention, self._policy(policy), progress)

    def _policy(self, policy: RetentionPolicy | None) -> RetentionPolicy:
        chosen = policy if policy is not None else self.retention
        if not isinstance(chosen, RetentionPolicy):
            raise InvalidInputError(
                "no retention policy: pass one, or build the saver with "
                "retention=RetentionPolicy(...)"
            )
        return chosen

    def start_retention_sweeper(self, interval: timedelta = timedelta(minutes=10)) -> None:
        """Apply the saver's retention policy now and every ``interval``, on the running
        event loop, until :meth:`astop_retention_sweeper`. A failed run is logged and the
        next one runs as planned.

        Raises:
            InvalidInputError: the saver has no retention policy, or a sweeper is running.
            RuntimeError: no event loop is running.
        """
        if not isinstance(self.retention, RetentionPolicy):
            raise InvalidInputError("start_retention_sweeper needs retention=RetentionPolicy(...)")
        if self._sweeper is not None and not self._sweeper.done():
            raise InvalidInputError("the retention sweeper is already running")
        seconds = interval.total_seconds()
        if seconds <= 0:
            raise InvalidInputError("interval must be positive")
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(seconds))

    async def astop_retention_sweeper(self) -> None:
        """Stop the sweeper and wait for it; a run in progress is cancelled between steps."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _sweep(self, seconds: float) -> None:
        while True:
            try:
                report = await self.aapply_retention()
                log.debug("checkpoint retention: %s", report)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checkpoint retention run failed; the next runs as planned")
            await asyncio.sleep(seconds)

    async def _apply_retention(
        self, policy: RetentionPolicy, progress: Progress | None = None
    ) -> RetentionReport:
        report = RetentionReport()
        seen = 0
        batch = self.delete_batch
        if policy.max_idle is not None:
            bound = _checks.ago(policy.max_idle, "max_idle")
            while True:
                rows = await self._read(
                    "apply_retention", thread_batch_statement(self.backend, self.tables, "idle"),
                    [_when_param(self.backend, bound), batch],
                )  # fmt: skip
                for (thread_id,) in rows:
                    report += await self._delete_thread(text(thread_id))
                seen += len(rows)
                if progress is not None:
                    progress(seen, None)
                if len(rows) < batch:
                    break
        if policy.keep_last is not None:
            after = ""
            while True:
                rows = await self._read(
                    "apply_retention",
                    thread_batch_statement(self.backend, self.tables, "walk"),
                    [after, batch],
                )
                for thread_id, count in rows:
                    if int(count) > policy.keep_last:
                        report += await self._keep_last(text(thread_id), policy.keep_last)
                seen += len(rows)
                if progress is not None:
                    progress(seen, None)
                if len(rows) < batch:
                    break
                after = text(rows[-1][0])
        return report

    # -- the work ----------------------------------------------------------------------------

    async def _read(self, operation: str, sql: str, params: Sequence[Any]) -> list[Any]:
        async def attempt() -> list[Any]:
            async with self.db.connection() as conn:
                return await conn.fetchall(sql, list(params))

        return await retrying(
            attempt, policy=self.retry, operation=operation, table=self.tables.checkpoints
        )

    async def _write(self, operation: str, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        """Run ``statements`` (each idempotent) as one retried step; returns the rows the first
        one changed. A statement ending in ``LIMIT`` is repeated until it changes fewer rows."""

        async def attempt() -> int:
            first = -1
            async with self.db.connection() as conn:
                for sql, params in statements:
                    count = await _until_short(conn, sql, params, self.delete_batch)
                    first = count if first < 0 else first
            return max(first, 0)

        return await retrying(
            attempt, policy=self.retry, operation=operation, table=self.tables.checkpoints
        )

    def _ns(self, ns_hex: Any) -> Any:
        hex_text = text(ns_hex)
        return hex_text if self.backend == "mysql" else bytes.fromhex(hex_text)

    async def _delete_thread(self, thread_id: str) -> RetentionReport:
        statements = delete_thread_statements(self.backend, self.tables, self.delete_batch)
        steps = [(sql, [thread_id]) for sql in statements]
        steps.append((delete_thread_row_statement(self.backend, self.tables), [thread_id]))
        deleted = await self._write("adelete_thread", steps)
        return RetentionReport(threads_deleted=1 if deleted else 0, checkpoints_deleted=deleted)

    async def _keep_last(self, thread_id: str, keep: int) -> RetentionReport:
        """Three round trips for a thread with anything to prune (one read, the writes, then
        the checkpoints, blobs and thread row together), one for a thread without."""
        rows = await self._read(
            "aprune", thread_refs_statement(self.backend, self.tables), [thread_id]
        )
        by_ns: dict[str, list[Sequence[Any]]] = {}
        for ns_hex, checkpoint_id, refs in rows:
            by_ns.setdefault(text(ns_hex), []).append((text(checkpoint_id), refs))
        doomed = {
            ns_hex: sorted(r[0] for r in group)[:-keep]
            for ns_hex, group in by_ns.items()
            if len(group) > keep
        }
        deleted = 0
        refresh = refresh_thread_statement(self.backend, self.tables)
        for n, (ns_hex, ids) in enumerate(doomed.items(), 1):
            tail = [(refresh, [thread_id, None, None, thread_id])] if n == len(doomed) else []
            deleted += await self._delete_checkpoints(
                thread_id, self._ns(ns_hex), by_ns[ns_hex], ids, tail
            )
        return RetentionReport(threads_pruned=1 if deleted else 0, checkpoints_deleted=deleted)

    async def _delete_checkpoints(
        self,
        thread_id: str,
        ns: Any,
        rows: Iterable[Sequence[Any]],
        doomed: list[str],
        tail: Sequence[tuple[str, Sequence[Any]]] = (),
    ) -> int:
        """Delete ``doomed`` (checkpoint ids of one namespace, oldest first) in batches, given
        ``rows`` (id, refs) of every checkpoint of the namespace: a blob goes once the last
        checkpoint that references it is gone. ``tail`` runs with the last batch. Returns the
        number of checkpoints that are gone."""
        uses: collections.Counter[tuple[str, str]] = collections.Counter()
        refs_of: dict[str, list[tuple[str, str]]] = {}
        for checkpoint_id, refs in rows:
            pairs = [(str(c), str(v)) for c, v in orjson.loads(text(refs))]
            refs_of[text(checkpoint_id)] = pairs
            uses.update(pairs)
        backend, t, batch = self.backend, self.tables, self.delete_batch
        for start in range(0, len(doomed), batch):
            ids = doomed[start : start + batch]
            free: list[tuple[str, str]] = []
            for checkpoint_id in ids:
                for pair in refs_of.get(checkpoint_id, ()):
                    uses[pair] -= 1
                    if uses[pair] == 0:
                        free.append(pair)
            head = [thread_id, ns, *ids]
            # The writes first, in LIMIT-bounded statements repeated until a batch comes back
            # short; then the checkpoints, the blobs nothing references any more and ``tail``,
            # keyed by the lists above, in one round trip.
            await self._write(
                "aprune", [(delete_by_ids_statement(backend, t, "writes", len(ids), batch), head)]
            )
            steps: list[tuple[str, Sequence[Any]]] = [
                (delete_by_ids_statement(backend, t, "checkpoints", len(ids), batch), head)
            ]
            for at in range(0, len(free), batch):
                chunk = free[at : at + batch]
                steps.append(
                    (
                        delete_blobs_statement(backend, t, len(chunk)),
                        [thread_id, ns, *(x for pair in chunk for x in pair)],
                    )
                )
            if start + batch >= len(doomed):
                steps += tail
            await self._write_together("aprune", steps)
        return len(doomed)

    async def _write_together(
        self, operation: str, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> None:
        """Run idempotent ``statements`` as one retried step, in one round trip on MySQL and
        TiDB (a multi-statement query)."""

        async def attempt() -> None:
            async with self.db.connection() as conn:
                await conn.execute_all(statements, max_bytes=STATEMENT_BYTES)

        await retrying(
            attempt, policy=self.retry, operation=operation, table=self.tables.checkpoints
        )

    async def _refresh_thread(
        self, thread_id: str, user_id: str | None = None, title: str | None = None
    ) -> None:
        sql = refresh_thread_statement(self.backend, self.tables)
        await self._write("refresh thread", [(sql, [thread_id, user_id, title, thread_id])])

    async def _copy_thread(self, source: str, target: str) -> None:
        backend, t, batch = self.backend, self.tables, self.delete_batch
        after: list[Any] | None = None
        while True:
            params: list[Any] = [source]
            if after is not None:
                params += after
            rows = await self._read(
                "acopy_thread", copy_keys_statement(backend, t, after is not None), [*params, batch]
            )
            if not rows:
                break
            by_ns: dict[str, list[Sequence[Any]]] = {}
            for row in rows:
                by_ns.setdefault(text(row[0]), []).append(row)
            steps: list[tuple[str, Sequence[Any]]] = []
            for ns_hex, group in by_ns.items():
                ns = self._ns(ns_hex)
                ids = [text(r[1]) for r in group]
                pairs = sorted(
                    {(str(c), str(v)) for r in group for c, v in orjson.loads(text(r[2]))}
                )
                for at in range(0, len(pairs), batch):
                    chunk = pairs[at : at + batch]
                    steps.append(
                        (
                            copy_blobs_statement(backend, t, len(chunk)),
                            [target, source, ns, *(x for pair in chunk for x in pair)],
                        )
                    )
                head = [target, source, ns, *ids]
                steps.append((copy_rows_statement(backend, t, "writes", len(ids)), head))
                steps.append((copy_rows_statement(backend, t, "checkpoints", len(ids)), head))
            await self._write("acopy_thread", steps)
            if len(rows) < batch:
                break
            last_ns = self._ns(rows[-1][0])
            after = [last_ns, last_ns, text(rows[-1][1])]
        info = await self._read("acopy_thread", thread_info_statement(backend, t), [source])
        user_id, title = (info[0][1], info[0][2]) if info else (None, None)
        await self._refresh_thread(target, user_id, title)

    async def _delete_runs(self, runs: list[str]) -> None:
        backend, t, batch = self.backend, self.tables, self.delete_batch
        wanted = set(runs)
        after: list[Any] | None = None
        touched: set[str] = set()
        while True:
            params: list[Any] = [*runs]
            if after is not None:
                params += after
            sql = runs_statement(backend, t, len(runs), after is not None)
            rows = await self._read("adelete_for_runs", sql, [*params, batch])
            groups: dict[tuple[str, str], list[str]] = {}
            for thread_id, ns_hex, checkpoint_id, run_id in rows:
                # The collation may have matched more loosely than Python's equality.
                if run_id is not None and text(run_id) in wanted:
                    key = (text(thread_id), text(ns_hex))
                    groups.setdefault(key, []).append(text(checkpoint_id))
            for (thread_id, ns_hex), ids in groups.items():
                ns = self._ns(ns_hex)
                every = await self._read(
                    "adelete_for_runs", refs_statement(backend, t), [thread_id, ns]
                )
                await self._delete_checkpoints(thread_id, ns, every, sorted(ids))
                touched.add(thread_id)
            if len(rows) < batch:
                break
            last = rows[-1]
            last_ns = self._ns(last[1])
            after = [text(last[0]), text(last[0]), last_ns, last_ns, text(last[2])]
        for thread_id in sorted(touched):
            await self._refresh_thread(thread_id)


async def _until_short(conn: Connection, sql: str, params: Sequence[Any], batch: int) -> int:
    """Run ``sql``; a ``LIMIT``-bounded delete again until a batch comes back short."""
    total = 0
    while True:
        count = await conn.execute(sql, list(params))
        total += max(count, 0)
        if not sql.endswith(f" LIMIT {batch}") or count < batch:
            return total


def _as_list(values: object, name: str) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{name} must be a list of ids, not {type(values).__name__}")
    return list(values)


def _thread_ids(values: object) -> list[str]:
    return list(dict.fromkeys(check_thread_id(v) for v in _as_list(values, "thread_ids")))


def _when_param(backend: Backend, when: datetime) -> str:
    # The stored forms: DATETIME(6) on MySQL, strftime('%Y-%m-%d %H:%M:%f') text on SQLite.
    if backend == "mysql":
        return when.strftime("%Y-%m-%d %H:%M:%S.%f")
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"
