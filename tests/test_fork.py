"""Forked processes: ``os.fork`` and ``multiprocessing`` (fork) after sync and async use, children
that leave by ``os._exit``, ``sys.exit`` and the end of the program, and gunicorn ``--preload``
with UvicornWorkers.

Each case runs ``tests/fork_child.py`` in a fresh interpreter (development mode, ResourceWarning an
error) against a throwaway user, so that connections can be counted exactly. The parent's URL
sets ``read_timeout=10``: a parent whose socket a child unregistered waits that long, not 60 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import MYSQL_URL, mysql_query, mysql_url_for

ROOT = Path(__file__).resolve().parent.parent
PYTHON_FLAGS = ("-X", "dev", "-W", "error::ResourceWarning")
NOISE = ("Event loop is closed", "Exception ignored", "Unclosed", "ResourceWarning", "Traceback")
#: The parent's next call after a child exits: a healthy one takes milliseconds.
PARENT_BOUND = 5.0
#: A child's whole life (connect, two appends, close, exit): a healthy one takes under a second.
CHILD_BOUND = 20.0


def run_scenario(user: str, use: str, fork: str, exit_via: str, child: str) -> dict[str, Any]:
    table = f"tm_fork_{uuid.uuid4().hex[:10]}"
    url = mysql_url_for(user) + "?read_timeout=10"
    args = [url, MYSQL_URL, table, use, fork, exit_via, child]
    try:
        proc = subprocess.run(
            [sys.executable, *PYTHON_FLAGS, "-m", "tests.fork_child", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
        )
    finally:
        mysql_query(f"DROP TABLE IF EXISTS `{table}`")
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [word for word in NOISE if word in proc.stderr]
    assert not noise, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
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
        for use in ("sync", "loop_thread", "runner", "in_loop")
        for exit_via in ("os_exit", "sys_exit", "return")
    ],
    *[("mp", use, exit_via) for use in ("sync", "in_loop") for exit_via in ("sys_exit", "return")],
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
@pytest.mark.parametrize("use", ["sync", "loop_thread", "runner", "in_loop"])
def test_idle_child_leaves_the_parents_sockets_alone(mysql_user: str, use: str) -> None:
    """A child that only exits, leaving the inherited pools to interpreter shutdown, must not
    unregister the parent's sockets from the epoll set they share (the parent would wait out
    its read timeout) nor close the parent's connections."""
    check(run_scenario(mysql_user, use, "os", "return", "idle"), "idle")
