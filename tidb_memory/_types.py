"""The public records: what reads return, session summaries and their pages, ServerStatus, UNSET.

Plain frozen dataclasses, no I/O. The chat store (:mod:`tidb_memory.chat`) builds them; the
package re-exports the public ones. Beside them live the two forms they travel in: the stored
UTC time text (one form for both backends) and the opaque cursor of a :class:`SessionPage`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from langchain_core.messages import BaseMessage

from .errors import InvalidInputError, StorageError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_SEQ",
    "UNSET",
    "MessageRecord",
    "ReadResult",
    "ServerStatus",
    "SessionInfo",
    "SessionPage",
]

#: Records or sessions per page when no limit is given.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 10_000
#: The largest seq a BIGINT (and SQLite's INTEGER) holds.
MAX_SEQ = 2**63 - 1


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field as it is" for :meth:`MessageStore.aset_session_info`.
UNSET: Final = _Unset()


def _timestamp(value: datetime) -> str:
    # One text form for both backends: MySQL parses it into DATETIME(6), and on SQLite the
    # fixed width makes text order equal time order.
    return value.isoformat(" ", "microseconds")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _from_db_time(value: Any) -> datetime:
    """A stored UTC timestamp (a datetime from MySQL, text from SQLite), timezone-aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise StorageError(f"unexpected timestamp {value!r}", operation="read")
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A session read: its messages in order, and the seq of the last one (``None`` if empty)."""

    messages: list[BaseMessage]
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored message with what the store keeps beside it.

    Attributes:
        seq: its position in the session (use it as the ``before`` cursor of the next page).
        created_at: when it was stored, timezone-aware UTC.
        message: the message, exactly as appended.
        metadata: the per-message metadata given at append time, or ``None``.
    """

    seq: int
    created_at: datetime
    message: BaseMessage
    metadata: Any


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's summary: activity from its messages, the rest from ``aset_session_info``."""

    session_id: str
    message_count: int
    first_activity: datetime | None
    last_activity: datetime | None
    user_id: str | None = None
    title: str | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of sessions, most recently active first; pass ``next_cursor`` for the next."""

    sessions: list[SessionInfo]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What :meth:`MessageStore.astatus` found (``tidb-memory doctor`` prints it).

    Attributes:
        backend: ``"mysql"`` (MySQL, MariaDB, TiDB) or ``"sqlite"``.
        server_version: ``VERSION()``, or SQLite's library version.
        tidb: the server is TiDB.
        tls_cipher: the TLS cipher this client's connection negotiated, read from its own
            socket (not the server's ``Ssl_cipher``); ``None`` in plaintext and on SQLite.
        layout: the table's layout: ``"current"``, ``"missing"`` (created on first use),
            ``"seed"`` (langchain-community's: run ``tidb-memory migrate``) or ``"foreign"``.
        schema_version: the newest schema version recorded for the table, if any.
        latency_ms: the median round trip of ``SELECT 1``, in milliseconds.
        tls_version: the TLS protocol of that connection (``"TLSv1.3"``); ``None`` in
            plaintext and on SQLite.
    """

    backend: str
    server_version: str
    tidb: bool
    tls_cipher: str | None
    layout: str
    schema_version: int | None
    latency_ms: float
    tls_version: str | None = None


def _encode_cursor(last_activity: datetime, session_id: str) -> str:
    raw = f"{_timestamp(last_activity.replace(tzinfo=None))}\t{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        stamp, session_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("\t", 1)
        datetime.fromisoformat(stamp)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise InvalidInputError("cursor is not one that alist_sessions returned") from exc
    return stamp, session_id
