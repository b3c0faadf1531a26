"""LangGraph persistence on TiDB: the checkpointer (saver) and the long-term store."""

from tidb_memory.langgraph.retention import RetentionPolicy as RetentionPolicy
from tidb_memory.langgraph.retention import RetentionReport as RetentionReport
from tidb_memory.langgraph.saver import AsyncTiDBSaver as AsyncTiDBSaver
from tidb_memory.langgraph.saver import TiDBSaver as TiDBSaver
from tidb_memory.langgraph.store import AsyncTiDBStore as AsyncTiDBStore
from tidb_memory.langgraph.store import TiDBStore as TiDBStore
from tidb_memory.langgraph.threads import ThreadInfo as ThreadInfo
from tidb_memory.langgraph.threads import ThreadPage as ThreadPage

__all__ = [
    "AsyncTiDBSaver",
    "AsyncTiDBStore",
    "RetentionPolicy",
    "RetentionReport",
    "ThreadInfo",
    "ThreadPage",
    "TiDBSaver",
    "TiDBStore",
]
