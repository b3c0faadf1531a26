"""Web backend features: windows, records and pages, per-message metadata, sessions, retention.

Behaviour tests run on MariaDB and on SQLite (the ``backend`` fixture). Round-trip counts run on
MariaDB, where the server counts them: Questions + Com_admin_commands deltas, exact from the
session status of the library's only connection, and confirmed from the global status
(calibrated, minimised over repetitions: see :class:`RoundTrips`).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import MYSQL_URL, Target, aiomysql_connect
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from tidb_memory import (
    UNSET,
    AsyncTiDBChatMessageHistory,
    InvalidInputError,
    SessionStore,
    TiDBChatMessageHistory,
)
from tidb_memory.chat._messages import MessageStore, trim_window
from tidb_memory.chat._schema import check_ttl, create_table_statements, ttl_clause
from tidb_memory.engine import get_database

# --- helpers ---------------------------------------------------------------------------------


def history(
    backend: Target, table: str, session_id: str = "s", **options: Any
) -> AsyncTiDBChatMessageHistory:
    return AsyncTiDBChatMessageHistory(session_id, backend.url, table_name=table, **options)


def store(url: str, table: str, **options: Any) -> MessageStore:
    return MessageStore(get_database(url), table, **options)


def call(tool_id: str, name: str = "lookup") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": {"q": tool_id}, "id": tool_id}])


def result(tool_id: str) -> ToolMessage:
    return ToolMessage(f"result of {tool_id}", tool_call_id=tool_id)


#: A conversation with a system prompt, two tool rounds (one with two parallel calls) and chat.
CONVERSATION: list[BaseMessage] = [
    SystemMessage("You are terse."),
    HumanMessage("weather in Paris and Rome?"),
    AIMessage(
        "",
        tool_calls=[
            {"name": "weather", "args": {"city": "Paris"}, "id": "w1"},
            {"name": "weather", "args": {"city": "Rome"}, "id": "w2"},
        ],
    ),
    result("w1"),
    result("w2"),
    AIMessage("Paris: sun. Rome: rain."),
    HumanMessage("and Oslo?"),
    call("w3"),
    result("w3"),
    AIMessage("Oslo: snow ❄"),
    HumanMessage("thanks"),
    AIMessage("you're welcome"),
]


def check_tool_pairs(window: list[BaseMessage]) -> None:
    """No ToolMessage without its call in the window; no call in the window without the
    results that follow it in the session."""
    calls: dict[str, int] = {}
    for i, message in enumerate(window):
        if isinstance(message, AIMessage):
            for tc in message.tool_calls:
                calls[str(tc["id"])] = i
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in calls, f"orphan tool result at {i}: {window}"
    for tool_id, i in calls.items():
        results = [
            m for m in window[i:] if isinstance(m, ToolMessage) and m.tool_call_id == tool_id
        ]
        expected = [
            m for m in CONVERSATION if isinstance(m, ToolMessage) and m.tool_call_id == tool_id
        ]
        assert results == expected, f"call {tool_id} separated from its results"


class RoundTrips:
    """Statements the MySQL server received during a call, seen two ways (both asserted):

    * ``SESSION`` status of the library's only pooled connection (``pool_size=1``), which
      nothing else uses: exact. The same connection id before and after proves that no
      reconnect hid in between.
    * ``GLOBAL`` status from a monitor connection: other clients of the shared server only ever
      add to it, so the measurement is repeated and its minimum taken, then calibrated against
      the same measurement around nothing; sampling stops once it reaches the session count.
    """

    STATUS = "STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')"

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    async def _global(self) -> int:
        async with self.monitor.cursor() as cur:
            await cur.execute("SHOW GLOBAL " + self.STATUS)
            return sum(int(v) for _, v in await cur.fetchall())

    async def _session(self) -> tuple[int, int]:
        async with get_database(MYSQL_URL, engine_args=ONE_CONNECTION).connection() as conn:
            rows = await conn.fetchall("SHOW SESSION " + self.STATUS, ())
            ((conn_id,),) = await conn.fetchall("SELECT CONNECTION_ID()", ())
        return sum(int(v) for _, v in rows), int(conn_id)

    async def _session_delta(
        self, op: Callable[[], Awaitable[Any]], setup: Callable[[], Awaitable[Any]] | None
    ) -> int:
        if setup is not None:
            await setup()
        before, conn_before = await self._session()
        await op()
        after, conn_after = await self._session()
        assert conn_before == conn_after, "the pooled connection was replaced"
        return after - before

    async def _global_delta(
        self,
        op: Callable[[], Awaitable[Any]],
        setup: Callable[[], Awaitable[Any]] | None,
        enough: int,
        attempts: int = 300,
        seconds: float = 20.0,
    ) -> int:
        best: int | None = None
        deadline = time.monotonic() + seconds
        for attempt in range(1, attempts + 1):
            if setup is not None:
                await setup()
            before = await self._global()
            await op()
            delta = await self._global() - before
            best = delta if best is None else min(best, delta)
            if (best <= enough and attempt >= 3) or time.monotonic() > deadline:
                break
        assert best is not None
        return best

    async def count(
        self,
        op: Callable[[], Awaitable[Any]],
        *,
        setup: Callable[[], Awaitable[Any]] | None = None,
    ) -> int:
        async def nothing() -> None:
            return None

        exact = await self._session_delta(op, setup) - await self._session_delta(nothing, None)
        calibration = await self._global_delta(nothing, None, 1)
        seen = await self._global_delta(op, setup, exact + calibration) - calibration
        assert seen == exact, f"global count {seen} != session count {exact}"
        return exact


#: Every store and history in the round-trip tests shares this one-connection pool.
ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0}


@pytest.fixture
async def round_trips(mysql: Target) -> Any:
    conn = await aiomysql_connect(MYSQL_URL)
    try:
        yield RoundTrips(conn)
    finally:
        conn.close()


def set_created_at(
    backend: Target, table: str, session_id: str, seqs: Sequence[int], when: datetime
) -> None:
    """Backdate rows, around the library."""
    stamp = when.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    marks = ", ".join([backend.ph] * len(seqs))
    backend.execute(
        f"UPDATE {backend.q(table)} SET created_at = {backend.ph} "
        f"WHERE session_id = {backend.ph} AND seq IN ({marks})",
        (stamp, session_id, *seqs),
    )


# --- windows -------------------------------------------------------------------------------


def test_trim_window_only_drops_leading_tool_results() -> None:
    assert trim_window([result("a"), result("b"), HumanMessage("h")]) == [HumanMessage("h")]
    assert trim_window([call("a"), result("a")]) == [call("a"), result("a")]
    assert trim_window([result("a")]) == []
    assert trim_window([]) == []


async def test_window_returns_the_last_n(backend: Target, table: str) -> None:
    h = history(backend, table, window=4)
    chat = [HumanMessage(f"h{i}") if i % 2 == 0 else AIMessage(f"a{i}") for i in range(10)]
    await h.aadd_messages(chat)
    assert await h.aget_messages() == chat[-4:]
    assert await history(backend, table, window=100).aget_messages() == chat
    # The full history is still there.
    assert await history(backend, table).aget_messages() == chat


async def test_window_never_breaks_tool_calls(backend: Target, table: str) -> None:
    await history(backend, table).aadd_messages(CONVERSATION)
    for n in range(1, len(CONVERSATION) + 2):
        window = await history(backend, table, window=n).aget_messages()
        assert not window or not isinstance(window[0], ToolMessage), n
        check_tool_pairs(window)
        # The window is a suffix of the session: nothing is reordered or invented.
        assert window == CONVERSATION[len(CONVERSATION) - len(window) :]
        # It is as long as it can be: only leading tool results were dropped.
        assert len(window) >= min(n, len(CONVERSATION)) - 2
    # Cut inside the parallel results: both results go, and the call with them.
    assert await history(backend, table, window=8).aget_messages() == CONVERSATION[5:]


async def test_window_pins_the_first_system_message(backend: Target, table: str) -> None:
    await history(backend, table).aadd_messages(CONVERSATION)
    pinned = await history(backend, table, window=2, pin_system=True).aget_messages()
    assert pinned == [CONVERSATION[0], *CONVERSATION[-2:]]
    # When the window reaches the start, the system message is there once.
    everything = await history(backend, table, window=50, pin_system=True).aget_messages()
    assert everything == CONVERSATION
    exact = await history(backend, table, window=len(CONVERSATION), pin_system=True).aget_messages()
    assert exact == CONVERSATION
    # The window after trimming: [system] + the suffix that starts at a human turn.
    trimmed = await history(backend, table, window=8, pin_system=True).aget_messages()
    assert trimmed == [CONVERSATION[0], *CONVERSATION[5:]]
    # No system message first: nothing is pinned, even if a later one exists.
    other = backend.new_table()
    chat = [HumanMessage("h"), SystemMessage("late system"), AIMessage("a"), HumanMessage("h2")]
    await history(backend, other).aadd_messages(chat)
    assert await history(backend, other, window=2, pin_system=True).aget_messages() == chat[-2:]
    # Without pin_system the system message scrolls away.
    assert await history(backend, table, window=2).aget_messages() == CONVERSATION[-2:]


async def test_window_is_the_same_when_read_twice(backend: Target, table: str) -> None:
    await history(backend, table).aadd_messages(CONVERSATION)
    for n in (1, 3, 5, 8):
        h = history(backend, table, window=n, pin_system=True)
        first = await h.aget_messages()
        assert await h.aget_messages() == first
        assert h.messages == first  # the sync door reads the same


def test_window_rejects_bad_sizes(backend: Target, table: str) -> None:
    for bad in (0, -1, True, 1.5, "3"):
        with pytest.raises(InvalidInputError):
            history(backend, table, window=bad)


def _runnable(
    backend: Target, table: str, session_id: str, replies: list[str], key: bool
) -> tuple[Any, list[int], AsyncTiDBChatMessageHistory]:
    """A windowed history behind RunnableWithMessageHistory; records the prompt sizes."""
    h = history(backend, table, session_id, window=4, pin_system=True)
    seen: list[int] = []

    def record(value: Any) -> Any:
        messages = value.to_messages() if hasattr(value, "to_messages") else value
        seen.append(len(messages))
        return value

    model = GenericFakeChatModel(messages=iter(replies))
    if key:
        from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

        prompt = ChatPromptTemplate.from_messages(
            [MessagesPlaceholder("history"), ("human", "{question}")]
        )
        chain: Any = prompt | RunnableLambda(record) | model
    else:
        chain = RunnableLambda(record) | model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RunnableWithMessageHistory.*")
        runnable = RunnableWithMessageHistory(
            chain,
            lambda _sid: h,
            input_messages_key="question" if key else None,
            history_messages_key="history" if key else None,
        )
    return runnable, seen, h


@pytest.mark.parametrize("key", [False, True], ids=["messages-input", "prompt-keys"])
def test_windowed_history_through_runnable_with_message_history(
    backend: Target, table: str, key: bool
) -> None:
    """RunnableWithMessageHistory slices its input by the history's length at save time: a
    window that moved between load and save would store old messages again, or drop new ones.
    """
    session = "rwmh"
    turns = 16
    replies = [f"reply {i} ✓" for i in range(turns)]
    seed = history(backend, table, session)
    seed.add_messages([SystemMessage("be brief"), HumanMessage("hello"), AIMessage("hi")])
    runnable, seen, _h = _runnable(backend, table, session, replies, key)
    config: Any = {"configurable": {"session_id": session}}
    expected = [SystemMessage("be brief"), HumanMessage("hello"), AIMessage("hi")]
    for turn in range(turns):
        question = f"question {turn}"
        before = backend.count(table, session)
        value: Any = {"question": question} if key else [HumanMessage(question)]
        if turn % 2 == 0:
            reply = runnable.invoke(value, config=config)
        else:
            reply = asyncio.run(runnable.ainvoke(value, config=config))
        assert reply.content == replies[turn]
        # Exactly the new messages were stored: the question and the reply, nothing else.
        assert backend.count(table, session) == before + 2, f"turn {turn}"
        expected += [HumanMessage(question), AIMessage(replies[turn])]
        stored = history(backend, table, session).messages
        assert [(m.type, m.content) for m in stored] == [(m.type, m.content) for m in expected]
        # The model saw the pinned system message, a window of 4 and the question.
        assert seen[-1] == min(1 + 4, len(expected) - 2) + 1, f"turn {turn}: {seen}"
    seqs = [row[0] for row in backend.rows(table, session)]
    assert seqs == list(range(1, 3 + 2 * turns + 1))


# --- records, pages, metadata ----------------------------------------------------------------


async def test_records_page_backwards(backend: Target, table: str) -> None:
    h = history(backend, table)
    messages = [HumanMessage(f"m{i}") for i in range(1, 26)]
    started = datetime.now(UTC)
    await h.aadd_messages(messages[:10])
    await h.aadd_messages(messages[10:], metadata={"source": "web"})
    page = await h.aget_records(limit=10)
    assert [r.seq for r in page] == list(range(16, 26))
    assert [r.message for r in page] == messages[15:]
    assert all(r.metadata == {"source": "web"} for r in page)
    older = await h.aget_records(before=page[0].seq, limit=10)
    assert [r.seq for r in older] == list(range(6, 16))
    assert [r.metadata for r in older] == [None] * 5 + [{"source": "web"}] * 5
    oldest = await h.aget_records(before=older[0].seq, limit=10)
    assert [r.seq for r in oldest] == [1, 2, 3, 4, 5]
    assert await h.aget_records(before=oldest[0].seq) == []
    for r in page + older + oldest:
        assert r.created_at.tzinfo is UTC
        assert started - timedelta(seconds=5) <= r.created_at <= datetime.now(UTC)
    assert h.get_records(limit=3) == page[-3:]
    with pytest.raises(InvalidInputError):
        await h.aget_records(limit=0)
    with pytest.raises(InvalidInputError):
        await h.aget_records(before="3")  # type: ignore[arg-type]


async def test_metadata_never_mutates_the_message(backend: Target, table: str) -> None:
    h = history(backend, table)
    ai = AIMessage("answer", additional_kwargs={"k": 1}, response_metadata={"model": "m"})
    human = HumanMessage("question")
    before = (ai.model_dump(), human.model_dump())
    await h.aadd_messages(
        [human, ai], metadata=[None, {"tokens": 12, "cost": 0.5, "tags": ["a", "ü"]}]
    )
    assert (ai.model_dump(), human.model_dump()) == before
    assert await h.aget_messages() == [human, ai]
    records = await h.aget_records()
    assert [r.metadata for r in records] == [None, {"tokens": 12, "cost": 0.5, "tags": ["a", "ü"]}]
    assert records[1].message == ai
    assert "tokens" not in records[1].message.additional_kwargs
    assert "tokens" not in records[1].message.response_metadata
    # Bad metadata rejects the whole batch before any I/O.
    for bad in (
        [{"a": 1}],
        [{"a": 1}, "x"],
        "text",
        [{"a": {1, 2}}, None],
        [{"n": float("nan")}, None],
    ):
        with pytest.raises(InvalidInputError):
            await h.aadd_messages([HumanMessage("x"), HumanMessage("y")], metadata=bad)  # type: ignore[arg-type]
    assert backend.count(table) == 2


# --- sessions --------------------------------------------------------------------------------


async def test_sessions_list_info_title_metadata_delete(backend: Target, table: str) -> None:
    sessions = SessionStore(backend.url, table_name=table)
    for sid in ("s1", "s2", "s3"):
        await history(backend, table, sid).aadd_messages([HumanMessage(sid), AIMessage("ok")])
        await asyncio.sleep(0.002)
    page = await sessions.alist_sessions()
    assert [s.session_id for s in page.sessions] == ["s3", "s2", "s1"]
    assert page.next_cursor is None
    await history(backend, table, "s1").aadd_messages([HumanMessage("again")])
    page = await sessions.alist_sessions()
    assert [s.session_id for s in page.sessions] == ["s1", "s3", "s2"]
    assert [s.message_count for s in page.sessions] == [3, 2, 2]

    await sessions.aset_session_info("s1", user_id="u1", title="Trip", metadata={"lang": "fr"})
    await sessions.aset_session_info("s2", user_id="u1")
    await sessions.aset_session_info("s3", user_id="u2", title="Other")
    mine = await sessions.alist_sessions(user_id="u1")
    assert [s.session_id for s in mine.sessions] == ["s1", "s2"]
    assert (mine.sessions[0].title, mine.sessions[0].metadata) == ("Trip", {"lang": "fr"})
    assert [s.session_id for s in (await sessions.alist_sessions(user_id="nobody")).sessions] == []

    info = await sessions.aget_session_info("s1")
    assert info.message_count == 3 and info.user_id == "u1" and info.title == "Trip"
    assert info.first_activity is not None and info.last_activity is not None
    assert info.first_activity <= info.last_activity and info.last_activity.tzinfo is UTC
    # Fields left UNSET keep their value; None clears one.
    await sessions.aset_session_info("s1", title="Renamed")
    info = await sessions.aget_session_info("s1")
    assert (info.title, info.metadata, info.user_id) == ("Renamed", {"lang": "fr"}, "u1")
    await sessions.aset_session_info("s1", metadata=None, user_id=UNSET)
    info = await sessions.aget_session_info("s1")
    assert (info.title, info.metadata, info.user_id) == ("Renamed", None, "u1")
    # Through the history object too.
    h = history(backend, table, "s2")
    await h.aset_session_info(title="From history")
    assert (await h.aget_session_info()).title == "From history"
    assert h.get_session_info().message_count == 2
    # An unknown session: zero messages, no info.
    empty = await sessions.aget_session_info("nope")
    assert (empty.message_count, empty.first_activity, empty.title) == (0, None, None)

    assert await sessions.adelete_session("s1") == 3
    assert backend.count(table, "s1") == 0
    info = await sessions.aget_session_info("s1")
    assert (info.message_count, info.title, info.user_id) == (0, None, None)
    assert [s.session_id for s in (await sessions.alist_sessions()).sessions] == ["s3", "s2"]
    assert [s.session_id for s in (await sessions.alist_sessions(user_id="u1")).sessions] == ["s2"]
    with pytest.raises(InvalidInputError):
        await sessions.aset_session_info("s2")
    with pytest.raises(InvalidInputError):
        await sessions.alist_sessions(cursor="not a cursor")
    # A title the sessions table cannot hold is refused on every backend, before any I/O.
    await sessions.aset_session_info("s2", title="é" * 1024)
    with pytest.raises(InvalidInputError, match="1024"):
        await sessions.aset_session_info("s2", title="é" * 1025)
    assert (await sessions.aget_session_info("s2")).title == "é" * 1024


async def test_sessions_paginate_by_cursor_even_on_equal_times(backend: Target, table: str) -> None:
    sessions = SessionStore(backend.url, table_name=table)
    names = [f"p{i:02d}" for i in range(11)]
    for sid in names:
        await history(backend, table, sid).aadd_messages([HumanMessage(sid)])
    for same_time in (False, True):
        if same_time:  # ties on last activity: the session id breaks them
            when = datetime(2030, 1, 1, tzinfo=UTC)
            for sid in names:
                set_created_at(backend, table, sid, [1], when)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await sessions.alist_sessions(limit=4, cursor=cursor)
            pages += 1
            seen += [s.session_id for s in page.sessions]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(seen) == names and len(seen) == len(set(seen))
        assert pages == 3
        if not same_time:
            assert seen == names[::-1]


async def test_deleting_a_session_never_touches_another_under_concurrent_appends(
    backend: Target, table: str
) -> None:
    sessions = SessionStore(backend.url, table_name=table)
    await history(backend, table, "A").aadd_messages([HumanMessage("a0")])
    await history(backend, table, "B").aadd_messages([HumanMessage("b0")])
    per_writer = 15
    writers = 4

    async def append(sid: str, writer: int) -> None:
        for i in range(per_writer):
            # A fresh object each time: no seq hint, the server numbers the batch.
            await history(backend, table, sid).aadd_messages(
                [HumanMessage(f"{sid}{writer}-{i}"), AIMessage(f"{sid}{writer}-{i} reply")]
            )

    async def delete_a() -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)
            await sessions.adelete_session("A")

    await asyncio.gather(
        *(append("A", w) for w in range(writers)),
        *(append("B", w) for w in range(writers)),
        delete_a(),
    )
    b = backend.rows(table, "B")
    assert len(b) == 1 + 2 * per_writer * writers
    assert [row[0] for row in b] == list(range(1, len(b) + 1))  # dense
    contents = [m.content for m in await history(backend, table, "B").aget_messages()]
    assert contents[0] == "b0"
    for w in range(writers):
        for i in range(per_writer):
            q = contents.index(f"B{w}-{i}")
            assert contents[q + 1] == f"B{w}-{i} reply"  # each batch landed whole, in order
    # A holds only what was appended after the last delete, as whole batches.
    a = [m.content for m in await history(backend, table, "A").aget_messages()]
    assert len(a) % 2 == 0 and all(str(r).endswith("reply") for r in a[1::2])


# --- round trips ---------------------------------------------------------------------------


async def test_round_trips_match_the_docstrings(mysql: Target, round_trips: RoundTrips) -> None:
    table = mysql.new_table()
    s = MessageStore(
        get_database(MYSQL_URL, engine_args=ONE_CONNECTION), table, ttl=timedelta(days=1)
    )
    sessions = SessionStore(MYSQL_URL, table_name=table, engine_args=ONE_CONNECTION)
    h = history(mysql, table, "rt", window=3, pin_system=True, engine_args=ONE_CONNECTION)
    await h.aadd_messages([SystemMessage("sys"), HumanMessage("h"), AIMessage("a")])  # setup
    await s.aappend("other", [HumanMessage("x")])

    counts: dict[str, int] = {}
    counts["aadd_messages"] = await round_trips.count(
        lambda: h.aadd_messages([HumanMessage("q"), AIMessage("r")])
    )
    counts["aappend without a seq hint"] = await round_trips.count(
        lambda: s.aappend("rt", [HumanMessage("q")])
    )
    counts["aappend with metadata"] = await round_trips.count(
        lambda: s.aappend("rt", [HumanMessage("q")], metadata={"k": 1})
    )
    counts["aget_messages (window, pinned, ttl)"] = await round_trips.count(h.aget_messages)
    counts["aget_records"] = await round_trips.count(lambda: h.aget_records(before=5, limit=2))
    counts["asession_info"] = await round_trips.count(lambda: sessions.aget_session_info("rt"))
    counts["aset_session_info"] = await round_trips.count(
        lambda: sessions.aset_session_info("rt", title="t", user_id="u")
    )
    # Session info set: appends stay one round trip.
    counts["aadd_messages with session info"] = await round_trips.count(
        lambda: h.aadd_messages([HumanMessage("q")])
    )
    counts["alist_sessions page"] = await round_trips.count(
        lambda: sessions.alist_sessions(user_id="u", limit=5)
    )
    counts["adelete_session"] = await round_trips.count(lambda: sessions.adelete_session("other"))
    counts["aclear"] = await round_trips.count(lambda: s.aclear("nobody"))
    counts["apurge_expired (nothing expired)"] = await round_trips.count(s.apurge_expired)

    async def expire_three() -> None:
        await s.aappend("old", [HumanMessage("1"), HumanMessage("2"), HumanMessage("3")])
        set_created_at(mysql, table, "old", [1, 2, 3], datetime.now(UTC) - timedelta(days=3))

    counts["apurge_expired batch=1, 3 rows"] = await round_trips.count(
        lambda: s.apurge_expired(batch=1), setup=expire_three
    )
    assert counts == {
        "aadd_messages": 1,
        "aappend without a seq hint": 1,
        "aappend with metadata": 1,
        "aget_messages (window, pinned, ttl)": 1,
        "aget_records": 1,
        "asession_info": 1,
        "aset_session_info": 1,
        "aadd_messages with session info": 1,
        "alist_sessions page": 1,
        "adelete_session": 2,
        "aclear": 1,
        "apurge_expired (nothing expired)": 1,
        "apurge_expired batch=1, 3 rows": 4,  # one per batch, and the one that finds none
    }


async def test_one_statement_per_page(mysql: Target, round_trips: RoundTrips) -> None:
    table = mysql.new_table()
    h = history(mysql, table, "pages", engine_args=ONE_CONNECTION)
    await h.aadd_messages([HumanMessage(f"m{i}") for i in range(30)])
    pages: list[int] = []
    cursor: int | None = None
    costs: list[int] = []
    records: list[Any] = []
    while True:

        async def page(before: int | None = cursor) -> None:
            records[:] = await h.aget_records(before=before, limit=7)

        costs.append(await round_trips.count(page))
        if not records:
            break
        pages.append(len(records))
        cursor = records[0].seq
    assert pages == [7, 7, 7, 7, 2]
    assert costs == [1] * 6


# --- retention -------------------------------------------------------------------------------


def test_ttl_ddl_text() -> None:
    expected = " /*T![ttl] TTL=`created_at` + INTERVAL 30 DAY */ /*T![ttl] TTL_ENABLE='ON' */"
    assert ttl_clause(timedelta(days=30)) == expected
    mysql_ddl = create_table_statements("mysql", "t", ttl=timedelta(days=30))[0]
    assert mysql_ddl.endswith("COLLATE=utf8mb4_bin" + expected)
    assert ttl_clause(timedelta(hours=36)).startswith(
        " /*T![ttl] TTL=`created_at` + INTERVAL 36 HOUR */"
    )
    assert "INTERVAL 2 MINUTE" in ttl_clause(timedelta(minutes=2))
    assert "INTERVAL 90 SECOND" in ttl_clause(timedelta(seconds=90))
    assert ttl_clause(None) == ""
    assert all(
        "TTL" not in s for s in create_table_statements("sqlite", "t", ttl=timedelta(days=1))
    )
    assert "TTL" not in create_table_statements("mysql", "t")[0]
    for bad in (timedelta(0), timedelta(seconds=-5), timedelta(seconds=1.5), 30, "30d"):
        with pytest.raises(InvalidInputError):
            check_ttl(bad)


async def test_mariadb_accepts_the_ttl_table(mysql: Target) -> None:
    table = mysql.new_table()
    h = AsyncTiDBChatMessageHistory("s", mysql.url, table_name=table, ttl=timedelta(days=30))
    await h.aadd_messages([HumanMessage("hi")])
    ddl = mysql.query(f"SHOW CREATE TABLE `{table}`")[0][1]
    assert "TTL" not in ddl  # MariaDB reads the executable comment as a comment


async def test_ttl_read_filter_and_purge(backend: Target, table: str) -> None:
    ttl = timedelta(days=1)
    h = history(backend, table, "s", ttl=ttl)
    await h.aadd_messages([HumanMessage("old 1"), AIMessage("old 2"), HumanMessage("new 3")])
    await history(backend, table, "gone", ttl=ttl).aadd_messages([HumanMessage("gone")])
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    set_created_at(backend, table, "s", [1, 2], two_days_ago)
    set_created_at(backend, table, "gone", [1], two_days_ago)
    # Expired rows are invisible at once, before any purge.
    assert await h.aget_messages() == [HumanMessage("new 3")]
    assert [r.seq for r in await h.aget_records()] == [3]
    assert await history(backend, table, "s", ttl=ttl, window=5).aget_messages() == [
        HumanMessage("new 3")
    ]
    sessions = SessionStore(backend.url, table_name=table, ttl=ttl)
    assert (await sessions.aget_session_info("s")).message_count == 1
    assert [s.session_id for s in (await sessions.alist_sessions()).sessions] == ["s"]
    # Without a ttl they are still there.
    assert len(await history(backend, table, "s").aget_messages()) == 3
    # Appends after expired rows keep numbering after them.
    await h.aadd_messages([AIMessage("new 4")])
    assert [r.seq for r in await h.aget_records()] == [3, 4]
    # The purge deletes exactly the expired rows, in bounded batches.
    assert await sessions.apurge_expired() == 3
    assert backend.count(table) == 2
    assert await sessions.apurge_expired() == 0
    # An explicit bound works on a store without a ttl; without either it is refused.
    plain = store(backend.url, table)
    set_created_at(backend, table, "s", [3], two_days_ago)
    assert (
        await plain.apurge_expired(older_than=datetime.now(UTC) - timedelta(hours=1), batch=1) == 1
    )
    with pytest.raises(InvalidInputError):
        await plain.apurge_expired()
    assert [m.content for m in await history(backend, table, "s").aget_messages()] == ["new 4"]


async def test_short_ttl_expires_for_real(backend: Target, table: str) -> None:
    h = history(backend, table, "s", ttl=timedelta(seconds=1))
    await h.aadd_messages([HumanMessage("soon gone")])
    assert len(await h.aget_messages()) == 1
    await asyncio.sleep(1.2)
    assert await h.aget_messages() == []
    assert await h.store.apurge_expired() == 1
    assert backend.count(table) == 0


def test_sync_twins_of_the_session_store(backend: Target, table: str) -> None:
    TiDBChatMessageHistory("s", backend.url, table_name=table).add_messages([HumanMessage("x")])
    sessions = SessionStore(backend.url, table_name=table)
    sessions.set_session_info("s", title="sync")
    assert sessions.get_session_info("s").title == "sync"
    assert [s.title for s in sessions.list_sessions().sessions] == ["sync"]
    assert sessions.purge_expired(older_than=datetime.now(UTC) - timedelta(days=1)) == 0
    assert sessions.delete_session("s") == 1


# --- bulk: scan, restore, status (what export, import and doctor stand on) -------------------


async def test_scan_pages_every_session_in_key_order(backend: Target, table: str) -> None:
    s = store(backend.url, table)
    for sid, n in (("b", 3), ("a", 2), ("c", 1)):
        await s.aappend(sid, [HumanMessage(f"{sid}{i}") for i in range(n)], metadata={"s": sid})
    seen: list[tuple[str, int]] = []
    after = None
    pages = 0
    while page := await s.ascan(after=after, limit=2):
        pages += 1
        seen += [(sid, r.seq) for sid, r in page]
        assert all(r.metadata == {"s": sid} for sid, r in page)
        after = (page[-1][0], page[-1][1].seq)
    assert seen == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("c", 1)]
    assert pages == 3


async def test_restore_is_first_wins_and_idempotent(backend: Target, table: str) -> None:
    s = store(backend.url, table)
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    records = [
        ("x", 1, when, HumanMessage("one"), None),
        ("x", 2, when, AIMessage("two"), {"k": "v"}),
        ("y", 1, when, HumanMessage("other"), None),
    ]
    assert await s.arestore(records) == 3
    before = backend.query(
        f"SELECT session_id, seq, msg_key, message, created_at FROM {backend.q(table)} "
        "ORDER BY session_id, seq"
    )
    assert await s.arestore(records) == 0
    assert await s.arestore([*records, ("x", 3, when, HumanMessage("three"), None)]) == 1
    # A different message at a taken (session, seq): the stored one wins.
    assert await s.arestore([("x", 1, when, HumanMessage("impostor"), None)]) == 0
    after = backend.query(
        f"SELECT session_id, seq, msg_key, message, created_at FROM {backend.q(table)} "
        "ORDER BY session_id, seq"
    )
    assert after[:2] == before[:2] and after[3] == before[2]
    page = await s.arecords("x")
    assert [r.message.content for r in page] == ["one", "two", "three"]
    assert page[0].created_at == when and page[1].metadata == {"k": "v"}
    # Appends continue after restored seqs.
    await s.aappend("x", [HumanMessage("four")])
    assert [r.seq for r in await s.arecords("x")] == [1, 2, 3, 4]
    with pytest.raises(InvalidInputError):
        await s.arestore([("x", 0, when, HumanMessage("bad seq"), None)])
    with pytest.raises(InvalidInputError):
        await s.arestore([("x ", 9, when, HumanMessage("bad id"), None)])
    assert await s.arestore([]) == 0


async def test_status_changes_nothing(backend: Target, table: str) -> None:
    s = store(backend.url, table)
    missing = await s.astatus(pings=3)
    assert missing.layout == "missing" and not backend.table_exists(table)
    assert missing.tls_cipher is None and not missing.tidb and missing.latency_ms > 0
    assert missing.backend == backend.name
    await s.acreate_tables()
    status = await s.astatus()
    assert status.layout == "current" and status.schema_version == 1
    if backend.name == "sqlite":
        assert status.server_version[0].isdigit()
    with pytest.raises(InvalidInputError):
        await s.astatus(pings=0)


async def test_bulk_round_trips(mysql: Target, round_trips: RoundTrips) -> None:
    table = mysql.new_table()
    s = MessageStore(get_database(MYSQL_URL, engine_args=ONE_CONNECTION), table)
    await s.aappend("a", [HumanMessage("x"), HumanMessage("y")])
    when = datetime.now(UTC)
    records = [("r", i, when, HumanMessage(str(i)), None) for i in range(1, 4)]
    assert await round_trips.count(lambda: s.ascan(after=("a", 1), limit=10)) == 1
    assert await round_trips.count(lambda: s.arestore(records)) == 1
    # astatus: version, two column lookups, versions, and the pings (the cipher is read from the
    # client's socket, not asked of the server).
    assert await round_trips.count(lambda: s.astatus(pings=3)) == 4 + 3
