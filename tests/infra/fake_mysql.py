"""A hostile MySQL server on the wire: it offers no TLS and asks for the password in cleartext.

:class:`FakeMySQLServer` speaks just enough of the MySQL client/server protocol to take a real
client (aiomysql, through tidb-memory) from the greeting to the command phase:

1. its greeting (``HandshakeV10``) leaves ``CLIENT_SSL`` out of the capability flags, so a
   client that silently skips TLS carries on in plaintext;
2. whatever the client answers, it sends an ``AuthSwitchRequest`` for ``mysql_clear_password``:
   a client that obeys then writes the password itself onto the socket;
3. in the command phase it answers ``SHOW STATUS LIKE 'Ssl_cipher'`` with a made-up cipher (a
   client that trusts the server's word about its own transport is fooled), the few
   one-value ``SELECT``s that SQLAlchemy's first connect and ``astatus`` ask (``VERSION()``,
   ``DATABASE()``, ``@@transaction_isolation``, ``@@sql_mode``, ``@@lower_case_table_names``),
   and any other command with OK.

Every byte received on every connection is recorded (:attr:`FakeMySQLServer.received`), so a
test can assert that no credential (and no handshake response at all) ever reached it. The
server runs on its own event loop in a daemon thread: sync and async callers of the library
can both use it, and nothing the test's loop does can delay its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

__all__ = ["FAKE_CIPHER", "FakeMySQLServer", "ReceivedConnection"]

#: What the fake reports as the session's cipher, although nothing is encrypted.
FAKE_CIPHER = "TLS_AES_256_GCM_SHA384"

# pymysql.constants.CLIENT, spelled out so the fake does not share code with the client.
_CLIENT_LONG_PASSWORD = 1
_CLIENT_FOUND_ROWS = 1 << 1
_CLIENT_LONG_FLAG = 1 << 2
_CLIENT_CONNECT_WITH_DB = 1 << 3
_CLIENT_PROTOCOL_41 = 1 << 9
_CLIENT_SSL = 1 << 11
_CLIENT_TRANSACTIONS = 1 << 13
_CLIENT_SECURE_CONNECTION = 1 << 15
_CLIENT_MULTI_STATEMENTS = 1 << 16
_CLIENT_MULTI_RESULTS = 1 << 17
_CLIENT_PLUGIN_AUTH = 1 << 19
_CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21

#: A TiDB-like server's capabilities, without CLIENT_SSL and without DEPRECATE_EOF.
PLAINTEXT_CAPABILITIES = (
    _CLIENT_LONG_PASSWORD
    | _CLIENT_FOUND_ROWS
    | _CLIENT_LONG_FLAG
    | _CLIENT_CONNECT_WITH_DB
    | _CLIENT_PROTOCOL_41
    | _CLIENT_TRANSACTIONS
    | _CLIENT_SECURE_CONNECTION
    | _CLIENT_MULTI_STATEMENTS
    | _CLIENT_MULTI_RESULTS
    | _CLIENT_PLUGIN_AUTH
    | _CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)
_STATUS_AUTOCOMMIT = 2
_UTF8MB4_GENERAL_CI = 45
_COM_QUIT = 0x01
_COM_QUERY = 0x03
_MYSQL_TYPE_VAR_STRING = 0xFD

_Send = Callable[[int, bytes], None]


def _lenenc_str(value: bytes) -> bytes:
    assert len(value) < 251, "the fake only sends short strings"
    return bytes([len(value)]) + value


def _ok() -> bytes:
    # header, affected rows 0, last insert id 0, status flags, warnings
    return b"\x00\x00\x00" + struct.pack("<HH", _STATUS_AUTOCOMMIT, 0)


def _eof() -> bytes:
    return b"\xfe" + struct.pack("<HH", 0, _STATUS_AUTOCOMMIT)


def _column(name: str) -> bytes:
    return (
        _lenenc_str(b"def")
        + _lenenc_str(b"")  # schema
        + _lenenc_str(b"")  # table
        + _lenenc_str(b"")  # org_table
        + _lenenc_str(name.encode())
        + _lenenc_str(b"")  # org_name
        + b"\x0c"
        + struct.pack("<HIBHB", _UTF8MB4_GENERAL_CI, 1024, _MYSQL_TYPE_VAR_STRING, 0, 0)
        + b"\x00\x00"
    )


@dataclass
class ReceivedConnection:
    """What one client connection sent, and how far it got."""

    data: bytearray = field(default_factory=bytearray)
    #: Payloads of the packets the client sent during the handshake (its handshake response,
    #: its answer to the auth switch): each one carries a credential.
    auth_packets: list[bytes] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)


class FakeMySQLServer:
    """A MySQL server without TLS that asks for ``mysql_clear_password``; see the module doc.

    Example::

        with FakeMySQLServer() as fake:
            url = f"mysql+aiomysql://u:pw@127.0.0.1:{fake.port}/db?ssl_ca=ca.pem"
            ...  # run the client against url
            assert fake.received == b""
    """

    def __init__(
        self,
        *,
        server_version: str = "8.0.11-TiDB-v7.5.0",
        capabilities: int = PLAINTEXT_CAPABILITIES,
        cipher: str = FAKE_CIPHER,
    ) -> None:
        self.server_version = server_version
        self.capabilities = capabilities
        self.cipher = cipher
        self.connections: list[ReceivedConnection] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._port = 0

    # --- lifecycle (any thread) ------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def received(self) -> bytes:
        """Every byte received, on every connection, in order of connection."""
        with self._lock:
            return b"".join(bytes(c.data) for c in self.connections)

    @property
    def accepted(self) -> int:
        """How many client connections were accepted."""
        with self._lock:
            return len(self.connections)

    # --- the server (its own loop) ---------------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = ReceivedConnection()
        with self._lock:
            self.connections.append(record)
            conn_id = len(self.connections)

        def send(seq: int, payload: bytes) -> None:
            writer.write(struct.pack("<I", len(payload))[:3] + bytes([seq % 256]) + payload)

        async def read_packet() -> tuple[int, bytes]:
            header = await reader.readexactly(4)
            length = int.from_bytes(header[:3], "little")
            payload = await reader.readexactly(length)
            with self._lock:
                record.data += header + payload
            return header[3], payload

        try:
            salt = os.urandom(20)
            send(0, self._greeting(conn_id, salt))
            await writer.drain()
            seq, response = await read_packet()
            record.auth_packets.append(response)
            # Whatever the client offered, ask for the password itself.
            send(seq + 1, b"\xfe" + b"mysql_clear_password\x00" + salt + b"\x00")
            await writer.drain()
            seq, password = await read_packet()
            record.auth_packets.append(password)
            send(seq + 1, _ok())
            await writer.drain()
            while True:
                _, payload = await read_packet()
                if not payload or payload[0] == _COM_QUIT:
                    break
                if payload[0] == _COM_QUERY:
                    text = payload[1:].decode("utf-8", "replace")
                    record.queries.append(text)
                    if "ssl_cipher" in text.lower():
                        self._send_rows(
                            send,
                            ("Variable_name", "Value"),
                            [(b"Ssl_cipher", self.cipher.encode())],
                        )
                        await writer.drain()
                        continue
                    value = self._answers().get(text.strip().upper())
                    if value is not None:
                        self._send_rows(send, (text.strip()[7:],), [(value.encode(),)])
                        await writer.drain()
                        continue
                send(1, _ok())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away: what it sent is recorded
        finally:
            writer.close()

    def _greeting(self, conn_id: int, salt: bytes) -> bytes:
        caps = self.capabilities
        return (
            b"\x0a"
            + self.server_version.encode() + b"\x00"
            + struct.pack("<I", conn_id)
            + salt[:8] + b"\x00"
            + struct.pack("<H", caps & 0xFFFF)
            + bytes([_UTF8MB4_GENERAL_CI])
            + struct.pack("<HH", _STATUS_AUTOCOMMIT, caps >> 16)
            + bytes([len(salt) + 1])
            + bytes(10)
            + salt[8:] + b"\x00"
            + b"mysql_native_password\x00"
        )  # fmt: skip

    def _answers(self) -> dict[str, str]:
        """The one-value queries a client (SQLAlchemy's first connect, ``astatus``) asks."""
        return {
            "SELECT VERSION()": self.server_version,
            "SELECT DATABASE()": "test",
            "SELECT @@TRANSACTION_ISOLATION": "READ-COMMITTED",
            "SELECT @@SQL_MODE": "STRICT_TRANS_TABLES",
            "SELECT @@LOWER_CASE_TABLE_NAMES": "0",
        }

    def _send_rows(
        self, send: _Send, names: tuple[str, ...], rows: list[tuple[bytes, ...]]
    ) -> None:
        """A text result set: columns ``names``, then ``rows`` (every value a string)."""
        seq = 1
        for payload in (
            bytes([len(names)]),
            *(_column(name) for name in names),
            _eof(),
            *(b"".join(_lenenc_str(value) for value in row) for row in rows),
            _eof(),
        ):
            send(seq, payload)
            seq += 1
