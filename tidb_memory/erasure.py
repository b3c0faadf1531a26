"""Erasure: one call that deletes everything tidb-memory holds about a user.

For "delete my data" requests: the user's chat sessions (messages and session info), their
LangGraph threads (checkpoints, writes, blobs and thread rows), their items in LangGraph stores
(every item under the namespaces the caller names, such as ``("memories", user_id)``) and,
through the :class:`UserEraser` hook, anything else that can erase by user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidb_memory._bridge import BRIDGE
from tidb_memory._checks import check_id
from tidb_memory.chat.sessions import SessionStore
from tidb_memory.errors import InvalidInputError, StorageError

__all__ = ["ErasureReport", "NamespaceEraser", "UserEraser", "aerase_user", "erase_user"]

#: Sessions deleted per listing page.
_PAGE = 100


class UserEraser(Protocol):
    """Anything that deletes a user's data and says how much: the hook :func:`aerase_user`
    calls on each of ``others`` (the saver has it)."""

    async def aerase_user(self, user_id: str) -> Any: ...


class NamespaceEraser(Protocol):
    """A store that deletes every item under a namespace and counts them
    (:class:`~tidb_memory.AsyncTiDBStore` is one)."""

    async def adelete_namespace(self, namespace: tuple[str, ...]) -> int: ...


@dataclass
class ErasureReport:
    """What :func:`aerase_user` deleted."""

    sessions_deleted: int = 0
    messages_deleted: int = 0
    threads_deleted: int = 0
    checkpoints_deleted: int = 0
    #: Store items, over every namespace of every store.
    items_deleted: int = 0
    #: What each of ``others`` returned, in order.
    others: list[Any] = field(default_factory=list)


async def aerase_user(
    user_id: str,
    *,
    sessions: SessionStore | Sequence[SessionStore] = (),
    savers: Sequence[Any] = (),
    stores: NamespaceEraser | Sequence[NamespaceEraser] = (),
    namespaces: Sequence[tuple[str, ...]] = (),
    others: Sequence[UserEraser] = (),
) -> ErasureReport:
    """Delete every session, thread and store item of ``user_id``; returns the counts.

    Example::

        report = await aerase_user(
            "alice",
            sessions=SessionStore(url),
            savers=[AsyncTiDBSaver(url)],
            stores=[AsyncTiDBStore(url)],
            namespaces=[("memories", "alice"), ("profile", "alice")],
        )
        print(report.messages_deleted, report.checkpoints_deleted, report.items_deleted)

    Sessions are found by their ``user_id`` (``aset_session_info``); threads by the saver's
    threads table (the ``user_id`` of their checkpoints' metadata, or ``aset_thread_info``);
    store items by ``namespaces``: each store loses every item in each of them and below it.
    A store cannot tell which namespaces are a user's, so each one must carry ``user_id`` as a
    label: ``("memories",)`` would erase everyone's memories, and is refused.
    Each part is idempotent: after a failure, call it again.

    Raises:
        InvalidInputError: a bad user id; a namespace that is malformed or does not carry the
            user id; stores without namespaces or namespaces without stores. All before
            anything is deleted.
        StorageError: a session could not be deleted.
    """
    user = check_id(user_id, "user_id")
    item_stores = _item_stores(stores)
    spaces = _user_namespaces(user, namespaces, have_stores=bool(item_stores))
    chats = [sessions] if isinstance(sessions, SessionStore) else list(sessions)
    report = ErasureReport()
    for chat in chats:
        while True:
            page = await chat.alist_sessions(user_id=user, limit=_PAGE)
            if not page.sessions:
                break
            for info in page.sessions:
                report.messages_deleted += await chat.adelete_session(info.session_id)
                report.sessions_deleted += 1
            again = await chat.alist_sessions(user_id=user, limit=_PAGE)
            if {s.session_id for s in again.sessions} & {s.session_id for s in page.sessions}:
                raise StorageError(
                    f"sessions of user {user!r} are still listed after their deletion",
                    operation="aerase_user",
                )
    for saver in savers:
        done = await saver.aerase_user(user)
        report.threads_deleted += done.threads_deleted
        report.checkpoints_deleted += done.checkpoints_deleted
    for store in item_stores:
        for namespace in spaces:
            report.items_deleted += await store.adelete_namespace(namespace)
    for other in others:
        report.others.append(await other.aerase_user(user))
    return report


def erase_user(
    user_id: str,
    *,
    sessions: SessionStore | Sequence[SessionStore] = (),
    savers: Sequence[Any] = (),
    stores: NamespaceEraser | Sequence[NamespaceEraser] = (),
    namespaces: Sequence[tuple[str, ...]] = (),
    others: Sequence[UserEraser] = (),
) -> ErasureReport:
    """Synchronous :func:`aerase_user`, through the shared bridge."""
    return BRIDGE.call(
        aerase_user,
        user_id,
        sessions=sessions,
        savers=savers,
        stores=stores,
        namespaces=namespaces,
        others=others,
    )


def _item_stores(stores: object) -> list[NamespaceEraser]:
    one = hasattr(stores, "adelete_namespace")
    found: list[Any] = [stores] if one else list(stores)  # type: ignore[call-overload]
    for store in found:
        if not hasattr(store, "adelete_namespace"):
            raise InvalidInputError(f"stores must be AsyncTiDBStore, not {type(store).__name__}")
    return found


def _user_namespaces(
    user: str, namespaces: Sequence[tuple[str, ...]], *, have_stores: bool
) -> list[tuple[str, ...]]:
    """``namespaces``, checked as the store checks them, each carrying the user's id."""
    found = list(namespaces)
    if have_stores != bool(found):
        raise InvalidInputError(
            "stores and namespaces go together: name the namespaces that hold the user's "
            f"items, such as namespaces=[('memories', {user!r})]"
        )
    if not found:
        return []
    # Only reached with a store, so the [langgraph] extra is installed.
    from tidb_memory.langgraph._store_plan import check_ns

    for namespace in found:
        if user not in check_ns(namespace, what="namespace"):
            raise InvalidInputError(
                f"namespace {namespace!r} does not carry the user id {user!r} as a label; "
                "erasure deletes only namespaces of that user"
            )
    return found
