"""Work submitted in one event-loop iteration, run together right after it.

Concurrent callers on one loop (the writes of a super-step's tasks, LangMem's ``asyncio.gather``
of store calls) each :meth:`IterationGroup.enqueue` a member; the first of an iteration
schedules a flush with ``call_soon``, which runs after every caller of that iteration has
joined, and hands all of them to :meth:`IterationGroup.run` in a task of its own. A caller that
is cancelled only stops waiting for its member; the flush task is referenced here, since the
loop keeps only weak references to tasks.

A group may cap its flushes in flight (``limit``): members that arrive while ``limit`` flushes
run wait, and go together, in one flush, as soon as one of them ends. That is group commit: under
load a flush carries every member that queued during the previous one, so the round trips and
commits per member fall as the load rises, while a lone caller waits for nobody.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["IterationGroup"]

M = TypeVar("M")


class IterationGroup(Generic[M]):
    """Members waiting for the next flush on one loop; subclasses implement :meth:`run`."""

    __slots__ = ("_limit", "_pending", "_scheduled", "_tasks")

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._pending: list[M] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, member: M) -> None:
        self._pending.append(member)
        if not self._scheduled and (self._limit is None or len(self._tasks) < self._limit):
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:  # a flush that ended in between took them
            return
        members, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self.run(members))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending and not self._scheduled:  # they waited for a free flush: this one
            self._flush()

    async def run(self, members: list[M]) -> None:
        raise NotImplementedError
