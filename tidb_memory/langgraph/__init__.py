"""LangGraph persistence on TiDB: the checkpointer (saver) and the long-term store."""

from tidb_memory.langgraph.saver import AsyncTiDBSaver as AsyncTiDBSaver
from tidb_memory.langgraph.saver import TiDBSaver as TiDBSaver
from tidb_memory.langgraph.store import AsyncTiDBStore as AsyncTiDBStore
from tidb_memory.langgraph.store import TiDBStore as TiDBStore

__all__ = ["AsyncTiDBSaver", "AsyncTiDBStore", "TiDBSaver", "TiDBStore"]
