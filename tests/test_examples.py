"""Every example, and every runnable code block of the README, run for real.

``examples/quickstart.py``, ``examples/sync_script.py`` and the README's ``python`` blocks run as
subprocesses, once on a SQLite file (the default when ``TIDB_DATABASE_URL`` is unset) and once on
MariaDB/MySQL (``$TIDB_MEMORY_TEST_URL``, else root@127.0.0.1:3306/test), in a scratch database
created for this module. ``examples/fastapi_app.py`` is imported by path and driven through
httpx's ASGI transport, with its lifespan running.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from conftest import mysql_query
from sqlalchemy.engine import make_url

import tidb_memory
from tidb_memory import AsyncTiDBChatMessageHistory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL") or "mysql+aiomysql://root@127.0.0.1:3306/test"
SQLITE_FILE = "tidb_memory.sqlite3"  # tidb_memory.DEFAULT_SQLITE_URL, relative to the cwd
NOISE = ("Traceback", "Exception ignored", "Event loop is closed", "ResourceWarning", "Unclosed")


def _execute(url: str, *statements: str) -> None:
    assert url == MYSQL_URL, "only the test server is set up and torn down here"
    for statement in statements:
        mysql_query(statement)


@pytest.fixture(scope="module")
def scratch_mysql_url() -> Iterator[str]:
    """A database of its own on the MySQL server, dropped afterwards.

    The examples use fixed session ids and the default table; a scratch database keeps them
    away from other tests running against the same server.
    """
    name = f"tm_examples_{uuid.uuid4().hex[:12]}"
    _execute(MYSQL_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _execute(MYSQL_URL, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The URL the examples will pick up: the SQLite default (cwd = tmp_path), or MySQL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if request.param == "sqlite":
        monkeypatch.delenv("TIDB_DATABASE_URL", raising=False)
        return f"sqlite+aiosqlite:///{tmp_path / SQLITE_FILE}"
    url: str = request.getfixturevalue("scratch_mysql_url")
    monkeypatch.setenv("TIDB_DATABASE_URL", url)
    return url


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python args`` in ``cwd`` with this environment (TIDB_DATABASE_URL included)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "default::ResourceWarning"  # a leaked connection would show
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


#: langchain-core >= 1.3.3 warns once where a script builds a RunnableWithMessageHistory.
EXPECTED_WARNING = "LangChainDeprecationWarning: RunnableWithMessageHistory is deprecated"


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    for noise in NOISE:
        assert noise not in result.stderr, result.stderr
    rest = [line for line in result.stderr.splitlines() if EXPECTED_WARNING not in line]
    assert rest == [], result.stderr


def _messages(url: str, session_id: str) -> list[tuple[str, str]]:
    """The session as (type, content) pairs, read by a new history on a new event loop."""

    async def read() -> list[tuple[str, str]]:
        history = AsyncTiDBChatMessageHistory(session_id, url)
        try:
            return [(m.type, str(m.content)) for m in await history.aget_messages()]
        finally:
            await history.aclose()

    return asyncio.run(read())


# --- quickstart.py and sync_script.py --------------------------------------------------------


def test_quickstart(database_url: str, tmp_path: Path) -> None:
    result = _run([str(EXAMPLES / "quickstart.py")], tmp_path)
    _assert_clean(result)
    out = result.stdout
    backend = "sqlite" if database_url.startswith("sqlite") else "mysql"
    assert f"url='{backend}" in out
    assert "Stored 2 messages in session 'code_gen'" in out
    assert "ai:            If it ships on Feb 1st, that is 31 days from today." in out
    assert "ai:            31 days is about four and a half weeks." in out
    assert "Reloaded 6 messages:" in out
    password = make_url(database_url).password
    assert not password or str(password) not in out

    expected = [
        ("human", "How's our feature going?"),
        ("ai", "It's going well. We are working on testing now. It will be released in Feb."),
        ("human", "Today is Jan 1st. How many days until our feature is released?"),
        ("ai", "If it ships on Feb 1st, that is 31 days from today."),
        ("human", "And how many weeks is that?"),
        ("ai", "31 days is about four and a half weeks."),
    ]
    lines = [line.strip() for line in out.splitlines()]
    listed = lines[lines.index("Reloaded 6 messages:") + 1 :]
    assert listed == [f"{kind}: {content}" for kind, content in expected]
    # Persisted: a new object in another process (this one) reads the same session.
    assert _messages(database_url, "code_gen") == expected
    if database_url.startswith("sqlite"):
        assert (tmp_path / SQLITE_FILE).is_file()

    # A second run starts the session afresh and prints the same conversation.
    again = _run([str(EXAMPLES / "quickstart.py")], tmp_path)
    _assert_clean(again)
    assert again.stdout == out


def test_sync_script(database_url: str, tmp_path: Path) -> None:
    result = _run([str(EXAMPLES / "sync_script.py")], tmp_path)
    _assert_clean(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TiDBChatMessageHistory(session_id='sync-demo'")
    assert lines[1:] == [
        "1. human: Hi! Can you remember things?",
        "2.    ai: Yes: this conversation is stored in the database.",
        "3. human: What did I ask first?",
        "4.    ai: You asked whether I can remember things.",
        "a second object reads 4 messages",
        "after clear(): 0 messages",
    ]
    assert _messages(database_url, "sync-demo") == []


# --- fastapi_app.py ----------------------------------------------------------------------------


def _load_fastapi_app() -> ModuleType:
    """A fresh import of examples/fastapi_app.py, which reads TIDB_DATABASE_URL at import."""
    name = f"fastapi_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def fastapi_module(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModuleType]:
    # In this process, name the SQLite file absolutely: the relative default would resolve
    # against whatever the working directory is when a connection opens.
    monkeypatch.setenv("TIDB_DATABASE_URL", database_url)
    module = _load_fastapi_app()
    assert database_url == module.DATABASE_URL
    yield module
    await tidb_memory.aclose_all()


async def test_fastapi_app_keeps_history_across_requests(fastapi_module: ModuleType) -> None:
    app = fastapi_module.app
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        lengths = []
        for message in ("Hi, I am Alice", "I like TiDB", "What do you remember?"):
            response = await client.post(f"/chat/{alice}", json={"message": message})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["reply"]
            lengths.append(body["history_length"])
        assert lengths == [2, 4, 6]

        # Sessions are separate.
        response = await client.post(f"/chat/{bob}", json={"message": "Hi, I am Bob"})
        assert response.json()["history_length"] == 2

        response = await client.get(f"/history/{alice}")
        assert response.status_code == 200
        history = response.json()
        assert [m["type"] for m in history] == ["human", "ai"] * 3
        assert [m["content"] for m in history[::2]] == [
            "Hi, I am Alice",
            "I like TiDB",
            "What do you remember?",
        ]

        # A bad session id is the client's error, reported before any I/O.
        response = await client.post("/chat/trailing%20", json={"message": "x"})
        assert response.status_code == 422
        assert "session_id" in response.json()["detail"]

    # The lifespan closed the pools on shutdown; a restarted app reads the same history.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        response = await client.get(f"/history/{alice}")
        assert response.json() == history
        response = await client.post(f"/chat/{alice}", json={"message": "Still there?"})
        assert response.json()["history_length"] == 8

        response = await client.delete(f"/history/{alice}")
        assert response.status_code == 204
        assert (await client.get(f"/history/{alice}")).json() == []
        assert len((await client.get(f"/history/{bob}")).json()) == 2


# --- the README ------------------------------------------------------------------------------

SKIP_MARK = "<!-- not run -->"


def _readme_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block not preceded by SKIP_MARK."""
    text_ = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text_, flags=re.S):
        before = text_[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        blocks.append((text_.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


def test_readme_has_runnable_blocks() -> None:
    assert len(_readme_blocks()) >= 3


@pytest.mark.parametrize("line, code", _readme_blocks(), ids=lambda v: str(v)[:12])
def test_readme_block_runs(database_url: str, tmp_path: Path, line: int, code: str) -> None:
    script = tmp_path / f"readme_line_{line}.py"
    script.write_text(code, encoding="utf-8")
    result = _run([str(script)], tmp_path)
    _assert_clean(result)
