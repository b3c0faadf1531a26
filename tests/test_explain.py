"""Reads are one index range scan: EXPLAIN on MariaDB shows the primary key and no filesort.

The table is filled with many sessions first and analysed, so the optimiser has a real choice
(a full scan plus filesort would be cheaper on a nearly empty table).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Target
from langchain_core.messages import AIMessage, HumanMessage

from tidb_memory import AsyncTiDBChatMessageHistory
from tidb_memory.chat._sql import read_statement, records_statement

SESSIONS = 60
TURNS = 10


@pytest.fixture
async def filled(mysql: Target) -> str:
    table = mysql.new_table("explain")
    for s in range(SESSIONS):
        history = AsyncTiDBChatMessageHistory(f"s{s}", mysql.url, table_name=table)
        await history.aadd_messages(
            [m for t in range(TURNS) for m in (HumanMessage(f"q{t}"), AIMessage(f"a{t}"))]
        )
    mysql.execute(f"ANALYZE TABLE `{table}`")
    return table


def explain(mysql: Target, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    rows = mysql.query("EXPLAIN " + sql, params)
    columns = ["id", "select_type", "table", "type", "possible_keys", "key", "key_len", "ref"]
    columns += ["rows", "Extra"]
    return [dict(zip(columns, row, strict=False)) for row in rows]


def assert_range_scan_of_primary(plan: list[dict[str, Any]], table: str) -> None:
    ours = [step for step in plan if step["table"] == table]
    assert ours, plan
    for step in ours:
        assert step["key"] == "PRIMARY", plan
        assert step["type"] in ("ref", "range"), plan
        assert "filesort" not in (step["Extra"] or ""), plan
        assert int(step["rows"]) <= 4 * 2 * TURNS, plan  # one session's rows, not the table's


@pytest.mark.parametrize("since", [False, True])
async def test_the_whole_session_read_is_a_primary_key_range(
    mysql: Target, filled: str, since: bool
) -> None:
    sql = read_statement("mysql", filled, since=since)
    params: list[Any] = ["s7"] + (["2000-01-01 00:00:00.000000"] if since else [])
    assert_range_scan_of_primary(explain(mysql, sql, params), filled)


async def test_the_window_read_is_a_backward_primary_key_range(mysql: Target, filled: str) -> None:
    sql = read_statement("mysql", filled, since=False, window=True)
    plan = explain(mysql, sql, ["s7", 5])
    assert_range_scan_of_primary(plan, filled)
    # The outer re-ordering sorts at most the window's rows, never the table's.
    for step in plan:
        if step["table"] != filled and "filesort" in (step["Extra"] or ""):
            assert int(step["rows"]) <= 5, plan


async def test_a_records_page_is_a_backward_primary_key_range(mysql: Target, filled: str) -> None:
    sql = records_statement("mysql", filled, since=False, before=True)
    assert_range_scan_of_primary(explain(mysql, sql, ["s7", 15, 5]), filled)
