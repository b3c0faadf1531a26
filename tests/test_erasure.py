"""Erasure across the three places a user's data lives: the chat history, the saver's threads
and the LangGraph store (items and their vectors), with counts, both faces, in bounded batches,
idempotent under retry, and refusing before any I/O what could erase someone else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Target
from langchain_core.messages import AIMessage, HumanMessage
from test_checkpoint import Recorder, fresh_saver, recorder
from test_retention import chain

from tests.graph.embeddings import WordEmbeddings
from tests.graph.stores import fresh_store
from tidb_memory import AsyncTiDBChatMessageHistory, InvalidInputError, SessionStore
from tidb_memory._dialect import quote
from tidb_memory.engine import Connection
from tidb_memory.erasure import ErasureReport, aerase_user, erase_user
from tidb_memory.langgraph import AsyncTiDBSaver, AsyncTiDBStore

__all__ = ["recorder"]  # a fixture, imported for pytest

GINA = [("memories", "gina"), ("profile", "gina")]


def index() -> Any:
    return {"dims": 16, "embed": WordEmbeddings(16), "fields": ["text"]}


async def count(store: AsyncTiDBStore, table: str, ns: tuple[str, ...] | None = None) -> int:
    """Rows of ``table``, or of one namespace in it."""
    raw: Any = "\x00".join(ns) if ns else None
    if ns and store.backend == "sqlite":
        raw = raw.encode()
    where = (
        "" if ns is None else (" WHERE ns = %s" if store.backend == "mysql" else " WHERE ns = ?")
    )
    async with store.db.connection() as conn:
        found = await conn.fetchall(f"SELECT COUNT(*) FROM {table}{where}", [raw] if ns else [])
    return int(found[0][0])


async def fill_store(store: AsyncTiDBStore) -> None:
    """Gina: 3 memories (one expired, not yet swept), 1 profile item below her namespace;
    others: names that a LIKE or a prefix without whole labels would confuse with hers."""
    for i in range(3):
        ttl = 0.0001 if i == 2 else None
        await store.aput(("memories", "gina"), f"m{i}", {"text": f"likes tea {i}"}, ttl=ttl)
    await store.aput(("profile", "gina", "work"), "title", {"text": "engineer"})
    for ns in [("memories", "gina2"), ("memories", "gin_"), ("memories",), ("hal", "gina")]:
        await store.aput(ns, "x", {"text": "not gina's"})


async def make_history(url: str, table: str) -> SessionStore:
    sessions = SessionStore(url, table_name=table)
    for n in range(3):
        history = AsyncTiDBChatMessageHistory(f"s{n}", url, table_name=table)
        await history.aadd_messages([HumanMessage("hi"), AIMessage(f"hello {n}")])
        await sessions.aset_session_info(f"s{n}", user_id="gina" if n < 2 else "hal")
    return sessions


async def make_threads(saver: AsyncTiDBSaver) -> None:
    for n in range(3):
        await chain(saver, f"th{n}", 2)
        await saver.aset_thread_info(f"th{n}", user_id="gina" if n < 2 else "hal")


async def test_erasure_reaches_history_saver_and_store(backend: Target) -> None:
    table = backend.new_table("er")
    sessions = await make_history(backend.url, table)
    async with fresh_saver(backend.url) as saver, fresh_store(backend, index=index()) as store:
        store.sweep_batch = 2  # 4 items of gina's: more than one batch
        await make_threads(saver)
        await fill_store(store)
        vectors_before = await count(store, store.tables.vectors)
        report = await aerase_user(
            "gina", sessions=sessions, savers=[saver], stores=[store], namespaces=GINA
        )
        assert (report.sessions_deleted, report.messages_deleted) == (2, 4)
        assert (report.threads_deleted, report.checkpoints_deleted) == (2, 4)
        assert report.items_deleted == 4
        assert [s.session_id for s in (await sessions.alist_sessions()).sessions] == ["s2"]
        assert [t.thread_id for t in (await saver.alist_threads()).threads] == ["th2"]
        assert await store.asearch(("memories", "gina")) == []
        assert await store.asearch(("profile", "gina")) == []
        assert await count(store, store.tables.items) == 4  # every item of the others
        for ns in [("memories", "gina2"), ("memories", "gin_"), ("memories",), ("hal", "gina")]:
            assert (await store.aget(ns, "x")) is not None, ns
        assert await count(store, store.tables.vectors, ("memories", "gina")) == 0
        assert await count(store, store.tables.vectors, ("profile", "gina", "work")) == 0
        assert await count(store, store.tables.vectors) == vectors_before - 4
        # Again, through the sync face on a worker thread: nothing left, nothing more deleted.
        again = await asyncio.to_thread(
            erase_user, "gina", sessions=sessions, savers=[saver], stores=store, namespaces=GINA
        )
        assert again == ErasureReport()


async def test_a_store_without_index_erases_the_vectors_of_one_with_it(backend: Target) -> None:
    async with fresh_store(backend, index=index()) as indexed:
        await indexed.aput(("memories", "gina"), "m", {"text": "likes tea"})
        await indexed.aput(("memories", "hal"), "m", {"text": "likes coffee"})
        plain = AsyncTiDBStore(backend.url, table_prefix=indexed.tables.items)
        assert await plain.adelete_namespace(("memories", "gina")) == 1
        assert await count(indexed, indexed.tables.vectors, ("memories", "gina")) == 0
        assert await count(indexed, indexed.tables.vectors, ("memories", "hal")) == 1


async def test_delete_namespace_runs_in_bounded_batches(
    backend: Target, recorder: Recorder
) -> None:
    async with fresh_store(backend) as store:
        store.sweep_batch = 3
        for i in range(7):
            await store.aput(("memories", "gina", "2026"), f"k{i}", {"n": i})
        await store.aput(("memories", "gina"), "top", {"n": -1})
        await store.aput(("memories", "hal"), "k", {"n": 0})
        recorder.clear()
        assert await asyncio.to_thread(store.delete_namespace, ("memories", "gina")) == 8
        selects = [sql for _, sql, _ in recorder.statements if sql.startswith("SELECT ns")]
        deletes = [(sql, p) for _, sql, p in recorder.statements if sql.startswith("DELETE")]
        assert len(selects) == 3  # 3 + 3 + 2 items: the short batch ends it
        assert len(deletes) == 3  # no vectors table: items only
        for _sql, params in deletes:
            assert len(params) <= 3 + 3  # at most a batch of keys (and their namespaces)
        assert await store.adelete_namespace(("memories", "gina")) == 0
        assert (await store.aget(("memories", "hal"), "k")) is not None


async def test_an_interrupted_erasure_finishes_when_called_again(
    backend: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fresh_store(backend, index=index()) as store:
        store.sweep_batch = 2
        await fill_store(store)
        execute = Connection.execute
        calls = 0

        items_delete = f"DELETE FROM {quote(store.backend, store.tables.items)} "

        async def fail_on_the_second_items_delete(self: Connection, sql: str, params: Any) -> int:
            nonlocal calls
            if sql.startswith(items_delete):
                calls += 1
                if calls == 2:
                    raise InvalidInputError("injected: the process died here")
            return await execute(self, sql, params)

        monkeypatch.setattr(Connection, "execute", fail_on_the_second_items_delete)
        with pytest.raises(InvalidInputError, match="injected"):
            await aerase_user("gina", stores=store, namespaces=GINA)
        monkeypatch.setattr(Connection, "execute", execute)
        left = await count(store, store.tables.items)
        assert 4 < left < 8  # the first batch went, the rest is still there
        report = await aerase_user("gina", stores=store, namespaces=GINA)
        assert report.items_deleted == left - 4
        assert await count(store, store.tables.items) == 4
        assert await count(store, store.tables.vectors, ("memories", "gina")) == 0


async def test_bad_input_is_refused_before_anything_is_deleted(backend: Target) -> None:
    table = backend.new_table("er")
    sessions = await make_history(backend.url, table)
    async with fresh_store(backend) as store:
        await fill_store(store)
        bad: list[tuple[dict[str, Any], str]] = [
            ({"namespaces": [("memories",)]}, "does not carry the user id"),
            ({"namespaces": [("memories", "gina2")]}, "does not carry the user id"),
            ({"namespaces": [("memories", "gina"), ("memories",)]}, "does not carry"),
            ({"namespaces": ("memories", "gina")}, "tuple of str"),
            ({"namespaces": [["memories", "gina"]]}, "tuple of str"),
            ({"namespaces": []}, "go together"),
            ({"namespaces": GINA, "stores": []}, "go together"),
            ({"namespaces": GINA, "stores": [object()]}, "AsyncTiDBStore"),
        ]
        for kwargs, message in bad:
            kwargs.setdefault("stores", [store])
            with pytest.raises(InvalidInputError, match=message):
                await aerase_user("gina", sessions=sessions, **kwargs)
        with pytest.raises(InvalidInputError, match="at least one label"):
            await store.adelete_namespace(())
        assert len((await sessions.alist_sessions(user_id="gina")).sessions) == 2
        assert await count(store, store.tables.items) == 8
