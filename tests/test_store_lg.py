"""AsyncTiDBStore, the LangGraph store: the contract on MariaDB and SQLite.

Exact keys and labels, whole-label prefixes, typed filters, the total order, values that read
back equal, timestamps, TTL, versioned setup, and one object for every caller (async, worker
threads, the event loop's own thread, concurrent calls, cancellation).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Target, wait_until
from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

import tidb_memory
from tests.graph.stores import fresh_store
from tidb_memory import InvalidInputError, SchemaError
from tidb_memory.langgraph.store import AsyncTiDBStore


async def keys_of(items: list[Any]) -> list[tuple[tuple[str, ...], str]]:
    return [(tuple(i.namespace), i.key) for i in items]


async def test_put_get_delete_round_trip(backend: Target) -> None:
    value = {
        "text": "hi 😀 你好 \u0000 \\ ' \" \n end",
        "n": 3,
        "f": 1.5,
        "big": 2**62,
        "flag": True,
        "none": None,
        "list": [1, "two", {"three": [3.0]}],
        "nested": {"a": {"b": {"c": "deep"}}},
        "empty": {},
    }
    async with fresh_store(backend) as store:
        await store.aput(("users", "u1"), "profile", value)
        item = await store.aget(("users", "u1"), "profile")
        assert item is not None
        assert item.value == value
        assert item.namespace == ("users", "u1") and item.key == "profile"
        await store.adelete(("users", "u1"), "profile")
        assert await store.aget(("users", "u1"), "profile") is None
        assert await store.aget(("users", "u1"), "missing") is None


async def test_keys_and_labels_are_exact_strings(backend: Target) -> None:
    labels = ["a", "a ", "A", "á", "a\u0301", " a", "a'b\\", "%", "_"]
    keys = [*labels, "a\x00b", ""]  # labels may hold neither NUL nor nothing; keys may
    async with fresh_store(backend) as store:
        for i, key in enumerate(keys):
            await store.aput(("ns",), key, {"i": i})
        for i, label in enumerate(labels):
            await store.aput((label,), "k", {"i": i})
        for i, key in enumerate(keys):
            item = await store.aget(("ns",), key)
            assert item is not None and item.value == {"i": i} and item.key == key
        for i, label in enumerate(labels):
            labelled = await store.aget((label,), "k")
            assert labelled is not None and labelled.value == {"i": i}
        found = await store.asearch(("ns",), limit=100)
        assert sorted(i.key for i in found) == sorted(keys)
        assert sorted(await store.alist_namespaces(max_depth=1)) == sorted(
            [("ns",)] + [(label,) for label in labels]
        )


async def test_long_keys_work_and_too_long_keys_are_refused(backend: Target) -> None:
    path = "/".join(["src", "deeply", "nested", "directory"] * 40) + "/file_ünïcode.py"
    assert len(path) > 600
    async with fresh_store(backend) as store:
        await store.aput(("files",), path, {"content": "print('hi')"})
        item = await store.aget(("files",), path)
        assert item is not None and item.key == path
        with pytest.raises(InvalidInputError, match="key"):
            await store.aput(("files",), "x" * 5000, {"content": ""})
        with pytest.raises(InvalidInputError):
            await store.aput(("files",), "\ud800", {"content": ""})
        assert [i.key for i in await store.asearch(("files",))] == [path]


@pytest.mark.parametrize(
    "bad",
    [
        {"t": (1, 2)},
        {"x": float("nan")},
        {"x": float("inf")},
        {"when": datetime.now(UTC)},
        {1: "non-str key"},
        {"obj": object()},
        {"big": 2**70},
    ],
    ids=["tuple", "nan", "inf", "datetime", "int-key", "object", "bigint"],
)
async def test_values_that_would_not_read_back_equal_are_refused(
    backend: Target, bad: dict[Any, Any]
) -> None:
    async with fresh_store(backend) as store:
        with pytest.raises(InvalidInputError):
            # A good put in the same batch: nothing of the batch is written.
            await store.abatch([PutOp(("v",), "good", {"ok": 1}), PutOp(("v",), "bad", bad)])
        assert await store.asearch(("v",)) == []
        with pytest.raises(InvalidInputError):
            await store.aput(("v",), "list", [1, 2])  # type: ignore[arg-type]


async def test_prefixes_match_whole_labels_and_like_characters_are_plain(backend: Target) -> None:
    async with fresh_store(backend) as store:
        for ns in [("a",), ("a", "b"), ("ab",), ("ab", "c"), ("a%",), ("a_",), ("a\\",), ("x%y",)]:
            await store.aput(ns, "k", {"ns": list(ns)})

        async def under(prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
            return {tuple(i.namespace) for i in await store.asearch(prefix, limit=50)}

        assert await under(("a",)) == {("a",), ("a", "b")}
        assert await under(("ab",)) == {("ab",), ("ab", "c")}
        assert await under(("a%",)) == {("a%",)}
        assert await under(("a_",)) == {("a_",)}
        assert await under(("a\\",)) == {("a\\",)}
        assert await under(("x%y",)) == {("x%y",)}
        assert await under(("x",)) == set()
        assert set(await store.alist_namespaces(prefix=("a",))) == {("a",), ("a", "b")}
        assert set(await store.alist_namespaces(prefix=("a_",))) == {("a_",)}


async def test_filters_are_typed(backend: Target) -> None:
    items = {
        "n9": {"n": 9, "s": "9", "meta": {"lang": "en", "level": 2}},
        "n10": {"n": 10, "s": "10", "meta": {"lang": "fr", "level": 10}},
        "n2.5": {"n": 2.5, "s": "b", "meta": {"lang": "en"}},
        "none": {"n": None, "s": None, "flag": True},
        "missing": {"other": 1, "flag": False},
        "list": {"tags": ["a", "b"], "n": "not a number"},
    }
    async with fresh_store(backend) as store:
        for key, value in items.items():
            await store.aput(("f",), key, value)

        async def keys(flt: dict[str, Any]) -> set[str]:
            return {i.key for i in await store.asearch(("f",), filter=flt, limit=100)}

        assert await keys({"n": {"$gt": 9}}) == {"n10"}  # 10 > 9 as numbers, not as text
        assert await keys({"n": {"$lt": 10}}) == {"n9", "n2.5"}
        assert await keys({"n": {"$gte": 9, "$lte": 9}}) == {"n9"}
        assert await keys({"s": {"$gt": "9"}}) == {"n2.5"}  # strings by code point: "b" > "9"
        assert await keys({"s": {"$lt": "9"}}) == {"n10"}  # "10" < "9" as text
        assert await keys({"s": {"$gte": "b"}}) == {"n2.5"}
        assert await keys({"n": 9}) == {"n9"}
        assert await keys({"n": 9.0}) == {"n9"}
        assert await keys({"s": "9"}) == {"n9"}  # the string, not the number
        assert await keys({"n": {"$eq": 10}}) == {"n10"}
        assert await keys({"n": {"$ne": 10}}) == set(items) - {"n10"}  # missing keys included
        assert await keys({"meta": {"lang": "en"}}) == {"n9", "n2.5"}
        assert await keys({"meta.lang": "fr"}) == {"n10"}
        assert await keys({"meta.level": {"$gt": 5}}) == {"n10"}
        assert await keys({"meta": {"level": {"$lt": 5}}}) == {"n9"}
        assert await keys({"flag": True}) == {"none"}
        assert await keys({"flag": False}) == {"missing"}
        assert await keys({"n": None}) == {"none", "missing"}
        assert await keys({"n": {"$ne": None}}) == {"n9", "n10", "n2.5", "list"}
        assert await keys({"tags": ["a", "b"]}) == {"list"}
        assert await keys({"tags": {"$ne": ["a", "b"]}}) == set(items) - {"list"}
        assert await keys({"meta": {"lang": "en"}, "n": {"$gt": 3}}) == {"n9"}
        assert await keys({"meta": {}}) == {"n9", "n10", "n2.5"}  # an object, any content
        with pytest.raises(InvalidInputError, match="unknown filter operator"):
            await store.asearch(("f",), filter={"n": {"$in": [1]}})
        with pytest.raises(InvalidInputError):
            await store.asearch(("f",), filter={"n": {"$gt": [1]}})


async def test_search_pages_in_a_total_order(backend: Target) -> None:
    async with fresh_store(backend) as store:
        # One batch: every item has the same updated_at, so only the tie-breakers order them.
        ops = [PutOp(("docs", f"u{i % 3}"), f"k{i:02}", {"i": i}) for i in range(25)]
        await store.abatch(ops)
        later = [PutOp(("docs", "u0"), "late", {"i": 99})]
        await store.abatch(later)
        seen: list[tuple[tuple[str, ...], str]] = []
        offset = 0
        while True:
            page = await store.asearch(("docs",), limit=7, offset=offset)
            if not page:
                break
            seen += await keys_of(page)
            offset += 7
        assert len(seen) == 26 and len(set(seen)) == 26
        assert seen[0] == (("docs", "u0"), "late")
        assert seen[1:] == sorted(seen[1:])  # ties: namespace, then key


async def test_timestamps(backend: Target) -> None:
    async with fresh_store(backend) as store:
        await store.aput(("t",), "k", {"v": 1})
        first = await store.aget(("t",), "k")
        await asyncio.sleep(0.002)
        await store.aput(("t",), "k", {"v": 2})
        second = await store.aget(("t",), "k")
        assert first is not None and second is not None
        assert second.created_at == first.created_at
        assert second.updated_at > first.updated_at
        for stamp in (second.created_at, second.updated_at):
            assert stamp.tzinfo is not None and stamp.utcoffset() == UTC.utcoffset(None)
        assert abs((datetime.now(UTC) - second.updated_at).total_seconds()) < 60


async def test_list_namespaces_matches_in_memory_store(backend: Target) -> None:
    namespaces = [
        ("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"),
        ("a", "c", "f"), ("b", "a", "f"), ("users", "123"), ("users", "456", "settings"),
        ("admin", "users", "789"), ("a-",), ("a", "-"),
    ]  # fmt: skip
    memory = InMemoryStore()
    async with fresh_store(backend) as store:
        for ns in namespaces:
            await store.aput(ns, "k", {"x": 1})
            await memory.aput(ns, "k", {"x": 1})
        cases: list[dict[str, Any]] = [
            {},
            {"prefix": ("a", "b")},
            {"suffix": ("f",)},
            {"prefix": ("a", "*", "f")},
            {"prefix": ("a",), "suffix": ("f",)},
            {"max_depth": 2},
            {"prefix": ("a", "b"), "max_depth": 3},
            {"limit": 3, "offset": 2},
            {"prefix": ("*", "users")},
            {"suffix": ("*", "f"), "limit": 2, "offset": 1},
            {"prefix": ("a",), "limit": 2, "offset": 1},
        ]
        for case in cases:
            assert await store.alist_namespaces(**case) == await memory.alist_namespaces(**case), (
                case
            )


async def test_setup_is_versioned_and_refuses_a_foreign_ledger(backend: Target) -> None:
    async with fresh_store(backend) as store:
        rows = backend.query(f"SELECT v, description FROM {backend.q(store.tables.migrations)}")
        assert [r[0] for r in rows] == [1]
        await store.asetup()  # again: nothing to do, nothing recorded twice
        again = backend.query(f"SELECT v FROM {backend.q(store.tables.migrations)}")
        assert [r[0] for r in again] == [1]
    foreign = backend.new_table("foreign")
    backend.execute(f"CREATE TABLE {backend.q(foreign + '_migrations')} (version INTEGER)")
    backend.tables.append(foreign + "_migrations")
    with pytest.raises(SchemaError, match="not made by tidb-memory"):
        await AsyncTiDBStore(backend.url, table_prefix=foreign).asetup()


async def test_construction_does_no_io() -> None:
    store = AsyncTiDBStore("mysql+aiomysql://root:S3cr3t-pw@127.0.0.1:1/nothing_listens_here")
    assert "S3cr3t-pw" not in repr(store)
    assert store.supports_ttl is True
    assert "nothing_listens_here" in repr(store)
    assert isinstance(tidb_memory.AsyncTiDBStore(engine=None), AsyncTiDBStore)
    assert tidb_memory.TiDBStore is AsyncTiDBStore


# --- one object for every caller -------------------------------------------------------------


async def test_sync_methods_from_the_event_loop_thread(backend: Target) -> None:
    async with fresh_store(backend) as store:
        # Called right on the running loop's thread, as a prompt function or a FastAPI route
        # does: LangGraph's AsyncBatchedBaseStore raises InvalidStateError here.
        store.put(("sync",), "k", {"v": 1})
        item = store.get(("sync",), "k")
        assert item is not None and item.value == {"v": 1}
        assert [i.key for i in store.search(("sync",))] == ["k"]
        assert store.list_namespaces() == [("sync",)]
        store.delete(("sync",), "k")
        assert store.get(("sync",), "k") is None
        # And from worker threads (sync tools under ainvoke), many at once.
        await asyncio.gather(
            *(asyncio.to_thread(store.put, ("sync",), f"t{i}", {"i": i}) for i in range(8))
        )
        assert len(await store.asearch(("sync",), limit=20)) == 8


def test_sync_methods_without_any_loop(backend: Target) -> None:
    store = AsyncTiDBStore(backend.url, table_prefix=backend.new_table("lgsync"))
    backend.tables.append(store.tables.migrations)
    store.setup()
    store.put(("s",), "k", {"v": 1})
    assert store.batch([GetOp(("s",), "k"), PutOp(("s",), "j", {"v": 2})])[0].value == {"v": 1}
    assert [i.key for i in store.search(("s",))] == ["j", "k"]  # newest first
    assert store.get(("s",), "j") is not None


async def test_concurrent_calls_share_one_batch(backend: Target) -> None:
    async with fresh_store(backend) as store:
        await store.aput(("g",), "k0", {"i": 0})
        batches: list[int] = []
        real = store._execute

        async def counting(plan: Any) -> list[Any]:
            batches.append(plan.size)
            return await real(plan)

        store._execute = counting  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(store.aget(("g",), f"k{i % 2}") for i in range(10)),
            store.aput(("g",), "k1", {"i": 1}),
            store.asearch(("g",)),
        )
        assert batches == [12]
        assert [r.value if r else None for r in results[:10]] == [{"i": 0}, None] * 5
        assert await store.aget(("g",), "k1") is not None


async def test_a_failed_member_does_not_fail_the_others(backend: Target) -> None:
    async with fresh_store(backend) as store:
        await store.aput(("g",), "k", {"i": 0})
        real = store._execute

        async def failing(plan: Any) -> list[Any]:
            if any(s.op.namespace_prefix == ("boom",) for s in plan.searches):
                raise RuntimeError("boom")
            return await real(plan)

        store._execute = failing  # type: ignore[method-assign]
        good, bad = await asyncio.gather(
            store.aget(("g",), "k"), store.asearch(("boom",)), return_exceptions=True
        )
        assert good is not None and good.value == {"i": 0}
        assert isinstance(bad, RuntimeError)


async def test_a_cancelled_call_never_wedges_the_store(backend: Target) -> None:
    async with fresh_store(backend) as store:
        await store.aput(("c",), "k", {"i": 0})
        for _ in range(5):
            task = asyncio.create_task(store.aget(("c",), "k"))
            await asyncio.sleep(0)  # joined the group
            task.cancel()
            put = asyncio.create_task(store.aput(("c",), "k2", {"i": 2}))
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # the batch is now in flight
            put.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(asyncio.CancelledError):
                await put
        got = await asyncio.wait_for(store.aget(("c",), "k"), timeout=30)
        assert got is not None and got.value == {"i": 0}
        many = await asyncio.wait_for(
            asyncio.gather(*(store.aget(("c",), "k") for _ in range(5))), timeout=30
        )
        assert all(m is not None for m in many)


async def test_a_batch_returns_results_in_op_order(backend: Target) -> None:
    async with fresh_store(backend) as store:
        await store.aput(("b",), "old", {"v": "old"})
        results = await store.abatch(
            [
                PutOp(("b",), "new", {"v": 1}),
                GetOp(("b",), "old"),
                GetOp(("b",), "new"),  # reads see the state before the batch's writes
                SearchOp(("b",)),
                ListNamespacesOp(),
                PutOp(("b",), "new", {"v": 2}),  # the last put of a key wins
                PutOp(("b",), "old", None),
            ]
        )
        assert results[0] is None and results[5] is None and results[6] is None
        assert results[1].value == {"v": "old"} and results[2] is None
        assert [i.key for i in results[3]] == ["old"]
        assert results[4] == [("b",)]
        assert (await store.aget(("b",), "new")).value == {"v": 2}  # type: ignore[union-attr]
        assert await store.aget(("b",), "old") is None


# --- TTL ---------------------------------------------------------------------------------


def expire_now(backend: Target, store: AsyncTiDBStore, key: str) -> None:
    """Move an item's expiry into the past, as time would."""
    backend.execute(
        f"UPDATE {backend.q(store.tables.items)} SET expires_at = 1 WHERE item_key = {backend.ph}",
        (key,),
    )


def expires_at(backend: Target, store: AsyncTiDBStore, key: str) -> int | None:
    rows = backend.query(
        f"SELECT expires_at FROM {backend.q(store.tables.items)} WHERE item_key = {backend.ph}",
        (key,),
    )
    return None if rows[0][0] is None else int(rows[0][0])


async def test_ttl_hides_expired_items_before_any_sweep(backend: Target) -> None:
    async with fresh_store(backend, ttl={"default_ttl": 60}) as store:
        await store.aput(("t",), "a", {"v": 1})
        await store.aput(("t",), "b", {"v": 2})
        await store.aput(("t2",), "c", {"v": 3}, ttl=None)  # no expiry
        assert expires_at(backend, store, "c") is None
        expire_now(backend, store, "a")
        assert await store.aget(("t",), "a") is None
        assert [i.key for i in await store.asearch(("t",))] == ["b"]
        expire_now(backend, store, "b")
        assert await store.alist_namespaces() == [("t2",)]
        assert await store.asweep_ttl() == 2
        assert backend.count(store.tables.items) == 1
        assert await store.asweep_ttl() == 0


async def test_ttl_per_put_and_refresh_on_read(backend: Target) -> None:
    async with fresh_store(backend, ttl={"default_ttl": 60, "refresh_on_read": True}) as store:
        await store.aput(("t",), "k", {"v": 1}, ttl=1)
        first = expires_at(backend, store, "k")
        assert first is not None
        now_us = datetime.now(UTC).timestamp() * 1e6
        assert abs(first - (now_us + 60e6)) < 30e6  # one minute from now, not sixty
        backend.execute(
            f"UPDATE {backend.q(store.tables.items)} SET expires_at = expires_at - 50000000"
        )
        lowered = expires_at(backend, store, "k")
        assert await store.aget(("t",), "k", refresh_ttl=False) is not None
        assert expires_at(backend, store, "k") == lowered
        assert await store.aget(("t",), "k") is not None
        refreshed = expires_at(backend, store, "k")
        assert refreshed is not None and lowered is not None and refreshed > lowered + 40e6
        backend.execute(
            f"UPDATE {backend.q(store.tables.items)} SET expires_at = expires_at - 50000000"
        )
        lowered = expires_at(backend, store, "k")
        assert [i.key for i in await store.asearch(("t",))] == ["k"]
        assert (expires_at(backend, store, "k") or 0) > (lowered or 0) + 40e6
        with pytest.raises(InvalidInputError, match="ttl"):
            await store.aput(("t",), "k", {"v": 1}, ttl=-1)


async def test_sweeps_run_in_bounded_batches(backend: Target) -> None:
    async with fresh_store(backend, sweep_batch=3) as store:
        await store.abatch([PutOp(("s",), f"k{i}", {"i": i}, ttl=5) for i in range(8)])
        await store.aput(("s",), "keep", {"i": -1})
        backend.execute(
            f"UPDATE {backend.q(store.tables.items)} SET expires_at = 1 "
            f"WHERE expires_at IS NOT NULL"
        )
        counted: list[int] = []
        from tidb_memory.engine import Connection

        real = Connection.fetchall

        async def spy(self: Connection, sql: str, params: Any) -> list[Any]:
            rows = await real(self, sql, params)
            if "expires_at <=" in sql:
                counted.append(len(rows))
            return rows

        Connection.fetchall = spy  # type: ignore[method-assign]
        try:
            assert await store.asweep_ttl() == 8
        finally:
            Connection.fetchall = real  # type: ignore[method-assign]
        assert counted == [3, 3, 2]
        assert [i.key for i in await store.asearch(("s",))] == ["keep"]


async def test_the_sweeper_runs_and_stops(backend: Target) -> None:
    async with fresh_store(backend, ttl={"sweep_interval_minutes": 1}) as store:
        await store.aput(("s",), "k", {"v": 1}, ttl=5)
        expire_now(backend, store, "k")
        task = await store.astart_ttl_sweeper(sweep_interval_minutes=0.001)
        assert await store.astart_ttl_sweeper() is task  # starting twice: the same sweeper
        assert await asyncio.to_thread(
            wait_until, lambda: backend.count(store.tables.items) == 0, 30
        )
        assert await store.astop_ttl_sweeper(timeout=30)
        assert task.done()


def test_the_sync_sweeper_runs_and_stops(backend: Target) -> None:
    prefix = backend.new_table("lgsw")
    backend.tables.append(prefix + "_migrations")
    store = AsyncTiDBStore(backend.url, table_prefix=prefix)
    store.setup()
    store.put(("s",), "k", {"v": 1}, ttl=5)
    expire_now(backend, store, "k")
    done = store.start_ttl_sweeper(sweep_interval_minutes=0.001)
    assert wait_until(lambda: backend.count(store.tables.items) == 0, 30)
    assert store.stop_ttl_sweeper(timeout=30)
    assert done.result(timeout=30) is None


# --- an application's engine, and lost connections ------------------------------------------


async def test_an_application_engine_works_like_a_url(backend: Target) -> None:
    engine = tidb_memory.create_engine(backend.url)
    try:
        prefix = backend.new_table("lgeng")
        backend.tables += [prefix + "_migrations"]
        store = AsyncTiDBStore(engine=engine, table_prefix=prefix)
        await store.asetup()
        await store.aput(("e",), "k", {"v": 1})
        assert (await store.aget(("e",), "k")).value == {"v": 1}  # type: ignore[union-attr]
        # Sync code on another thread reaches the engine's own loop.
        assert (await asyncio.to_thread(store.get, ("e",), "k")) is not None
        # On that loop's own thread, blocking would deadlock: a clear error instead.
        with pytest.raises(tidb_memory.SyncCallError, match="a-prefixed twin"):
            store.get(("e",), "k")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("mode", ["BEFORE_REQUEST", "AFTER_REQUEST", "DURING_REPLY"])
async def test_a_lost_connection_mid_batch_is_retried_exactly_once(
    mysql_server: str, tmp_path: Any, mode: str
) -> None:
    """The connection dies around a batch of reads and writes: the retry runs it again, and the
    idempotent writes leave exactly one copy; the reads come back. (A read retried after the
    writes had run sees them: nobody can tell whether they ran.)"""
    from conftest import MYSQL_URL, make_target

    from tests.infra import FaultProxy
    from tests.infra.proxy import CutMode

    target = make_target("mysql", tmp_path)
    try:
        async with FaultProxy.in_front_of(MYSQL_URL) as proxy:
            url = proxy.url_for(MYSQL_URL)
            async with fresh_store(target, url) as store:
                await store.aput(("f",), "old", {"v": 0})
                arm = proxy.arm(CutMode[mode], match="INSERT INTO")
                results = await store.abatch(
                    [GetOp(("f",), "old"), PutOp(("f",), "new", {"v": 1}), SearchOp(("f",))]
                )
                assert arm.fired == 1
                assert results[0].value == {"v": 0}
                searched = [i.key for i in results[2]]
                assert (
                    searched == ["old"]
                    if mode == "BEFORE_REQUEST"
                    else searched in (["old"], ["new", "old"])
                )
                assert [i.key for i in await store.asearch(("f",))] == ["new", "old"]
                assert target.count(store.tables.items) == 2
    finally:
        for table in target.tables:
            target.drop(table)


def test_one_store_on_many_event_loops_at_once(backend: Target) -> None:
    """Async calls on any loop: four threads, each with its own loop, share one store."""
    import threading

    prefix = backend.new_table("lgloops")
    backend.tables.append(prefix + "_migrations")
    store = AsyncTiDBStore(backend.url, table_prefix=prefix)
    store.setup()
    errors: list[BaseException] = []

    def run(n: int) -> None:
        async def work() -> None:
            for i in range(5):
                await store.aput(("loops", f"t{n}"), f"k{i}", {"n": n, "i": i})
            got = await asyncio.gather(*(store.aget(("loops", f"t{n}"), f"k{i}") for i in range(5)))
            assert [g.value["i"] for g in got if g] == list(range(5))

        try:
            asyncio.run(work())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert len(store.search(("loops",), limit=100)) == 20


async def test_a_fastapi_route_calls_the_sync_store(backend: Target) -> None:
    """An ``async def`` route calling ``store.search`` synchronously runs on the event loop's
    own thread: LangGraph's AsyncBatchedBaseStore raises InvalidStateError there (an HTTP 500,
    langgraph#2875)."""
    import httpx
    from fastapi import FastAPI

    async with fresh_store(backend) as store:
        store.put(("notes", "ada"), "n1", {"text": "tea"})
        app = FastAPI()

        @app.get("/notes/{user}")
        async def notes(user: str) -> list[str]:
            store.put(("notes", user), "seen", {"text": "visited"})
            return sorted(i.value["text"] for i in store.search(("notes", user)))

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/notes/ada")
        assert response.status_code == 200
        assert response.json() == ["tea", "visited"]


async def test_large_batches_are_split_into_statements_and_stay_whole(backend: Target) -> None:
    async with fresh_store(backend) as store:
        assert await store.abatch([]) == []
        ops = [
            PutOp(("big", f"u{i % 7}"), f"k{i:04}", {"i": i, "pad": "x" * 300}) for i in range(450)
        ]
        assert await store.abatch(ops) == [None] * 450
        assert backend.count(store.tables.items) == 450
        got = await store.abatch([GetOp(("big", f"u{i % 7}"), f"k{i:04}") for i in range(450)])
        assert [g.value["i"] for g in got] == list(range(450))
        await store.abatch(
            [PutOp(("big", f"u{i % 7}"), f"k{i:04}", None) for i in range(0, 450, 2)]
        )
        assert backend.count(store.tables.items) == 225


async def test_concurrent_setups_apply_each_version_once(backend: Target) -> None:
    prefix = backend.new_table("lgmig")
    backend.tables += [prefix + "_migrations", prefix + "_vectors", prefix + "_vector_migrations"]
    from tests.graph.embeddings import WordEmbeddings

    index = {"dims": 8, "embed": WordEmbeddings(8)}
    stores = [AsyncTiDBStore(backend.url, table_prefix=prefix, index=index) for _ in range(4)]
    await asyncio.gather(*(s.asetup() for s in stores))
    for ledger in (prefix + "_migrations", prefix + "_vector_migrations"):
        assert [r[0] for r in backend.query(f"SELECT v FROM {backend.q(ledger)}")] == [1]
    await stores[0].aput(("m",), "k", {"text": "works"})
    assert (await stores[3].asearch(("m",), query="works"))[0].score is not None


def test_a_sync_sweeper_left_running_ends_quietly_at_exit(tmp_path: Any) -> None:
    """A script that starts the sweeper and exits: no pending task is destroyed with the loop."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "sweeper.py"
    script.write_text(
        "from tidb_memory import TiDBStore\n"
        f"store = TiDBStore('sqlite+aiosqlite:///{tmp_path / 'sweep.db'}')\n"
        "store.setup()\n"
        "store.put(('a',), 'k', {'v': 1}, ttl=1)\n"
        "store.start_ttl_sweeper(sweep_interval_minutes=1)\n"
        "print('done')\n"
    )
    root = Path(tidb_memory.__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert "destroyed" not in done.stderr and "Traceback" not in done.stderr, done.stderr


async def test_stopping_the_sweeper_from_its_own_loop_thread_does_not_block(
    backend: Target,
) -> None:
    async with fresh_store(backend) as store:
        task = await store.astart_ttl_sweeper(sweep_interval_minutes=10)
        await asyncio.sleep(0)
        assert store.stop_ttl_sweeper(timeout=5) is False  # cancelled, not finished yet
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        assert await store.astop_ttl_sweeper(timeout=5)


async def test_limits_are_checked_before_any_io(backend: Target) -> None:
    import enum

    class Page(enum.IntEnum):
        SIZE = 2

    async with fresh_store(backend) as store:
        await store.abatch([PutOp(("l",), f"k{i}", {"i": i}) for i in range(3)])
        assert len(await store.asearch(("l",), limit=Page.SIZE)) == 2  # an int, as ints are
        for bad in ({"limit": True}, {"limit": "5"}, {"limit": 2.0}, {"offset": -1}):
            with pytest.raises(InvalidInputError):
                await store.asearch(("l",), **bad)
        with pytest.raises(InvalidInputError):
            await store.alist_namespaces(max_depth=0)
