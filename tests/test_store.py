"""chat/_messages.py and chat/_sessions.py: MessageStore on MariaDB and SQLite, below the
LangChain classes: seqs, one statement per batch, idempotent retries, batched clears, UTC
timestamps."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pymysql
import pytest
from conftest import Target
from langchain_core.messages import AIMessage, HumanMessage

from tidb_memory import InvalidInputError, StorageError
from tidb_memory import engine as engine_mod
from tidb_memory._checks import check_id as check_session_id
from tidb_memory._checks import to_utc
from tidb_memory.chat import _sql
from tidb_memory.chat._messages import MessageStore
from tidb_memory.chat._sql import duplicate_of
from tidb_memory.engine import get_database


def make_store(backend: Target, table: str, **options: Any) -> MessageStore:
    return MessageStore(get_database(backend.url), table, **options)


class StatementSpy:
    """Records every statement the store sends, on whichever loop it runs."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        real_execute = engine_mod.Connection.execute
        real_fetchall = engine_mod.Connection.fetchall

        async def execute(conn: engine_mod.Connection, sql: str, params: Any) -> int:
            self.statements.append(sql)
            return await real_execute(conn, sql, params)

        async def fetchall(conn: engine_mod.Connection, sql: str, params: Any) -> list[Any]:
            self.statements.append(sql)
            return await real_fetchall(conn, sql, params)

        mp.setattr(engine_mod.Connection, "execute", execute)
        mp.setattr(engine_mod.Connection, "fetchall", fetchall)

    def clear(self) -> None:
        self.statements.clear()

    def verbs(self) -> list[str]:
        return [s.split(None, 1)[0].upper() for s in self.statements]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> StatementSpy:
    return StatementSpy(monkeypatch)


async def test_read_append_and_last_seq(backend: Target, table: str) -> None:
    store = make_store(backend, table)
    empty = await store.aread("s")
    assert empty.messages == [] and empty.last_seq is None
    # Without a hint the seqs are computed by the server: the store cannot know the last one.
    assert await store.aappend("s", [HumanMessage("1"), AIMessage("2")]) is None
    result = await store.aread("s")
    assert result.messages == [HumanMessage("1"), AIMessage("2")]
    assert result.last_seq == 2
    # With a (correct) hint the statement carries the seqs, and the new last seq is known.
    assert await store.aappend("s", [HumanMessage("3")], last_seq=2) == 3
    # A stale hint costs a retry, never a lost or misplaced message.
    assert await store.aappend("s", [AIMessage("4")], last_seq=1) is None
    assert (await store.aread("s")).messages == [
        HumanMessage("1"),
        AIMessage("2"),
        HumanMessage("3"),
        AIMessage("4"),
    ]
    assert await store.aappend("s", [], last_seq=7) == 7  # nothing to do, no I/O
    assert [r[0] for r in backend.rows(table, "s")] == [1, 2, 3, 4]


async def test_seqs_are_per_session(backend: Target, table: str) -> None:
    store = make_store(backend, table)
    await store.aappend("a", [HumanMessage("a1"), HumanMessage("a2"), HumanMessage("a3")])
    await store.aappend("b", [HumanMessage("b1")])
    await store.aappend("a", [HumanMessage("a4")])
    await store.aappend("b", [HumanMessage("b2")])
    assert [r[0] for r in backend.rows(table, "a")] == [1, 2, 3, 4]
    assert [r[0] for r in backend.rows(table, "b")] == [1, 2]


@pytest.mark.parametrize("size", [1, 3, 50])
async def test_one_insert_statement_per_batch(
    backend: Target, table: str, spy: StatementSpy, size: int
) -> None:
    store = make_store(backend, table)
    await store.aread("s")  # table setup happens here, once
    spy.clear()
    batch = [HumanMessage(f"m{i}") for i in range(size)]
    await store.aappend("s", batch)  # the MAX(seq) form
    assert spy.verbs() == ["INSERT"]
    spy.clear()
    last = (await store.aread("s")).last_seq
    spy.clear()
    await store.aappend("s", batch, last_seq=last)  # the VALUES form
    assert spy.verbs() == ["INSERT"]
    assert backend.count(table, "s") == 2 * size


async def test_a_retry_after_a_lost_reply_writes_nothing_twice(
    backend: Target, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies after the server committed the INSERT but before the reply came
    back: the retry collides on the batch's own msg_keys and counts as done."""
    store = make_store(backend, table)
    await store.aread("s")
    real_execute = engine_mod.Connection.execute
    inserts = 0

    async def lose_first_reply(conn: engine_mod.Connection, sql: str, params: Any) -> int:
        nonlocal inserts
        inserts += sql.startswith("INSERT")
        count = await real_execute(conn, sql, params)  # the retry fails here, on its msg_key
        if sql.startswith("INSERT") and inserts == 1:
            raise pymysql.err.OperationalError(2013, "Lost connection to server during query")
        return count

    monkeypatch.setattr(engine_mod.Connection, "execute", lose_first_reply)
    await store.aappend("s", [HumanMessage("once"), AIMessage("only once")])
    assert inserts == 2
    monkeypatch.undo()
    assert (await store.aread("s")).messages == [HumanMessage("once"), AIMessage("only once")]
    assert backend.count(table) == 2


async def test_clear_deletes_in_bounded_batches(
    backend: Target, table: str, spy: StatementSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(backend, table)
    await store.aappend("s", [HumanMessage(str(i)) for i in range(10)])
    await store.aappend("other", [HumanMessage("keep")])
    # One place holds the batch (_sql.clear_plan): the statement's LIMIT and the loop that stops
    # on a short batch both read it there.
    monkeypatch.setattr(_sql, "CLEAR_BATCH", 3)
    _sql.clear_plan.cache_clear()
    try:
        spy.clear()
        assert await store.aclear("s") == 10
    finally:
        monkeypatch.setattr(_sql, "CLEAR_BATCH", 10_000)
        _sql.clear_plan.cache_clear()
    if backend.name == "mysql":
        assert spy.verbs() == ["DELETE"] * 4  # 3 + 3 + 3 + 1
        assert all("LIMIT 3" in s for s in spy.statements)
    else:
        assert spy.verbs() == ["DELETE"]
    assert backend.count(table, "s") == 0
    assert backend.count(table, "other") == 1
    assert await store.aclear("s") == 0


async def test_a_row_that_is_not_a_message_is_an_error(backend: Target, table: str) -> None:
    store = make_store(backend, table)
    await store.aappend("s", [HumanMessage("fine")])
    backend.execute(
        f"INSERT INTO {backend.q(table)} (session_id, seq, msg_key, message, created_at) "
        f"VALUES ({backend.ph}, 2, {backend.ph}, {backend.ph}, {backend.ph})",
        ("s", "f" * 32, '{"not": "a message"}', "2024-01-01 00:00:00.000000"),
    )
    with pytest.raises(StorageError) as info:
        await store.aread("s")
    assert "aget_messages" in str(info.value) and table in str(info.value)
    assert info.value.__cause__ is not None


async def test_timestamps_are_utc_with_microseconds(backend: Target, table: str) -> None:
    store = make_store(backend, table)
    before = datetime.now(UTC).replace(tzinfo=None)
    await store.aappend("s", [HumanMessage("now")])
    after = datetime.now(UTC).replace(tzinfo=None)
    (row,) = backend.rows(table, "s")
    stored = datetime.fromisoformat(row[2]) if isinstance(row[2], str) else row[2]
    assert before - timedelta(milliseconds=5) <= stored <= after + timedelta(milliseconds=5)
    assert len(row[3]) == 32  # the client-generated message key
    assert int(row[3], 16) >= 0


@pytest.fixture
def local_time_is_not_utc() -> Iterator[None]:
    """Run with this process's local time zone at UTC+05:30, so "naive means local" bugs show."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        assert time.timezone == -19800
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


async def test_naive_earliest_time_means_utc_whatever_the_local_zone(
    backend: Target, table: str, local_time_is_not_utc: None
) -> None:
    store = make_store(backend, table)
    await store.aappend("s", [HumanMessage("old")])
    await asyncio.sleep(0.002)
    await store.aappend("s", [HumanMessage("new")])
    rows = backend.rows(table, "s")
    second = datetime.fromisoformat(rows[1][2]) if isinstance(rows[1][2], str) else rows[1][2]
    assert abs(second - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=1)
    assert [m.content for m in (await store.aread("s", since=second)).messages] == ["new"]
    local = second.replace(tzinfo=UTC).astimezone()  # the same instant, as local aware time
    assert local.utcoffset() == timedelta(hours=5, minutes=30)
    assert [m.content for m in (await store.aread("s", since=local)).messages] == ["new"]
    # A naive local time would be 5:30 h in the future as UTC: nothing that recent.
    assert (await store.aread("s", since=local.replace(tzinfo=None))).messages == []


# --- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "target"),
    [
        (pymysql.err.IntegrityError(1062, "Duplicate entry 's-3' for key 'PRIMARY'"), "seq"),
        (pymysql.err.IntegrityError(1062, "Duplicate entry 'ab' for key 'uk_msg_key'"), "msg_key"),
        (
            pymysql.err.IntegrityError(1062, "Duplicate entry 'ab' for key 't.uk_msg_key'"),
            "msg_key",
        ),
        (pymysql.err.IntegrityError(1062, "Duplicate entry 's-3' for key 't.PRIMARY'"), "seq"),
        (sqlite3.IntegrityError("UNIQUE constraint failed: t.msg_key"), "msg_key"),
        (sqlite3.IntegrityError("UNIQUE constraint failed: t.session_id, t.seq"), "seq"),
        (pymysql.err.IntegrityError(1048, "Column 'message' cannot be null"), None),
        (sqlite3.IntegrityError("NOT NULL constraint failed: t.message"), None),
        (ValueError("x"), None),
    ],
)
def test_duplicate_of(exc: BaseException, target: str | None) -> None:
    assert duplicate_of(exc, "t") == target


def test_session_id_rules() -> None:
    assert check_session_id("a") == "a"
    assert check_session_id("x" * 255) == "x" * 255
    assert check_session_id(" leading is fine") == " leading is fine"
    assert check_session_id("'; DROP TABLE x; --") == "'; DROP TABLE x; --"
    for bad in ["", "x" * 256, "a ", "  ", "\ud800", None, 1, b"a"]:
        with pytest.raises(InvalidInputError):
            check_session_id(bad)


def test_to_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0, 0, 123456)
    assert to_utc(naive) == naive
    plus2 = timezone(timedelta(hours=2))
    assert to_utc(datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus2)) == naive
    assert to_utc(naive.replace(tzinfo=UTC)) == naive
    assert to_utc(naive).tzinfo is None
    for bad in ["2024-05-01", 1714564800, None]:
        with pytest.raises(InvalidInputError):
            to_utc(bad)
