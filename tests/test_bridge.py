"""The bridge that runs sync callers' coroutines on the background loop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tidb_memory._bridge import BRIDGE


def test_many_threads_get_their_own_results_and_errors() -> None:
    async def echo(value: int) -> int:
        await asyncio.sleep(0)
        if value % 7 == 0:
            raise ValueError(value)
        return value

    def caller(thread: int) -> list[object]:
        out: list[object] = []
        for i in range(300):
            value = thread * 1000 + i
            try:
                out.append(BRIDGE.call(echo, value))
            except ValueError as exc:
                out.append(("error", exc.args[0]))
        return out

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(caller, range(32)))
    for thread, out in enumerate(results):
        expected = [
            ("error", v) if v % 7 == 0 else v for v in (thread * 1000 + i for i in range(300))
        ]
        assert out == expected


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_an_interrupted_sync_call_cancels_its_work() -> None:
    """Ctrl-C in the waiting thread must not leave the coroutine running on the loop."""
    cancelled = threading.Event()
    started = threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt() -> None:
        assert started.wait(10)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        BRIDGE.call(slow)
    assert time.monotonic() - began < 10
    assert cancelled.wait(10)
    assert BRIDGE.call(asyncio.sleep, 0, "still works") == "still works"
