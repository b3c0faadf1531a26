"""Shim: the message store moved to :mod:`tidb_memory.chat._messages`; kept for one release."""

from tidb_memory._checks import check_id as check_session_id
from tidb_memory._checks import to_utc as to_utc
from tidb_memory._types import DEFAULT_PAGE_SIZE as DEFAULT_PAGE_SIZE
from tidb_memory._types import MAX_PAGE_SIZE as MAX_PAGE_SIZE
from tidb_memory._types import MAX_SEQ as MAX_SEQ
from tidb_memory._types import UNSET as UNSET
from tidb_memory._types import MessageRecord as MessageRecord
from tidb_memory._types import ReadResult as ReadResult
from tidb_memory._types import ServerStatus as ServerStatus
from tidb_memory._types import SessionInfo as SessionInfo
from tidb_memory._types import SessionPage as SessionPage
from tidb_memory._types import _Unset as _Unset
from tidb_memory.chat._messages import MAX_SEQ_CONFLICTS as MAX_SEQ_CONFLICTS
from tidb_memory.chat._messages import MessageStore as MessageStore
from tidb_memory.chat._messages import trim_window as trim_window
from tidb_memory.chat._sessions import PURGE_BATCH as PURGE_BATCH
from tidb_memory.chat._sessions import TITLE_MAX_CHARS as TITLE_MAX_CHARS
from tidb_memory.chat._sql import CLEAR_BATCH as CLEAR_BATCH
from tidb_memory.chat._sql import clear_statement as clear_statement
from tidb_memory.chat._sql import delete_session_info_statement as delete_session_info_statement
from tidb_memory.chat._sql import duplicate_of as duplicate_of
from tidb_memory.chat._sql import insert_select_statement as insert_select_statement
from tidb_memory.chat._sql import insert_values_statement as insert_values_statement
from tidb_memory.chat._sql import list_sessions_statement as list_sessions_statement
from tidb_memory.chat._sql import purge_statement as purge_statement
from tidb_memory.chat._sql import read_statement as read_statement
from tidb_memory.chat._sql import records_statement as records_statement
from tidb_memory.chat._sql import restore_statement as restore_statement
from tidb_memory.chat._sql import scan_statement as scan_statement
from tidb_memory.chat._sql import session_info_statement as session_info_statement
from tidb_memory.chat._sql import set_session_statement as set_session_statement

__all__ = [
    "check_session_id",
    "to_utc",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_SEQ",
    "UNSET",
    "MessageRecord",
    "ReadResult",
    "ServerStatus",
    "SessionInfo",
    "SessionPage",
    "_Unset",
    "MAX_SEQ_CONFLICTS",
    "MessageStore",
    "trim_window",
    "PURGE_BATCH",
    "TITLE_MAX_CHARS",
    "CLEAR_BATCH",
    "clear_statement",
    "delete_session_info_statement",
    "duplicate_of",
    "insert_select_statement",
    "insert_values_statement",
    "list_sessions_statement",
    "purge_statement",
    "read_statement",
    "records_statement",
    "restore_statement",
    "scan_statement",
    "session_info_statement",
    "set_session_statement",
]
