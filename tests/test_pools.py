"""Pools: idle connections the server closed, TiDB Cloud's recycle default, exhaustion."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pymysql
import pytest
from conftest import mysql_params
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy.engine import make_url

import tidb_memory
from tests.append_checker import RetryCounter
from tests.infra import FaultProxy, ThrowawayMariaDB
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    PoolTimeoutError,
    TiDBChatMessageHistory,
)
from tidb_memory.engine import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_RECYCLE,
    DEFAULT_POOL_SIZE,
    TIDB_CLOUD_POOL_RECYCLE,
    get_database,
)

MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
CLOUD_URL = (
    "mysql+pymysql://3pTAoNNegb47Uc8.root:pw@gateway01.us-west-2.prod.aws.tidbcloud.com:4000/test"
)


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


@pytest.fixture
def table() -> Iterator[str]:
    name = "pools_" + uuid.uuid4().hex[:12]
    yield name
    url = make_url(MYSQL_URL)
    conn = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
        database=url.database, autocommit=True,
    )  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
    finally:
        conn.close()


# --- idle connections closed by the server -------------------------------------------------


@pytest.mark.slow
async def test_idle_connection_closed_by_server_is_recovered(closing: None) -> None:
    with ThrowawayMariaDB(wait_timeout=2) as server:
        history = AsyncTiDBChatMessageHistory("idle", server.url, table_name="idle")
        await history.aadd_messages([HumanMessage("before the nap")])
        assert [m.content for m in await history.aget_messages()] == ["before the nap"]
        db = history.store.db
        _pool, idle = await db._source()
        assert idle is not None and len(idle) >= 1  # an idle connection the server will close

        await asyncio.sleep(3.2)  # past wait_timeout=2: the server has closed it
        counter = RetryCounter()
        with counter.installed():
            await history.aadd_messages([AIMessage("after the nap")])
            messages = await history.aget_messages()
        assert [m.content for m in messages] == ["before the nap", "after the nap"]
        # It really was a dead connection, and the retry dropped it rather than failing.
        assert counter.by_kind.get("disconnect", 0) >= 1, counter.by_kind


@pytest.mark.slow
def test_idle_connection_recovered_from_sync_code() -> None:
    with ThrowawayMariaDB(wait_timeout=2) as server:
        history = TiDBChatMessageHistory("idle-sync", server.url, table_name="idle")
        try:
            history.add_messages([HumanMessage("one")])
            time.sleep(3.2)
            history.add_messages([AIMessage("two")])
            assert [m.content for m in history.messages] == ["one", "two"]
        finally:
            history.close()


# --- pool_recycle on TiDB Cloud ------------------------------------------------------------


async def test_tidb_cloud_hosts_recycle_every_five_minutes(closing: None) -> None:
    assert TIDB_CLOUD_POOL_RECYCLE == 300
    db = get_database(CLOUD_URL)
    assert db._engine_kwargs["pool_recycle"] == 300
    engine = await db.engine()  # builds the engine and pool, connects nothing
    assert engine.sync_engine.pool._recycle == 300
    # TiDB Cloud also gets verified TLS without asking for it in the URL.
    assert db.spec.tidb_cloud and db.spec.tls is not None
    context = db.spec.tls.context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert engine.sync_engine.pool.checkedout() == 0


async def test_other_hosts_keep_the_general_default_and_explicit_values_win(
    closing: None,
) -> None:
    local = get_database("mysql+aiomysql://root@127.0.0.1:3306/test")
    assert local._engine_kwargs["pool_recycle"] == DEFAULT_POOL_RECYCLE
    assert (await local.engine()).sync_engine.pool._recycle == DEFAULT_POOL_RECYCLE
    # A look-alike host is not TiDB Cloud.
    fake = get_database("mysql+aiomysql://root@tidbcloud.com.example.org:4000/test")
    assert fake._engine_kwargs["pool_recycle"] == DEFAULT_POOL_RECYCLE
    mine = get_database(CLOUD_URL, engine_args={"pool_recycle": 60})
    assert mine._engine_kwargs["pool_recycle"] == 60
    assert (await mine.engine()).sync_engine.pool._recycle == 60


# --- pool exhaustion -----------------------------------------------------------------------

TINY_POOL = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}


async def test_pool_exhaustion_is_a_quick_clear_error(table: str, closing: None) -> None:
    history = AsyncTiDBChatMessageHistory(
        "exhaust", MYSQL_URL, table_name=table, engine_args=TINY_POOL
    )
    await history.aadd_messages([HumanMessage("hi")])  # table set up, pool warm
    db = history.store.db
    async with db.connection():  # the only connection, held
        started = time.monotonic()
        async with asyncio.timeout(10):  # "never hangs"
            results = await asyncio.gather(
                history.aget_messages(),
                history.aadd_messages([HumanMessage("blocked")]),
                history.aclear(),
                return_exceptions=True,
            )
        elapsed = time.monotonic() - started
    assert all(isinstance(r, PoolTimeoutError) for r in results), results
    assert elapsed < 3.0, elapsed  # the pool timeout, not a retry loop
    err = results[0]
    assert isinstance(err, PoolTimeoutError)
    assert err.attempts == 1
    assert "pool_size" in str(err) and "max_overflow" in str(err)
    # Nothing of the refused calls happened, and the pool works again once released.
    assert [m.content for m in await history.aget_messages()] == ["hi"]


# --- closing pools whose connections the network already reset ---------------------------


@pytest.mark.slow
async def test_closing_pools_after_the_network_died_leaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with ThrowawayMariaDB() as server:
        async with FaultProxy(server.host, server.port) as proxy:
            histories = [
                AsyncTiDBChatMessageHistory(f"reset-{i}", proxy.url(), table_name="reset")
                for i in range(5)
            ]
            await asyncio.gather(*(h.aadd_messages([HumanMessage("x")]) for h in histories))
        # The proxy is gone: every pooled connection has been reset under the pool's feet.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with caplog.at_level(logging.DEBUG):
                await tidb_memory.aclose_all()
            gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == [], [str(w.message) for w in leaked]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_statement_that_outlives_read_timeout_fails_and_frees_its_connection() -> None:
    """aiomysql has no read timeout: without ours, a silent peer would hang the call forever."""
    import time

    from tidb_memory.engine import get_database

    db = get_database(MYSQL_URL + "?read_timeout=0.5")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with db.connection() as conn:
            await conn.fetchall("SELECT SLEEP(5)", ())
    assert time.monotonic() - started < 3
    async with db.connection() as conn:  # the pool hands out a working connection again
        assert await conn.fetchall("SELECT 1", ()) == [(1,)]
    await db.aclose()


def test_read_timeout_is_parsed_and_checked() -> None:
    from tidb_memory import ConfigurationError
    from tidb_memory.engine import DEFAULT_READ_TIMEOUT, parse_url

    assert parse_url("mysql://u@h/db").read_timeout == DEFAULT_READ_TIMEOUT
    assert parse_url("mysql://u@h/db?read_timeout=2.5").read_timeout == 2.5
    with pytest.raises(ConfigurationError):
        parse_url("mysql://u@h/db?read_timeout=0")


# --- bursts above the pool size ------------------------------------------------------------


def _status(conn: pymysql.connections.Connection, name: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        row = cur.fetchone()
    assert row is not None
    return int(row[1])


async def _async_burst(url: str, tag: str, concurrency: int, turns: int) -> None:
    async def worker(w: int) -> None:
        for t in range(turns):
            history = AsyncTiDBChatMessageHistory(f"{tag}-{w}", url, table_name="burst")
            assert len(await history.aget_messages()) == 2 * t
            await history.aadd_messages([HumanMessage(f"q{t}"), AIMessage(f"a{t}")])

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


def _sync_burst(url: str, tag: str, concurrency: int, turns: int) -> None:
    def worker(w: int) -> None:
        for t in range(turns):
            history = TiDBChatMessageHistory(f"{tag}-{w}", url, table_name="burst")
            assert len(history.messages) == 2 * t
            history.add_messages([HumanMessage(f"q{t}"), AIMessage(f"a{t}")])

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))


@pytest.mark.slow
@pytest.mark.parametrize("face", ["async", "sync"])
async def test_bursts_above_the_pool_size_open_no_connections_after_warm_up(face: str) -> None:
    """64 callers at once, with the defaults: the connections the first burst opened serve
    every later burst. A pool that closes what it opens above pool_size opens connections
    again on every burst (counted by the server, on a server nobody else uses)."""
    concurrency = 64
    with ThrowawayMariaDB() as server:
        probe = pymysql.connect(**mysql_params(server.url))
        try:

            async def burst(tag: str) -> None:
                if face == "async":
                    await _async_burst(server.url, tag, concurrency, 3)
                else:
                    await asyncio.to_thread(_sync_burst, server.url, tag, concurrency, 3)

            await burst("warm")  # the table, and as many connections as the pool allows
            opened = _status(probe, "Connections")
            held = 0
            for n in range(4):  # separate bursts: the pool is idle (but warm) between them
                await asyncio.sleep(0.05)
                await burst(f"b{n}")
                held = max(held, _status(probe, "Threads_connected") - 1)
            assert _status(probe, "Connections") - opened == 0
            # The bursts needed more than pool_size connections, and got at most the limit.
            assert DEFAULT_POOL_SIZE < held <= DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW, held
        finally:
            probe.close()
            await tidb_memory.aclose_all()


@pytest.mark.slow
async def test_connections_above_pool_size_close_after_the_idle_timeout() -> None:
    """What a burst opened above pool_size is closed once idle for pool_idle_timeout; the
    pool_size connections stay, and the next call is served by them."""
    args = {"pool_size": 2, "max_overflow": 6, "pool_idle_timeout": 0.3}
    with ThrowawayMariaDB() as server:
        probe = pymysql.connect(**mysql_params(server.url))
        try:

            async def turn(session: str) -> None:
                history = AsyncTiDBChatMessageHistory(
                    session, server.url, table_name="idle_keep", engine_args=args
                )
                await history.aadd_messages([HumanMessage("q")])
                await asyncio.sleep(0.05)  # hold the connection: the others need their own
                await history.aget_messages()

            await asyncio.gather(*(turn(f"s{i}") for i in range(8)))
            assert _status(probe, "Threads_connected") - 1 == 8  # pool_size + max_overflow
            for _ in range(200):  # the server sees the closes shortly after the timeout
                if _status(probe, "Threads_connected") - 1 <= 2:
                    break
                await asyncio.sleep(0.05)
            assert _status(probe, "Threads_connected") - 1 == 2  # pool_size stays open
            opened = _status(probe, "Connections")
            await turn("after")
            assert _status(probe, "Connections") == opened  # served by a kept connection
        finally:
            probe.close()
            await tidb_memory.aclose_all()


def test_pool_idle_timeout_is_for_urls_only() -> None:
    from tidb_memory import ConfigurationError, create_engine

    with pytest.raises(ConfigurationError, match="pool_idle_timeout"):
        create_engine("mysql://u@h/db", engine_args={"pool_idle_timeout": 5})


async def test_the_pool_internals_idle_connections_read_exist(closing: None) -> None:
    """By name (SQLAlchemy 2.0-2.1), so that a release that renames one fails here."""
    db = get_database(MYSQL_URL, engine_args={"pool_size": 1, "max_overflow": 1})
    async with db.connection():
        pass
    pool, idle = await db._source()
    assert idle is not None and len(idle) == 1
    assert isinstance(pool._recycle, int | float) and isinstance(pool._timeout, int | float)
    # One connection open, held here: the first of pool_size, none in the queue.
    assert pool._max_overflow == 1 and pool.overflow() == 0 and pool.checkedin() == 0
    fairy = idle._stack[0][0]
    record = fairy._connection_record
    assert isinstance(record.starttime, float) and record._is_hard_or_soft_invalidated() is False
