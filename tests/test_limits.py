"""Size limits: a message over the configured limit (default 6 MiB, TiDB's row limit) and a
batch whose statement would exceed the server's ``max_allowed_packet`` are refused before any
I/O, with a typed error, and nothing of the batch is written."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from langchain_core.messages import AIMessage, HumanMessage

import tidb_memory
from tests.infra import ThrowawayMariaDB
from tidb_memory import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AsyncTiDBChatMessageHistory,
    InvalidInputError,
    MessageTooLargeError,
    RetryPolicy,
)
from tidb_memory._driver import INIT_COMMAND
from tidb_memory._retry import error_code
from tidb_memory.codec import encode

MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
#: Nothing listens here: any I/O would fail with a connection error, not a size error.
NOWHERE = "mysql+aiomysql://root@127.0.0.1:1/test?connect_timeout=1"
MiB = 1024 * 1024


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


@pytest.fixture(scope="module")
def small_packet_server() -> Iterator[ThrowawayMariaDB]:
    with ThrowawayMariaDB(extra_args=["--max-allowed-packet=1M"]) as server:
        assert server.sync_query("SELECT @@max_allowed_packet")[0][0] == MiB
        yield server


def human_of_size(size: int) -> HumanMessage:
    """A message whose encoded form is exactly ``size`` bytes."""
    overhead = len(encode(HumanMessage("")).encode())
    return HumanMessage("x" * (size - overhead))


def test_default_limit_is_six_mib() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 6 * 1024 * 1024
    assert len(encode(human_of_size(6 * MiB))) == 6 * MiB  # at the limit: fine
    with pytest.raises(MessageTooLargeError) as info:
        encode(human_of_size(6 * MiB + 1))
    assert isinstance(info.value, InvalidInputError)
    assert "6,291,456" in str(info.value)


async def test_over_the_limit_fails_before_any_io(closing: None) -> None:
    history = AsyncTiDBChatMessageHistory(
        "big", NOWHERE, retry=RetryPolicy(attempts=1), max_message_bytes=1_000
    )
    started = time.monotonic()
    with pytest.raises(MessageTooLargeError) as info:
        await history.aadd_messages([HumanMessage("small"), HumanMessage("y" * 2_000)])
    assert time.monotonic() - started < 0.5
    assert "1,000" in str(info.value)
    # The default limit too, with no I/O at all.
    default = AsyncTiDBChatMessageHistory("big", NOWHERE, retry=RetryPolicy(attempts=1))
    with pytest.raises(MessageTooLargeError):
        await default.aadd_messages([human_of_size(6 * MiB + 1)])


async def test_nothing_of_the_batch_is_written(closing: None) -> None:
    table = "limits_" + uuid.uuid4().hex[:10]
    history = AsyncTiDBChatMessageHistory(
        "batch", MYSQL_URL, table_name=table, max_message_bytes=4_000
    )
    try:
        await history.aadd_messages([HumanMessage("first")])
        with pytest.raises(MessageTooLargeError):
            await history.aadd_messages(
                [HumanMessage("ok"), AIMessage("z" * 5_000), HumanMessage("ok too")]
            )
        assert [m.content for m in await history.aget_messages()] == ["first"]
        # The limit counts the encoded message: metadata and kwargs included.
        with pytest.raises(MessageTooLargeError):
            await history.aadd_messages(
                [HumanMessage("short", additional_kwargs={"blob": "k" * 5_000})]
            )
        await history.aadd_messages([HumanMessage("w" * 3_000)])  # under: accepted
        assert len(await history.aget_messages()) == 2
    finally:
        async with history.store.db.connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS `{table}`", ())


# --- max_allowed_packet ------------------------------------------------------------------


async def test_batch_over_max_allowed_packet_is_refused_before_sending(
    small_packet_server: ThrowawayMariaDB, closing: None
) -> None:
    server = small_packet_server
    table = "packet_" + uuid.uuid4().hex[:8]
    history = AsyncTiDBChatMessageHistory("p", server.url, table_name=table)
    # The very first call: the table is set up, then the batch is measured, and refused.
    three = [HumanMessage("a" * 400_000), AIMessage("b" * 400_000), HumanMessage("c" * 400_000)]
    with pytest.raises(MessageTooLargeError) as info:
        await history.aadd_messages(three)
    assert "max_allowed_packet" in str(info.value) and "1,048,576" in str(info.value)
    # Small as JSON, but every backslash is escaped twice (JSON, then SQL): measured, refused.
    slashes = [HumanMessage("\\" * 150_000), AIMessage("\\" * 150_000)]
    assert sum(len(encode(m)) for m in slashes) < 700_000
    with pytest.raises(MessageTooLargeError):
        await history.aadd_messages(slashes)
    assert server.sync_query(f"SELECT COUNT(*) FROM `{table}`")[0][0] == 0
    # The connection was never broken by an oversized packet; under the limit works.
    fits = [HumanMessage("d" * 700_000)]
    await history.aadd_messages(fits)
    assert await history.aget_messages() == fits
    aborted = server.sync_query("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")[0][1]
    assert int(aborted) == 0


@pytest.mark.slow
async def test_three_six_mb_messages_exceed_the_shared_servers_packet(closing: None) -> None:
    table = "packet16_" + uuid.uuid4().hex[:8]
    history = AsyncTiDBChatMessageHistory("p16", MYSQL_URL, table_name=table)
    try:
        await history.aget_messages()
        packet = history.store.db.server_info["max_allowed_packet"]  # type: ignore[index]
        assert packet == 16 * MiB, "the shared server is expected at its 16 MiB default"
        batch = [human_of_size(6_000_000) for _ in range(3)]  # each under 6 MiB
        with pytest.raises(MessageTooLargeError) as info:
            await history.aadd_messages(batch)
        assert "max_allowed_packet" in str(info.value)
        assert await history.aget_messages() == []
        one = [batch[0]]
        await history.aadd_messages(one)  # one of them alone fits
        got = await history.aget_messages()
        assert len(got) == 1 and orjson.dumps(got[0].content) == orjson.dumps(one[0].content)
    finally:
        async with history.store.db.connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS `{table}`", ())


async def test_a_connection_the_server_closed_after_1153_is_discarded(
    small_packet_server: ThrowawayMariaDB, closing: None
) -> None:
    """Error 1153 (packet over max_allowed_packet) is a complete error reply, but the server
    closes the connection after it: the connection must not go back to the pool."""
    server = small_packet_server
    table = "p1153_" + uuid.uuid4().hex[:8]
    history = AsyncTiDBChatMessageHistory(
        "p1153",
        server.url,
        table_name=table,
        retry=RetryPolicy(attempts=1),  # a reused dead connection would fail the next call
        engine_args={"pool_size": 1, "max_overflow": 0},
    )
    await history.aadd_messages([HumanMessage("before")])
    db = history.store.db
    for _ in range(3):
        with pytest.raises(Exception) as info:
            async with db.connection() as conn:  # past the library's own packet check
                await conn.fetchall("SELECT %s", ["x" * (MiB + 1024)])
        assert error_code(info.value) == 1153, info.value
        # The next call on the same one-connection pool succeeds at once.
        assert [m.content for m in await history.aget_messages()] == ["before"]


# --- strict sql_mode ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lax_server() -> Iterator[ThrowawayMariaDB]:
    """A server whose default sql_mode lets values be truncated, clamped and replaced."""
    with ThrowawayMariaDB(extra_args=["--sql-mode="]) as server:
        assert server.sync_query("SELECT @@GLOBAL.sql_mode")[0][0] == ""
        yield server


async def test_sessions_are_strict_on_a_lax_server(
    lax_server: ThrowawayMariaDB, closing: None
) -> None:
    table = "lax_" + uuid.uuid4().hex[:8]
    history = AsyncTiDBChatMessageHistory("lax", lax_server.url, table_name=table)
    await history.aadd_messages([HumanMessage("x")])
    async with history.store.db.connection() as conn:
        mode, isolation = (
            await conn.fetchall("SELECT @@SESSION.sql_mode, @@SESSION.tx_isolation", ())
        )[0]
        assert "STRICT_TRANS_TABLES" in mode.split(",")
        assert isolation == "READ-COMMITTED"
        scratch = "lax_values_" + uuid.uuid4().hex[:8]
        await conn.execute(f"CREATE TABLE `{scratch}` (v VARCHAR(3), n TINYINT) ENGINE=InnoDB", ())
        try:
            for row, code in ((("abcdef", 1), 1406), (("abc", 1000), 1264), (("abc", "x"), 1366)):
                with pytest.raises(Exception) as info:
                    await conn.execute(f"INSERT INTO `{scratch}` VALUES (%s, %s)", row)
                assert error_code(info.value) == code, info.value
            assert await conn.fetchall(f"SELECT COUNT(*) FROM `{scratch}`", ()) == [(0,)]
        finally:
            await conn.execute(f"DROP TABLE `{scratch}`", ())
    # The server's own modes are kept beside it.
    keep = "NO_ENGINE_SUBSTITUTION"
    lax_server.sync_query(f"SET GLOBAL sql_mode = '{keep}'")
    try:
        # Another pool (other engine_args), so its connections are new ones.
        other = AsyncTiDBChatMessageHistory("lax", lax_server.url, engine_args={"pool_size": 2})
        async with other.store.db.connection() as conn:
            mode = (await conn.fetchall("SELECT @@SESSION.sql_mode", ()))[0][0]
        assert set(mode.split(",")) == {keep, "STRICT_TRANS_TABLES"}
    finally:
        lax_server.sync_query("SET GLOBAL sql_mode = ''")


def test_the_init_command_picks_each_servers_isolation_variable() -> None:
    # One statement, so no extra round trip per connection. MariaDB runs /*M! ... */ and skips
    # /*!50720 ... */; MySQL (5.7.20+) runs the latter and skips the former; TiDB runs every
    # /*! ... */ whatever its version and treats /*M! ... */ as a comment.
    assert INIT_COMMAND.count(";") == 0
    assert INIT_COMMAND.startswith("SET SESSION sql_mode = ")
    assert "'STRICT_TRANS_TABLES'" in INIT_COMMAND
    assert "SESSION /*M! tx_isolation */ /*!50720 transaction_isolation */ = 'READ-COMMITTED'" in (
        INIT_COMMAND
    )
