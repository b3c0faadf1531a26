"""TTL for the store: sweeping expired items in bounded batches, and the periodic sweeper.

The batch loop (:meth:`TTLSweeper._in_batches`) also serves the store's erasure by namespace.

Reads never return an expired item (they compare ``expires_at`` with the time), so sweeping only
reclaims space: :meth:`TTLSweeper.asweep_ttl` deletes up to ``sweep_batch`` items (and their
vectors) per statement until none is left, and the sweeper task runs it every
``sweep_interval_minutes``, as LangGraph's PostgresStore does.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import _bridge
from .._retry import RetryPolicy, retrying
from ..engine import Backend, Connection, Database
from ..errors import InvalidInputError
from . import _store_sql as sql

__all__ = ["TTLSweeper"]

logger = logging.getLogger("tidb_memory")
#: Budget of text per multi-statement query.
_STATEMENT_BYTES = 12 * 1024 * 1024


class TTLSweeper:
    """The sweeping half of :class:`~tidb_memory.AsyncTiDBStore` (a mixin)."""

    db: Database
    tables: sql.StoreTables
    retry: RetryPolicy
    sweep_batch: int
    ttl_config: Any
    index: Any
    _sweeper: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None

    @property
    def backend(self) -> Backend:
        return self.db.backend

    async def asweep_ttl(self) -> int:
        """Delete expired items (and their vectors) in batches of :attr:`sweep_batch`; return
        how many. Reads never return an expired item, swept or not."""
        return await self.db.run(self._sweep)

    def sweep_ttl(self) -> int:
        """Synchronous :meth:`asweep_ttl`."""
        return self.db.run_sync(self.asweep_ttl)

    async def _sweep(self) -> int:
        backend, t = self.backend, self.tables

        async def step(conn: Connection) -> tuple[int, int]:
            now = time.time_ns() // 1000
            rows = await conn.fetchall(sql.expired_statement(backend, t), (now, self.sweep_batch))
            keys = [(sql.decode_ns(r[0]), sql.decode_key(r[1])) for r in rows]
            if keys:
                statements = sql.sweep_statements(
                    backend, t, keys, now, vectors=self.index is not None
                )
                await conn.execute_all(statements, max_bytes=_STATEMENT_BYTES)
            return len(keys), len(keys)

        return await self._in_batches("sweep_ttl", step)

    async def _in_batches(
        self, operation: str, step: Callable[[Connection], Awaitable[tuple[int, int]]]
    ) -> int:
        """Run ``step`` (one retried attempt on one connection: it finds up to
        :attr:`sweep_batch` items, deletes them and returns how many it found and deleted)
        until it finds fewer than a batch; returns the total deleted."""
        total = 0
        while True:

            async def attempt() -> tuple[int, int]:
                async with self.db.connection() as conn:
                    return await step(conn)

            found, deleted = await retrying(
                attempt, policy=self.retry, operation=operation, table=self.tables.items
            )
            total += deleted
            if found < self.sweep_batch:
                return total

    async def astart_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        """Sweep every ``sweep_interval_minutes`` (default: the ttl config's, else 5) in a task
        on the running loop; :meth:`astop_ttl_sweeper` ends it. Starting twice is a no-op."""
        return await self.db.run(self._start_sweeper, sweep_interval_minutes)

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """:meth:`astart_ttl_sweeper` for synchronous code: the task runs on the background loop.
        Returns a future that completes when the sweeper stops."""
        task = self.db.run_sync(self._start_sweeper, sweep_interval_minutes)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        task.add_done_callback(lambda _: done.set_result(None))
        # Stopped before the background loop is at interpreter exit (atexit runs last-in
        # first-out), so that no pending task is destroyed with the loop.
        atexit.register(self.stop_ttl_sweeper)
        return done

    async def _start_sweeper(self, minutes: float | None) -> asyncio.Task[None]:
        if self._sweeper is not None and not self._sweeper[1].done():
            return self._sweeper[1]
        if minutes is None:
            minutes = (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
            raise InvalidInputError(f"sweep_interval_minutes must be positive, not {minutes!r}")
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            self._sweep_forever(float(minutes) * 60), name="tidb-memory-ttl-sweeper"
        )
        self._sweeper = (loop, task)
        return task

    async def _sweep_forever(self, seconds: float) -> None:
        while True:
            try:
                await self._sweep()
            except Exception:  # a failed sweep is retried at the next interval
                logger.warning("TTL sweep of %s failed", self.tables.items, exc_info=True)
            await asyncio.sleep(seconds)

    async def astop_ttl_sweeper(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Stop the sweeper; True once it has stopped (False if ``timeout`` ran out)."""
        if self._sweeper is None:
            return True
        loop, task = self._sweeper
        if loop is asyncio.get_running_loop():
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=timeout)
        else:
            return await asyncio.to_thread(self.stop_ttl_sweeper, timeout)
        if done:
            self._sweeper = None
        return bool(done)

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Synchronous :meth:`astop_ttl_sweeper`."""
        atexit.unregister(self.stop_ttl_sweeper)
        if self._sweeper is None:
            return True
        loop, task = self._sweeper
        if loop.is_closed() or not loop.is_running():
            self._sweeper = None
            return True
        if _running_loop() is loop:  # on the sweeper's own thread: waiting would deadlock
            task.cancel()
            return task.done()
        return _bridge.call_on(loop, self.astop_ttl_sweeper, timeout)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
