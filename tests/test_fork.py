"""Forked processes: ``os.fork`` and ``multiprocessing`` (fork) after sync and async use, children
that leave by ``os._exit``, ``sys.exit`` and the end of the program, and gunicorn ``--preload``
with UvicornWorkers.

Each case runs ``tests/fork_child.py`` in a fresh interpreter (development mode, ResourceWarning an
error) against a throwaway user, so that connections can be counted exactly. The parent's URL
sets ``read_timeout=10``: a parent whose socket a child unregistered waits that long, not 60 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MYSQL_URL, connections_of, mysql_query, mysql_url_for, wait_until

import tidb_memory
from tests.fork_celery import make_app
from tidb_memory import TiDBChatMessageHistory

ROOT = Path(__file__).resolve().parent.parent
PYTHON_FLAGS = ("-X", "dev", "-W", "error::ResourceWarning")
NOISE = ("Event loop is closed", "Exception ignored", "Unclosed", "ResourceWarning", "Traceback")
#: The parent's next call after a child exits: a healthy one takes milliseconds.
PARENT_BOUND = 5.0
#: A child's whole life (connect, two appends, close, exit): a healthy one takes under a second.
CHILD_BOUND = 20.0


def run_scenario(
    user: str | None, use: str, fork: str, exit_via: str, child: str, sqlite: Path | None = None
) -> dict[str, Any]:
    """Run one case: on MariaDB as ``user``, or on the SQLite file ``sqlite``."""
    table = f"tm_fork_{uuid.uuid4().hex[:10]}"
    if sqlite is not None:
        url, admin = f"sqlite+aiosqlite:///{sqlite}", "-"
    else:
        assert user is not None
        url, admin = mysql_url_for(user) + "?read_timeout=10", MYSQL_URL
    args = [url, admin, table, use, fork, exit_via, child]
    try:
        proc = subprocess.run(
            [sys.executable, *PYTHON_FLAGS, "-m", "tests.fork_child", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
        )
    finally:
        if sqlite is None:
            mysql_query(f"DROP TABLE IF EXISTS `{table}`")
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [word for word in NOISE if word in proc.stderr]
    assert not noise, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"[fork] {fork} {use} {exit_via} {child}: child lived {report['child_s']:.3f}s, "
        f"parent's next call {report['parent_next_s'] * 1000:.1f} ms"
    )
    return report


def check(report: dict[str, Any], child: str) -> None:
    # The child finished by itself, promptly: it waited on nothing of the parent's.
    assert report["child_exit"] == 0, report
    assert report["child_s"] < CHILD_BOUND, report
    # The child left none of its own connections open and closed none of the parent's.
    assert report["after"] == report["before"], report
    # The parent's next call went through at once, and every row is there exactly once.
    assert report["parent_next_s"] < PARENT_BOUND, report
    messages = report["messages"]
    assert messages[0] == "p0" and messages[-1] == "p1", report
    assert sorted(messages[1:-1]) == ([] if child == "idle" else ["c-async", "c-sync"]), report


CASES = [
    *[
        ("os", use, exit_via)
        for use in ("sync", "loop_thread", "runner", "app_engine")
        for exit_via in ("os_exit", "sys_exit", "return")
    ],
    # A child forked inside a running coroutine is still inside the parent's event loop: any
    # exit but os._exit (which multiprocessing uses) runs that loop's shutdown in the child,
    # which asyncio does not support (its default executor's threads did not survive the fork).
    ("os", "in_loop", "os_exit"),
    *[
        ("mp", use, exit_via)
        for use in ("sync", "in_loop", "app_engine")
        for exit_via in ("sys_exit", "return")
    ],
]


@pytest.mark.timeout(200)
@pytest.mark.parametrize(("fork", "use", "exit_via"), CASES)
def test_child_uses_both_apis_and_exits(
    mysql_user: str, fork: str, use: str, exit_via: str
) -> None:
    """The child finds every registry empty, uses the sync and async API at once, closes
    (``close_all``, ``aclose_all`` or the at-exit hook) and exits promptly; the parent is
    unaffected."""
    check(run_scenario(mysql_user, use, fork, exit_via, "work"), "work")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("use", ["sync", "loop_thread", "runner", "app_engine"])
def test_idle_child_leaves_the_parents_sockets_alone(mysql_user: str, use: str) -> None:
    """A child that only exits, leaving the inherited pools to interpreter shutdown, must not
    unregister the parent's sockets from the epoll set they share (the parent would wait out
    its read timeout) nor close the parent's connections."""
    check(run_scenario(mysql_user, use, "os", "return", "idle"), "idle")


@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("fork", "use", "exit_via", "child"),
    [
        ("os", "sync", "sys_exit", "work"),
        ("os", "runner", "return", "work"),
        ("os", "loop_thread", "os_exit", "work"),
        ("mp", "sync", "return", "work"),
        ("os", "runner", "return", "idle"),
    ],
)
def test_sqlite_child(tmp_path: Path, fork: str, use: str, exit_via: str, child: str) -> None:
    """The same on SQLite, where an inherited aiosqlite connection's thread did not survive the
    fork: a child that waited on it would wait forever."""
    report = run_scenario(None, use, fork, exit_via, child, sqlite=tmp_path / "fork.sqlite3")
    check(report, child)


STORE_SCRIPT = r"""
import json, os, sys, time
from tidb_memory.langgraph import TiDBStore

store = TiDBStore(sys.argv[1], table_prefix=sys.argv[2], ttl={"default_ttl": 1.0})
store.setup()
store.put(("a",), "parent", {"v": 1})
store.start_ttl_sweeper(1)  # a task on the parent's background loop
start = time.monotonic()
pid = os.fork()
if pid == 0:
    store.put(("a",), "child", {"v": 2})
    sys.exit(0)  # the at-exit hooks stop the sweeper: the child's, never the parent's
while not (done := os.waitpid(pid, os.WNOHANG))[0]:
    if time.monotonic() - start > 30:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print(json.dumps({"child": "hung"}))
        sys.exit(0)
    time.sleep(0.01)
child_s = time.monotonic() - start
start = time.monotonic()
item = store.get(("a",), "child")
report = {"child": os.waitstatus_to_exitcode(done[1]), "child_s": child_s,
          "parent_next_s": time.monotonic() - start, "value": item and item.value}
store.stop_ttl_sweeper()
print(json.dumps(report))
"""


@pytest.mark.timeout(120)
def test_child_of_a_store_with_a_ttl_sweeper(tmp_path: Path) -> None:
    """A LangGraph store whose TTL sweeper runs on the parent's background loop: the child's
    at-exit hook stops nothing of the parent's (it waited on the parent's loop forever)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    proc = subprocess.run(
        [sys.executable, *PYTHON_FLAGS, "-c", STORE_SCRIPT, url, "tmfork"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [word for word in NOISE if word in proc.stderr], proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"[fork] store with a TTL sweeper: {report}")
    assert report["child"] == 0, report
    assert report["child_s"] < CHILD_BOUND and report["parent_next_s"] < PARENT_BOUND, report
    assert report["value"] == {"v": 2}, report


# --- gunicorn --preload with two UvicornWorkers ----------------------------------------------

#: gunicorn's --timeout and --graceful-timeout: a worker stuck in shutdown is killed after this.
GUNICORN_TIMEOUT = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(
    user: str, table: str, log: Path, *options: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """gunicorn --preload serving ``tests/fork_asgi.py`` with two UvicornWorkers; yields the
    master process and the base URL once a worker answers."""
    port = free_port()
    env = {**os.environ, "TM_URL": mysql_url_for(user) + "?read_timeout=10", "TM_TABLE": table}
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"]
    command += ["--worker-class", "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{port}"]
    command += ["--timeout", str(GUNICORN_TIMEOUT), "--graceful-timeout", str(GUNICORN_TIMEOUT)]
    command += [*options, "tests.fork_asgi:app"]
    with log.open("wb") as out:
        master = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert master.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/openapi.json", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield master, base
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(30)


def append_all(base: str, count: int) -> set[int]:
    """``count`` appends over fresh connections, alternating the async and the ``def``
    endpoint, four sessions; returns the worker pids that served them."""
    pids = set()
    for i in range(count):
        face = "async" if i % 2 else "sync"
        for attempt in range(3):
            try:
                reply = httpx.post(f"{base}/{face}/g{i % 4}/m{i}", timeout=60)
                break
            except httpx.RemoteProtocolError:
                # A worker that reached --max-requests closes the connections it accepted but
                # had not read a request from (uvicorn's shutdown): the app never ran, so the
                # request is sent again. One whose request was read always gets its response.
                assert attempt < 2
        assert reply.status_code == 200, reply.text
        pids.add(reply.json()["pid"])
    return pids


@pytest.fixture
def app_table() -> Iterator[str]:
    table = f"tm_gunicorn_{uuid.uuid4().hex[:10]}"
    yield table
    mysql_query(f"DROP TABLE IF EXISTS `{table}`")


def stored(user: str, table: str) -> dict[str, list[str]]:
    """What the app stored, read back through the library once the server is gone."""
    url = mysql_url_for(user)
    try:
        return {
            session: sorted(
                str(m.content)
                for m in TiDBChatMessageHistory(session, url, table_name=table).messages
            )
            for session in ("g0", "g1", "g2", "g3")
        }
    finally:
        tidb_memory.close_all()


def expected(count: int) -> dict[str, list[str]]:
    return {f"g{s}": sorted(f"m{i}" for i in range(count) if i % 4 == s) for s in range(4)}


@pytest.mark.timeout(200)
def test_gunicorn_preload_workers_serve_and_stop_on_sigterm(
    mysql_user: str, app_table: str, tmp_path: Path
) -> None:
    """The master set the table up (a pool on its bridge loop) before forking two workers. The
    workers serve real requests through both APIs, and SIGTERM stops everything promptly: each
    worker's lifespan awaits ``aclose_all()`` and returns instead of waiting on the master's
    loop until gunicorn's graceful timeout."""
    log = tmp_path / "gunicorn.log"
    with gunicorn(mysql_user, app_table, log) as (master, base):
        append_all(base, 40)
        start = time.monotonic()
        master.send_signal(signal.SIGTERM)
        master.wait(GUNICORN_TIMEOUT * 3)
        stop_s = time.monotonic() - start
    text = log.read_text()
    print(f"[gunicorn] SIGTERM to exit: {stop_s:.2f}s")
    assert master.returncode == 0, text
    assert stop_s < GUNICORN_TIMEOUT / 2, text
    for bad in ("WORKER TIMEOUT", "Traceback", "was sent SIGKILL"):
        assert bad not in text, text
    assert stored(mysql_user, app_table) == expected(40)
    assert wait_until(lambda: connections_of(mysql_user) == 0), "a worker left a connection open"


@pytest.mark.timeout(300)
def test_gunicorn_max_requests_recycles_workers(
    mysql_user: str, app_table: str, tmp_path: Path
) -> None:
    """``--max-requests``: each worker retires after 8 requests, running its lifespan shutdown
    (``aclose_all()``), and gunicorn forks a new one from the master. Every recycle completes by
    itself: no ``WORKER TIMEOUT``, and no request is lost."""
    log = tmp_path / "gunicorn.log"
    options = ("--max-requests", "8", "--max-requests-jitter", "0")
    with gunicorn(mysql_user, app_table, log, *options) as (master, base):
        start = time.monotonic()
        append_all(base, 64)
        serve_s = time.monotonic() - start
        master.send_signal(signal.SIGTERM)
        master.wait(GUNICORN_TIMEOUT * 3)
    text = log.read_text()
    booted = text.count("Booting worker")
    print(f"[gunicorn] 64 requests with --max-requests 8: {serve_s:.2f}s, {booted} workers booted")
    # The recycles really happened: of 64 requests the two last workers served at most 16, so at
    # least 6 workers retired, and all but the last two retirements were replaced before SIGTERM.
    assert booted >= 2 + 4, text
    for bad in ("WORKER TIMEOUT", "Traceback", "was sent SIGKILL"):
        assert bad not in text, text
    assert stored(mysql_user, app_table) == expected(64)
    assert wait_until(lambda: connections_of(mysql_user) == 0), "a worker left a connection open"


# --- Celery's prefork pool -------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_celery_prefork_recycles_and_stops(mysql_user: str, app_table: str, tmp_path: Path) -> None:
    """A Celery worker whose main process used the sync API before forking its pool: pool
    processes retire every 5 tasks (``--max-tasks-per-child``) through ``close_all()`` in
    ``worker_process_shutdown``, every task completes, and a warm shutdown (SIGTERM) finishes."""
    spool = tmp_path / "spool"
    for folder in ("queue", "processed", "results", "control"):
        (spool / folder).mkdir(parents=True)
    env = {**os.environ, "TM_URL": mysql_url_for(mysql_user) + "?read_timeout=10"}
    env.update(TM_TABLE=app_table, TM_SPOOL=str(spool))
    command = [sys.executable, "-m", "celery", "-A", "tests.fork_celery", "worker"]
    command += ["--pool", "prefork", "--concurrency", "2", "--max-tasks-per-child", "5"]
    command += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    log = tmp_path / "celery.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    client = make_app("tm_fork_client", str(spool))
    try:
        start = time.monotonic()
        results = [
            client.send_task("tm_fork.append", args=[f"g{i % 4}", f"m{i}"]) for i in range(40)
        ]
        pids = {result.get(timeout=120) for result in results}
        work_s = time.monotonic() - start
        start = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        stop_s = time.monotonic() - start
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        client.close()
    text = log.read_text()
    print(f"[celery] 40 tasks in {work_s:.2f}s over {len(pids)} pool processes; stop {stop_s:.2f}s")
    assert len(pids) >= 40 // 5, text  # the pool processes really were recycled
    assert stop_s < 15, text
    for bad in ("Traceback", "WorkerLostError", "Timed out"):
        assert bad not in text, text
    assert stored(mysql_user, app_table) == expected(40)
    assert wait_until(lambda: connections_of(mysql_user) == 0), "a pool process left a connection"
