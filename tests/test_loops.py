"""One object everywhere: successive event loops, many threads, sync calls inside a running
loop, pytest-asyncio's per-test loops, an application's own engine, and no leaked connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import (
    MYSQL_URL,
    Target,
    connections_of,
    mysql_query,
    mysql_url_for,
    wait_until,
)
from langchain_core.messages import AIMessage, HumanMessage

import tidb_memory
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    ConfigurationError,
    SyncCallError,
    TiDBChatMessageHistory,
)

ROOT = Path(__file__).resolve().parent.parent
#: Development mode (asyncio debug, all warnings shown) with ResourceWarning made an error, so an
#: unclosed connection prints "Exception ignored".
PYTHON_FLAGS = ("-X", "dev", "-W", "error::ResourceWarning")
NOISE = ("Event loop is closed", "Exception ignored", "Unclosed", "ResourceWarning", "Traceback")

# --- 20 x asyncio.run over one history, in a fresh interpreter ------------------------------

SCRIPT = r"""
import asyncio, json, os, sys, time
from langchain_core.messages import AIMessage, HumanMessage
import tidb_memory

url, table, user, db_path = sys.argv[1:5]
history = tidb_memory.AsyncTiDBChatMessageHistory("loops", url, table_name=table)

def report(**kw):
    print(json.dumps(kw), flush=True)

def open_connections():
    if user:
        import pymysql
        conn = pymysql.connect(host=os.environ["RAW_HOST"], port=int(os.environ["RAW_PORT"]),
                               user="root", password=os.environ["RAW_PASSWORD"])
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            "WHERE USER = %s", (user,))
                return cur.fetchone()[0]
        finally:
            conn.close()
    fds = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds += os.readlink(f"/proc/self/fd/{fd}").startswith(db_path)
        except OSError:
            pass
    return fds

def settle():
    deadline = time.monotonic() + 5
    while (n := open_connections()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return n

async def turn(i):
    before = len(await history.aget_messages())
    await history.aadd_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
    return [before, len(await history.aget_messages())]

report(sizes=[asyncio.run(turn(i)) for i in range(20)])
report(after_runs=settle())
report(sync=len(history.messages))
asyncio.run(history.aclose())
tidb_memory.close_all()
report(after_close=settle())
"""


def run_script(url: str, table: str, user: str = "", db_path: str = "") -> dict[str, object]:
    from conftest import mysql_params

    raw = mysql_params()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RAW_HOST": str(raw["host"]),
        "RAW_PORT": str(raw["port"]),
        "RAW_PASSWORD": str(raw["password"]),
    }
    result = subprocess.run(
        [sys.executable, *PYTHON_FLAGS, "-c", SCRIPT, url, table, user, db_path],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for noise in NOISE:
        assert noise not in output, output
    reports: dict[str, object] = {}
    for line in result.stdout.splitlines():
        reports.update(json.loads(line))
    return reports


def test_twenty_asyncio_runs_mysql(mysql: Target, mysql_user: str) -> None:
    table = mysql.new_table()
    reports = run_script(mysql_url_for(mysql_user), table, user=mysql_user)
    assert reports["sizes"] == [[2 * i, 2 * i + 2] for i in range(20)]
    assert reports["after_runs"] == 0  # every loop closed its pool when it shut down
    assert reports["sync"] == 40
    assert reports["after_close"] == 0
    assert mysql.count(table, "loops") == 40


def test_twenty_asyncio_runs_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "loops.sqlite3"
    reports = run_script(f"sqlite+aiosqlite:///{db}", "loops_table", db_path=str(db))
    assert reports["sizes"] == [[2 * i, 2 * i + 2] for i in range(20)]
    assert reports["after_runs"] == 0  # no file handle of the database left open
    assert reports["sync"] == 40
    assert reports["after_close"] == 0


# --- no leaked connections ------------------------------------------------------------------


def server_snapshot(user: str) -> tuple[int, int, int]:
    """(Threads_connected, connections of other users, connections of ``user``), at once."""
    row = mysql_query(
        "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
        "        WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), "
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER <> %s), "
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s)",
        (user, user),
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


async def test_aclose_returns_threads_connected_to_baseline(mysql: Target, mysql_user: str) -> None:
    table = mysql.new_table()
    threads, others, ours = server_snapshot(mysql_user)
    assert ours == 0
    baseline = threads - others  # Threads_connected, net of whatever other people do meanwhile
    history = AsyncTiDBChatMessageHistory("s", mysql_url_for(mysql_user), table_name=table)
    await history.aadd_messages([HumanMessage("hi")])
    # Several connections on this loop's pool, and one on the bridge loop's pool.
    results = await asyncio.gather(*(history.aget_messages() for _ in range(6)))
    assert all(r == [HumanMessage("hi")] for r in results)
    assert await asyncio.to_thread(lambda: history.messages) == [HumanMessage("hi")]
    threads, others, ours = server_snapshot(mysql_user)
    assert ours >= 2
    assert threads - others >= baseline + 2
    await history.aclose()

    def back_to_baseline() -> bool:
        threads, others, ours = server_snapshot(mysql_user)
        return ours == 0 and threads - others == baseline

    assert wait_until(back_to_baseline, timeout=5), server_snapshot(mysql_user)
    # ... and the history still works afterwards: it reconnects.
    assert await history.aget_messages() == [HumanMessage("hi")]
    await tidb_memory.aclose_all()
    assert wait_until(lambda: connections_of(mysql_user) == 0, timeout=5)


def test_close_all_closes_the_bridge_pools(mysql: Target, mysql_user: str) -> None:
    table = mysql.new_table()
    history = TiDBChatMessageHistory("s", mysql_url_for(mysql_user), table)
    history.add_user_message("hi")
    assert history.messages == [HumanMessage("hi")]
    assert connections_of(mysql_user) >= 1
    tidb_memory.close_all()
    assert wait_until(lambda: connections_of(mysql_user) == 0, timeout=5)
    assert history.messages == [HumanMessage("hi")]  # usable again: the bridge restarts


# --- many threads, many loops ---------------------------------------------------------------


def test_many_threads_on_one_object(backend: Target, table: str) -> None:
    history = AsyncTiDBChatMessageHistory("threads", backend.url, table_name=table)
    threads, rounds = 16, 8

    def worker(t: int) -> None:
        for i in range(rounds):
            history.add_messages([HumanMessage(f"{t}:{i}")])
            assert len(history.messages) >= i + 1

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker, t) for t in range(threads)]
        for future in futures:
            future.result(timeout=60)  # a deadlock fails here, not at the suite's timeout
    contents = [str(m.content) for m in history.messages]
    assert len(contents) == threads * rounds
    for t in range(threads):
        mine = [c for c in contents if c.startswith(f"{t}:")]
        assert mine == [f"{t}:{i}" for i in range(rounds)]


def test_many_threads_each_with_its_own_loop(backend: Target, table: str) -> None:
    """asyncio.run in several threads at once, all on one object: a pool per loop."""
    history = AsyncTiDBChatMessageHistory("loops", backend.url, table_name=table)
    errors: list[BaseException] = []

    async def work(t: int) -> None:
        for i in range(5):
            await history.aadd_messages([HumanMessage(f"{t}:{i}")])
            await history.aget_messages()

    def thread_main(t: int) -> None:
        try:
            asyncio.run(work(t))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=thread_main, args=(t,)) for t in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive()
    assert errors == []
    assert len(history.messages) == 30


def test_successive_asyncio_runs_in_process(backend: Target, table: str) -> None:
    history = AsyncTiDBChatMessageHistory("runs", backend.url, table_name=table)
    asyncio.run(history.aadd_messages([HumanMessage("first loop")]))
    asyncio.run(history.aadd_messages([AIMessage("second loop")]))
    assert asyncio.run(history.aget_messages()) == [
        HumanMessage("first loop"),
        AIMessage("second loop"),
    ]
    assert history.messages == asyncio.run(history.aget_messages())


async def test_sync_calls_inside_a_running_loop(backend: Target, table: str) -> None:
    """A notebook cell: sync code, but an event loop is running in this thread."""
    history = TiDBChatMessageHistory("notebook", backend.url, table)
    history.add_user_message("hi")
    await history.aadd_messages([AIMessage("hello")])
    history.add_ai_message("again")
    assert history.messages == [HumanMessage("hi"), AIMessage("hello"), AIMessage("again")]
    assert await history.aget_messages() == history.messages
    history.clear()
    assert history.messages == []
    assert await history.aget_messages() == []


# --- pytest-asyncio's per-test loops, with one module-level object ---------------------------

SHARED_DIR = Path(tempfile.mkdtemp(prefix="tidb-memory-shared-"))
SHARED_TABLE = f"tm_shared_{uuid.uuid4().hex[:12]}"
SHARED = {
    "mysql": AsyncTiDBChatMessageHistory("shared", MYSQL_URL, table_name=SHARED_TABLE),
    "sqlite": AsyncTiDBChatMessageHistory(
        "shared", f"sqlite+aiosqlite:///{SHARED_DIR}/shared.db", table_name=SHARED_TABLE
    ),
}


@pytest.fixture(scope="module", autouse=True)
def _drop_shared_table() -> Iterator[None]:
    yield
    mysql_query(f"DROP TABLE IF EXISTS `{SHARED_TABLE}`")
    mysql_query("DELETE FROM tidb_memory_migrations WHERE table_name = %s", (SHARED_TABLE,))


async def check_shared(name: str, text: str) -> None:
    history = SHARED[name]
    before = await history.aget_messages()
    await history.aadd_messages([HumanMessage(text)])
    assert await history.aget_messages() == [*before, HumanMessage(text)]
    assert history.messages == [*before, HumanMessage(text)]


@pytest.mark.parametrize("name", ["mysql", "sqlite"])
async def test_module_level_history_first_loop(name: str, mysql_server: str) -> None:
    await check_shared(name, "first")


@pytest.mark.parametrize("name", ["mysql", "sqlite"])
async def test_module_level_history_second_loop(name: str, mysql_server: str) -> None:
    await check_shared(name, "second")


@pytest.mark.parametrize("name", ["mysql", "sqlite"])
async def test_module_level_history_third_loop(name: str, mysql_server: str) -> None:
    await check_shared(name, "third")
    assert [m.content for m in await SHARED[name].aget_messages()][-3:] == [
        "first",
        "second",
        "third",
    ]


# --- an engine the application owns ----------------------------------------------------------


async def test_application_engine(backend: Target, table: str) -> None:
    engine = tidb_memory.create_engine(backend.url)
    try:
        history = AsyncTiDBChatMessageHistory("app", engine=engine, table_name=table)
        other = AsyncTiDBChatMessageHistory("app", engine=engine, table_name=table)
        assert history.store.db is other.store.db
        await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
        assert await other.aget_messages() == [HumanMessage("hi"), AIMessage("hello")]
        # Sync code in another thread is sent to the engine's loop ...
        assert await asyncio.to_thread(lambda: history.messages) == await history.aget_messages()
        await asyncio.to_thread(history.add_messages, [HumanMessage("from a thread")])
        assert len(await history.aget_messages()) == 3
        # ... but on the engine's own loop a sync call would wait for itself: refused.
        with pytest.raises(SyncCallError):
            history.messages  # noqa: B018
        # aclose() leaves an application's engine alone.
        await history.aclose()
        assert len(await history.aget_messages()) == 3
    finally:
        await engine.dispose()
    assert backend.count(table, "app") == 3


def test_application_engine_after_its_loop_is_gone(backend: Target, table: str) -> None:
    engine = tidb_memory.create_engine(backend.url)
    history = AsyncTiDBChatMessageHistory("app", engine=engine, table_name=table)

    async def use() -> None:
        await history.aadd_messages([HumanMessage("x")])

    async def use_and_dispose() -> None:
        await use()
        await engine.dispose()

    asyncio.run(use_and_dispose())
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(use())
    assert "no longer running" in str(info.value)
