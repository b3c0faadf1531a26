"""Erasure: one call that deletes everything tidb-memory holds about a user.

For "delete my data" requests: the user's chat sessions (messages and session info), their
LangGraph threads (checkpoints, writes, blobs and thread rows) and, through the same hook,
anything else that can erase by user (the LangGraph store, when it provides ``aerase_user``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidb_memory._bridge import BRIDGE
from tidb_memory._checks import check_id
from tidb_memory.errors import StorageError
from tidb_memory.history import SessionStore

__all__ = ["ErasureReport", "UserEraser", "aerase_user", "erase_user"]

#: Sessions deleted per listing page.
_PAGE = 100


class UserEraser(Protocol):
    """Anything that deletes a user's data and says how much: the hook :func:`aerase_user`
    calls on each of ``others`` (the saver has it; a store can add it)."""

    async def aerase_user(self, user_id: str) -> Any: ...


@dataclass
class ErasureReport:
    """What :func:`aerase_user` deleted."""

    sessions_deleted: int = 0
    messages_deleted: int = 0
    threads_deleted: int = 0
    checkpoints_deleted: int = 0
    #: What each of ``others`` returned, in order.
    others: list[Any] = field(default_factory=list)


async def aerase_user(
    user_id: str,
    *,
    sessions: SessionStore | Sequence[SessionStore] = (),
    savers: Sequence[Any] = (),
    others: Sequence[UserEraser] = (),
) -> ErasureReport:
    """Delete every session, thread and item of ``user_id``; returns the counts.

    Example::

        report = await aerase_user(
            "alice", sessions=SessionStore(url), savers=[AsyncTiDBSaver(url)]
        )
        print(report.messages_deleted, report.checkpoints_deleted)

    Sessions are found by their ``user_id`` (``aset_session_info``); threads by the saver's
    threads table (the ``user_id`` of their checkpoints' metadata, or ``aset_thread_info``).
    Each part is idempotent: after a failure, call it again.

    Raises:
        InvalidInputError: a bad user id, before anything is deleted.
        StorageError: a session could not be deleted.
    """
    user = check_id(user_id, "user_id")
    stores = [sessions] if isinstance(sessions, SessionStore) else list(sessions)
    report = ErasureReport()
    for store in stores:
        while True:
            page = await store.alist_sessions(user_id=user, limit=_PAGE)
            if not page.sessions:
                break
            for info in page.sessions:
                report.messages_deleted += await store.adelete_session(info.session_id)
                report.sessions_deleted += 1
            again = await store.alist_sessions(user_id=user, limit=_PAGE)
            if {s.session_id for s in again.sessions} & {s.session_id for s in page.sessions}:
                raise StorageError(
                    f"sessions of user {user!r} are still listed after their deletion",
                    operation="aerase_user",
                )
    for saver in savers:
        done = await saver.aerase_user(user)
        report.threads_deleted += done.threads_deleted
        report.checkpoints_deleted += done.checkpoints_deleted
    for other in others:
        report.others.append(await other.aerase_user(user))
    return report


def erase_user(
    user_id: str,
    *,
    sessions: SessionStore | Sequence[SessionStore] = (),
    savers: Sequence[Any] = (),
    others: Sequence[UserEraser] = (),
) -> ErasureReport:
    """Synchronous :func:`aerase_user`, through the shared bridge."""
    return BRIDGE.call(aerase_user, user_id, sessions=sessions, savers=savers, others=others)
