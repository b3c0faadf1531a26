"""Property tests: random message lists round-trip exactly, and random junk at the public API
gets a typed error (or a correct round trip), never a driver crash and never a half-written batch.

Runs on the shared MariaDB and on the SQLite mirror.
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

import tidb_memory
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    InvalidInputError,
    StorageError,
    TiDBMemoryError,
)
from tidb_memory.codec import decode, encode

pytestmark = pytest.mark.timeout(300)

MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ----------------------------------------------------------------------------

SPECIALS = [
    "",
    "\x00",
    "a\x00b",
    "😀",
    "\U0001d518\U0001d52b\U0001d526",
    "\U0010ffff",
    "\u202e",
    "'; DROP TABLE x; --",
    "\\",
]
text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), st.sampled_from(SPECIALS)
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=8,
)
json_dict = st.dictionaries(text, json_value, max_size=3)
block = st.one_of(
    text,
    st.fixed_dictionaries({"type": st.just("text"), "text": text}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {
                    "url": st.builds(
                        "data:image/png;base64,{}".format, st.text("AZaz09+/", max_size=20)
                    )
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source_type": st.just("base64"),
            "data": st.text("AZaz09+/=", max_size=20),
            "mime_type": st.sampled_from(["image/png", "image/jpeg"]),
        }
    ),
)
content = st.one_of(text, st.lists(block, max_size=3))
common = {
    "additional_kwargs": json_dict,
    "response_metadata": json_dict,
    "id": st.none() | text,
    "name": st.none() | text,
}
tool_call = st.fixed_dictionaries(
    {"name": text, "args": json_dict, "id": st.none() | text, "type": st.just("tool_call")}
)
message: st.SearchStrategy[BaseMessage] = st.one_of(
    st.builds(HumanMessage, content=content, **common),
    st.builds(SystemMessage, content=content, **common),
    st.builds(AIMessage, content=content, tool_calls=st.lists(tool_call, max_size=3), **common),
    st.builds(
        ToolMessage,
        content=content,
        tool_call_id=text,
        artifact=json_value,
        status=st.sampled_from(["success", "error"]),
        **common,
    ),
    st.builds(ChatMessage, content=content, role=text, **common),
    st.builds(FunctionMessage, content=content, name=text),
)
messages = st.lists(message, min_size=1, max_size=4)


class Unstorable:
    def __repr__(self) -> str:
        return "Unstorable()"


junk_value = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.integers(min_value=2**64, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-(2**63) - 1),
    st.text(st.characters(whitelist_categories=("Cs",)), min_size=1, max_size=3),
    st.tuples(st.integers()),
    st.frozensets(st.integers(), max_size=2),
    st.binary(max_size=5),
    st.builds(Unstorable),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
)
junk_message = st.one_of(
    junk_value.map(lambda v: HumanMessage("x", additional_kwargs={"bad": v})),
    junk_value.map(lambda v: AIMessage("x", response_metadata={"bad": [v]})),
    st.text(st.characters(whitelist_categories=("Cs",)), min_size=1, max_size=3).map(HumanMessage),
    junk_value.map(lambda v: ToolMessage("x", tool_call_id="t", artifact=v)),
)
junk_item = st.one_of(
    junk_message,
    st.none(),
    st.integers(),
    text,
    st.dictionaries(text, text, max_size=2),
    st.just({"type": "human", "data": {"content": "a dict, not a message"}}),
    st.builds(Unstorable),
)
batch_with_junk = st.lists(st.one_of(message, junk_item), min_size=1, max_size=5)
session_id = st.one_of(
    st.text(max_size=300),  # surrogates, NUL, trailing spaces, over 255 characters...
    st.sampled_from(["", " ", "a ", " a", "a\t", "\x00", "a" * 255, "a" * 256, "😀" * 255]),
    st.integers(),
    st.none(),
    st.binary(max_size=10),
    st.lists(st.text(max_size=3), max_size=2),
)
bad_batch = st.one_of(
    st.none(),
    st.integers(),
    text,
    st.binary(max_size=5),
    st.builds(HumanMessage, content=text),  # a single message, not a list of them
    st.dictionaries(text, text, max_size=2),
)


# --- the backends --------------------------------------------------------------------------


class Backend:
    """One event loop for all examples of a test, so pools are reused."""

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = table
        self.runner = asyncio.Runner()

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def history(self, session: Any, **options: Any) -> AsyncTiDBChatMessageHistory:
        return AsyncTiDBChatMessageHistory(session, self.url, table_name=self.table, **options)

    def close(self) -> None:
        async def drop() -> None:
            if self.url.startswith("mysql"):
                history = self.history("cleanup")
                async with history.store.db.connection() as conn:
                    await conn.execute(f"DROP TABLE IF EXISTS `{self.table}`", ())
            await tidb_memory.aclose_all()

        try:
            self.run(drop())
        finally:
            self.runner.close()


@pytest.fixture(params=["mariadb", "sqlite"], scope="module")
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    table = "fuzz_" + uuid.uuid4().hex[:10]
    if request.param == "mariadb":
        url = MYSQL_URL
    else:
        url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'fuzz.sqlite3'}"
    b = Backend(url, table)
    yield b
    b.close()


# --- round trips ---------------------------------------------------------------------------


@settings(FUZZ, max_examples=150)
@given(messages)
def test_codec_round_trip_is_exact(batch: list[BaseMessage]) -> None:
    for m in batch:
        back = decode(encode(m))
        assert back == m
        assert type(back) is type(m)


@FUZZ
@given(batch=messages)
def test_random_message_lists_round_trip_exactly(
    backend: Backend, batch: list[BaseMessage]
) -> None:
    async def go() -> None:
        history = backend.history("rt-" + uuid.uuid4().hex)
        await history.aadd_messages(batch)
        await history.aadd_messages(batch[:1])  # a second append after the first
        got = await history.aget_messages()
        assert got == [*batch, batch[0]]
        assert [type(m) for m in got] == [type(m) for m in [*batch, batch[0]]]

    backend.run(go())


# --- junk ----------------------------------------------------------------------------------


def is_junk(item: object) -> bool:
    if not isinstance(item, BaseMessage):
        return True
    try:
        encode(item)
    except InvalidInputError:
        return True
    return False


@FUZZ
@given(batch=batch_with_junk)
def test_junk_batches_are_refused_whole(backend: Backend, batch: list[Any]) -> None:
    async def go() -> None:
        history = backend.history("junk-" + uuid.uuid4().hex)
        await history.aadd_messages([HumanMessage("before")])
        before = await history.aget_messages()
        try:
            await history.aadd_messages(batch)
        except TiDBMemoryError as exc:
            assert isinstance(exc, InvalidInputError), repr(exc)
            assert any(map(is_junk, batch)), f"a valid batch was refused: {exc!r}"
            assert await history.aget_messages() == before  # nothing of the batch was written
        else:
            assert not any(map(is_junk, batch)), "junk was accepted"
            assert await history.aget_messages() == [*before, *batch]

    backend.run(go())


@FUZZ
@given(session=session_id)
def test_session_ids_of_every_shape(backend: Backend, session: Any) -> None:
    async def go() -> None:
        try:
            history = backend.history(session)
        except TiDBMemoryError as exc:
            assert isinstance(exc, InvalidInputError), repr(exc)
            return
        assert isinstance(session, str)
        await history.aclear()  # the same id may come up in an earlier example
        marker = "m-" + uuid.uuid4().hex
        await history.aadd_messages([HumanMessage(marker), AIMessage(session)])
        assert await history.aget_messages() == [HumanMessage(marker), AIMessage(session)]
        # The id is stored and compared exactly: a look-alike id sees none of it.
        for other in {session + "x", session.upper(), session.lower(), "x" + session} - {session}:
            try:
                look_alike = backend.history(other)
            except TiDBMemoryError:
                continue
            assert HumanMessage(marker) not in await look_alike.aget_messages()

    backend.run(go())


@FUZZ
@given(batch=bad_batch)
def test_wrong_types_for_the_batch(backend: Backend, batch: Any) -> None:
    async def go() -> None:
        history = backend.history("types-" + uuid.uuid4().hex)
        with pytest.raises(InvalidInputError):
            await history.aadd_messages(batch)
        assert await history.aget_messages() == []

    backend.run(go())


@FUZZ
@given(
    option=st.sampled_from(["window", "max_message_bytes", "table_name", "earliest_time", "retry"]),
    value=st.one_of(
        st.none(), st.integers(), st.floats(), text, st.booleans(), st.binary(max_size=3)
    ),
)
def test_wrong_types_for_options(backend: Backend, option: str, value: Any) -> None:
    async def go() -> None:
        options: dict[str, Any] = {option: value}
        if option == "table_name":
            options = {}
        try:
            if option == "table_name":
                history = AsyncTiDBChatMessageHistory("opt", backend.url, table_name=value)
            else:
                history = backend.history("opt-" + uuid.uuid4().hex, **options)
        except TiDBMemoryError as exc:
            assert isinstance(exc, InvalidInputError | tidb_memory.ConfigurationError), repr(exc)
            return
        try:
            await history.aadd_messages([HumanMessage("ok")])
            assert (await history.aget_messages())[-1] == HumanMessage("ok")
        except TiDBMemoryError as exc:
            # e.g. a tiny max_message_bytes: refused before any I/O
            assert isinstance(exc, InvalidInputError), repr(exc)
        finally:
            if option == "table_name" and backend.url.startswith("mysql"):
                async with history.store.db.connection() as conn:
                    await conn.execute(f"DROP TABLE IF EXISTS `{history.table_name}`", ())

    backend.run(go())


def test_a_generator_batch_is_accepted(backend: Backend) -> None:
    async def go() -> None:
        history = backend.history("gen-" + uuid.uuid4().hex)
        await history.aadd_messages(HumanMessage(str(i)) for i in range(3))
        assert [m.content for m in await history.aget_messages()] == ["0", "1", "2"]

    backend.run(go())


def test_deep_nesting_is_refused_or_round_trips(backend: Backend) -> None:
    """Depth beyond what the server's JSON accepts gives a typed error and writes nothing."""

    async def go() -> None:
        history = backend.history("deep-" + uuid.uuid4().hex)
        for depth in (10, 31, 40, 100, 300):
            value: Any = "leaf"
            for _ in range(depth):
                value = {"k": [value]}
            batch = [HumanMessage("ok"), HumanMessage("deep", additional_kwargs={"v": value})]
            before = await history.aget_messages()
            try:
                await history.aadd_messages(batch)
            except (InvalidInputError, StorageError):
                assert await history.aget_messages() == before
            else:
                assert await history.aget_messages() == [*before, *batch]

    backend.run(go())


class MyInt(int):
    pass


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


#: Any code point, lone surrogates included.
any_text = st.text(st.characters(blacklist_categories=()), max_size=6)
count = st.one_of(
    st.integers(-3, 10_002),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.sampled_from([enum.IntEnum("Size", {"TWO": 2}).TWO, MyInt(3), 10_000, 10_001]),
)


@FUZZ
@given(limit=count)
def test_counts_of_every_shape(backend: Backend, limit: Any) -> None:
    async def go() -> None:
        history = backend.history("counts-" + uuid.uuid4().hex)
        await history.aadd_messages([HumanMessage(str(i)) for i in range(3)])
        try:
            records = await history.aget_records(limit=limit)
        except TiDBMemoryError as exc:
            assert isinstance(exc, InvalidInputError), repr(exc)
            assert isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000
            return
        assert isinstance(limit, int) and not isinstance(limit, bool)
        assert [r.message.content for r in records] == ["0", "1", "2"][-limit:]

    backend.run(go())


@FUZZ
@given(title=st.one_of(st.none(), any_text), metadata=st.dictionaries(any_text, any_text))
def test_session_info_of_every_shape(backend: Backend, title: Any, metadata: Any) -> None:
    async def go() -> None:
        history = backend.history("info-" + uuid.uuid4().hex)
        try:
            await history.aset_session_info(title=title, metadata=metadata)
        except TiDBMemoryError as exc:
            assert isinstance(exc, InvalidInputError), repr(exc)
            # Only a lone surrogate is refused among these.
            assert any(map(has_surrogate, [title or "", *metadata, *metadata.values()]))
            assert (await history.aget_session_info()).title is None  # nothing was written
            return
        info = await history.aget_session_info()
        assert (info.title, info.metadata) == (title, metadata)

    backend.run(go())
