"""The history's behaviour through its sync API: the same cases as ``test_history_async.py``,
with ``messages``/``add_messages``/``clear`` called from threads that run no event loop."""

from __future__ import annotations

import pytest
from conftest import Target
from test_history_async import CASES, Case, SyncApi, run_case


@pytest.mark.parametrize("case_fn", CASES, ids=[c.__name__ for c in CASES])
async def test_sync_api(case_fn: Case, backend: Target, table: str) -> None:
    await run_case(case_fn, backend, table, SyncApi)
