"""Same-session concurrency: 20 writers append 50 batches each to ONE session at once.

Nothing may be lost, ``seq`` must stay dense (1..N) and unique, each writer's batches must keep
its order and stay whole, and every read taken meanwhile must be a prefix of the final order.
Runs on the shared MariaDB and on the SQLite mirror.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy.engine import make_url

import tidb_memory
from tests.append_checker import (
    AppendChecker,
    RetryCounter,
    final_from_rows,
    read_final_state,
    run_append_load,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WRITERS = 20
BATCHES = 50
MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")


def mysql_kwargs() -> dict[str, object]:
    url = make_url(MYSQL_URL)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "database": url.database,
    }


@pytest.fixture
async def mysql_table() -> AsyncIterator[str]:
    table = "conc_" + uuid.uuid4().hex[:12]
    yield table
    await tidb_memory.aclose_all()
    conn = pymysql.connect(**mysql_kwargs(), autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        conn.close()


def report_line(
    name: str, checker: AppendChecker, final: dict[str, list[str]], **extra: object
) -> str:
    report = checker.check(final)
    n = sum(len(v) for v in final.values())
    parts = " ".join(f"{k}={v}" for k, v in extra.items())
    return (
        f"[concurrency {name}] writers={WRITERS} batches={report.appends} "
        f"acknowledged={report.acknowledged} messages={n} reads={report.reads} "
        f"lost={report.lost} duplicated={report.duplicated} {parts}"
    )


@pytest.mark.parametrize(
    ("shared_history", "batches"),
    [(False, BATCHES), (True, 20)],
    ids=["history-per-writer", "one-shared-history"],
)
async def test_twenty_writers_one_session_mysql(
    mysql_table: str, shared_history: bool, batches: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each writer its own history (as separate processes would), or all sharing one object
    (and so racing on its last-seq hint)."""
    run = "c" + uuid.uuid4().hex[:8]
    session = f"{run}-one"
    checker = AppendChecker(run)
    retries = RetryCounter()
    with retries.installed():
        load = await run_append_load(
            MYSQL_URL,
            checker,
            table=mysql_table,
            sessions=[session],
            writers_per_session=WRITERS,
            min_batches=batches,
            max_batches=batches,
            readers=4,
            shared_history=shared_history,
        )
    final, seq_problems = read_final_state(mysql_kwargs(), mysql_table, prefix=run)
    report = checker.check(final)
    with capsys.disabled():
        print("\n" + report_line("mariadb", checker, final, retries=retries.retries))
    assert load.unexpected == []
    assert report.appends == WRITERS * batches
    assert report.acknowledged == WRITERS * batches, [
        b.error for b in checker.batches.values() if not b.ok
    ][:5]
    assert report.anomalies == [] and report.lost == 0 and report.duplicated == 0
    assert seq_problems == []
    assert len(final[session]) == report.messages_acknowledged
    assert report.reads >= 20


async def test_twenty_writers_one_session_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "conc.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    run = "c" + uuid.uuid4().hex[:8]
    session = f"{run}-one"
    checker = AppendChecker(run)
    retries = RetryCounter()
    try:
        with retries.installed():
            load = await run_append_load(
                url,
                checker,
                table="conc",
                sessions=[session],
                writers_per_session=WRITERS,
                min_batches=BATCHES,
                max_batches=BATCHES,
                readers=4,
            )
    finally:
        await tidb_memory.aclose_all()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT session_id, seq, msg_key, message FROM conc ORDER BY session_id, seq"
        ).fetchall()
    final, seq_problems = final_from_rows(rows)
    report = checker.check(final)
    with capsys.disabled():
        print("\n" + report_line("sqlite", checker, final, retries=retries.retries))
    assert load.unexpected == []
    assert report.acknowledged == WRITERS * BATCHES
    assert report.anomalies == [] and report.lost == 0 and report.duplicated == 0
    assert seq_problems == []
