"""LangGraph persistence on TiDB: the checkpointer (saver) and the long-term store."""
