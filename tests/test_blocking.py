"""URLs other libraries document (issue 10, §6): ``sqlite:///path``, the sync form, is accepted
like ``mysql+pymysql://`` is."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from tidb_memory import AsyncTiDBChatMessageHistory, ConfigurationError


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
