"""Shim: the chat schema moved to :mod:`tidb_memory.chat._schema`; kept for one release."""

from tidb_memory.chat._schema import COLUMNS as COLUMNS
from tidb_memory.chat._schema import DEFAULT_TABLE_NAME as DEFAULT_TABLE_NAME
from tidb_memory.chat._schema import MIGRATIONS as MIGRATIONS
from tidb_memory.chat._schema import MIGRATIONS_TABLE as MIGRATIONS_TABLE
from tidb_memory.chat._schema import MSG_KEY_INDEX as MSG_KEY_INDEX
from tidb_memory.chat._schema import SCHEMA_VERSION as SCHEMA_VERSION
from tidb_memory.chat._schema import SEED_COLUMNS as SEED_COLUMNS
from tidb_memory.chat._schema import SESSIONS_TABLE as SESSIONS_TABLE
from tidb_memory.chat._schema import Migration as Migration
from tidb_memory.chat._schema import _done as _done
from tidb_memory.chat._schema import _record_version_statement as _record_version_statement
from tidb_memory.chat._schema import applied_versions as applied_versions
from tidb_memory.chat._schema import check_layout as check_layout
from tidb_memory.chat._schema import check_table_name as check_table_name
from tidb_memory.chat._schema import check_ttl as check_ttl
from tidb_memory.chat._schema import create_table_statements as create_table_statements
from tidb_memory.chat._schema import describe_layout as describe_layout
from tidb_memory.chat._schema import ensure_schema as ensure_schema
from tidb_memory.chat._schema import forget as forget
from tidb_memory.chat._schema import quote as quote
from tidb_memory.chat._schema import table_columns as table_columns
from tidb_memory.chat._schema import ttl_clause as ttl_clause

__all__ = [
    "COLUMNS",
    "DEFAULT_TABLE_NAME",
    "MIGRATIONS",
    "MIGRATIONS_TABLE",
    "MSG_KEY_INDEX",
    "SCHEMA_VERSION",
    "SEED_COLUMNS",
    "SESSIONS_TABLE",
    "Migration",
    "_done",
    "_record_version_statement",
    "applied_versions",
    "check_layout",
    "check_table_name",
    "check_ttl",
    "create_table_statements",
    "describe_layout",
    "ensure_schema",
    "forget",
    "quote",
    "table_columns",
    "ttl_clause",
]
