"""A MySQL-aware TCP fault-injection proxy that runs on the caller's asyncio event loop.

``FaultProxy`` listens on a loopback address (random port by default) and forwards every
accepted connection to a target ``host:port``. Connections can be cut deterministically:

* :meth:`FaultProxy.cut_all` aborts every live client/upstream socket pair right now;
* :meth:`FaultProxy.arm` cuts the next ``count`` matching *commands* at a chosen moment
  (:class:`CutMode`): before the request reaches the server, after it reached the server but
  before any reply reaches the client, or in the middle of the reply;
* :meth:`FaultProxy.set_chaos` cuts matching commands with probability ``p`` at a random
  moment, with a seeded RNG, for load tests.

MySQL protocol awareness: client-to-server bytes are framed into MySQL packets
(3-byte little-endian length, 1-byte sequence id, payload). A client packet with sequence
id 0 starts a new command (handshake packets have sequence ids >= 1), and its first payload
byte is the command code (``COM_QUERY`` = 0x03, whose remaining payload is the SQL text).
Only such command packets can trigger armed cuts, so handshake/auth traffic is never cut by
``arm``/``set_chaos``. If the client asks for TLS (a 32-byte SSLRequest as its first
packet), the connection becomes opaque: it is forwarded byte-for-byte, and only
``cut_all``/``refuse_new`` affect it. The compressed protocol is not supported (aiomysql
does not use it).

Cuts are RST-style: ``SO_LINGER`` is set to ``(1, 0)`` before ``transport.abort()`` so the
peer gets ``ECONNRESET`` (pass ``rst=False`` to let the kernel send a FIN instead).

All methods must be called from the event loop thread that runs the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = [
    "COM_PING",
    "COM_QUERY",
    "COM_QUIT",
    "Arm",
    "CutMode",
    "CutRecord",
    "FaultProxy",
    "Matcher",
    "ProxyStats",
]

COM_QUIT = 0x01
COM_QUERY = 0x03
COM_PING = 0x0E

_SSL_REQUEST_PAYLOAD_LEN = 32
_LINGER_RST = struct.pack("ii", 1, 0)


class CutMode(enum.Enum):
    """When an armed cut happens, relative to the matching client command."""

    BEFORE_REQUEST = "before_request"
    """The command packet is dropped (never forwarded) and the connection is aborted."""
    AFTER_REQUEST = "after_request"
    """The command is forwarded; the server's reply is swallowed and the connection aborted.

    By default the proxy waits for the first reply byte from the server before aborting, so
    once the cut is complete the statement has finished on the server (an autocommit INSERT
    is committed) while the client only sees a lost connection. With
    ``wait_for_reply=False`` the client is aborted immediately and the upstream socket is
    closed gracefully after the command was flushed (the server usually still runs it).
    """
    DURING_REPLY = "during_reply"
    """The command is forwarded, the first ``reply_bytes`` bytes of the reply are delivered,
    then the connection is aborted. At least one reply byte is always withheld, so the
    client never receives a complete reply even if it is shorter than ``reply_bytes``."""


Matcher = str | re.Pattern[str] | Callable[[str], bool] | None
"""``None`` matches everything; a ``str`` is a case-insensitive substring; a compiled regex is
searched; a callable receives the decoded command text (SQL for ``COM_QUERY``)."""


def _compile_matcher(match: Matcher) -> Callable[[str], bool]:
    if match is None:
        return lambda _text: True
    if isinstance(match, str):
        needle = match.casefold()
        return lambda text: needle in text.casefold()
    if isinstance(match, re.Pattern):
        pattern = match
        return lambda text: pattern.search(text) is not None
    return match


@dataclass(slots=True)
class CutRecord:
    """One completed cut."""

    connection_id: int
    mode: CutMode | None  # None: cut_all()
    source: str  # "arm", "chaos" or "cut_all"
    command: int | None
    text: str  # the whole command, as sent


@dataclass(slots=True)
class ProxyStats:
    connections_total: int = 0
    connections_active: int = 0
    connections_refused: int = 0
    upstream_connect_failures: int = 0
    tls_passthrough: int = 0
    commands_seen: int = 0
    queries_seen: int = 0
    bytes_client_to_server: int = 0
    bytes_server_to_client: int = 0
    bytes_dropped: int = 0
    cuts: dict[CutMode, int] = field(default_factory=lambda: dict.fromkeys(CutMode, 0))
    manual_cuts: int = 0
    chaos_cuts: int = 0

    @property
    def total_cuts(self) -> int:
        return sum(self.cuts.values()) + self.manual_cuts


class Arm:
    """Handle returned by :meth:`FaultProxy.arm`; tracks and awaits its cuts."""

    def __init__(
        self,
        mode: CutMode,
        *,
        count: int,
        match: Matcher,
        reply_bytes: int,
        skip: int,
        commands: frozenset[int],
        wait_for_reply: bool,
    ) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        if skip < 0 or reply_bytes < 0:
            raise ValueError("skip and reply_bytes must be >= 0")
        self.mode = mode
        self.count = count
        self.match = match
        self.reply_bytes = reply_bytes
        self.skip = skip
        self.commands = commands
        self.wait_for_reply = wait_for_reply
        self.matched = 0  # matching commands seen (including skipped ones)
        self.triggered = 0  # cuts started
        self.fired = 0  # cuts completed
        self.cancelled = False
        self._predicate = _compile_matcher(match)
        self._done = asyncio.Event()

    @property
    def remaining(self) -> int:
        return self.count - self.triggered

    @property
    def exhausted(self) -> bool:
        return self.cancelled or self.triggered >= self.count

    def _accepts(self, command: int, text: str) -> bool:
        return not self.exhausted and command in self.commands and self._predicate(text)

    def _complete_one(self) -> None:
        self.fired += 1
        if self.fired >= self.count:
            self._done.set()

    async def wait(self, within: float = 10.0) -> None:
        """Wait (at most ``within`` seconds) until all ``count`` cuts have *completed*."""
        async with asyncio.timeout(within):
            await self._done.wait()

    def __repr__(self) -> str:
        return (
            f"<Arm {self.mode.name} fired={self.fired}/{self.count} matched={self.matched} "
            f"skip={self.skip} match={self.match!r}>"
        )


@dataclass(slots=True)
class _Chaos:
    probability: float
    rng: random.Random
    modes: tuple[CutMode, ...]
    predicate: Callable[[str], bool]
    reply_bytes: tuple[int, int]
    commands: frozenset[int]


@dataclass(slots=True)
class _PendingCut:
    mode: CutMode
    source: str
    command: int
    text: str
    reply_bytes: int
    wait_for_reply: bool
    arm: Arm | None
    received: bytearray = field(default_factory=bytearray)
    sent: int = 0
    timer: asyncio.TimerHandle | None = None
    finishing: bool = False  # reply already truncated; waiting for the client buffer to flush
    completed: bool = False


def _abort_transport(transport: asyncio.Transport, *, rst: bool) -> None:
    """``transport.abort()``, preceded by ``SO_LINGER=(1, 0)`` so the kernel sends a RST."""
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class _Pair:
    """One proxied connection: the accepted client socket and its upstream socket."""

    def __init__(self, proxy: FaultProxy, conn_id: int) -> None:
        self.proxy = proxy
        self.id = conn_id
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.c2s = bytearray()
        self.first_packet_seen = False
        self.opaque = False
        self.closed = False
        self.client_eof = False
        self.pending: _PendingCut | None = None
        self.connect_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ helpers
    def _abort(self, transport: asyncio.Transport | None) -> None:
        if transport is not None:
            _abort_transport(transport, rst=self.proxy.rst)

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        task = self.connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        pending, self.pending = self.pending, None
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        self.proxy._unregister(self)

    def abort_both(self) -> None:
        self._abort(self.client)
        self._abort(self.upstream)
        self._finish()

    def close_both(self) -> None:
        for transport in (self.client, self.upstream):
            if transport is not None and not transport.is_closing():
                transport.close()
        self._finish()

    # ------------------------------------------------------------------ cuts
    def complete_cut(self, cut: _PendingCut) -> None:
        if cut.completed:
            return
        cut.completed = True
        self.proxy._record_cut(self, cut.mode, cut.source, cut.command, cut.text)
        if cut.arm is not None:
            cut.arm._complete_one()

    def cut_now(self, cut: _PendingCut) -> None:
        if cut.completed:
            return
        if self.pending is cut:
            self.pending = None
        if cut.timer is not None:
            cut.timer.cancel()
            cut.timer = None
        self.abort_both()
        self.complete_cut(cut)

    def cut_after_flush(self, cut: _PendingCut, attempts: int = 0) -> None:
        """Abort once the client write buffer is empty (so the partial reply is on the wire)."""
        client = self.client
        if (
            client is not None
            and not client.is_closing()
            and client.get_write_buffer_size() > 0
            and attempts < 500
        ):
            self.proxy._loop_or_raise().call_later(0.002, self.cut_after_flush, cut, attempts + 1)
            return
        self.cut_now(cut)

    def manual_cut(self) -> None:
        pending = self.pending
        self.abort_both()
        self.proxy._record_cut(self, None, "cut_all", None, "")
        if pending is not None:
            # The armed cut's connection is gone either way: count it as done.
            self.complete_cut(pending)

    # ------------------------------------------------------------------ client -> server
    def on_client_data(self, data: bytes) -> None:
        if self.closed:
            return
        if self.pending is not None:
            # A cut is in progress; the client should be waiting for a reply. Drop it.
            self.proxy.stats.bytes_dropped += len(data)
            return
        if self.upstream is None:
            self.c2s += data
            return
        if self.opaque:
            self._to_server(data)
            return
        self.c2s += data
        self._drain_client_packets()

    def _drain_client_packets(self) -> None:
        buf = self.c2s
        while not self.closed and self.pending is None and self.upstream is not None:
            if self.opaque:
                if buf:
                    self._to_server(bytes(buf))
                    buf.clear()
                return
            if len(buf) < 4:
                return
            length = buf[0] | (buf[1] << 8) | (buf[2] << 16)
            if len(buf) < 4 + length:
                return
            packet = bytes(buf[: 4 + length])
            del buf[: 4 + length]
            seq = packet[3]
            if not self.first_packet_seen:
                self.first_packet_seen = True
                if length == _SSL_REQUEST_PAYLOAD_LEN:
                    self.opaque = True
                    self.proxy.stats.tls_passthrough += 1
            elif seq == 0 and length >= 1:
                cut = self.proxy._decide(packet[4], packet[5:])
                if cut is not None:
                    self._start_cut(cut, packet)
                    return
            self._to_server(packet)

    def _to_server(self, data: bytes) -> None:
        assert self.upstream is not None
        self.proxy.stats.bytes_client_to_server += len(data)
        self.upstream.write(data)

    def _start_cut(self, cut: _PendingCut, packet: bytes) -> None:
        self.proxy.stats.bytes_dropped += len(self.c2s)
        self.c2s.clear()
        if cut.mode is CutMode.BEFORE_REQUEST:
            self.proxy.stats.bytes_dropped += len(packet)
            self.cut_now(cut)
            return
        self._to_server(packet)
        if cut.mode is CutMode.AFTER_REQUEST and not cut.wait_for_reply:
            # Client sees the loss right away; the server still gets the whole command
            # because close() flushes the write buffer before sending FIN.
            self._abort(self.client)
            if self.upstream is not None:
                self.upstream.close()
            self._finish()
            self.complete_cut(cut)
            return
        self.pending = cut
        loop = self.proxy._loop_or_raise()
        if cut.mode is CutMode.AFTER_REQUEST:
            cut.timer = loop.call_later(self.proxy.after_request_timeout, self.cut_now, cut)

    def on_client_eof(self) -> None:
        self.client_eof = True
        if self.closed or self.upstream is None:
            return  # _connected() will propagate the EOF
        if self.pending is None and not self.closed:
            self._drain_client_packets()
            if self.c2s:
                self._to_server(bytes(self.c2s))
                self.c2s.clear()
        if self.upstream.can_write_eof():
            self.upstream.write_eof()
        else:
            self.upstream.close()

    def on_client_lost(self) -> None:
        if self.closed:
            return
        if self.pending is not None:
            self.cut_now(self.pending)
            return
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.close()
        self._finish()

    # ------------------------------------------------------------------ server -> client
    def on_server_data(self, data: bytes) -> None:
        if self.closed or self.client is None:
            return
        stats = self.proxy.stats
        cut = self.pending
        if cut is None:
            stats.bytes_server_to_client += len(data)
            self.client.write(data)
            return
        if cut.mode is CutMode.AFTER_REQUEST:
            stats.bytes_dropped += len(data)
            self.cut_now(cut)
            return
        if cut.finishing:
            stats.bytes_dropped += len(data)
            return
        # DURING_REPLY
        cut.received += data
        total = len(cut.received)
        limit = cut.reply_bytes if total > cut.reply_bytes else total - 1
        chunk = bytes(cut.received[cut.sent : limit])
        if chunk:
            stats.bytes_server_to_client += len(chunk)
            self.client.write(chunk)
        cut.sent = max(cut.sent, limit)
        if cut.timer is not None:
            cut.timer.cancel()
            cut.timer = None
        if total > cut.reply_bytes:
            stats.bytes_dropped += total - cut.sent
            cut.finishing = True
            self.cut_after_flush(cut)
        else:
            cut.timer = self.proxy._loop_or_raise().call_later(
                self.proxy.reply_settle, self._settle, cut
            )

    def _settle(self, cut: _PendingCut) -> None:
        if self.pending is cut and not cut.finishing:
            self.proxy.stats.bytes_dropped += len(cut.received) - cut.sent
            cut.finishing = True
            cut.timer = None
            self.cut_after_flush(cut)

    def on_server_eof_or_lost(self) -> None:
        if self.closed:
            return
        if self.pending is not None:
            self.cut_now(self.pending)
            return
        # Server closed (wait_timeout, shutdown, COM_QUIT): close the client gracefully so
        # any final ERR packet already written is still delivered.
        if self.client is not None and not self.client.is_closing():
            self.client.close()
        self._finish()

    # ------------------------------------------------------------------ upstream connect
    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: _UpstreamSide(self), host, port)
        except OSError:
            self.proxy.stats.upstream_connect_failures += 1
            self.abort_both()
            return
        if self.closed:
            transport.close()
            return
        self.upstream = transport
        self._drain_client_packets()
        if self.client_eof:
            self.on_client_eof()


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.pair: _Pair | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pair = self.proxy._accept(transport)

    def data_received(self, data: bytes) -> None:
        if self.pair is not None:
            self.pair.on_client_data(data)

    def eof_received(self) -> bool:
        if self.pair is not None:
            self.pair.on_client_eof()
        return True  # keep our write side open until the server is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pair is not None:
            self.pair.on_client_lost()

    def pause_writing(self) -> None:
        if self.pair is not None and self.pair.upstream is not None:
            self.pair.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.pair is not None and self.pair.upstream is not None:
            self.pair.upstream.resume_reading()


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, pair: _Pair) -> None:
        self.pair = pair

    def data_received(self, data: bytes) -> None:
        self.pair.on_server_data(data)

    def eof_received(self) -> bool:
        self.pair.on_server_eof_or_lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.on_server_eof_or_lost()

    def pause_writing(self) -> None:
        if self.pair.client is not None:
            self.pair.client.pause_reading()

    def resume_writing(self) -> None:
        if self.pair.client is not None:
            self.pair.client.resume_reading()


class FaultProxy:
    """Loopback TCP proxy with deterministic, on-demand connection cuts.

    ``async with FaultProxy(server.host, server.port) as proxy:`` then connect clients to
    ``proxy.host``/``proxy.port`` (or ``proxy.url()``).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        rst: bool = True,
        after_request_timeout: float = 10.0,
        reply_settle: float = 0.05,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.rst = rst
        self.after_request_timeout = after_request_timeout
        self.reply_settle = reply_settle
        self.refuse_new = False
        """When true, newly accepted connections are aborted immediately (server "down")."""
        self.stats = ProxyStats()
        self.cut_log: list[CutRecord] = []
        self._arms: list[Arm] = []
        self._chaos: _Chaos | None = None
        self._pairs: dict[int, _Pair] = {}
        self._next_id = 0
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _ClientSide(self), self.listen_host, self.listen_port
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for pair in list(self._pairs.values()):
            pair.abort_both()
        await server.wait_closed()
        # Let abort()'s connection_lost callbacks run so no transport outlives the proxy.
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ addressing
    @property
    def host(self) -> str:
        return self.listen_host

    @property
    def port(self) -> int:
        if self._server is None and self.listen_port == 0:
            raise RuntimeError("FaultProxy has not been started")
        return self.listen_port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @classmethod
    def in_front_of(cls, url: str) -> FaultProxy:
        """A proxy to the server a SQLAlchemy URL names (use it with ``async with``)."""
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return cls(parsed.host or "127.0.0.1", parsed.port or 3306)

    def url_for(self, url: str) -> str:
        """``url`` (user, password, database, options) through the proxy."""
        from sqlalchemy.engine import make_url

        through = make_url(url).set(host=self.host, port=self.port)
        return through.render_as_string(hide_password=False)

    def url(
        self,
        *,
        user: str = "root",
        password: str = "",
        database: str = "test",
        driver: str = "mysql+aiomysql",
    ) -> str:
        auth = f"{user}:{password}" if password else user
        return f"{driver}://{auth}@{self.host}:{self.port}/{database}"

    @property
    def active_connections(self) -> int:
        return len(self._pairs)

    # ------------------------------------------------------------------ fault control
    def arm(
        self,
        mode: CutMode,
        *,
        count: int = 1,
        match: Matcher = None,
        reply_bytes: int = 64,
        skip: int = 0,
        commands: Iterable[int] = (COM_QUERY,),
        wait_for_reply: bool = True,
    ) -> Arm:
        """Cut the next ``count`` matching commands (after letting ``skip`` matches pass).

        ``match`` filters on the command text (see :data:`Matcher`); ``commands`` lists the
        command codes considered (default: ``COM_QUERY`` only). ``reply_bytes`` applies to
        ``DURING_REPLY``; ``wait_for_reply`` to ``AFTER_REQUEST``. Arms are checked in the
        order they were created; the first matching non-exhausted arm wins.
        """
        arm = Arm(
            mode,
            count=count,
            match=match,
            reply_bytes=reply_bytes,
            skip=skip,
            commands=frozenset(commands),
            wait_for_reply=wait_for_reply,
        )
        self._arms.append(arm)
        return arm

    def disarm(self) -> None:
        """Cancel all pending arms (cuts already in progress still complete)."""
        for arm in self._arms:
            arm.cancelled = True
        self._arms.clear()

    def set_chaos(
        self,
        probability: float,
        *,
        seed: int = 0,
        modes: Iterable[CutMode] = tuple(CutMode),
        match: Matcher = None,
        reply_bytes: tuple[int, int] = (0, 256),
        commands: Iterable[int] = (COM_QUERY,),
    ) -> None:
        """Cut each matching command with ``probability`` at a random moment in ``modes``.

        Armed cuts take precedence. ``DURING_REPLY`` uses a random ``reply_bytes`` in the
        inclusive range. ``AFTER_REQUEST`` chaos cuts wait for the reply (deterministic
        server-side effect).
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        mode_tuple = tuple(modes)
        if not mode_tuple:
            raise ValueError("modes must not be empty")
        self._chaos = _Chaos(
            probability=probability,
            rng=random.Random(seed),
            modes=mode_tuple,
            predicate=_compile_matcher(match),
            reply_bytes=reply_bytes,
            commands=frozenset(commands),
        )

    def clear_chaos(self) -> None:
        self._chaos = None

    def cut_all(self) -> int:
        """Abort every live connection pair now (RST both ways). Returns how many."""
        pairs = list(self._pairs.values())
        for pair in pairs:
            pair.manual_cut()
        return len(pairs)

    async def wait_idle(self, within: float = 10.0) -> None:
        """Wait until no proxied connection is open (e.g. after cuts or client close)."""
        async with asyncio.timeout(within):
            await self._idle.wait()

    # ------------------------------------------------------------------ internals
    def _loop_or_raise(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("FaultProxy has not been started")
        return self._loop

    def _accept(self, transport: asyncio.Transport) -> _Pair | None:
        self.stats.connections_total += 1
        if self.refuse_new or self._server is None:
            self.stats.connections_refused += 1
            _abort_transport(transport, rst=self.rst)
            return None
        self._next_id += 1
        pair = _Pair(self, self._next_id)
        pair.client = transport
        self._pairs[pair.id] = pair
        self._idle.clear()
        self.stats.connections_active = len(self._pairs)
        pair.connect_task = self._loop_or_raise().create_task(
            pair.connect(self.target_host, self.target_port)
        )
        return pair

    def _unregister(self, pair: _Pair) -> None:
        self._pairs.pop(pair.id, None)
        self.stats.connections_active = len(self._pairs)
        if not self._pairs:
            self._idle.set()

    def _record_cut(
        self, pair: _Pair, mode: CutMode | None, source: str, command: int | None, text: str
    ) -> None:
        if mode is None:
            self.stats.manual_cuts += 1
        else:
            self.stats.cuts[mode] += 1
            if source == "chaos":
                self.stats.chaos_cuts += 1
        self.cut_log.append(CutRecord(pair.id, mode, source, command, text))

    def _decide(self, command: int, payload: bytes) -> _PendingCut | None:
        self.stats.commands_seen += 1
        if command == COM_QUERY:
            self.stats.queries_seen += 1
        text = payload.decode("utf-8", errors="replace")
        for arm in self._arms:
            if not arm._accepts(command, text):
                continue
            arm.matched += 1
            if arm.matched <= arm.skip:
                continue
            arm.triggered += 1
            if arm.exhausted:
                self._arms = [a for a in self._arms if not a.exhausted]
            return _PendingCut(
                mode=arm.mode,
                source="arm",
                command=command,
                text=text,
                reply_bytes=arm.reply_bytes,
                wait_for_reply=arm.wait_for_reply,
                arm=arm,
            )
        chaos = self._chaos
        if (
            chaos is not None
            and command in chaos.commands
            and chaos.predicate(text)
            and chaos.rng.random() < chaos.probability
        ):
            lo, hi = chaos.reply_bytes
            return _PendingCut(
                mode=chaos.rng.choice(chaos.modes),
                source="chaos",
                command=command,
                text=text,
                reply_bytes=chaos.rng.randint(lo, hi),
                wait_for_reply=True,
                arm=None,
            )
        return None
