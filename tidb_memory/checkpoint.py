"""Compatibility shim: the saver lives in :mod:`tidb_memory.langgraph` now.

``from tidb_memory.checkpoint import AsyncTiDBSaver`` keeps working for one release.
"""

from tidb_memory.langgraph.saver import (
    DEFAULT_CHECKPOINT_PREFIX as DEFAULT_CHECKPOINT_PREFIX,
)
from tidb_memory.langgraph.saver import (
    DEFAULT_DELETE_BATCH as DEFAULT_DELETE_BATCH,
)
from tidb_memory.langgraph.saver import (
    DEFAULT_LIST_PAGE_SIZE as DEFAULT_LIST_PAGE_SIZE,
)
from tidb_memory.langgraph.saver import (
    DEFAULT_MAX_BLOB_BYTES as DEFAULT_MAX_BLOB_BYTES,
)
from tidb_memory.langgraph.saver import MIGRATIONS as MIGRATIONS
from tidb_memory.langgraph.saver import AsyncTiDBSaver as AsyncTiDBSaver
from tidb_memory.langgraph.saver import CheckpointTooLargeError as CheckpointTooLargeError
from tidb_memory.langgraph.saver import TiDBSaver as TiDBSaver

__all__ = [
    "DEFAULT_CHECKPOINT_PREFIX",
    "DEFAULT_DELETE_BATCH",
    "DEFAULT_LIST_PAGE_SIZE",
    "DEFAULT_MAX_BLOB_BYTES",
    "MIGRATIONS",
    "AsyncTiDBSaver",
    "CheckpointTooLargeError",
    "TiDBSaver",
]
