"""A pytest plugin that runs langchain-core's own ``RunnableWithMessageHistory`` tests on our class.

langchain-core's ``tests/unit_tests/runnables/test_history.py`` (from its sdist; see
``make langchain-core-tests``) builds every history as ``InMemoryChatMessageHistory()`` or
``InMemoryChatMessageHistory(messages=[...])`` and compares stores with ``==``. This plugin puts
:class:`StoredHistory` in that name's place, so each history is a real table on the URL in
``TIDB_MEMORY_LC_URL``, and the suite's own conftest runs every test under blockbuster.

Loaded as a top-level module (``-p lc_core_history_plugin``): langchain-core's tests are a
package named ``tests`` too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

import tidb_memory
from tidb_memory import AsyncTiDBChatMessageHistory

URL = os.environ["TIDB_MEMORY_LC_URL"]
TABLE = os.environ["TIDB_MEMORY_LC_TABLE"]


class StoredHistory(AsyncTiDBChatMessageHistory):
    """``InMemoryChatMessageHistory``'s constructor and ``==``, over a stored session.

    ``StoredHistory(messages=[...])`` is what a test expects, kept in memory and never written;
    ``StoredHistory()`` is a fresh session in the table. Equality compares what each holds: the
    expectation, or the session read back from the database.
    """

    def __init__(self, messages: Sequence[BaseMessage] | None = None) -> None:
        super().__init__(f"lc-{uuid.uuid4().hex}", URL, table_name=TABLE)
        self.expected = None if messages is None else list(messages)

    def held(self) -> list[BaseMessage]:
        return self.messages if self.expected is None else self.expected

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredHistory):
            return NotImplemented
        return self.held() == other.held()

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _stored_histories(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    if hasattr(request.module, "InMemoryChatMessageHistory"):
        monkeypatch.setattr(request.module, "InMemoryChatMessageHistory", StoredHistory)
    yield
    tidb_memory.close_all()
