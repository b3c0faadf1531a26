"""Chat memory: LangChain chat message histories and their sessions, on one message table.

The doors are :mod:`.history` (``AsyncTiDBChatMessageHistory``, ``TiDBChatMessageHistory``,
``SessionStore``) and :mod:`.seed` (``tidb-memory migrate``). Behind them: the tables and their
versions (``_schema``), the statements (``_sql``), the message store (``_messages``) and its
session operations (``_sessions``). The public names are re-exported by :mod:`tidb_memory`;
this package re-exports nothing, so that importing one of its modules imports no other.
"""
