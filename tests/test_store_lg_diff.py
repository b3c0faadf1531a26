"""AsyncTiDBStore against InMemoryStore: seeded random sequences of puts, deletes, searches
(filters, prefixes, limits, offsets, queries) and namespace listings, compared where the
contract defines the result.

What the contract leaves open is compared as such: a search without a query has no order in
InMemoryStore (insertion order), so it is compared as a set when it is not paged, and paged
results are checked against our own total order instead. Range filters use a key every item
has (InMemoryStore raises on a missing one, we skip it, as tested in test_store_lg.py).
InMemoryStore lists namespaces whose items were all deleted; those are pruned from it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from conftest import Target
from langgraph.store.memory import InMemoryStore

from tests.graph.embeddings import WordEmbeddings
from tests.graph.stores import fresh_store

DIMS = 16
WORDS = ["apple", "tea", "python", "train", "cake", "river", "blue", "note"]
LABELS = ["a", "ab", "a b", "b", "x%", "x_", "é", "A"]
KEYS = ["k", "k ", "K", "ké", "long/" + "p" * 200, "1", "10", "9"]


def random_ns(rng: random.Random) -> tuple[str, ...]:
    return tuple(rng.choice(LABELS) for _ in range(rng.randint(1, 3)))


def random_value(rng: random.Random) -> dict[str, Any]:
    value: dict[str, Any] = {
        "n": rng.choice([rng.randint(-20, 20), rng.uniform(-20, 20)]),
        "s": rng.choice(["9", "10", "a", "b", "ab", "é", ""]),
        "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))),
        "meta": {"lang": rng.choice(["en", "fr"]), "level": rng.randint(0, 3)},
    }
    if rng.random() < 0.3:
        value["tags"] = rng.sample(["x", "y", "z"], rng.randint(0, 2))
    return value


def random_filter(rng: random.Random) -> dict[str, Any] | None:
    choice = rng.randint(0, 7)
    if choice == 0:
        return None
    if choice == 1:
        return {"n": {rng.choice(["$gt", "$gte", "$lt", "$lte"]): rng.randint(-10, 10)}}
    if choice == 2:
        return {"s": rng.choice(["9", "10", "a", "é"])}
    if choice == 3:
        return {"meta": {"lang": rng.choice(["en", "fr"])}}
    if choice == 4:
        return {"meta": {"level": rng.randint(0, 3)}, "n": {"$gt": -5}}
    if choice == 5:
        return {"s": {"$ne": "a"}}
    if choice == 6:
        return {"tags": rng.sample(["x", "y", "z"], rng.randint(0, 2))}
    return {"n": {"$gte": -10, "$lte": 10}, "s": {"$eq": "b"}}


def ids(items: list[Any]) -> list[tuple[tuple[str, ...], str]]:
    return [(tuple(i.namespace), i.key) for i in items]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_sequences_match_in_memory_store(backend: Target, seed: int) -> None:
    rng = random.Random(seed)
    memory = InMemoryStore(index={"dims": DIMS, "embed": WordEmbeddings(DIMS), "fields": ["text"]})
    index = {"dims": DIMS, "embed": WordEmbeddings(DIMS), "fields": ["text"]}
    async with fresh_store(backend, index=index) as store:
        for step in range(120):
            kind = rng.choices(["put", "delete", "search", "query", "list"], [5, 1, 2, 1, 1])[0]
            where = f"seed {seed} step {step} {kind}"
            if kind == "put":
                ns, key, value = random_ns(rng), rng.choice(KEYS), random_value(rng)
                await store.aput(ns, key, value)
                await memory.aput(ns, key, value)
            elif kind == "delete":
                ns, key = random_ns(rng), rng.choice(KEYS)
                await store.adelete(ns, key)
                await memory.adelete(ns, key)
                # InMemoryStore keeps (and even creates) namespaces without items and lists
                # them; a namespace exists while it holds an item.
                for empty in [n for n, items in memory._data.items() if not items]:
                    del memory._data[empty]
            elif kind == "search":
                prefix = random_ns(rng)[: rng.randint(0, 2)]
                flt = random_filter(rng)
                everything = await store.asearch(prefix, filter=flt, limit=1000)
                expected = await memory.asearch(prefix, filter=flt, limit=1000)
                assert sorted(ids(everything)) == sorted(ids(expected)), where
                assert [
                    i.value for i in sorted(everything, key=lambda i: (i.namespace, i.key))
                ] == [i.value for i in sorted(expected, key=lambda i: (i.namespace, i.key))], where
                limit, offset = rng.randint(1, 5), rng.randint(0, 6)
                page = await store.asearch(prefix, filter=flt, limit=limit, offset=offset)
                assert ids(page) == ids(everything)[offset : offset + limit], where
            elif kind == "query":
                prefix = random_ns(rng)[: rng.randint(0, 1)]
                query = " ".join(rng.sample(WORDS, 2))
                limit = rng.randint(1, 6)
                ours = await store.asearch(prefix, query=query, limit=limit)
                theirs = await memory.asearch(prefix, query=query, limit=limit)
                assert len(ours) == len(theirs), where
                for a, b in zip(ours, theirs, strict=True):
                    assert a.score == pytest.approx(b.score, abs=1e-4), where
                # Every item scores the same in both...
                full = await store.asearch(prefix, query=query, limit=1000)
                full_theirs = await memory.asearch(prefix, query=query, limit=1000)
                mine = {(i.namespace, i.key): i.score for i in full}
                assert mine.keys() == {(i.namespace, i.key) for i in full_theirs}, where
                for i in full_theirs:
                    assert mine[(i.namespace, i.key)] == pytest.approx(i.score, abs=1e-4), where
                # ...and the top k are the same items, where no other item ties on the score.
                scores = [round(i.score, 4) for i in full_theirs]
                for a, b in zip(ours, theirs, strict=True):
                    if scores.count(round(b.score, 4)) == 1:
                        assert (a.namespace, a.key) == (b.namespace, b.key), where
            else:
                kwargs: dict[str, Any] = {}
                if rng.random() < 0.5:
                    kwargs["prefix"] = random_ns(rng)[: rng.randint(1, 2)]
                if rng.random() < 0.3:
                    kwargs["suffix"] = (rng.choice(LABELS),)
                if rng.random() < 0.3:
                    kwargs["max_depth"] = rng.randint(1, 2)
                kwargs["limit"], kwargs["offset"] = rng.randint(1, 10), rng.randint(0, 3)
                ours_ns = await store.alist_namespaces(**kwargs)
                assert ours_ns == await memory.alist_namespaces(**kwargs), (where, kwargs)
