"""What tidb-memory holds per process: the shared :class:`~tidb_memory.engine.Database` handles,
on each event loop an engine per handle (disposed when that loop shuts down), the tables already
set up, and the one fork hook that gives a forked child a fresh start.

A forked child (gunicorn ``--preload``, Celery prefork, ``multiprocessing``) inherits copies of
the parent's loops, pools and sockets. It must never use them, nor close them: the child's copy of
a loop shares the parent's epoll set, so closing an inherited connection there unregisters the
parent's socket, and the parent then waits out its read timeout for a reply that did arrive. So
:func:`_after_fork_in_child` empties every registry and keeps what was in it, untouched, for the
life of the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from . import _bridge
from ._idle import IdleConnections
from ._tls import wait_closed

if TYPE_CHECKING:
    from .engine import Database

__all__: list[str] = []


@dataclass(eq=False)
class _LoopResources:
    """Everything tidb-memory holds on one event loop: an engine per Database key, and the idle
    connections of each (not of an engine the application passed in)."""

    loop: asyncio.AbstractEventLoop
    engines: dict[str, AsyncEngine] = field(default_factory=dict)
    idle: dict[str, IdleConnections] = field(default_factory=dict)
    #: The process that opened them: only it may close them.
    pid: int = field(default_factory=os.getpid)
    sentinel: AsyncGenerator[None, None] | None = None
    #: TLS transports of the connections opened here, to wait for their close handshake.
    tls: weakref.WeakSet[asyncio.BaseTransport] = field(default_factory=weakref.WeakSet)


_registry_lock = threading.Lock()
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = (
    weakref.WeakKeyDictionary()
)


def track_tls(transport: asyncio.BaseTransport) -> None:
    """Remember a TLS connection's ``transport`` on the running loop (see :func:`_dispose`)."""
    resources = _loops.get(asyncio.get_running_loop())
    if resources is not None:
        resources.tls.add(transport)


async def _dispose(
    engine: AsyncEngine, resources: _LoopResources, idle: IdleConnections | None
) -> None:
    """Dispose of ``engine``'s pool on its own loop, and let its TLS connections finish closing.
    Its ``idle`` connections go back into the pool first, which closes them."""
    if idle is not None:
        await idle.aclose()
    await engine.dispose()
    await wait_closed(resources.tls)


async def _dispose_all(resources: _LoopResources) -> None:
    engines = list(resources.engines.items())
    resources.engines.clear()
    for key, engine in engines:
        with contextlib.suppress(Exception):
            await _dispose(engine, resources, resources.idle.pop(key, None))


async def _loop_sentinel(resources: _LoopResources) -> AsyncGenerator[None, None]:
    # An async generator left suspended on the loop: the loop closes it in shutdown_asyncgens()
    # (asyncio.run, Runner.close, pytest-asyncio), while it can still run coroutines. That is
    # the last moment the loop's connections can be closed cleanly, without "Event loop is
    # closed" noise when they are collected later.
    # A forked child that goes on running the parent's loop (it forked inside a coroutine and
    # let it finish) shuts that loop down too: the connections are the parent's, leave them.
    try:
        yield
    finally:
        if resources.pid == os.getpid():
            with _registry_lock:
                _loops.pop(resources.loop, None)
            await _dispose_all(resources)


async def _resources_for(loop: asyncio.AbstractEventLoop) -> _LoopResources:
    resources = _loops.get(loop)
    if resources is not None:
        return resources
    with _registry_lock:
        resources = _loops.get(loop)
        if resources is None:
            resources = _LoopResources(loop)
            _loops[loop] = resources
            created = True
        else:
            created = False
    if created:
        sentinel = _loop_sentinel(resources)
        resources.sentinel = sentinel
        await sentinel.__anext__()
    return resources


_databases_lock = threading.Lock()
_databases: dict[str, Database] = {}


class _Holder(Protocol):
    def _forget_process(self) -> object: ...


#: Objects with per-process state of their own (a LangGraph store's write groups and TTL
#: sweeper), registered by :func:`forget_at_fork`.
_holders: weakref.WeakSet[_Holder] = weakref.WeakSet()


def forget_at_fork(holder: _Holder) -> None:
    """Have a forked child call ``holder._forget_process()``, which drops the parent's state
    and returns it (the hook keeps it, untouched)."""
    _holders.add(holder)


#: The tables set up in this process, as ``(database key, table)``.
_done: set[tuple[str, str]] = set()

#: What a forked child inherited from its parent, held and never touched (see the module docs).
_inherited: list[object] = []
_inherited_pinned = False


def _keep_forever(state: object) -> None:
    """Hold ``state`` until the process ends, past interpreter shutdown too.

    Shutdown clears module globals, which would finalize what the list holds: aiomysql's
    ``Connection.__del__`` closes its transport, and that unregisters the parent's socket. So the
    list gets one reference that is never given back (CPython's ``Py_IncRef``): it is never freed.
    """
    global _inherited_pinned
    _inherited.append(state)
    if not _inherited_pinned:
        import ctypes

        with contextlib.suppress(AttributeError):  # no ctypes.pythonapi (not CPython)
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(_inherited))
        _inherited_pinned = True


def _after_fork_in_child() -> None:
    """Start the child with every registry empty; keep the parent's state out of reach."""
    global _registry_lock, _databases_lock
    # A lock another thread of the parent held at the fork stays held forever in the child.
    _registry_lock = threading.Lock()
    _databases_lock = threading.Lock()
    _keep_forever(list(_loops.items()))
    _loops.clear()
    _keep_forever([db._forget_process() for db in _databases.values()])
    _keep_forever([holder._forget_process() for holder in list(_holders)])
    _keep_forever(_bridge.BRIDGE._forget())
    _done.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
