"""Shim: the seed conversion moved to :mod:`tidb_memory.chat.seed`; kept for one release."""

from tidb_memory.chat.seed import DEFAULT_BATCH as DEFAULT_BATCH
from tidb_memory.chat.seed import MAX_BATCH_BYTES as MAX_BATCH_BYTES
from tidb_memory.chat.seed import MigrationReport as MigrationReport
from tidb_memory.chat.seed import ProgressCallback as ProgressCallback
from tidb_memory.chat.seed import amigrate_seed_table as amigrate_seed_table
from tidb_memory.chat.seed import convert_message as convert_message
from tidb_memory.chat.seed import seed_key as seed_key

__all__ = [
    "DEFAULT_BATCH",
    "MAX_BATCH_BYTES",
    "MigrationReport",
    "ProgressCallback",
    "amigrate_seed_table",
    "convert_message",
    "seed_key",
]
