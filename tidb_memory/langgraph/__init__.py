"""LangGraph persistence on TiDB: the checkpointer (saver) and the long-term store."""

from .store import AsyncTiDBStore as AsyncTiDBStore
from .store import TiDBStore as TiDBStore
