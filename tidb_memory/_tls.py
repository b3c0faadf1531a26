"""TLS policy: what the URL asked for becomes an ``SSLContext``; a session that did not turn TLS
on is refused; closing a pool waits (briefly) for its TLS close handshakes."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InsecureTransportError

__all__ = [
    "SESSION_CHECK",
    "TLS_CLOSE_GRACE",
    "TLSSettings",
    "check_session",
    "wait_closed",
]

#: The most seconds closing a pool waits for its TLS connections' close handshakes.
TLS_CLOSE_GRACE = 1.0
#: Asked right after the handshake: aiomysql quietly stays in plaintext when the server offers no
#: TLS, and an empty ``Ssl_cipher`` says so.
SESSION_CHECK = "SHOW STATUS LIKE 'Ssl_cipher'"


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """What the URL asked of TLS. :meth:`context` builds the verifying ``SSLContext``."""

    ca: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None
    verify_cert: bool = True
    verify_identity: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context: system CA store unless ``ca``/``capath`` is given; hostname checked."""
        ctx = ssl.create_default_context(cafile=self.ca, capath=self.capath)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        if not self.verify_cert:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif not self.verify_identity:
            ctx.check_hostname = False
        return ctx


def check_session(row: Any, display: str) -> None:
    """Refuse a session whose :data:`SESSION_CHECK` reply ``row`` shows no cipher."""
    if not row or not row[1]:
        raise InsecureTransportError(
            f"TLS was required for {display}, but the server did not enable it "
            "(Ssl_cipher is empty); refusing a plaintext session",
            operation="connect",
        )


async def wait_closed(transports: Iterable[asyncio.BaseTransport]) -> None:
    """Wait for the TLS ``transports`` that are closing to finish, at most ``TLS_CLOSE_GRACE``.

    Closing a TLS connection is a handshake (close_notify, then the server's FIN) that runs on
    the loop after the pool's ``dispose()`` returns. A loop closed before it completes leaks the
    sockets (``ResourceWarning: unclosed transport``).
    """
    step = 0.002
    for _ in range(round(TLS_CLOSE_GRACE / step)):
        if not any(map(_tls_closing, list(transports))):
            return
        await asyncio.sleep(step)


def _tls_closing(transport: asyncio.BaseTransport) -> bool:
    """True while ``transport`` is closing and its socket is still open."""
    if not transport.is_closing():
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() != -1
