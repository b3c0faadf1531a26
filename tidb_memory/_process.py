"""What tidb-memory holds per process: the shared :class:`~tidb_memory.engine.Database` handles,
and on each event loop an engine per handle, disposed when that loop shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

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
    try:
        yield
    finally:
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
