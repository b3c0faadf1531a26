"""The public surface of ``tidb_memory``, pinned: adding or removing a public name must be a
deliberate change to this list."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
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
        "ErasureReport",
        "InsecureTransportError",
        "InvalidInputError",
        "MessageRecord",
        "MessageTooLargeError",
        "PoolTimeoutError",
        "RetentionPolicy",
        "RetentionReport",
        "RetriesExhaustedError",
        "RetryPolicy",
        "SchemaError",
        "SessionInfo",
        "SessionPage",
        "SessionStore",
        "StorageError",
        "SyncCallError",
        "ThreadInfo",
        "ThreadPage",
        "TiDBChatMessageHistory",
        "TiDBMemoryError",
        "TiDBSaver",
        "TiDBStore",
        "UNSET",
        "__version__",
        "aclose_all",
        "aerase_user",
        "close_all",
        "create_engine",
        "default_url",
        "erase_user",
    ]
)
#: Exported lazily: they need the [langgraph] extra.
LAZY = {
    "AsyncTiDBSaver",
    "AsyncTiDBStore",
    "RetentionPolicy",
    "RetentionReport",
    "ThreadInfo",
    "ThreadPage",
    "TiDBSaver",
    "TiDBStore",
}


def test_all_is_pinned() -> None:
    assert sorted(tidb_memory.__all__) == EXPECTED_ALL
    assert len(set(tidb_memory.__all__)) == len(tidb_memory.__all__)


def test_every_exported_name_resolves() -> None:
    for name in EXPECTED_ALL:
        if name in LAZY and importlib.util.find_spec("langgraph") is None:
            continue
        assert getattr(tidb_memory, name) is not None, name


def test_the_langgraph_names_are_those_of_the_langgraph_package() -> None:
    import tidb_memory.langgraph as lg

    assert set(lg.__all__) <= LAZY
    for name in lg.__all__:
        assert getattr(tidb_memory, name) is getattr(lg, name), name
    assert tidb_memory.aerase_user is tidb_memory.erasure.aerase_user
    assert tidb_memory.erase_user is tidb_memory.erasure.erase_user


def test_the_core_import_does_not_import_langgraph() -> None:
    """The lazy names stay lazy: a chat-only app (no [langgraph] extra) imports the package
    and uses erasure without langgraph; touching a LangGraph name imports it."""
    code = (
        "import sys, tidb_memory\n"
        "assert tidb_memory.aerase_user and tidb_memory.ErasureReport\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] == 'langgraph')\n"
        "tidb_memory.RetentionPolicy\n"
        "print(before, 'langgraph' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[] True", out.stdout + out.stderr


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


def test_the_old_modules_are_shims_over_the_new_ones() -> None:
    """store, schema, history and migrate moved into tidb_memory.chat (and _types); for one
    release the old modules re-export the very same objects, not copies."""
    import tidb_memory._types as types
    import tidb_memory.chat._messages as messages
    import tidb_memory.chat._schema as chat_schema
    import tidb_memory.chat._sessions as sessions
    import tidb_memory.chat._sql as sql
    import tidb_memory.chat.history as chat_history
    import tidb_memory.chat.seed as seed
    import tidb_memory.history as old_history
    import tidb_memory.migrate as old_migrate
    import tidb_memory.schema as old_schema
    import tidb_memory.store as old_store

    moved = {
        old_store: (types, messages, sessions, sql, tidb_memory._checks),
        old_schema: (chat_schema,),
        old_history: (chat_history,),
        old_migrate: (seed,),
    }
    for shim, homes in moved.items():
        assert shim.__all__, shim.__name__
        for name in shim.__all__:
            obj = getattr(shim, name)
            home_name = "check_id" if name == "check_session_id" else name  # an alias of old
            assert any(getattr(home, home_name, None) is obj for home in homes), (shim, name)
    assert old_store.MessageStore is messages.MessageStore
    assert old_store.UNSET is types.UNSET
    assert old_store.read_statement is sql.read_statement
    assert old_store.check_session_id is tidb_memory._checks.check_id
    assert old_schema.MIGRATIONS is chat_schema.MIGRATIONS
    assert old_history.AsyncTiDBChatMessageHistory is chat_history.AsyncTiDBChatMessageHistory
    assert old_migrate.amigrate_seed_table is seed.amigrate_seed_table
    assert tidb_memory.AsyncTiDBChatMessageHistory is chat_history.AsyncTiDBChatMessageHistory
