"""An application's own engine: a plain ``create_async_engine(url)``, with SQLAlchemy's defaults
(no autocommit, a rollback when a connection goes back to the pool), never loses a write.

Every write must be visible to another connection as soon as the call returns, ``aclear`` must
really clear, the pool's rollback must not fail for want of a greenlet, and the application's
own transactions on the same engine keep their meaning.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Target
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidb_memory import AsyncTiDBChatMessageHistory
from tidb_memory.langgraph import AsyncTiDBSaver

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def app_engine(backend: Target) -> AsyncIterator[AsyncEngine]:
    """The engine an application builds itself, as SQLAlchemy's docs show it."""
    engine = create_async_engine(backend.url)
    yield engine
    await engine.dispose()


@pytest.fixture
def reset_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.pool")
    return caplog


def no_reset_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if "Exception during reset" in r.getMessage()]
    bad += [r.getMessage() for r in caplog.records if "MissingGreenlet" in str(r.exc_info)]
    assert not bad, bad


async def test_appends_are_visible_to_other_connections(
    backend: Target, table: str, app_engine: AsyncEngine, reset_errors: Any
) -> None:
    history = AsyncTiDBChatMessageHistory("s1", engine=app_engine, table_name=table)
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
    await history.aadd_messages([HumanMessage("again")])
    # Another connection, outside the engine's pool, sees every row at once.
    assert backend.count(table, "s1") == 3
    assert [m.content for m in await history.aget_messages()] == ["hi", "hello", "again"]
    no_reset_errors(reset_errors)


async def test_aclear_really_clears(
    backend: Target, table: str, app_engine: AsyncEngine, reset_errors: Any
) -> None:
    history = AsyncTiDBChatMessageHistory("s1", engine=app_engine, table_name=table)
    await history.aadd_messages([HumanMessage("hi")])
    assert backend.count(table, "s1") == 1
    await history.aclear()
    assert backend.count(table, "s1") == 0
    assert await history.aget_messages() == []
    no_reset_errors(reset_errors)


async def test_reads_see_other_writers(
    backend: Target, table: str, app_engine: AsyncEngine
) -> None:
    """A read does not keep a snapshot open on the pooled connection: the next read sees rows
    other connections stored in between (REPEATABLE READ would otherwise pin the old view)."""
    history = AsyncTiDBChatMessageHistory("s1", engine=app_engine, table_name=table)
    await history.aadd_messages([HumanMessage("one")])
    assert [m.content for m in await history.aget_messages()] == ["one"]
    other = AsyncTiDBChatMessageHistory("s1", backend.url, table_name=table)
    await other.aadd_messages([HumanMessage("two")])
    await other.aclose()
    assert [m.content for m in await history.aget_messages()] == ["one", "two"]


async def test_the_applications_own_transactions_still_roll_back(
    backend: Target, table: str, app_engine: AsyncEngine
) -> None:
    """The library leaves the application's connections as it found them: a transaction the
    application opens on the same engine afterwards still rolls back."""
    history = AsyncTiDBChatMessageHistory("s1", engine=app_engine, table_name=table)
    for i in range(4):  # touch more connections than one
        await history.aadd_messages([HumanMessage(f"m{i}")])
    scratch = f"tm_scratch_{uuid.uuid4().hex[:10]}"
    backend.execute(f"CREATE TABLE {backend.q(scratch)} (v INTEGER)")
    try:
        async with app_engine.connect() as conn:
            await conn.execute(text(f"INSERT INTO {backend.q(scratch)} VALUES (1)"))
            await conn.rollback()
        assert backend.query(f"SELECT COUNT(*) FROM {backend.q(scratch)}")[0][0] == 0
    finally:
        backend.execute(f"DROP TABLE {backend.q(scratch)}")
    assert backend.count(table, "s1") == 4


# --- the LangGraph saver on the application's engine -----------------------------------------


async def test_saver_writes_are_visible_and_deletes_delete(
    backend: Target, app_engine: AsyncEngine, reset_errors: Any
) -> None:
    prefix = f"tmcp_{uuid.uuid4().hex[:10]}"
    saver = AsyncTiDBSaver(engine=app_engine, table_prefix=prefix)
    other = AsyncTiDBSaver(backend.url, table_prefix=prefix)  # its own pool: other connections
    await saver.asetup()
    try:
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": ["hi"]}
        cp["channel_versions"] = {"messages": 1}
        cfg: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        stored = await saver.aput(cfg, cp, {"source": "input", "step": 0}, {"messages": 1})
        await saver.aput_writes(stored, [("messages", ["w"])], "task1")
        seen = await other.aget_tuple(stored)
        assert seen is not None and seen.checkpoint["id"] == cp["id"]
        assert seen.checkpoint["channel_values"] == {"messages": ["hi"]}
        assert [(w[1], w[2]) for w in seen.pending_writes or []] == [("messages", ["w"])]
        await saver.adelete_thread("t1")
        assert await other.aget_tuple(cfg) is None
    finally:
        t = saver.tables
        for name in (t.checkpoints, t.blobs, t.writes, t.migrations):
            backend.execute(f"DROP TABLE IF EXISTS {name}")
        await other.db.aclose()
    no_reset_errors(reset_errors)
