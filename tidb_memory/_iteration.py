"""Work submitted in one event-loop iteration, run together right after it.

Concurrent callers on one loop (the writes of a super-step's tasks, LangMem's ``asyncio.gather``
of store calls) each :meth:`IterationGroup.enqueue` a member; the first of an iteration
schedules a flush with ``call_soon``, which runs after every caller of that iteration has
joined, and hands all of them to :meth:`IterationGroup.run` in a task of its own. A caller that
is cancelled only stops waiting for its member; the flush task is referenced here, since the
loop keeps only weak references to tasks.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["IterationGroup"]

M = TypeVar("M")


class IterationGroup(Generic[M]):
    """Members waiting for the next flush on one loop; subclasses implement :meth:`run`."""

    __slots__ = ("_pending", "_tasks")

    def __init__(self) -> None:
        self._pending: list[M] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, member: M) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(member)

    def _flush(self) -> None:
        members, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self.run(members))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, members: list[M]) -> None:
        raise NotImplementedError
