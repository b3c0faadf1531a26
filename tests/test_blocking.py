"""No blocking call on the event loop (issue 10, §6).

Every async test of this suite runs under blockbuster (``conftest._no_blocking_calls``); this file
checks that the detector is armed, and runs langchain-core's own ``RunnableWithMessageHistory``
tests (from its sdist, fetched by ``make langchain-core-tests``) with our class as the history,
on SQLite and MariaDB, under langchain-core's own blockbuster fixture.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from blockbuster import BlockingError
from conftest import Target
from langchain_core.messages import HumanMessage

from tidb_memory import AsyncTiDBChatMessageHistory, ConfigurationError, StorageError

LC_CORE_TESTS = Path(sys.prefix) / "langchain-core-tests"
SUITE = LC_CORE_TESTS / "tests" / "unit_tests" / "runnables" / "test_history.py"


async def test_blockbuster_is_armed_for_async_tests(backend: Target, table: str) -> None:
    history = AsyncTiDBChatMessageHistory("armed", backend.url, table_name=table)
    await history.aadd_messages([HumanMessage("hi")])  # engine, setup, append: nothing blocks

    def progress(_done: int) -> None:
        time.sleep(0.001)  # a blocking call made from the library's frames, on the loop

    with pytest.raises((BlockingError, StorageError)) as info:
        await history.store.apurge_expired(older_than=datetime.now(UTC), progress=progress)
    assert "Blocking call to time.sleep" in str(info.value)


@pytest.mark.timeout(300)
def test_langchain_cores_history_tests_pass_on_our_class(backend: Target, table: str) -> None:
    assert SUITE.is_file(), (
        f"{SUITE} is missing: run `make langchain-core-tests` (make test does) to fetch "
        "langchain-core's sdist tests"
    )
    env = {
        **os.environ,
        "TIDB_MEMORY_LC_URL": backend.url,
        "TIDB_MEMORY_LC_TABLE": table,
        # The plugin as a top-level module: langchain-core's tests are a package named tests.
        "PYTHONPATH": str(Path(__file__).parent),
    }
    command = [sys.executable, "-m", "pytest", str(SUITE), "-p", "lc_core_history_plugin"]
    command += ["-o", "addopts=", "-q", "-p", "no:cacheprovider", "--rootdir", str(LC_CORE_TESTS)]
    result = subprocess.run(
        command, cwd=LC_CORE_TESTS, env=env, capture_output=True, text=True, timeout=240
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.fullmatch(r"(\d+) passed in [\d.]+s(?: \(.*\))?", summary)
    assert passed is not None, summary  # nothing failed, skipped, xfailed or errored
    assert int(passed.group(1)) >= 23, summary
    # The histories were ours: the suite's conversations are in the table.
    assert backend.count(table) >= 40


async def test_the_sync_sqlite_url_form_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "sync-form.sqlite3"
    for scheme in ("sqlite", "sqlite+pysqlite"):  # what other libraries' docs show
        history = AsyncTiDBChatMessageHistory("s", f"{scheme}:///{path}", table_name="t")
        assert history.store.db.spec.url.drivername == "sqlite+aiosqlite"
        await history.aadd_messages([HumanMessage(scheme)])
    same = AsyncTiDBChatMessageHistory("s", f"sqlite+aiosqlite:///{path}", table_name="t")
    assert [m.content for m in await same.aget_messages()] == ["sqlite", "sqlite+pysqlite"]
    for bad in ("sqlite://", f"sqlite:///{path}?mode=ro"):
        with pytest.raises(ConfigurationError):
            AsyncTiDBChatMessageHistory("s", bad)
