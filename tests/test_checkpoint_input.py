"""The saver refuses bad input before any I/O, and its metadata filter matches InMemorySaver's.

Issue 10 §5: lone surrogates, PAD SPACE checkpoint ids, int-like limits, sizes in bytes, and
``alist(filter=...)`` compared with LangGraph's own ``InMemorySaver`` on the same data.
"""

from __future__ import annotations

import enum
import random
import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from test_checkpoint import Recorder, config, fresh_saver, make_checkpoint, recorder, url

from tidb_memory.errors import InvalidInputError, MessageTooLargeError
from tidb_memory.langgraph import AsyncTiDBSaver
from tidb_memory.langgraph.saver import CheckpointTooLargeError

__all__ = ["recorder", "url"]  # fixtures, imported for pytest

BAD = "a\udcc3\udca9"  # what os.fsdecode makes of b"a\xc3\xa9": it would alias "aé"


class Five(enum.IntEnum):
    FIVE = 5


def _cp(checkpoint_id: str | None = None) -> Any:
    cp = empty_checkpoint()
    if checkpoint_id is not None:
        cp["id"] = checkpoint_id
    return cp


async def test_lone_surrogates_are_refused_before_io(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        recorder.clear()
        good = config("t-" + uuid.uuid4().hex)
        with pytest.raises(InvalidInputError, match="thread_id"):
            await saver.aput(config(BAD), _cp(), {}, {})
        with pytest.raises(InvalidInputError, match="thread_id"):
            await saver.aget_tuple(config(BAD))
        with pytest.raises(InvalidInputError, match="thread_id"):
            [x async for x in saver.alist(config(BAD))]
        with pytest.raises(InvalidInputError, match="checkpoint_ns"):
            await saver.aput(config("t", checkpoint_ns=BAD), _cp(), {}, {})
        with pytest.raises(InvalidInputError, match="checkpoint_ns"):
            await saver.aget_tuple(config("t", checkpoint_ns=BAD))
        with pytest.raises(InvalidInputError, match="checkpoint id"):
            await saver.aput(good, _cp(BAD), {}, {})
        with pytest.raises(InvalidInputError, match="checkpoint id"):
            await saver.aget_tuple(config("t", checkpoint_id=BAD))
        with pytest.raises(InvalidInputError, match="task_id"):
            await saver.aput_writes(config("t", checkpoint_id="c1"), [("ch", 1)], BAD)
        with pytest.raises(InvalidInputError, match="metadata"):
            await saver.aput(good, _cp(), {BAD: 1}, {})  # type: ignore[misc]
        with pytest.raises(InvalidInputError, match="filter"):
            [x async for x in saver.alist(good, filter={BAD: 1})]
        with pytest.raises(InvalidInputError, match="thread_id"):
            await saver.adelete_thread(BAD)
        assert len(recorder) == 0  # refused before any statement
        assert [x async for x in saver.alist(None)] == []  # and nothing was written


async def test_a_checkpoint_id_with_a_trailing_space_is_refused(url: str) -> None:
    async with fresh_saver(url) as saver:
        thread = "pad-" + uuid.uuid4().hex
        stored = await saver.aput(config(thread), _cp("c1"), {"step": 1}, {})
        with pytest.raises(InvalidInputError, match="space"):
            await saver.aput(config(thread), _cp("c1 "), {"step": 2}, {})
        with pytest.raises(InvalidInputError, match="space"):
            await saver.aget_tuple(config(thread, checkpoint_id="c1 "))
        with pytest.raises(InvalidInputError, match="space"):
            await saver.aput_writes(config(thread, checkpoint_id="c1 "), [("ch", 1)], "task")
        tup = await saver.aget_tuple(stored)
        assert tup is not None and tup.metadata["step"] == 1  # "c1" was not overwritten


async def test_limit_accepts_int_likes_and_refuses_the_rest(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        thread = "lim-" + uuid.uuid4().hex
        for _ in range(7):
            await saver.aput(config(thread), _cp(), {}, {})
        assert len([x async for x in saver.alist(config(thread), limit=Five.FIVE)]) == 5
        assert len(list(saver.list(config(thread), limit=Five.FIVE))) == 5
        assert len([x async for x in saver.alist(config(thread), limit=0)]) == 0
        recorder.clear()
        for bad in ("3", 2.5, True, -1):
            with pytest.raises(InvalidInputError, match="limit"):
                [x async for x in saver.alist(config(thread), limit=bad)]  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError, match="limit"):
                list(saver.list(config(thread), limit=bad))  # type: ignore[arg-type]
        assert len(recorder) == 0


async def test_checkpoint_size_is_counted_in_bytes(url: str) -> None:
    limit = 64 * 1024
    async with fresh_saver(url, max_blob_bytes=limit) as saver:
        thread = "emoji-" + uuid.uuid4().hex
        emoji = "\U0001f600" * (limit // 3)  # fewer characters than the limit, 4/3 of it in bytes
        assert len(emoji) < limit < len(emoji.encode())
        with pytest.raises(CheckpointTooLargeError) as caught:
            await saver.aput(config(thread), _cp(), {"note": emoji}, {})
        assert isinstance(caught.value, MessageTooLargeError)
        # Inline values count in bytes too: many short emoji strings in the checkpoint row.
        values = {f"c{i}": "\U0001f600" * 1000 for i in range(limit // 3000)}
        assert sum(map(len, values.values())) < limit
        with pytest.raises(CheckpointTooLargeError):
            await saver.aput(config(thread), make_checkpoint(values, {}), {}, {})
        assert await saver.aget_tuple(config(thread)) is None


# --- metadata filters: exactly what InMemorySaver returns ----------------------------------

KEYS = ["user", "source", "step", 'q"uote', "back\\slash", "a.b", "n", "tags", "obj", "x'y"]
VALUES: list[Any] = [
    None, True, False, 0, 1, 1.0, 2, -1, 1.5, "alice", "Alice", "alice ", "", "bob",
    ["alice", "bob"], ["alice"], [], {}, {"a": 1}, {"a": 1, "b": 2}, {"b": 2, "a": 1},
    {"a": {}}, [1, "1"], "1", "null", "true",
]  # fmt: skip


def _metadata(rng: random.Random) -> dict[str, Any]:
    return {key: rng.choice(VALUES) for key in rng.sample(KEYS, rng.randint(0, 4))}


def _filters(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {},
        {"user": "alice"},
        {"user": ["alice", "bob"]},
        {"obj": {}},
        {"obj": {"a": 1}},
        {"missing": None},
        {'q"uote': "alice"},
        {"back\\slash": 1},
        {"step": True},
        {"step": 1},
    ]
    for _ in range(60):
        out.append({key: rng.choice(VALUES) for key in rng.sample(KEYS, rng.randint(1, 2))})
    return out


async def test_filters_match_in_memory_saver(url: str) -> None:
    rng = random.Random(20261130)
    memory = InMemorySaver()
    async with fresh_saver(url) as saver:
        saver.list_page_size = 7  # several pages, so that paging and filtering meet
        threads = ["flt-" + uuid.uuid4().hex for _ in range(3)]
        for thread in threads:
            parent: dict[str, Any] = config(thread)
            mem_parent: dict[str, Any] = config(thread)
            for _ in range(25):
                md = _metadata(rng)
                cp = _cp()
                parent = dict(await saver.aput(parent, cp, md, {}))  # type: ignore[arg-type]
                mem_parent = dict(await memory.aput(mem_parent, cp, md, {}))  # type: ignore[arg-type]
        checked = matched = 0
        for flt in _filters(rng):
            for limit in (None, 3):
                for thread in threads:
                    ours = [
                        t.checkpoint["id"]
                        async for t in saver.alist(config(thread), filter=flt, limit=limit)
                    ]
                    theirs = [
                        t.checkpoint["id"]
                        async for t in memory.alist(config(thread), filter=flt, limit=limit)
                    ]
                    assert ours == theirs, (flt, limit)
                    checked += 1
                    matched += bool(ours)
            everywhere = {t.checkpoint["id"] async for t in saver.alist(None, filter=flt)}
            assert everywhere == {t.checkpoint["id"] async for t in memory.alist(None, filter=flt)}
        assert matched > 20 and checked - matched > 20  # the filters both hit and missed


async def test_equality_not_containment(url: str) -> None:
    async with fresh_saver(url) as saver:
        thread = "eq-" + uuid.uuid4().hex
        await saver.aput(config(thread), _cp(), {"user": ["alice", "bob"], "o": {"a": 1}}, {})  # type: ignore[typeddict-unknown-key]

        async def ids(**flt: Any) -> int:
            return len([t async for t in saver.alist(config(thread), filter=flt)])

        assert await ids(user="alice") == 0
        assert await ids(user=["alice"]) == 0
        assert await ids(user=["alice", "bob"]) == 1
        assert await ids(o={}) == 0
        assert await ids(o={"a": 1}) == 1


def test_saver_is_the_langgraph_export() -> None:
    from tidb_memory import AsyncTiDBSaver as top

    assert top is AsyncTiDBSaver
