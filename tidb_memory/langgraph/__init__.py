"""LangGraph persistence on TiDB: the checkpointer (saver) and the long-term store."""

from tidb_memory.langgraph.retention import RetentionPolicy as RetentionPolicy
from tidb_memory.langgraph.retention import RetentionReport as RetentionReport
from tidb_memory.langgraph.saver import AsyncTiDBSaver as AsyncTiDBSaver
from tidb_memory.langgraph.saver import TiDBSaver as TiDBSaver
from tidb_memory.langgraph.threads import ThreadInfo as ThreadInfo
from tidb_memory.langgraph.threads import ThreadPage as ThreadPage

__all__ = [
    "AsyncTiDBSaver",
    "RetentionPolicy",
    "RetentionReport",
    "ThreadInfo",
    "ThreadPage",
    "TiDBSaver",
]
