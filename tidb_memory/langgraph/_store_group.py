"""Concurrent store calls made in one event-loop iteration, run as one batch.

LangMem and agents call ``aget``/``asearch``/``aput`` under ``asyncio.gather``: each call joins
the group of its loop, and the group runs them all as one batch (one round trip) right after
the iteration. A caller that is cancelled only stops waiting; the batch runs on in its own task,
so nothing stays stuck. If the shared batch fails, every member runs again alone, so an error
is only ever the caller's own (the store's batches are safe to repeat: reads, and keyed
idempotent writes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .._iteration import IterationGroup
from ._store_plan import Plan

__all__ = ["BatchGroup"]

_Member = tuple[Plan, "asyncio.Future[list[Any]]"]


class BatchGroup(IterationGroup[_Member]):
    """The plans waiting for the next flush on one loop."""

    __slots__ = ("_execute",)

    def __init__(self, execute: Callable[[Plan], Awaitable[list[Any]]]) -> None:
        super().__init__()
        self._execute = execute

    async def join(self, plan: Plan) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.enqueue((plan, future))
        return await future

    async def run(self, members: list[_Member]) -> None:
        live = [m for m in members if not m[1].done()]  # cancelled callers are skipped
        if not live:
            return
        if len(live) == 1:
            await self._alone(live[0])
            return
        merged, starts = Plan.merge(plan for plan, _ in live)
        try:
            results = await self._execute(merged)
        except Exception:
            for member in live:
                await self._alone(member)
            return
        except BaseException:
            for _, future in live:
                future.cancel()
            raise
        for (plan, future), start in zip(live, starts, strict=True):
            if not future.done():
                future.set_result(results[start : start + plan.size])

    async def _alone(self, member: _Member) -> None:
        plan, future = member
        try:
            result = await self._execute(plan)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        except BaseException:
            future.cancel()
            raise
        if not future.done():
            future.set_result(result)
