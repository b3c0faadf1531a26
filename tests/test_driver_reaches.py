"""Every reach into a private part of aiomysql or SQLAlchemy, exercised directly by name.

``tidb_memory/_driver.py`` lists them in its docstring. Each test here checks the one contract
the library relies on, against the real MariaDB, so that a dependency release that renames or
reorders one fails the test named after it instead of something vague deep in the suite (or,
for the TLS guard, instead of failing open). The suite runs on the newest allowed versions
(``make test``) and on the lowest (``make test-lowest``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiomysql
import pytest
from sqlalchemy.util import await_only, greenlet_spawn

import tidb_memory
from tests.conftest import MYSQL_URL, mysql_params
from tidb_memory import _driver
from tidb_memory._url import parse_url

pytestmark = pytest.mark.timeout(60)


def connect_kwargs(**extra: Any) -> dict[str, Any]:
    params = mysql_params(MYSQL_URL)
    params["db"] = params.pop("database")
    params.pop("connect_timeout")
    return {**params, **extra}


async def library_connection() -> Any:
    """A connection exactly as the pool gets it: through the library's creator."""
    return await _driver._mysql_creator(parse_url(MYSQL_URL))()


async def test_library_overrides_exist_on_aiomysql(mysql_server: str) -> None:
    """An override of a method aiomysql no longer has would be dead code, silently."""
    conn = await library_connection()
    try:
        for cls, base in ((type(conn), aiomysql.Connection), (conn.cursorclass, aiomysql.Cursor)):
            assert issubclass(cls, base)
            overrides = {n for n, v in vars(cls).items() if callable(v) and n[:2] != "__"}
            assert overrides, cls
            missing = sorted(n for n in overrides if not hasattr(base, n))
            assert not missing, f"{base.__name__} has no {missing}"
    finally:
        conn.close()


async def test_connection_connect_runs_the_whole_handshake(mysql_server: str) -> None:
    """``Connection._connect()``: greeting, auth, init_command and autocommit, in one call."""
    conn = aiomysql.Connection(**connect_kwargs(init_command="SET @reach = 7"))
    await conn._connect()
    try:
        cur = conn.cursorclass(conn, False)
        await cur.execute("SELECT @reach, @@autocommit")
        assert cur._rows == ((7, 1),)
    finally:
        conn.close()


async def test_request_authentication_writes_every_credential_through_write_packet(
    mysql_server: str,
) -> None:
    """The TLS guard's hook: ``_connect`` calls ``_request_authentication`` after reading the
    greeting (``server_capabilities`` set), and every byte it sends goes through
    ``write_packet``. A release that wrote the handshake response another way would bypass
    the guard, so this test must fail then."""
    events: list[tuple[str, bytes]] = []

    class Recording(aiomysql.Connection):  # type: ignore[misc]
        async def _request_authentication(self) -> None:
            events.append(("auth", self.server_capabilities.to_bytes(4, "little")))
            await super()._request_authentication()
            events.append(("auth-done", b""))

        def write_packet(self, payload: bytes) -> None:
            events.append(("packet", payload))
            super().write_packet(payload)

        def _write_bytes(self, data: bytes) -> None:
            events.append(("bytes", data))
            super()._write_bytes(data)

    conn = Recording(**connect_kwargs())
    await conn._connect()
    conn.close()
    kind, capabilities = events[0]
    assert kind == "auth" and int.from_bytes(capabilities, "little"), "greeting not read first"
    during = events[1 : events.index(("auth-done", b""))]
    packets = [payload for kind, payload in during if kind == "packet"]
    raw = [data for kind, data in during if kind == "bytes"]
    assert packets, "the handshake response was not written through write_packet"
    assert len(raw) == len(packets)  # no byte left outside write_packet
    assert any(connect_kwargs()["user"].encode() + b"\x00" in p for p in packets)


async def test_ssl_context_and_transport(mysql_server: str) -> None:
    """``_ssl_context`` is what was passed as ``ssl``; ``_writer.transport`` is the asyncio
    transport, whose ``ssl_object`` the guard reads (None in plaintext)."""
    conn = aiomysql.Connection(**connect_kwargs())
    assert conn._ssl_context is None
    context = ssl.create_default_context()
    assert aiomysql.Connection(**connect_kwargs(ssl=context))._ssl_context is context
    await conn._connect()
    try:
        transport = conn._writer.transport
        assert isinstance(transport, asyncio.Transport)
        assert transport.get_extra_info("ssl_object") is None
        assert transport.get_extra_info("socket") is not None
    finally:
        conn.close()


async def test_cursor_without_future_and_its_rows(mysql_server: str) -> None:
    """``cursorclass(conn, False)`` builds a cursor directly; ``_rows`` holds its rows."""
    conn = await library_connection()
    try:
        cur = conn.cursorclass(conn, False)
        await cur.execute("SELECT 1, 'a' UNION ALL SELECT 2, 'b'")
        assert cur._rows == ((1, "a"), (2, "b"))
    finally:
        conn.close()


async def test_show_warnings_is_the_hook_after_a_warning(mysql_server: str) -> None:
    """aiomysql calls ``Cursor._show_warnings`` after a statement with warnings; the library's
    override turns it into nothing, so no ``SHOW WARNINGS`` round trip is made."""
    calls: list[object] = []

    class Recording(aiomysql.Cursor):  # type: ignore[misc]
        async def _show_warnings(self, conn: Any) -> None:
            calls.append(conn)

    conn = await library_connection()
    try:
        await Recording(conn, False).execute("SELECT CAST('12abc' AS SIGNED)")
        assert calls == [conn]
        cur = conn.cursorclass(conn, False)
        await cur.execute("SHOW SESSION STATUS LIKE 'Com_show_warnings'")
        before = int(cur._rows[0][1])
        await conn.cursorclass(conn, False).execute("SELECT CAST('12abc' AS SIGNED)")
        await cur.execute("SHOW SESSION STATUS LIKE 'Com_show_warnings'")
        assert int(cur._rows[0][1]) == before
    finally:
        conn.close()


async def test_pool_invalidate_marks_the_generation_stale(mysql_server: str) -> None:
    """SQLAlchemy ``Pool._invalidate(fairy, exc)``: the connection is dropped and every older
    pooled one is replaced on its next checkout (a restart costs one failure, not N)."""
    engine = tidb_memory.create_engine(MYSQL_URL)
    try:
        pool = engine.sync_engine.pool
        first = await greenlet_spawn(pool.connect)
        second = await greenlet_spawn(pool.connect)
        old = second.driver_connection
        await greenlet_spawn(second.close)
        await greenlet_spawn(pool._invalidate, first, ConnectionError("lost"))
        again = await greenlet_spawn(pool.connect)
        assert again.driver_connection is not old
        await greenlet_spawn(again.close)
    finally:
        await engine.dispose()


async def test_greenlet_spawn_runs_sync_code_that_awaits() -> None:
    """``sqlalchemy.util.greenlet_spawn``: the sync pool API called from a coroutine."""

    def sync_part(x: int) -> int:
        return int(await_only(asyncio.sleep(0, result=x))) + 1

    assert await greenlet_spawn(sync_part, 41) == 42
