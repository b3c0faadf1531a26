"""LangGraph persistence on TiDB: the checkpointer (saver) and the long-term store."""

from tidb_memory.langgraph.saver import AsyncTiDBSaver as AsyncTiDBSaver
from tidb_memory.langgraph.saver import TiDBSaver as TiDBSaver

__all__ = ["AsyncTiDBSaver", "TiDBSaver"]
