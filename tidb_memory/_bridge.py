"""The background event loop that synchronous callers cross into.

Every synchronous method of tidb-memory is one line: ``BRIDGE.call(self.a<verb>, ...)``. The
bridge runs one daemon thread with one asyncio loop, started on first use. A call from any thread
(a sync script, LangChain's executor threads, a notebook cell whose own loop is running) submits
the coroutine there and blocks until it is done. A call from the bridge's own thread would wait
for itself, so it raises :class:`~tidb_memory.SyncCallError` instead.

The loop is stopped at interpreter exit, after its pools are closed on it (``engine.close_all``
registers itself with ``atexit``); ``shutdown_asyncgens`` there disposes the engines the loop
owns.

A call is a :class:`_Call`: the caller blocks on a plain lock that the loop releases when the
task is done, and calls submitted while the loop is busy share one wake-up of the loop. That is
a third of what ``run_coroutine_threadsafe`` and a ``concurrent.futures.Future`` cost per call
(about 17 µs against 50 µs of CPU with 32 threads calling), which matters twice per chat turn.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from .errors import SyncCallError

__all__ = ["BRIDGE", "Bridge", "call_on"]

T = TypeVar("T")


class _State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"


class Bridge:
    """One background thread running one event loop, started lazily, restartable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State.IDLE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._inbox: _Inbox | None = None

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    def loop_or_none(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._state is _State.RUNNING and self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name="tidb-memory-bridge", daemon=True
            )
            thread.start()
            ready.wait()
            self._inbox = _Inbox(loop)
            self._loop, self._thread, self._state = loop, thread, _State.RUNNING
            return loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            # Closes the async generators left on the loop, among them the sentinel that
            # disposes this loop's pools (_process._loop_sentinel).
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the bridge loop and return its result."""
        inbox = self._inbox if self._state is _State.RUNNING else None
        if inbox is None:
            self._start()
            inbox = self._inbox
            assert inbox is not None
        if self._thread is threading.current_thread():
            raise SyncCallError(
                "a synchronous tidb-memory method was called from tidb-memory's own event loop; "
                "await its a-prefixed twin instead"
            )
        return _Call(fn(*args, **kwargs)).run(inbox)

    def stop(self) -> None:
        """Stop the loop and join its thread. Idempotent; a later :meth:`call` starts anew."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread, self._state = None, None, _State.IDLE
            self._inbox = None
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            raise SyncCallError("the bridge cannot be stopped from its own thread")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)

    def _forget(self) -> tuple[object, ...]:
        """In a forked child, where the thread does not exist: start over, and return the
        parent's loop, thread and pending calls for the caller to keep (``_process`` does,
        untouched)."""
        inherited = (self._loop, self._thread, self._inbox)
        self._lock = threading.Lock()
        self._loop, self._thread, self._state = None, None, _State.IDLE
        self._inbox = None
        return inherited


class _Call(Generic[T]):
    """One coroutine run on the bridge loop for a waiting thread."""

    __slots__ = ("_coro", "_done", "_error", "_result", "_task")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._done = threading.Lock()
        self._done.acquire()  # released by the loop when the call is over
        self._task: asyncio.Task[T] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: run the coroutine as a task."""
        if self._error is not None:  # cancelled before it started
            self._coro.close()
            self._done.release()
            return
        self._task = task = loop.create_task(self._coro)
        task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self._error = concurrent.futures.CancelledError()
        elif (error := task.exception()) is not None:
            self._error = error
        else:
            self._result = task.result()
        self._done.release()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        elif self._error is None:
            self._error = concurrent.futures.CancelledError()

    def run(self, inbox: _Inbox) -> T:
        """In the calling thread: submit the call and block until it is over; its result, or
        its error."""
        try:
            inbox.submit(self)
            self._done.acquire()
        except BaseException:
            # KeyboardInterrupt in the waiting thread: do not leave the work running.
            inbox.loop.call_soon_threadsafe(self._cancel)
            raise
        error = self._error
        if error is not None:
            self._error = None  # no reference cycle through the traceback
            raise error
        return self._result  # type: ignore[return-value]


class _Inbox:
    """Calls waiting for the bridge loop. The first call submitted while the loop is not yet
    due to look wakes it; the ones that follow before it looks ride along."""

    __slots__ = ("_armed", "_calls", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: collections.deque[_Call[Any]] = collections.deque()
        self._armed = False

    def submit(self, call: _Call[Any]) -> None:
        self._calls.append(call)
        if not self._armed:
            self._armed = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Disarm first: a call appended from now on is either drained below or arms anew.
        self._armed = False
        calls, loop = self._calls, self.loop
        while calls:
            calls.popleft().start(loop)


def _wait(future: concurrent.futures.Future[T]) -> T:
    try:
        return future.result()
    except BaseException:
        # KeyboardInterrupt or a timeout in the waiting thread: do not leave the work running.
        future.cancel()
        raise


def call_on(
    loop: asyncio.AbstractEventLoop,
    fn: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """Run ``fn(*args, **kwargs)`` on another thread's running ``loop`` and wait for it."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise SyncCallError(
            "a synchronous tidb-memory method was called on the event loop that owns its "
            "engine; await its a-prefixed twin instead"
        )
    if loop.is_closed() or not loop.is_running():
        raise SyncCallError(
            "the event loop that owns this engine is not running; pass a connection URL "
            "instead of an engine to use tidb-memory from synchronous code"
        )
    return _wait(asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), loop))


BRIDGE = Bridge()
