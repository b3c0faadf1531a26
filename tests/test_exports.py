"""The public surface of ``tidb_memory``, pinned: adding or removing a public name must be a
deliberate change to this list."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import tidb_memory
from tidb_memory import TiDBMemoryError

EXPECTED_ALL = sorted(
    [
        "AsyncTiDBChatMessageHistory",
        "AsyncTiDBSaver",
        "AsyncTiDBStore",
        "ConfigurationError",
        "ConnectError",
        "DEFAULT_MAX_MESSAGE_BYTES",
        "DEFAULT_RETRY_POLICY",
        "DEFAULT_SQLITE_URL",
        "DEFAULT_TABLE_NAME",
        "InsecureTransportError",
        "InvalidInputError",
        "MessageRecord",
        "MessageTooLargeError",
        "PoolTimeoutError",
        "RetriesExhaustedError",
        "RetryPolicy",
        "SchemaError",
        "SessionInfo",
        "SessionPage",
        "SessionStore",
        "StorageError",
        "SyncCallError",
        "TiDBChatMessageHistory",
        "TiDBMemoryError",
        "TiDBSaver",
        "TiDBStore",
        "UNSET",
        "__version__",
        "aclose_all",
        "close_all",
        "create_engine",
        "default_url",
    ]
)
#: Exported lazily: they need the [langgraph] extra.
LAZY = {"AsyncTiDBSaver", "AsyncTiDBStore", "TiDBSaver", "TiDBStore"}


def test_all_is_pinned() -> None:
    assert sorted(tidb_memory.__all__) == EXPECTED_ALL
    assert len(set(tidb_memory.__all__)) == len(tidb_memory.__all__)


def test_every_exported_name_resolves() -> None:
    for name in EXPECTED_ALL:
        if name in LAZY and importlib.util.find_spec("langgraph") is None:
            continue
        assert getattr(tidb_memory, name) is not None, name


def test_version_is_a_string() -> None:
    assert isinstance(tidb_memory.__version__, str)
    assert tidb_memory.__version__
    assert tidb_memory.__version__[0].isdigit()


def test_every_exception_derives_from_the_base() -> None:
    exceptions = [
        getattr(tidb_memory, name)
        for name in EXPECTED_ALL
        if name not in LAZY
        and isinstance(getattr(tidb_memory, name), type)
        and issubclass(getattr(tidb_memory, name), BaseException)
    ]
    assert len(exceptions) == 11
    for cls in exceptions:
        assert issubclass(cls, TiDBMemoryError), cls
        assert cls.__module__ == "tidb_memory.errors"


def test_py_typed_ships_in_the_package() -> None:
    assert (Path(tidb_memory.__file__).parent / "py.typed").is_file()


def test_main_classes_are_the_documented_ones() -> None:
    from langchain_core.chat_history import BaseChatMessageHistory

    assert issubclass(tidb_memory.AsyncTiDBChatMessageHistory, BaseChatMessageHistory)
    assert issubclass(tidb_memory.TiDBChatMessageHistory, tidb_memory.AsyncTiDBChatMessageHistory)
    assert tidb_memory.DEFAULT_TABLE_NAME == "langchain_message_store"
    assert tidb_memory.DEFAULT_SQLITE_URL.startswith("sqlite+aiosqlite:///")
