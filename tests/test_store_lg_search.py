"""AsyncTiDBStore: semantic search against InMemoryStore, embeddings per batch, round trips on
the wire, and the TiDB statements as text."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import MYSQL_URL, Target, make_target
from langgraph.store.base import GetOp, PutOp
from langgraph.store.memory import InMemoryStore
from test_roundtrips import Probe, expect
from test_roundtrips import probe as probe  # the server-side statement counter's fixture

from tests.graph.embeddings import WordEmbeddings
from tests.graph.stores import fresh_store
from tests.infra import FaultProxy
from tidb_memory.langgraph import _store_sql as sql
from tidb_memory.langgraph._store_filter import compile_filter
from tidb_memory.langgraph._vectors import pack, tidb_has_vectors, unpack, vector_literal
from tidb_memory.langgraph.store import AsyncTiDBStore

DIMS = 32

DOCS = {
    "py": {"text": "python is a programming language", "tags": ["code"], "n": 1},
    "ts": {"text": "typescript adds types to javascript", "tags": ["code"], "n": 2},
    "cake": {"text": "a recipe for chocolate cake", "tags": ["food"], "n": 3},
    "tea": {"text": "green tea and black tea", "tags": ["food", "drink"], "n": 4},
    "trip": {"text": "a trip to the mountains by train", "tags": ["travel"], "n": 5},
    "notes": {
        "text": "meeting notes",
        "chunks": [{"body": "python release plan"}, {"body": "cake for the party"}],
        "n": 6,
    },
}


def index(embeddings: WordEmbeddings, fields: list[str] | None = None) -> dict[str, Any]:
    return {"dims": DIMS, "embed": embeddings, "fields": fields or ["text"]}


def again(value: Any) -> Any:
    """``value`` with every string changed, so that no two items tie on a score."""
    if isinstance(value, str):
        return value + " again"
    if isinstance(value, dict):
        return {k: again(v) for k, v in value.items()}
    if isinstance(value, list):
        return [again(v) for v in value]
    return value


def assert_same_results(ours: list[Any], theirs: list[Any]) -> None:
    assert [(tuple(i.namespace), i.key) for i in ours] == [
        (tuple(i.namespace), i.key) for i in theirs
    ]
    for a, b in zip(ours, theirs, strict=True):
        assert (a.score is None) == (b.score is None)
        if a.score is not None:
            assert a.score == pytest.approx(b.score, abs=1e-4)


@pytest.mark.parametrize(
    "fields", [["text"], ["chunks[*].body"], ["text", "chunks[*].body"], ["$"]]
)
async def test_semantic_search_equals_in_memory_store(backend: Target, fields: list[str]) -> None:
    emb = WordEmbeddings(DIMS)
    memory = InMemoryStore(index=index(WordEmbeddings(DIMS), fields))  # type: ignore[arg-type]
    async with fresh_store(backend, index=index(emb, fields)) as store:
        for key, value in DOCS.items():
            for s in (store, memory):
                await s.aput(("docs", "u1"), key, value)
                await s.aput(("docs", "u2"), key, again(value))
        queries = ["python code", "cake recipe", "tea", "train trip", "nothing matches zzz"]
        for query in queries:
            for prefix in [("docs",), ("docs", "u1")]:
                for limit, offset in [(3, 0), (4, 2), (20, 0)]:
                    ours = await store.asearch(prefix, query=query, limit=limit, offset=offset)
                    theirs = await memory.asearch(prefix, query=query, limit=limit, offset=offset)
                    if fields == ["chunks[*].body"]:
                        # Items without the field have no score; InMemoryStore appends them in
                        # insertion order, we in the total order: compare the scored ones.
                        ours = [i for i in ours if i.score is not None]
                        theirs = [i for i in theirs if i.score is not None]
                        if offset:
                            continue
                    assert_same_results(ours, theirs)
            flt = {"tags": ["code"]}
            ours = await store.asearch(("docs",), query=query, filter=flt, limit=5)
            theirs = await memory.asearch(("docs",), query=query, filter=flt, limit=5)
            if fields != ["chunks[*].body"]:
                assert_same_results(ours, theirs)


async def test_one_embedding_call_per_batch_before_the_write(backend: Target) -> None:
    emb = WordEmbeddings(DIMS)
    async with fresh_store(backend, index=index(emb, ["text", "chunks[*].body"])) as store:
        await store.abatch([PutOp(("d",), k, v) for k, v in DOCS.items()])
        assert emb.document_calls == 1
        # 6 texts + the 2 chunks of "notes"
        assert sorted(emb.documents[0]) == sorted(
            [v["text"] for v in DOCS.values()] + ["python release plan", "cake for the party"]
        )
        assert backend.count(store.tables.vectors) == 8
        # Concurrent puts in one loop iteration: one batch, one embedding call.
        await asyncio.gather(*(store.aput(("d",), f"g{i}", {"text": f"word{i}"}) for i in range(5)))
        assert emb.document_calls == 2
        # The embedder fails: nothing is written.
        emb.embed_documents = lambda texts: (_ for _ in ()).throw(RuntimeError("embed down"))  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="embed down"):
            await store.aput(("d",), "py", {"text": "changed"})
        assert (await store.aget(("d",), "py")).value == DOCS["py"]  # type: ignore[union-attr]


async def test_index_false_per_put_fields_reembedding_and_deletes(backend: Target) -> None:
    emb = WordEmbeddings(DIMS)
    async with fresh_store(backend, index=index(emb)) as store:
        vectors = store.tables.vectors

        def stored_fields(key: str) -> list[str]:
            rows = backend.query(
                f"SELECT field FROM {backend.q(vectors)} WHERE item_key = {backend.ph}", (key,)
            )
            return sorted(r[0].decode() if isinstance(r[0], bytes) else r[0] for r in rows)

        await store.aput(("d",), "plain", {"text": "not indexed"}, index=False)
        assert stored_fields("plain") == []
        found = await store.asearch(("d",), query="indexed")
        assert [(i.key, i.score) for i in found] == [("plain", None)]
        await store.aput(("d",), "own", {"text": "x", "title": "custom title"}, index=["title"])
        assert stored_fields("own") == ["title"]
        await store.aput(("d",), "doc", {"text": "python language"})
        assert stored_fields("doc") == ["text"]
        first = (await store.asearch(("d",), query="python language", limit=1))[0]
        assert first.key == "doc" and first.score == pytest.approx(1.0, abs=1e-4)
        await store.aput(("d",), "doc", {"text": "chocolate cake"})  # re-embedded
        top = (await store.asearch(("d",), query="chocolate cake", limit=1))[0]
        assert top.key == "doc" and top.score == pytest.approx(1.0, abs=1e-4)
        await store.aput(("d",), "doc", {"text": "chocolate cake"}, index=False)
        assert stored_fields("doc") == []  # stale vectors never outlive the value they describe
        await store.aput(("d",), "doc", {"text": "again"})
        await store.adelete(("d",), "doc")
        assert stored_fields("doc") == []


async def test_expired_items_leave_search_and_their_vectors_leave_with_the_sweep(
    backend: Target,
) -> None:
    emb = WordEmbeddings(DIMS)
    async with fresh_store(backend, index=index(emb)) as store:
        await store.aput(("d",), "gone", {"text": "python"}, ttl=5)
        await store.aput(("d",), "kept", {"text": "python"})
        backend.execute(
            f"UPDATE {backend.q(store.tables.items)} SET expires_at = 1 "
            "WHERE expires_at IS NOT NULL"
        )
        assert [i.key for i in await store.asearch(("d",), query="python")] == ["kept"]
        assert await store.asweep_ttl() == 1
        assert backend.count(store.tables.vectors) == 1


async def test_sync_embedding_functions_work_from_every_caller(backend: Target) -> None:
    from tests.graph.embeddings import embed_text

    def embed(texts: list[str]) -> list[list[float]]:
        return [embed_text(t, DIMS) for t in texts]

    async with fresh_store(backend, index={"dims": DIMS, "embed": embed}) as store:
        store.put(("d",), "a", {"text": "green tea"})  # on the loop's thread
        await asyncio.to_thread(store.put, ("d",), "b", {"text": "black coffee"})
        top = (await store.asearch(("d",), query="tea", limit=1))[0]
        assert top.key == "a" and top.score is not None


async def test_wrong_dimensions_are_refused_before_the_write(backend: Target) -> None:
    emb = WordEmbeddings(DIMS + 1)
    async with fresh_store(backend, index={"dims": DIMS, "embed": emb}) as store:
        from tidb_memory import InvalidInputError

        with pytest.raises(InvalidInputError, match="dimensions"):
            await store.aput(("d",), "k", {"text": "x"})
        assert await store.aget(("d",), "k") is None
    ok = WordEmbeddings(DIMS)
    async with fresh_store(backend, index={"dims": DIMS, "embed": ok}) as store:
        long_field = "f" * 500
        with pytest.raises(InvalidInputError, match="over 400 bytes"):
            await store.aput(("d",), "k", {long_field: "text"}, index=[long_field])
        assert await store.aget(("d",), "k") is None and ok.document_calls == 0


# --- round trips on the wire ------------------------------------------------------------------


async def test_round_trips_counted_on_the_wire(mysql_server: str, tmp_path: Any) -> None:
    target = make_target("mysql", tmp_path)
    emb = WordEmbeddings(DIMS)
    try:
        async with FaultProxy.in_front_of(MYSQL_URL) as proxy:
            url = proxy.url_for(MYSQL_URL)
            one = {"pool_size": 1, "max_overflow": 0}
            async with fresh_store(target, url, engine_args=one, index=index(emb)) as store:
                await store.abatch(
                    [PutOp(("u", "1"), f"k{i}", {"text": f"w{i}"}) for i in range(5)]
                )

                async def count(op: Callable[[], Awaitable[Any]]) -> int:
                    connections, before = proxy.stats.connections_total, proxy.stats.commands_seen
                    await op()
                    assert proxy.stats.connections_total == connections, "a reconnect hid"
                    return proxy.stats.commands_seen - before

                async def construct() -> None:
                    AsyncTiDBStore(url, table_prefix=store.tables.items, index=index(emb))

                mixed = [
                    GetOp(("u", "1"), "k0"), GetOp(("u", "1"), "k1"),
                    PutOp(("u", "1"), "k2", {"text": "new"}), PutOp(("u", "1"), "k9", None),
                    PutOp(("u", "1"), "n", {"text": "other"}),
                ]  # fmt: skip
                await asyncio.to_thread(store.get, ("u", "1"), "k0")  # the bridge loop's pool
                counts = {
                    "construct": await count(construct),
                    "get": await count(lambda: store.aget(("u", "1"), "k0")),
                    "put": await count(lambda: store.aput(("u", "1"), "k3", {"text": "x"})),
                    "batch of gets and puts": await count(lambda: store.abatch(mixed)),
                    "search": await count(lambda: store.asearch(("u",), filter={"text": "x"})),
                    "semantic search": await count(lambda: store.asearch(("u",), query="w1")),
                    "list_namespaces": await count(lambda: store.alist_namespaces(prefix=("u",))),
                    "gather of 10 aget": await count(
                        lambda: asyncio.gather(
                            *(store.aget(("u", "1"), f"k{i}") for i in range(10))
                        )
                    ),
                    "sync get": await count(lambda: asyncio.to_thread(store.get, ("u", "1"), "k0")),
                }
                assert counts == {
                    "construct": 0,
                    "get": 1,
                    "put": 1,
                    "batch of gets and puts": 1,
                    "search": 1,
                    "semantic search": 1,
                    "list_namespaces": 1,
                    "gather of 10 aget": 1,
                    "sync get": 1,
                }, counts
    finally:
        for table in target.tables:
            target.drop(table)


# --- TiDB, as text ------------------------------------------------------------------------------


def test_tidb_version_detection() -> None:
    assert tidb_has_vectors("8.0.11-TiDB-v8.4.0")
    assert tidb_has_vectors("8.0.11-TiDB-v8.5.1-serverless")
    assert tidb_has_vectors("8.0.11-TiDB-v9.0.0")
    assert not tidb_has_vectors("8.0.11-TiDB-v8.1.2")
    assert not tidb_has_vectors("5.7.25-TiDB-v7.5.0")
    assert not tidb_has_vectors("10.11.6-MariaDB")
    assert not tidb_has_vectors("8.0.36")


def test_tidb_vector_ddl_and_search_statements_as_text() -> None:
    t = sql.StoreTables.from_prefix("store")
    (v1,) = sql.vector_migrations(t, dims=256, tidb_vectors=True, approximate=False)
    ddl = "\n".join(v1.statements("mysql"))
    assert "`embedding` VECTOR(256) NOT NULL" in ddl
    assert "HNSW" not in ddl
    (m1,) = sql.vector_migrations(t, dims=256, tidb_vectors=False, approximate=True)
    assert "LONGBLOB" in "\n".join(m1.statements("mysql"))  # MySQL/MariaDB: float32 bytes
    _, v2 = sql.vector_migrations(t, dims=256, tidb_vectors=True, approximate=True)
    assert v2.statements("mysql") == [
        "ALTER TABLE `store_vectors` SET TIFLASH REPLICA 1",
        "ALTER TABLE `store_vectors` ADD VECTOR INDEX `ix_embedding` "
        "((VEC_COSINE_DISTANCE(`embedding`))) USING HNSW",
    ]
    search = sql.search_statement(
        "mysql", t, prefix=("memories", "u1"), conditions=compile_filter({"kind": "fact"}),
        now=1, limit=5, offset=10, query_vector="[0.5,0.25]",
    )  # fmt: skip
    assert search.paged
    assert search.sql.startswith(
        "SELECT i.ns, i.item_key, i.value, i.created_at, i.updated_at, i.ttl_minutes, "
        "MIN(VEC_COSINE_DISTANCE(v.embedding, VEC_FROM_TEXT(%s))) AS d FROM `store` i "
        "LEFT JOIN `store_vectors` v ON v.ns = i.ns AND v.item_key = i.item_key WHERE "
        "(i.ns = %s OR (i.ns >= %s AND i.ns < %s)) AND (i.expires_at IS NULL OR i.expires_at > %s)"
    )
    assert search.sql.endswith(
        "ORDER BY d IS NULL, d, i.updated_at DESC, i.ns, i.item_key LIMIT %s OFFSET %s"
    )
    assert search.params[:4] == [
        "[0.5,0.25]",
        "memories\x00u1",
        "memories\x00u1\x00",
        "memories\x00u1\x01",
    ]
    assert search.params[-2:] == [5, 10]
    ann = sql.approximate_search_statement(t, query_vector="[1.0]", now=7, candidates=40)
    # The HNSW index serves only ORDER BY distance LIMIT without a WHERE: the inner query.
    assert "FROM `store_vectors` ORDER BY d LIMIT 40) a JOIN `store` i" in ann.sql
    assert ann.params == ["[1.0]", 7] and not ann.paged
    assert sql.insert_vectors_statement("mysql", t, [["n", "k", "f", "[1.0]"]], tidb_vectors=True)[
        0
    ].endswith("VALUES (%s, %s, %s, VEC_FROM_TEXT(%s))")


def test_vector_encodings() -> None:
    v = [0.1, -2.5, 3.0, 1e-8]
    assert list(unpack(pack(v))) == pytest.approx(v, rel=1e-6)
    assert len(pack(v)) == 16
    text = vector_literal(v)
    assert text.startswith("[") and text.endswith("]")
    assert [float(x) for x in text[1:-1].split(",")] == pytest.approx(v, rel=1e-6)


def test_the_store_sends_tidb_statements_on_tidb() -> None:
    """What a TiDB v8.4+ server receives: vector text, server-side distance, the HNSW path."""
    from langgraph.store.base import SearchOp

    from tidb_memory.langgraph._store_plan import plan

    emb = WordEmbeddings(DIMS)
    store = AsyncTiDBStore(
        "mysql+aiomysql://u@tidb.invalid:4000/db", index=index(emb), approximate_search=True
    )
    p = plan(
        [
            PutOp(("m", "u1"), "k", {"text": "tea"}),
            SearchOp(("m", "u1"), query="tea", limit=3),
            SearchOp((), query="tea", limit=3),
            SearchOp((), query="tea", filter={"n": 1}, limit=3),
        ],
        max_value_bytes=1000,
    )
    vector = [0.5] * DIMS
    script, _ = store._script(p, 1, {(("m", "u1"), "k"): [("text", vector)]}, {"tea": vector}, True)
    texts = [text for text, _, _ in script]
    assert "VEC_COSINE_DISTANCE(v.embedding, VEC_FROM_TEXT(%s))" in texts[0]  # in a namespace
    assert "ORDER BY d LIMIT 40) a JOIN" in texts[1]  # the whole store: HNSW
    assert "VEC_COSINE_DISTANCE(v.embedding" in texts[2]  # a filter: exact again
    assert texts[-1].endswith("VALUES (%s, %s, %s, VEC_FROM_TEXT(%s))")
    assert script[-1][1][-1] == vector_literal(vector)
    # Elsewhere: float32 bytes and the vectors come back for the client to score.
    script, _ = store._script(
        p, 1, {(("m", "u1"), "k"): [("text", vector)]}, {"tea": vector}, False
    )
    assert "VEC_" not in " ".join(text for text, _, _ in script)
    assert script[-1][1][-1].data == pack(vector)


def test_client_cosine_with_and_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidb_memory.langgraph import _vectors

    query = [1.0, 2.0, -0.5, 0.0]
    vectors = [[1.0, 2.0, -0.5, 0.0], [-1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [3, 0, 1, 2]]
    with_numpy = _vectors.similarities(query, [pack(v) for v in vectors])
    assert with_numpy[:3] == pytest.approx([1.0, -1.0, 0.0], abs=1e-6)
    monkeypatch.setattr(_vectors, "_numpy", lambda: None)
    plain = _vectors.similarities(query, [pack(v) for v in vectors])
    assert plain == pytest.approx(with_numpy, abs=1e-9)
    assert _vectors.similarities(query, []) == []


# --- statements, counted by the server ----------------------------------------------------------


async def test_statements_counted_by_the_server(probe: Probe, mysql: Target) -> None:
    """The server's own count (``Questions``), beside the wire count above: a read is one
    statement, and concurrent reads of one iteration are one statement too."""
    async with fresh_store(mysql) as store:
        await store.abatch([PutOp(("p", "1"), f"k{i}", {"v": i}) for i in range(10)])
        await store.aget(("p", "1"), "k0")  # warm the pool

        async def construct() -> None:
            AsyncTiDBStore(mysql.url, table_prefix=store.tables.items)

        await expect(probe, construct, 0)
        await expect(probe, lambda: store.aget(("p", "1"), "k1"), 1)
        await expect(probe, lambda: store.asearch(("p",), filter={"v": {"$gt": 3}}), 1)
        await expect(probe, lambda: store.alist_namespaces(prefix=("p",)), 1)
        await expect(
            probe, lambda: asyncio.gather(*(store.aget(("p", "1"), f"k{i}") for i in range(10))), 1
        )
        await expect(probe, lambda: store.aput(("p", "1"), "k1", {"v": 1}), 1)


async def test_every_mysql_statement_is_tidb_safe(
    mysql: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL guard of the saver's tests, over every statement a busy store sends to MySQL."""
    from test_checkpoint import forbidden_in

    from tidb_memory.engine import Connection

    seen: list[str] = []
    fetch_script, fetchall, execute = (
        Connection.fetch_script,
        Connection.fetchall,
        Connection.execute,
    )

    async def rec_script(self: Connection, statements: Any, *, max_bytes: int) -> Any:
        seen.extend(sql for sql, _, _ in statements)
        return await fetch_script(self, statements, max_bytes=max_bytes)

    async def rec_fetchall(self: Connection, sql: str, params: Any) -> Any:
        seen.append(sql)
        return await fetchall(self, sql, params)

    async def rec_execute(self: Connection, sql: str, params: Any) -> Any:
        seen.append(sql)  # the DDL of setup
        return await execute(self, sql, params)

    monkeypatch.setattr(Connection, "execute", rec_execute)
    monkeypatch.setattr(Connection, "fetch_script", rec_script)
    monkeypatch.setattr(Connection, "fetchall", rec_fetchall)
    emb = WordEmbeddings(DIMS)
    async with fresh_store(mysql, index=index(emb), ttl={"default_ttl": 5}) as store:
        await store.abatch([PutOp(("s", "u"), k, v) for k, v in DOCS.items()])
        await store.aget(("s", "u"), "py")
        await store.asearch(("s",), query="tea", filter={"n": {"$gt": 1}, "tags": ["code"]})
        await store.asearch(("s",), filter={"text": {"$ne": "x"}, "n": None}, limit=2, offset=1)
        await store.alist_namespaces(prefix=("s", "*"), max_depth=1)
        await store.adelete(("s", "u"), "py")
        await store.asweep_ttl()
    assert len(seen) > 8 and any(sql.startswith("CREATE TABLE") for sql in seen)
    assert [(sql[:80], forbidden_in(sql)) for sql in seen if forbidden_in(sql)] == []
