"""Write grouping: the idempotent writes one event-loop iteration submits share a connection, a
round trip and, on MySQL and TiDB, one transaction (see
:meth:`~tidb_memory.engine.Database.execute_grouped`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._iteration import IterationGroup

if TYPE_CHECKING:
    from .engine import Connection, Database

__all__: list[str] = []


class RowInsert(tuple[str, list[Any]]):
    """``(sql, params)`` of a multi-row INSERT that a grouped write may merge with the other
    inserts of the same ``kind``: one statement, so one OK packet, for every member's rows.

    ``kind(n)`` is the statement for ``n`` rows; inserts are merged only when their ``kind`` is
    the same object, so a builder must hand out one callable per table (an ``lru_cache``).
    Merging is only sound where the statement's effect does not depend on being alone: an
    idempotent insert whose rows do not read what another row of the group wrote.

    Example:
        >>> RowInsert(lambda n: "INSERT ... VALUES " + ", ".join(["(%s)"] * n), [1, 2], 2, 16)
        ('INSERT ... VALUES (%s), (%s)', [1, 2])
    """

    kind: Callable[[int], str]
    rows: int
    weight: int

    def __new__(
        cls, kind: Callable[[int], str], params: list[Any], rows: int, weight: int
    ) -> RowInsert:
        self = super().__new__(cls, (kind(rows), params))
        self.kind, self.rows, self.weight = kind, rows, weight
        return self


def merge_inserts(
    statements: Sequence[tuple[str, Sequence[Any]]], max_bytes: int
) -> list[tuple[str, Sequence[Any]]]:
    """``statements`` with the :class:`RowInsert` of each kind merged into the first of its
    kind while their ``weight`` fits in ``max_bytes``; every other statement keeps its place
    and its neighbours (a statement reading ``ROW_COUNT()`` still follows the one it reads)."""
    out: list[tuple[str, Sequence[Any]]] = []
    open_at: dict[Callable[[int], str], int] = {}
    merged: dict[int, list[RowInsert]] = {}
    weights: dict[int, int] = {}
    for statement in statements:
        if type(statement) is RowInsert:
            at = open_at.get(statement.kind)
            if at is not None and weights[at] + statement.weight <= max_bytes:
                merged[at].append(statement)
                weights[at] += statement.weight
                continue
            open_at[statement.kind] = len(out)
            merged[len(out)] = [statement]
            weights[len(out)] = statement.weight
        out.append(statement)
    for at, parts in merged.items():
        if len(parts) > 1:
            out[at] = (
                parts[0].kind(sum(part.rows for part in parts)),
                [value for part in parts for value in part[1]],
            )
    return out


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
    On MySQL and TiDB the :class:`RowInsert` statements of a kind become one (see
    :func:`merge_inserts`): fewer statements for the server to run and the client to parse.
    """
    if len(statements) > 1 and conn.backend == "mysql":
        # SQLite runs one statement per call, and caps parameters. Merged into one statement
        # (pending writes of several tasks, say), the group needs no transaction around it.
        statements = merge_inserts(statements, max_bytes)
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
