"""TLS policy: when a connection must be encrypted, the context it uses, the refusal of a server
that does not encrypt, and the wait for TLS close handshakes when a pool closes.

* TLS is asked for by any ``ssl_*`` URL parameter (but ``ssl=false``) and by a TiDB Cloud host
  (``*.tidbcloud.com``, in any case, with or without DNS's trailing dot), which accepts nothing
  else. On such a host TLS cannot be weakened: ``ssl=false``, ``ssl_verify_cert=false`` and
  ``ssl_verify_identity=false`` are refused, because its certificates verify.
* :meth:`TLSSettings.context` loads every file the URL names. It reads files, so it runs when an
  engine is built, in a worker thread (never at construction, never on an event loop): a CA,
  certificate or key that cannot be used is a :class:`ConfigurationError` on the first call,
  before any connection is attempted, and it is never retried.
* :func:`check_handshake_packet` is the downgrade guard. The driver runs it on every packet it
  writes before authentication ends: unless the client's own socket is TLS (its transport wraps
  an ``ssl.SSLObject``), nothing but the SSLRequest, which holds no credential, may leave. A
  server that leaves ``CLIENT_SSL`` out of its greeting (aiomysql then silently skips TLS)
  never sees the user name, a password hash or, after an auth switch, the password.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import ConfigurationError, InsecureTransportError

__all__ = [
    "TLS_CLOSE_GRACE",
    "TLS_PARAMS",
    "TLSSettings",
    "check_handshake_packet",
    "is_tidb_cloud",
    "tls_settings",
    "wait_closed",
]

#: The most seconds closing a pool waits for its TLS connections' close handshakes.
TLS_CLOSE_GRACE = 1.0
#: The URL parameters that configure TLS (pymysql's names, as TiDB Cloud's examples use them).
TLS_PARAMS = frozenset(
    {
        "ssl",
        "ssl_ca",
        "ssl_capath",
        "ssl_cert",
        "ssl_key",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "ssl_check_hostname",
    }
)
_TIDB_CLOUD_SUFFIX = ".tidbcloud.com"
#: pymysql.constants.CLIENT.SSL, without importing the driver for SQLite users.
_CLIENT_SSL = 1 << 11
#: An SSLRequest is a handshake response cut before the user name: capability flags (4 bytes),
#: max packet size (4), character set (1) and 23 zero bytes. It carries no credential.
_SSL_REQUEST_LEN = 32
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def is_tidb_cloud(host: str) -> bool:
    """True for a TiDB Cloud endpoint, however the host name is written.

    Example::

        >>> is_tidb_cloud("gateway01.us-east-1.prod.aws.TiDBCloud.com.")
        True
    """
    return host.rstrip(".").lower().endswith(_TIDB_CLOUD_SUFFIX)


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"URL parameter {name}={value!r} is not a boolean (use true or false)")


class _EncryptedKeyError(Exception):
    """The key file asked for a passphrase (OpenSSL would otherwise prompt on the terminal)."""


def _no_passphrase() -> bytes:
    raise _EncryptedKeyError


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "OpenSSL cannot read it as PEM")
    return str(getattr(exc, "strerror", None) or exc)


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """What the URL asked of TLS. :meth:`context` builds the verifying ``SSLContext``.

    Example::

        >>> TLSSettings(ca="/etc/ssl/certs/ca-certificates.crt").context().check_hostname
        True
    """

    ca: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None
    verify_cert: bool = True
    verify_identity: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context: system CA store unless ``ca``/``capath`` is given; hostname checked.

        It reads files: call it off the event loop.

        Raises:
            ConfigurationError: a CA, certificate or key file cannot be loaded; the message
                names the URL parameter and the file.
        """
        try:
            if self.capath is not None and not os.path.isdir(self.capath):
                # OpenSSL only records a directory it would search later: check it now.
                raise FileNotFoundError(errno.ENOENT, "no such directory")
            ctx = ssl.create_default_context(cafile=self.ca, capath=self.capath)
        except (ssl.SSLError, OSError) as exc:
            where = f"ssl_ca {self.ca!r}" if self.ca else f"ssl_capath {self.capath!r}"
            raise ConfigurationError(
                f"{where}: cannot load CA certificates from it ({_reason(exc)}); "
                "give a PEM file of CA certificates"
            ) from exc
        if self.cert:
            self._load_identity(ctx, self.cert)
        if not self.verify_cert:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif not self.verify_identity:
            ctx.check_hostname = False
        return ctx

    def _load_identity(self, ctx: ssl.SSLContext, cert: str) -> None:
        try:  # the certificate alone, as a trust anchor: tells a bad cert from a bad key
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"ssl_cert {cert!r}: not a PEM certificate ({_reason(exc)})"
            ) from exc
        try:
            ctx.load_cert_chain(cert, self.key, password=_no_passphrase)
        except _EncryptedKeyError as exc:
            raise ConfigurationError(
                f"ssl_key {self.key or cert!r} is encrypted, and tidb-memory takes no passphrase: "
                "decrypt it (openssl pkey -in key.pem -out plain.pem) and keep that file private"
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            reason = _reason(exc)
            if self.key is None:
                message = (
                    f"ssl_cert {cert!r} holds no usable private key ({reason}); "
                    "give the key file with ssl_key"
                )
            elif "MISMATCH" in reason.upper():
                message = f"ssl_key {self.key!r} does not match ssl_cert {cert!r}"
            else:
                message = f"ssl_key {self.key!r}: not a PEM private key ({reason})"
            raise ConfigurationError(message) from exc


def tls_settings(values: Mapping[str, str], *, tidb_cloud: bool) -> TLSSettings | None:
    """The TLS a URL's parameters (``values``) ask for, checked; ``None``: plaintext. No I/O.

    Raises:
        ConfigurationError: contradictory TLS parameters, ``ssl_key`` without ``ssl_cert``, or
            weakened TLS on TiDB Cloud.
    """
    asked = {name: value for name, value in values.items() if name in TLS_PARAMS}
    if "ssl" in asked and not _flag("ssl", asked["ssl"]):
        if tidb_cloud:
            raise ConfigurationError("TiDB Cloud accepts TLS connections only; remove ssl=false")
        if len(asked) > 1:
            raise ConfigurationError("ssl=false contradicts the other ssl_* parameters")
        return None
    if not asked and not tidb_cloud:
        return None
    if "ssl_key" in asked and "ssl_cert" not in asked:
        raise ConfigurationError("ssl_key needs ssl_cert: give the client certificate too")
    verify_cert = _flag("ssl_verify_cert", asked.get("ssl_verify_cert", "true"))
    identity = asked.get("ssl_verify_identity", asked.get("ssl_check_hostname", "true"))
    name = "ssl_verify_identity" if "ssl_verify_identity" in asked else "ssl_check_hostname"
    verify_identity = _flag(name, identity)
    if tidb_cloud and not (verify_cert and verify_identity):
        off = "ssl_verify_cert" if not verify_cert else name
        raise ConfigurationError(
            f"TiDB Cloud's certificates verify (against the system CA store, or ssl_ca): "
            f"remove {off}=false, which would let anyone on the network path read the session"
        )
    tls = TLSSettings(
        ca=asked.get("ssl_ca"),
        capath=asked.get("ssl_capath"),
        cert=asked.get("ssl_cert"),
        key=asked.get("ssl_key"),
        verify_cert=verify_cert,
        verify_identity=verify_cert and verify_identity,
    )
    # The files are read when the engine is built, off the event loop: parsing does no I/O.
    return tls


def check_handshake_packet(
    transport: asyncio.BaseTransport, payload: bytes, *, server_capabilities: int, display: str
) -> None:
    """Refuse to write ``payload`` during the handshake unless the socket is TLS.

    Only the SSLRequest may precede the TLS upgrade; every other handshake packet carries a
    credential (user name, password hash, or the password after an auth switch). The check
    reads the client's own transport, never what the server says about itself.

    Raises:
        InsecureTransportError: the transport is plaintext and ``payload`` is not an SSLRequest.
    """
    if transport.get_extra_info("ssl_object") is not None:
        return
    if len(payload) == _SSL_REQUEST_LEN and not any(payload[9:]):
        return
    why = (
        "its greeting leaves CLIENT_SSL out"
        if not server_capabilities & _CLIENT_SSL
        else "the socket is not encrypted"
    )
    raise InsecureTransportError(
        f"TLS was required for {display}, but the server did not offer TLS ({why}); the "
        "connection was closed before any credential was sent, so nothing went out in "
        "plaintext. Enable TLS on the server, or check that the URL's host and port are the "
        "database's and not something in between.",
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
