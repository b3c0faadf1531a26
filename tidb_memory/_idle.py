"""Idle connections kept on one event loop, in front of SQLAlchemy's pool.

SQLAlchemy's async pool costs a greenlet hop and its own bookkeeping on every checkout, and it
closes every connection above ``pool_size`` the moment it comes back, so a burst above the pool
size opens and closes a connection per call (on TiDB Cloud: TCP, TLS and auth, across the
internet). A connection tidb-memory is done with stops here instead, still checked out of
SQLAlchemy's pool:

* taking it again is a list pop: no greenlet, no pool lock, no event dispatch;
* the newest is reused first, so the connections a burst opened sink to the bottom and, once idle
  for ``idle_timeout`` seconds, go back to SQLAlchemy's pool, which keeps ``pool_size`` of them
  and closes the rest;
* a connection the pool would replace at checkout (older than the pool's last invalidation, which
  a lost connection triggers, or past ``pool_recycle``) goes back to the pool instead of being
  used, and the pool's next checkout replaces it, as if it had never left.

The pool's limit is still SQLAlchemy's: ``pool_size + max_overflow`` connections, idle ones here
included. When all of them are in use, callers wait here (first come, first served, at most
``pool_timeout``) rather than in SQLAlchemy's queue, which connections returned here would never
reach.

The pool's limit, its wait and the checks SQLAlchemy makes at checkout are read through
``_driver`` (:func:`~tidb_memory._driver.pool_overflow_limit`,
:func:`~tidb_memory._driver.pool_wait_timeout`, :func:`~tidb_memory._driver.still_usable`),
which keeps every reach into a dependency's private parts.
"""

from __future__ import annotations

import asyncio
import collections
import time

import sqlalchemy.exc
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from ._driver import _checkin, pool_overflow_limit, pool_wait_timeout, still_usable

__all__ = ["IdleConnections"]


class IdleConnections:
    """The idle connections of one pool on the running loop, newest last."""

    __slots__ = (
        "_closed",
        "_loop",
        "_stack",
        "_tasks",
        "_timer",
        "_waiters",
        "idle_timeout",
        "pool",
    )

    def __init__(self, pool: Pool, idle_timeout: float) -> None:
        self.pool = pool
        self.idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._stack: list[tuple[PoolProxiedConnection, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        #: Callers waiting for a connection: each gets one, or None (ask the pool), or an error.
        self._waiters: collections.deque[asyncio.Future[PoolProxiedConnection | None]] = (
            collections.deque()
        )
        self._closed = False

    def __len__(self) -> int:
        return len(self._stack)

    async def connect(self) -> PoolProxiedConnection:
        """A connection: the most recently returned usable one, else one from the pool."""
        stack = self._stack
        while stack:
            fairy = stack.pop()[0]
            if self._usable(fairy):
                return fairy
            self._release(fairy)
        handed = await self._wait() if self._full() else None
        if handed is not None:
            return handed
        return await greenlet_spawn(self.pool.connect)

    def put(self, fairy: PoolProxiedConnection) -> None:
        """Keep ``fairy``, a connection in a clean state, for the next :meth:`connect`."""
        if self._closed or not self._usable(fairy):
            self._release(fairy)
            self.wake()
            return
        if self._hand_over(fairy):
            return
        self._stack.append((fairy, self._loop.time()))
        if self._timer is None:
            self._timer = self._loop.call_at(self._stack[0][1] + self.idle_timeout, self._expire)

    def wake(self) -> None:
        """Let the first waiter ask the pool: a connection was discarded, so it has room."""
        self._hand_over(None)

    def _hand_over(self, fairy: PoolProxiedConnection | None) -> bool:
        """Give ``fairy`` (or ``None``: ask the pool) to the first caller still waiting."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(fairy)
                return True
        return False

    async def aclose(self) -> None:
        """Give every idle connection back to the pool (before the pool is disposed)."""
        self._closed = True
        while self._waiters:
            self.wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        stack, self._stack = self._stack, []
        for fairy, _ in stack:
            await _checkin(self.pool, fairy)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _full(self) -> bool:
        """True when the pool can neither hand out an idle connection nor open one."""
        pool = self.pool
        limit = pool_overflow_limit(pool)
        if not isinstance(pool, QueuePool) or limit < 0:
            return False
        return pool.checkedin() == 0 and pool.overflow() >= limit

    async def _wait(self) -> PoolProxiedConnection | None:
        pool = self.pool
        timeout = pool_wait_timeout(pool)
        waiter: asyncio.Future[PoolProxiedConnection | None] = self._loop.create_future()
        self._waiters.append(waiter)
        timer = self._loop.call_later(timeout, _time_out, waiter, pool, timeout)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled just after a connection was handed over: it is not ours to keep.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                fairy = waiter.result()
                if fairy is not None:
                    self.put(fairy)
                else:
                    self.wake()
            raise
        finally:
            timer.cancel()

    def _usable(self, fairy: PoolProxiedConnection) -> bool:
        return still_usable(self.pool, fairy, time.time())

    def _expire(self) -> None:
        self._timer = None
        stack = self._stack
        deadline = self._loop.time() - self.idle_timeout
        # Times grow from the bottom up: the expired connections are a prefix.
        cut = 0
        while cut < len(stack) and stack[cut][1] <= deadline:
            cut += 1
        expired = stack[:cut]
        del stack[:cut]
        for fairy, _ in expired:
            self._release(fairy)
        if stack:
            self._timer = self._loop.call_at(stack[0][1] + self.idle_timeout, self._expire)

    def _release(self, fairy: PoolProxiedConnection) -> None:
        task = self._loop.create_task(_checkin(self.pool, fairy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _time_out(
    waiter: asyncio.Future[PoolProxiedConnection | None], pool: Pool, timeout: float
) -> None:
    if not waiter.done() and isinstance(pool, QueuePool):
        # SQLAlchemy's own error for an exhausted pool, so callers see one kind of error.
        waiter.set_exception(
            sqlalchemy.exc.TimeoutError(
                f"QueuePool limit of size {pool.size()} overflow {pool_overflow_limit(pool)} "
                "reached, "
                f"connection timed out, timeout {timeout:.2f}"
            )
        )
