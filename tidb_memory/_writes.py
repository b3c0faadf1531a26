"""Write grouping: the idempotent writes one event-loop iteration submits share a connection, a
round trip and, on MySQL and TiDB, one transaction (see
:meth:`~tidb_memory.engine.Database.execute_grouped`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._iteration import IterationGroup

if TYPE_CHECKING:
    from .engine import Connection, Database

__all__: list[str] = []


_BEGIN = {"mysql": ("START TRANSACTION", ()), "sqlite": ("BEGIN IMMEDIATE", ())}
_COMMIT: tuple[str, Sequence[Any]] = ("COMMIT", ())


async def execute_atomic(
    conn: Connection, statements: Sequence[tuple[str, Sequence[Any]]], max_bytes: int
) -> None:
    """Run write ``statements`` in order as one transaction, in as many round trips as
    :meth:`Connection.execute_all` needs (one, unless they pass ``max_bytes``).

    More than one statement is wrapped in ``START TRANSACTION`` ... ``COMMIT`` inside the same
    multi-statement query: in autocommit every statement is a commit that waits for the redo
    log's flush (or TiKV's commit), so a group of ten statements waited ten times. They also
    commit together. If one fails, the server stops there, inside the transaction, which is
    rolled back before the connection goes back to the pool (a connection that cannot take
    the ``ROLLBACK`` is broken, and discarded). SQLite takes its write lock at ``BEGIN``.
    """
    if len(statements) < 2:
        await conn.execute_all(statements, max_bytes=max_bytes)
        return
    try:
        await conn.execute_all([_BEGIN[conn.backend], *statements, _COMMIT], max_bytes=max_bytes)
    except Exception:
        await conn.execute("ROLLBACK", ())
        raise


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
                await execute_atomic(
                    conn,
                    [statement for statements, _, _ in members for statement in statements],
                    min(max_bytes for _, max_bytes, _ in members),
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
