"""Shim: the history classes moved to :mod:`tidb_memory.chat.history`; kept for one release."""

from tidb_memory.chat.history import DEFAULT_SQLITE_URL as DEFAULT_SQLITE_URL
from tidb_memory.chat.history import AsyncTiDBChatMessageHistory as AsyncTiDBChatMessageHistory
from tidb_memory.chat.history import SessionStore as SessionStore
from tidb_memory.chat.history import TiDBChatMessageHistory as TiDBChatMessageHistory
from tidb_memory.chat.history import default_url as default_url

__all__ = [
    "DEFAULT_SQLITE_URL",
    "AsyncTiDBChatMessageHistory",
    "SessionStore",
    "TiDBChatMessageHistory",
    "default_url",
]
