"""Shared fixtures for the tidb-memory core suite.

* The MySQL-family server comes from ``TIDB_MEMORY_TEST_URL`` (default: the local MariaDB). It
  is never optional: :func:`mysql_server` fails every test that needs it, loudly, when the server
  cannot be reached. Nothing here skips.
* ``backend`` parametrises the behaviour suite over ``mysql`` (that server) and ``sqlite`` (a
  file under ``tmp_path``, through aiosqlite).
* ``table`` is a uuid-suffixed table name, dropped at teardown.
* Raw access (``Target.query``, ``Target.count``) goes around the library: pymysql for MySQL,
  the stdlib ``sqlite3`` for SQLite, so the tests see what was really stored.
* Every test ends with ``tidb_memory.close_all()``, so that no pool outlives the test that
  opened it. Pools on pytest-asyncio's per-test loops are closed when those loops shut down.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from blockbuster import blockbuster_ctx
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from sqlalchemy.engine import make_url

import tidb_memory

MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL") or "mysql+aiomysql://root@127.0.0.1:3306/test"
#: A port nothing listens on: connecting to it is refused at once.
CLOSED_PORT_URL = "mysql+aiomysql://root@127.0.0.1:1/test"
SENTINEL_PASSWORD = "S3cr3t-Sentinel-pw"


def mysql_params(url: str = MYSQL_URL) -> dict[str, Any]:
    """pymysql.connect() arguments for a mysql URL."""
    parsed = make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.username or "root",
        "password": parsed.password or "",
        "database": parsed.database,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 5,
    }


async def aiomysql_connect(url: str = MYSQL_URL) -> Any:
    """A raw aiomysql connection (autocommit) beside the library, e.g. to read server status."""
    import aiomysql

    params = mysql_params(url)
    params["db"] = params.pop("database")
    return await aiomysql.connect(**params)


def mysql_url_for(user: str, password: str = "") -> str:
    """The test server's URL with another user (and password)."""
    parsed = make_url(MYSQL_URL).set(username=user, password=password or None)
    return parsed.render_as_string(hide_password=False)


_raw_lock = threading.Lock()
_raw: list[pymysql.connections.Connection] = []


def _open_raw(**overrides: Any) -> pymysql.connections.Connection:
    """A raw pymysql connection; waits out other engineers' "Too many connections" (1040)."""
    params = {**mysql_params(), **overrides}
    deadline = time.monotonic() + 30
    while True:
        try:
            return pymysql.connect(**params)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1040 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def mysql_connection(**overrides: Any) -> Iterator[pymysql.connections.Connection]:
    """A fresh raw pymysql connection (autocommit), closed on exit; waits out 1040."""
    conn = _open_raw(**overrides)
    try:
        yield conn
    finally:
        conn.close()


def mysql_query(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a cached raw connection (opening one costs ~0.1 s on a busy box)."""
    with _raw_lock:
        for attempt in (1, 2):
            if not _raw:
                _raw.append(_open_raw())
            try:
                with _raw[0].cursor() as cur:
                    cur.execute(sql, tuple(params) or None)
                    return list(cur.fetchall())
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                code = exc.args[0] if exc.args else None
                if attempt == 2 or code not in (0, 2006, 2013):
                    raise
                with contextlib.suppress(Exception):
                    _raw.pop().close()
        raise AssertionError("unreachable")


@pytest.fixture(scope="session", autouse=True)
def _close_raw_connection() -> Iterator[None]:
    yield
    with _raw_lock:
        while _raw:
            _raw.pop().close()


@pytest.fixture(scope="session")
def mysql_server() -> str:
    """The test server's URL, after checking that it answers. Fails (never skips) if it does not."""
    try:
        rows = mysql_query("SELECT VERSION()")
    except Exception as exc:
        pytest.fail(
            f"the MySQL-compatible test server at {make_url(MYSQL_URL)!r} is unreachable "
            f"({type(exc).__name__}: {exc}). Start it, or point TIDB_MEMORY_TEST_URL at one; "
            "the database suite is never skipped.",
            pytrace=False,
        )
    assert rows and rows[0][0]
    return MYSQL_URL


@dataclass
class Target:
    """One backend under test: its URL, and raw access around the library."""

    name: str
    url: str
    sqlite_path: Path | None = None
    tables: list[str] = field(default_factory=list)

    @property
    def ph(self) -> str:
        """The raw driver's placeholder."""
        return "%s" if self.name == "mysql" else "?"

    def q(self, table: str) -> str:
        return f"`{table}`" if self.name == "mysql" else f'"{table}"'

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.name == "mysql":
            return mysql_query(sql, params)
        assert self.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
            rows = conn.execute(sql, tuple(params)).fetchall()
            conn.commit()
            return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.query(sql, params)

    def table_exists(self, table: str) -> bool:
        if self.name == "mysql":
            sql = (
                "SELECT COUNT(*) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
            )
        else:
            sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self.query(sql, (table,))[0][0])

    def count(self, table: str, session_id: str | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM {self.q(table)}"
        if session_id is None:
            return int(self.query(sql)[0][0])
        return int(self.query(sql + f" WHERE session_id = {self.ph}", (session_id,))[0][0])

    def rows(self, table: str, session_id: str) -> list[tuple[Any, ...]]:
        """(seq, message, created_at, msg_key) of a session, by seq."""
        return self.query(
            f"SELECT seq, message, created_at, msg_key FROM {self.q(table)} "
            f"WHERE session_id = {self.ph} ORDER BY seq",
            (session_id,),
        )

    def drop(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.q(table)}")
        for bookkeeping in ("tidb_memory_migrations", "tidb_memory_sessions"):
            if self.table_exists(bookkeeping):
                self.execute(
                    f"DELETE FROM {self.q(bookkeeping)} WHERE table_name = {self.ph}", (table,)
                )

    def new_table(self, prefix: str = "tm") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.tables.append(name)
        return name


def make_target(name: str, tmp_path: Path) -> Target:
    if name == "mysql":
        return Target("mysql", MYSQL_URL)
    path = tmp_path / "tidb_memory_test.sqlite3"
    return Target("sqlite", f"sqlite+aiosqlite:///{path}", sqlite_path=path)


@pytest.fixture(params=["mysql", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The behaviour suite's backend: MariaDB (the test server) and a SQLite file."""
    if request.param == "mysql":
        request.getfixturevalue("mysql_server")
    target = make_target(request.param, tmp_path)
    yield target
    for table in target.tables:
        target.drop(table)


@pytest.fixture
def mysql(mysql_server: str, tmp_path: Path) -> Iterator[Target]:
    """The MySQL-family server only (round trips, collations, connection counts)."""
    target = make_target("mysql", tmp_path)
    yield target
    for table in target.tables:
        target.drop(table)


@pytest.fixture
def table(backend: Target) -> str:
    """A fresh uuid-suffixed table name on ``backend``, dropped at teardown."""
    return backend.new_table()


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    yield
    tidb_memory.close_all()


@pytest.fixture(autouse=True)
def _no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    """Async tests run under blockbuster, as langchain-core's do: a blocking call (file, socket,
    sqlite3, sleep, lock wait) made on a running event loop with tidb_memory on the stack fails
    the test. Only the sync doors may block, and only their caller's thread."""
    if not inspect.iscoroutinefunction(request.function):
        yield
        return
    with blockbuster_ctx("tidb_memory") as bb:
        for function in bb.functions.values():
            # A sync door called on a running loop (a notebook cell) blocks that thread by
            # design while the bridge runs the call; create_engine() is a sync factory the
            # application calls at startup, as SQLAlchemy's create_async_engine it wraps.
            function.can_block_in("tidb_memory/_bridge.py", {"call", "call_on"})
            function.can_block_in("tidb_memory/engine.py", "create_engine")
            # pycryptodome loads its C library on first use (LangGraph's EncryptedSerializer).
            function.can_block_in("Crypto/Util/_raw_api.py", "load_pycryptodome_raw_lib")
        yield


@pytest.fixture
def mysql_user(mysql_server: str) -> Iterator[str]:
    """A throwaway MySQL user (with rights on the test database) whose connections the tests
    can count exactly, whatever load other people put on the shared server."""
    name = f"tm_{uuid.uuid4().hex[:12]}"
    database = mysql_params()["database"]
    mysql_query(f"CREATE USER '{name}'@'%'")
    mysql_query(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{name}'@'%'")
    yield name
    rows = mysql_query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (name,))
    for (thread_id,) in rows:
        with contextlib.suppress(pymysql.err.MySQLError):
            mysql_query(f"KILL {int(thread_id)}")
    mysql_query(f"DROP USER '{name}'@'%'")


def connections_of(user: str) -> int:
    """How many connections the server has open for ``user`` right now."""
    rows = mysql_query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)
    )
    return int(rows[0][0])


def threads_connected() -> int:
    rows = mysql_query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
    return int(rows[0][1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# --- messages ------------------------------------------------------------------------------

#: 4-byte UTF-8 (emoji, CJK Extension B) next to BMP CJK and a right-to-left script.
UNICODE_TEXT = "hi 😀🧪 你好 𠜎𠜱𡃁 مرحبا ‮ \u0000 \t\n end"


def sample_messages() -> list[BaseMessage]:
    """One of every message type tidb-memory stores, with every optional field filled in."""
    return [
        SystemMessage("You are terse. 😀", id="sys-1", additional_kwargs={"lang": "en"}),
        HumanMessage(UNICODE_TEXT, name="alice", id="human-1", additional_kwargs={"n": [1, 2.5]}),
        HumanMessage(
            content=[
                {"type": "text", "text": "What is in this picture? 图片"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image", "source_type": "url", "url": "https://example.com/a.png"},
            ],
            id="human-multimodal",
        ),
        AIMessage(
            content="Let me compute that.",
            tool_calls=[
                tool_call(name="calc", args={"expr": "6*7", "nested": {"a": [1]}}, id="c1")
            ],
            invalid_tool_calls=[
                invalid_tool_call(name="calc", args='{"expr": ', id="c2", error="bad json")
            ],
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 7,
                "total_tokens": 19,
                "input_token_details": {"cache_read": 3},
                "output_token_details": {"reasoning": 2},
            },
            response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls", "x": None},
            id="ai-1",
            name="assistant",
            additional_kwargs={"refusal": None, "deep": {"list": [True, False, 0, -1, 1.5e300]}},
        ),
        ToolMessage(
            "42", tool_call_id="c1", name="calc", artifact={"raw": [6, 7]}, status="success"
        ),
        ToolMessage("boom", tool_call_id="c2", status="error", id="tool-err"),
        FunctionMessage(content='{"result": 42}', name="legacy_fn", id="fn-1"),
        ChatMessage(content="As a critic: fine.", role="critic", id="chat-1"),
        RemoveMessage(id="ai-0"),
        AIMessageChunk(
            content="partial ",
            tool_call_chunks=[tool_call_chunk(name="calc", args='{"expr": "1', id="c3", index=0)],
            id="run-chunk",
        ),
        HumanMessageChunk(content="human chunk"),
        SystemMessageChunk(content="system chunk"),
        ToolMessageChunk(content="tool chunk", tool_call_id="c3"),
        FunctionMessageChunk(content="fn chunk", name="legacy_fn"),
        ChatMessageChunk(content="chat chunk", role="critic"),
        AIMessage(content=[{"type": "text", "text": "block content"}], id="ai-blocks"),
    ]


def big_message(size: int = 1024 * 1024) -> HumanMessage:
    """A message of about ``size`` bytes of content, mixing 1- to 4-byte characters."""
    unit = "abc€😀你"  # 3 + 3 + 4 + 3 = 13 bytes
    return HumanMessage(unit * (size // 13 + 1), id="big")
