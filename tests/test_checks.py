"""Bad input gets a clear InvalidInputError before any I/O, never a surprise (issue 10, §5).

The pure checks of ``tidb_memory._checks`` first, then what a user sees through the history and
session faces on MariaDB and SQLite: lone surrogates are refused (never stored as another
string), int-likes are taken through ``operator.index`` (never sent as ``LIMIT '5'``), extreme
times give one clear line, and session metadata over the row limit is refused before I/O.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from tests.conftest import Target
from tests.test_migrate import migrate
from tests.test_migrate import seed_table as seed_table  # a fixture
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    InvalidInputError,
    MessageTooLargeError,
    RetryPolicy,
    SessionStore,
)
from tidb_memory._checks import ago, as_count, check_id, check_table_name, check_text, to_utc

#: Nothing listens here: any I/O would fail with a connection error, not an input error.
NOWHERE = "mysql+aiomysql://root@127.0.0.1:1/test?connect_timeout=1"
#: What ``os.fsdecode(b"a\xc3\xa9")`` gives under a C locale: "aé" as two lone surrogates.
SURROGATE = "a\udcc3\udca9"


class Size(enum.IntEnum):
    TWO = 2
    FIVE = 5


class MyInt(int):
    pass


# --- the pure checks -------------------------------------------------------------------------


def test_check_id_accepts_what_compares_exactly() -> None:
    assert check_id("a") == "a"
    assert check_id("x" * 255) == "x" * 255
    assert check_id(" leading is fine") == " leading is fine"
    assert check_id("", "checkpoint_ns", empty=True) == ""
    assert check_id("é😀") == "é😀"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "must not be empty"),
        ("x" * 256, "256 characters; the most is 255"),
        ("a ", "must not end with a space"),
        (SURROGATE, "lone surrogate at index 1"),
        ("\ud800", "lone surrogate at index 0"),
        (7, "must be a str, not int"),
        (None, "must be a str, not NoneType"),
        (b"a", "must be a str, not bytes"),
    ],
)
def test_check_id_refuses(value: object, words: str) -> None:
    with pytest.raises(InvalidInputError, match="thread_id") as info:
        check_id(value, "thread_id")
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_check_text_refuses_surrogates_only() -> None:
    assert check_text("a ", "title") == "a "
    assert check_text("", "title") == ""
    with pytest.raises(InvalidInputError, match="title is not valid Unicode"):
        check_text(SURROGATE, "title")
    with pytest.raises(InvalidInputError, match="title has 3 characters; the most is 2"):
        check_text("abc", "title", max_chars=2)


def test_as_count_takes_what_has_an_index() -> None:
    assert as_count("limit", 5) == 5
    assert as_count("limit", Size.FIVE) == 5
    assert type(as_count("limit", Size.FIVE)) is int
    assert type(as_count("limit", MyInt(3))) is int
    assert as_count("batch", 10_000, high=10_000) == 10_000
    assert as_count("offset", 0, low=0) == 0


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (2.5, "not float 2.5"),
        ("3", "not str '3'"),
        (True, "not a bool"),
        (None, "not NoneType"),
        (0, "got 0"),
        (10_001, "got 10001"),
    ],
)
def test_as_count_refuses(value: object, words: str) -> None:
    with pytest.raises(InvalidInputError, match="limit must be an int from 1 to 10000") as info:
        as_count("limit", value, high=10_000)
    assert words in str(info.value)


def test_to_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0, 0, 123456)
    assert to_utc(naive) == naive
    plus2 = timezone(timedelta(hours=2))
    assert to_utc(datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus2)) == naive
    assert to_utc(naive.replace(tzinfo=UTC)).tzinfo is None
    with pytest.raises(InvalidInputError, match="older_than must be a datetime, not str"):
        to_utc("2024-05-01", "older_than")


@pytest.mark.parametrize(
    "extreme",
    [
        datetime.fromisoformat("0001-01-01T00:00:00+01:00"),
        datetime.fromisoformat("9999-12-31T23:00:00-05:00"),
    ],
)
def test_to_utc_out_of_range_is_one_clear_line(extreme: datetime) -> None:
    with pytest.raises(InvalidInputError) as info:
        to_utc(extreme, "older_than")
    message = str(info.value)
    assert message.startswith("older_than ") and "out of range in UTC" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, OverflowError)


def test_ago_overflow_is_an_input_error() -> None:
    assert ago(timedelta(days=1)) < datetime.now(UTC).replace(tzinfo=None)
    with pytest.raises(InvalidInputError, match="ttl of 999,999,999 days reaches back before"):
        ago(timedelta(days=999_999_999))


def test_check_table_name() -> None:
    assert check_table_name("chat_1") == "chat_1"
    for bad in ("", "1abc", "a-b", "x" * 65, "a\n", None):
        with pytest.raises(InvalidInputError):
            check_table_name(bad)


# --- through the history and session faces, before any I/O --------------------------------------


def nowhere_history(**options: object) -> AsyncTiDBChatMessageHistory:
    return AsyncTiDBChatMessageHistory(
        "s",
        NOWHERE,
        retry=RetryPolicy(attempts=1),
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("bad", [2.5, "3", True, 0, -1])
async def test_bad_counts_are_refused_before_io(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="window"):
        nowhere_history(window=bad)
    history = nowhere_history()
    with pytest.raises(InvalidInputError, match="limit"):
        await history.aget_records(limit=bad)  # type: ignore[arg-type]
    sessions = SessionStore(NOWHERE, retry=RetryPolicy(attempts=1))
    with pytest.raises(InvalidInputError, match="limit"):
        await sessions.alist_sessions(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="limit"):
        await sessions.store.ascan(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="batch"):
        await sessions.store.apurge_expired(older_than=datetime.now(UTC), batch=bad)  # type: ignore[arg-type]


async def test_surrogates_are_refused_before_io() -> None:
    with pytest.raises(InvalidInputError, match="session_id is not valid Unicode"):
        AsyncTiDBChatMessageHistory(SURROGATE, NOWHERE)
    history = nowhere_history()
    with pytest.raises(InvalidInputError, match="title is not valid Unicode"):
        await history.aset_session_info(title=SURROGATE)
    with pytest.raises(InvalidInputError, match="user_id is not valid Unicode"):
        await history.aset_session_info(user_id=SURROGATE)
    with pytest.raises(InvalidInputError, match="metadata"):
        await history.aset_session_info(metadata={SURROGATE: 1})
    with pytest.raises(InvalidInputError, match="metadata"):
        await history.aadd_messages([HumanMessage("hi")], metadata={SURROGATE: 1})
    with pytest.raises(InvalidInputError, match="session_id is not valid Unicode"):
        await SessionStore(NOWHERE).aget_session_info(SURROGATE)


async def test_session_metadata_over_the_row_limit_is_refused_before_io() -> None:
    history = nowhere_history(max_message_bytes=10_000)
    with pytest.raises(MessageTooLargeError) as info:
        await history.aset_session_info(metadata={"notes": "é" * 6_000})  # 12,000 bytes
    assert "10,000" in str(info.value) and "nothing was written" in str(info.value)
    # The default limit (6 MiB, TiDB's row limit) counts bytes, not characters.
    default = nowhere_history()
    with pytest.raises(MessageTooLargeError):
        await default.aset_session_info(metadata={"notes": "😀" * (2 * 1024 * 1024)})
    # Per-message metadata too, whether one mapping for all or one per message.
    with pytest.raises(MessageTooLargeError, match="metadata encodes to"):
        await history.aadd_messages([HumanMessage("hi")], metadata={"notes": "é" * 6_000})
    with pytest.raises(MessageTooLargeError, match=r"metadata\[1\] encodes to"):
        await history.aadd_messages(
            [HumanMessage("a"), HumanMessage("b")], metadata=[None, {"n": "x" * 10_001}]
        )


def test_ttl_that_overflows_is_refused_at_construction() -> None:
    with pytest.raises(InvalidInputError, match="ttl"):
        nowhere_history(ttl=timedelta(days=999_999_999))


async def test_extreme_times_are_input_errors() -> None:
    history = nowhere_history()
    extreme = datetime.fromisoformat("0001-01-01T00:00:00+01:00")
    with pytest.raises(InvalidInputError, match="earliest_time"):
        nowhere_history(earliest_time=extreme)
    with pytest.raises(InvalidInputError, match="older_than"):
        await history.store.apurge_expired(older_than=extreme)


# --- on the real backends ---------------------------------------------------------------------


async def test_int_likes_work_as_ints(backend: Target, table: str) -> None:
    history = AsyncTiDBChatMessageHistory(
        "ints",
        backend.url,
        table_name=table,
        window=Size.TWO,  # type: ignore[arg-type]
    )
    await history.aadd_messages([HumanMessage(str(i)) for i in range(5)])
    assert [m.content for m in await history.aget_messages()] == ["3", "4"]
    records = await history.aget_records(limit=MyInt(3))  # type: ignore[arg-type]
    assert [r.message.content for r in records] == ["2", "3", "4"]
    sessions = SessionStore(backend.url, table_name=table)
    page = await sessions.alist_sessions(limit=Size.FIVE)  # type: ignore[arg-type]
    assert [s.session_id for s in page.sessions] == ["ints"]
    scanned = await sessions.store.ascan(limit=Size.TWO)  # type: ignore[arg-type]
    assert [r.message.content for _, r in scanned] == ["0", "1"]


async def test_surrogate_never_aliases_a_real_string(backend: Target, table: str) -> None:
    history = AsyncTiDBChatMessageHistory("aé", backend.url, table_name=table)
    await history.aadd_messages([HumanMessage("real"), AIMessage("one")])
    await history.aset_session_info(title="aé", metadata={"aé": 1})
    with pytest.raises(InvalidInputError):
        AsyncTiDBChatMessageHistory(SURROGATE, backend.url, table_name=table)
    with pytest.raises(InvalidInputError):
        await history.aset_session_info(title=SURROGATE)
    with pytest.raises(InvalidInputError):
        await history.aset_session_info(metadata={SURROGATE: 2})
    info = await history.aget_session_info()
    assert (info.title, info.metadata, info.message_count) == ("aé", {"aé": 1}, 2)
    rows = backend.query(
        f"SELECT title FROM {backend.q('tidb_memory_sessions')} WHERE table_name = {backend.ph}",
        (table,),
    )
    assert rows == [("aé",)]


def test_an_int_enum_batch_migrates_a_seed_table(mysql: Target, seed_table: str) -> None:
    report = migrate(seed_table, batch=Size.TWO)  # type: ignore[arg-type]
    assert report.copied == report.rows == 11  # the fixture's rows, two per statement
    with pytest.raises(InvalidInputError, match="batch must be an int from 1 to 10000"):
        migrate(seed_table + "_other", batch="2")  # type: ignore[arg-type]
