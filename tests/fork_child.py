"""A parent process that uses tidb-memory, forks a child that uses it too, and reports.

Run by ``tests/test_fork.py`` in a fresh interpreter, so that the child can leave the way real
children do (``os._exit``, ``sys.exit``, the end of the program with its at-exit hooks)::

    python -m tests.fork_child URL ADMIN_URL TABLE USE FORK EXIT CHILD

``URL`` may be a SQLite file; ``ADMIN_URL`` is then ``-``.

* ``USE``: how the parent used tidb-memory before forking. ``sync``: the sync API (the bridge's
  loop, running in its thread, holds the pool). ``loop_thread``: the async API on a loop that
  runs in another thread. ``runner``: the async API through an ``asyncio.Runner`` left open
  between calls. ``in_loop``: forks from inside a running coroutine (a child that did not
  leave by ``os._exit`` would finish that coroutine and run the parent's loop's shutdown).
* ``app_engine``: as ``loop_thread``, on the application's own ``create_async_engine(url)``,
  which the child disposes of itself when done (the application owns it).
* ``FORK``: ``os`` (``os.fork``) or ``mp`` (``multiprocessing`` with the fork start method).
* ``EXIT``: ``os_exit``, ``sys_exit`` or ``return`` (the end of the program, or of the target).
* ``CHILD``: ``work``: the child checks that every registry starts empty, appends through the
  sync and the async API at once, and closes. ``idle``: the child does nothing but exit, which
  leaves the inherited connections to the interpreter's shutdown.

The parent waits for the child (killing it after a bound), then times its own next call. One
JSON line on stdout reports what happened.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pymysql
from langchain_core.messages import HumanMessage
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import tidb_memory
from tidb_memory import AsyncTiDBChatMessageHistory, TiDBChatMessageHistory, _bridge, _process
from tidb_memory.engine import parse_url

#: The application's own engine, in the ``app_engine`` case.
APP_ENGINE: AsyncEngine | None = None
CHILD_BOUND = 30.0  # seconds a child may take before the parent calls it hung


def connections_of(admin_url: str, user: str) -> int:
    """The server's count of ``user``'s connections, on a raw connection opened for it (always
    0 on SQLite, whose ADMIN_URL is ``-``: there is no server to count on)."""
    if admin_url == "-":
        return 0
    url = parse_url(admin_url).url
    conn = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def settled_count(admin_url: str, user: str, want: int, bound: float = 10.0) -> int:
    """``user``'s connection count once it reaches ``want`` (the server notices a closed socket
    a moment later), or whatever it is after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        count = connections_of(admin_url, user)
        if count == want or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def fresh_registries() -> bool:
    """Every registry of tidb-memory is empty, as a child must find them."""
    return (
        not _process._loops
        and not _process._done
        and not _bridge.BRIDGE.running
        and all(not db._groups for db in _process._databases.values())
    )


def child_work(history: AsyncTiDBChatMessageHistory, exit_via: str, work: str) -> int:
    """The child's use: the sync and the async API at once, then close. Returns an exit code."""
    fresh = fresh_registries()
    if work == "idle":
        return 0

    async def both() -> None:
        if APP_ENGINE is not None:
            # The application's engine belongs to the loop that uses it first: this one, where
            # the application also disposes it.
            await history.aget_messages()
        await asyncio.gather(
            asyncio.to_thread(history.add_messages, [HumanMessage("c-sync")]),
            history.aadd_messages([HumanMessage("c-async")]),
        )
        await tidb_memory.aclose_all()
        if APP_ENGINE is not None:
            await APP_ENGINE.dispose()  # the application's to close, in the child as anywhere

    asyncio.run(both())
    if exit_via != "return":
        tidb_memory.close_all()  # "return" leaves it to the at-exit hook
    return 0 if fresh else 3


def leave(code: int, exit_via: str) -> None:
    if exit_via == "os_exit":
        sys.stdout.flush()
        os._exit(code)
    if exit_via == "sys_exit":
        sys.exit(code)
    if code:
        raise RuntimeError(f"the child's registries were not empty (code {code})")


def wait_pid(pid: int) -> tuple[int | str, float]:
    start = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - start
        if time.monotonic() - start > CHILD_BOUND:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hung", time.monotonic() - start
        time.sleep(0.01)


def mp_target(history: AsyncTiDBChatMessageHistory, exit_via: str, work: str) -> None:
    leave(child_work(history, exit_via, work), exit_via)


def fork_child(
    history: AsyncTiDBChatMessageHistory, how: str, exit_via: str, work: str
) -> tuple[Any, float] | None:
    """Fork a child that runs :func:`child_work`. The parent gets (exit code, seconds); a child
    that leaves by the end of the program gets ``None``."""
    if how == "mp":
        process = multiprocessing.get_context("fork").Process(
            target=mp_target, args=(history, exit_via, work)
        )
        start = time.monotonic()
        process.start()
        process.join(CHILD_BOUND)
        if process.is_alive():
            process.kill()
            process.join()
            return "hung", time.monotonic() - start
        return process.exitcode, time.monotonic() - start
    pid = os.fork()
    if pid == 0:
        leave(child_work(history, exit_via, work), exit_via)
        return None
    return wait_pid(pid)


def main() -> None:
    url, admin_url, table, use, how, exit_via, work = sys.argv[1:8]
    user = parse_url(url).url.username or ""
    if use == "app_engine":
        global APP_ENGINE
        APP_ENGINE = create_async_engine(url.partition("?")[0])
        history = AsyncTiDBChatMessageHistory("s", engine=APP_ENGINE, table_name=table)
    else:
        history = TiDBChatMessageHistory("s", url, table_name=table)
    report: dict[str, Any] = {"use": use, "fork": how, "exit": exit_via, "child": work}

    run: Callable[[Coroutine[Any, Any, Any]], Any]
    if use == "sync":
        history.add_messages([HumanMessage("p0")])
        run = asyncio.run  # unused: the parent's next call is sync too
    elif use in ("loop_thread", "app_engine"):
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        def run(coro: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(120)

        run(history.aadd_messages([HumanMessage("p0")]))
    elif use == "runner":
        runner = asyncio.Runner()
        run = runner.run
        run(history.aadd_messages([HumanMessage("p0")]))
    else:  # in_loop: fork from inside the running coroutine

        async def in_loop() -> None:
            await history.aadd_messages([HumanMessage("p0")])
            report["before"] = connections_of(admin_url, user)
            forked = fork_child(history, how, exit_via, work)
            if forked is None:
                report["is_child"] = True
                return
            code, seconds = forked
            report["after"] = settled_count(admin_url, user, report["before"])
            report["child_exit"], report["child_s"] = code, seconds
            start = time.monotonic()
            await history.aadd_messages([HumanMessage("p1")])
            report["parent_next_s"] = time.monotonic() - start
            report["messages"] = [m.content for m in await history.aget_messages()]

        asyncio.run(in_loop())
        if not report.get("is_child"):
            print(json.dumps(report), flush=True)
        return

    report["before"] = connections_of(admin_url, user)
    forked = fork_child(history, how, exit_via, work)
    if forked is None:
        return  # the child: on to the end of the program, through its at-exit hooks
    report["child_exit"], report["child_s"] = forked
    report["after"] = settled_count(admin_url, user, report["before"])
    start = time.monotonic()
    if use == "sync":
        history.add_messages([HumanMessage("p1")])
    else:
        run(history.aadd_messages([HumanMessage("p1")]))
    report["parent_next_s"] = time.monotonic() - start
    report["messages"] = [m.content for m in history.messages]
    if use != "sync":
        run(tidb_memory.aclose_all())
    if use == "runner":
        runner.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
