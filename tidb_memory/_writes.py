"""Write grouping: the idempotent writes one event-loop iteration submits share a connection and
a round trip (see :meth:`~tidb_memory.engine.Database.execute_grouped`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._iteration import IterationGroup

if TYPE_CHECKING:
    from .engine import Database

__all__: list[str] = []


#: A write waiting in a :class:`_WriteGroup`: its statements, their send budget, its outcome.
_Member = tuple[Sequence[tuple[str, Sequence[Any]]], int, "asyncio.Future[bool]"]


class _WriteGroup(IterationGroup[_Member]):
    """The writes of one :class:`Database` on one event loop that wait for the next flush."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    async def join(self, statements: Sequence[tuple[str, Sequence[Any]]], max_bytes: int) -> bool:
        """Wait for ``statements`` to run with the group: True once they did, False if the
        shared attempt failed (run them alone). A group of one raises its own error."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.enqueue((statements, max_bytes, future))
        return await future

    async def run(self, members: list[_Member]) -> None:
        try:
            async with self._db.connection() as conn:
                await conn.execute_all(
                    [statement for statements, _, _ in members for statement in statements],
                    max_bytes=min(max_bytes for _, max_bytes, _ in members),
                )
        except BaseException as exc:
            for _, _, future in members:
                if future.done():
                    continue
                if len(members) == 1 and isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.set_result(False)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, _, future in members:
                if not future.done():
                    future.set_result(True)
