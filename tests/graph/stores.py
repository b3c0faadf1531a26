"""Building a store on a test backend, with its four tables dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tidb_memory.langgraph.store import AsyncTiDBStore


def register(target: Any, prefix: str) -> None:
    """Have ``target`` drop the store's tables at teardown."""
    for suffix in ("", "_vectors", "_migrations", "_vector_migrations"):
        target.tables.append(prefix + suffix)


@asynccontextmanager
async def fresh_store(
    target: Any, url: str | None = None, **kwargs: Any
) -> AsyncIterator[AsyncTiDBStore]:
    prefix = target.new_table("lgs")
    register(target, prefix)
    store = AsyncTiDBStore(url or target.url, table_prefix=prefix, **kwargs)
    await store.asetup()
    try:
        yield store
    finally:
        await store.astop_ttl_sweeper()
