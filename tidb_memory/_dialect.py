"""What every schema needs from the backend, whichever table set it declares: identifier quoting
and the column probe. The chat schema, the LangGraph saver and store, and the migrations runner
import it from here, so that no table set imports another's schema module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Backend, Connection

__all__ = ["quote", "table_columns"]


def quote(backend: Backend, name: str) -> str:
    """Quote a checked identifier for ``backend``.

    Example:
        >>> quote("mysql", "lg_blobs"), quote("sqlite", "lg_blobs")
        ('`lg_blobs`', '"lg_blobs"')
    """
    return f"`{name}`" if backend == "mysql" else f'"{name}"'


def _columns_statement(backend: Backend, table: str) -> tuple[str, tuple[Any, ...]]:
    if backend == "mysql":
        return (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table,),
        )
    return ("SELECT name FROM pragma_table_info(?)", (table,))


async def table_columns(conn: Connection, table: str) -> set[str]:
    """The lower-cased column names of ``table``; empty if it does not exist. One round trip."""
    sql, params = _columns_statement(conn.backend, table)
    return {str(row[0]).lower() for row in await conn.fetchall(sql, params)}
