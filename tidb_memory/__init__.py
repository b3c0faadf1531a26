"""tidb-memory: async-first LangChain chat memory on TiDB and MySQL.

Example::

    from tidb_memory import AsyncTiDBChatMessageHistory

    history = AsyncTiDBChatMessageHistory("s1", "mysql+aiomysql://root@127.0.0.1:3306/test")
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
    await history.aget_messages()
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._retry import DEFAULT_RETRY_POLICY as DEFAULT_RETRY_POLICY
from ._retry import RetryPolicy as RetryPolicy
from ._types import UNSET as UNSET
from ._types import MessageRecord as MessageRecord
from ._types import SessionInfo as SessionInfo
from ._types import SessionPage as SessionPage
from ._url import DEFAULT_SQLITE_URL as DEFAULT_SQLITE_URL
from ._url import default_url as default_url
from .chat._schema import DEFAULT_TABLE_NAME as DEFAULT_TABLE_NAME
from .chat.history import AsyncTiDBChatMessageHistory as AsyncTiDBChatMessageHistory
from .chat.history import TiDBChatMessageHistory as TiDBChatMessageHistory
from .chat.sessions import SessionStore as SessionStore
from .codec import DEFAULT_MAX_MESSAGE_BYTES as DEFAULT_MAX_MESSAGE_BYTES
from .engine import aclose_all as aclose_all
from .engine import close_all as close_all
from .engine import create_engine as create_engine
from .erasure import ErasureReport as ErasureReport
from .erasure import aerase_user as aerase_user
from .erasure import erase_user as erase_user
from .errors import ConfigurationError as ConfigurationError
from .errors import ConnectError as ConnectError
from .errors import InsecureTransportError as InsecureTransportError
from .errors import InvalidInputError as InvalidInputError
from .errors import MessageTooLargeError as MessageTooLargeError
from .errors import PoolTimeoutError as PoolTimeoutError
from .errors import RetriesExhaustedError as RetriesExhaustedError
from .errors import SchemaError as SchemaError
from .errors import StorageError as StorageError
from .errors import SyncCallError as SyncCallError
from .errors import TiDBMemoryError as TiDBMemoryError

if TYPE_CHECKING:
    from .checkpoint import AsyncTiDBSaver as AsyncTiDBSaver
    from .checkpoint import TiDBSaver as TiDBSaver
    from .langgraph.retention import RetentionPolicy as RetentionPolicy
    from .langgraph.retention import RetentionReport as RetentionReport
    from .langgraph.store import AsyncTiDBStore as AsyncTiDBStore
    from .langgraph.store import TiDBStore as TiDBStore
    from .langgraph.threads import ThreadInfo as ThreadInfo
    from .langgraph.threads import ThreadPage as ThreadPage

try:
    __version__ = version("tidb-memory")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
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


#: The LangGraph names and their modules: in the [langgraph] extra, imported (with langgraph)
#: only when asked for, so that the core install never needs langgraph.
_LANGGRAPH = {
    "AsyncTiDBSaver": ".checkpoint",
    "TiDBSaver": ".checkpoint",
    "AsyncTiDBStore": ".langgraph.store",
    "TiDBStore": ".langgraph.store",
    "RetentionPolicy": ".langgraph.retention",
    "RetentionReport": ".langgraph.retention",
    "ThreadInfo": ".langgraph.threads",
    "ThreadPage": ".langgraph.threads",
}


def __getattr__(name: str) -> Any:
    module = _LANGGRAPH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"tidb_memory.{name} needs LangGraph: pip install 'tidb-memory[langgraph]'"
        ) from exc
