"""Connection URLs: parsing and checking them, their defaults, and the pool defaults. No I/O.

:func:`parse_url` turns a URL into a :class:`ConnectionSpec`. It accepts ``mysql://``,
``mysql+pymysql://``, ``mysql+aiomysql://`` and ``sqlite+aiosqlite://``, and the TiDB Cloud form
``?ssl_ca=...&ssl_verify_cert=true&ssl_verify_identity=true``, whose ``ssl_*`` parameters become
:class:`~tidb_memory._tls.TLSSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ._tls import TLS_PARAMS, TLSSettings, is_tidb_cloud, tls_settings
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_RECYCLE",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "TIDB_CLOUD_POOL_RECYCLE",
    "Backend",
    "ConnectionSpec",
    "parse_url",
]

DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds one statement may wait for its reply. aiomysql has no read timeout of its own, so a
#: connection whose peer falls silent (a half-dead network path) would otherwise wait forever.
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 20
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_POOL_RECYCLE = 3600
#: TiDB Cloud may end connections older than 30 minutes; its docs recommend recycling at 5.
TIDB_CLOUD_POOL_RECYCLE = 300

Backend = Literal["mysql", "sqlite"]

_SCHEMES: dict[str, Backend] = {
    "mysql": "mysql",
    "mysql+pymysql": "mysql",
    "mysql+aiomysql": "mysql",
    "sqlite+aiosqlite": "sqlite",
}
_OTHER_PARAMS = frozenset({"charset", "connect_timeout", "read_timeout", "unix_socket"})
_ENGINE_ARGS = frozenset(
    {"pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping", "echo"}
)


def _seconds(values: dict[str, str], name: str, default: float) -> float:
    try:
        seconds = float(values.pop(name, default))
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number of seconds") from exc
    if not 0 < seconds <= 3600:
        raise ConfigurationError(f"{name} must be between 0 and 3600 seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """A parsed, validated URL. Building one does no I/O.

    Attributes:
        backend: ``"mysql"`` (MySQL, MariaDB, TiDB) or ``"sqlite"``.
        url: the SQLAlchemy URL for the async driver, with TLS parameters removed.
        tls: TLS settings, or ``None`` for plaintext.
        tidb_cloud: the host is a TiDB Cloud endpoint.
        connect_timeout: seconds allowed for one connection attempt.
        read_timeout: seconds one statement may wait for its reply (MySQL family).
    """

    backend: Backend
    url: URL
    tls: TLSSettings | None = None
    tidb_cloud: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    @property
    def display(self) -> str:
        """The URL with its password masked: safe for messages and logs."""
        return self.url.render_as_string(hide_password=True)


def parse_url(url: str | URL) -> ConnectionSpec:
    """Parse and check a connection URL; no I/O.

    Example::

        >>> parse_url("mysql+pymysql://u:pw@gateway01.x.prod.aws.tidbcloud.com:4000/db").tls
        TLSSettings(ca=None, capath=None, cert=None, key=None, verify_cert=True, ...)

    Raises:
        ConfigurationError: the scheme or a parameter is not supported.
    """
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a non-numeric port
            # SQLAlchemy 2.0 quotes the whole URL, password and all, in its message (2.1 does
            # not): the cause keeps the text with the URL cut out.
            cause = ArgumentError(str(exc).replace(url, "<the URL>"))
            raise ConfigurationError(
                "cannot parse the connection URL; expected e.g. "
                "mysql+aiomysql://user:password@host:4000/database"
            ) from cause
    elif isinstance(url, URL):
        parsed = url
    else:
        raise ConfigurationError(
            f"connection_string must be a str or URL, not {type(url).__name__}"
        )
    backend = _SCHEMES.get(parsed.drivername)
    if backend is None:
        raise ConfigurationError(
            f"unsupported URL scheme {parsed.drivername!r}; use one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    if backend == "sqlite":
        if parsed.query:
            raise ConfigurationError("sqlite+aiosqlite URLs take no query parameters")
        return ConnectionSpec(backend="sqlite", url=parsed)

    query = dict(parsed.query)
    unknown = sorted(set(query) - TLS_PARAMS - _OTHER_PARAMS)
    if unknown:
        raise ConfigurationError(
            f"unsupported URL parameter(s) {', '.join(unknown)}; supported: "
            + ", ".join(sorted(TLS_PARAMS | _OTHER_PARAMS))
        )
    values: dict[str, str] = {}
    for name, value in query.items():
        if not isinstance(value, str):
            raise ConfigurationError(f"URL parameter {name} is given more than once")
        values[name] = value
    charset = values.pop("charset", "utf8mb4")
    if charset.lower() != "utf8mb4":
        raise ConfigurationError(f"charset={charset!r} is not supported; messages need utf8mb4")
    timeout = _seconds(values, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    read_timeout = _seconds(values, "read_timeout", DEFAULT_READ_TIMEOUT)

    host = parsed.host or ""
    tidb_cloud = is_tidb_cloud(host)
    tls = tls_settings(values, tidb_cloud=tidb_cloud)
    if tls is not None and host.endswith("."):
        # The same DNS name, as certificates (and TLS's server name indication) spell it.
        parsed = parsed.set(host=host.rstrip("."))
    kept = {"unix_socket": values["unix_socket"]} if "unix_socket" in values else {}
    normal = parsed.set(drivername="mysql+aiomysql", query=kept)
    return ConnectionSpec(
        backend="mysql",
        url=normal,
        tls=tls,
        tidb_cloud=tidb_cloud,
        connect_timeout=timeout,
        read_timeout=read_timeout,
    )


def _engine_kwargs(spec: ConnectionSpec, engine_args: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(engine_args) - _ENGINE_ARGS)
    if unknown:
        raise ConfigurationError(
            f"unsupported engine_args {', '.join(unknown)}; supported: "
            + ", ".join(sorted(_ENGINE_ARGS))
        )
    kwargs: dict[str, Any] = {
        "pool_size": DEFAULT_POOL_SIZE,
        "max_overflow": DEFAULT_MAX_OVERFLOW,
        "pool_timeout": DEFAULT_POOL_TIMEOUT,
        "pool_recycle": TIDB_CLOUD_POOL_RECYCLE if spec.tidb_cloud else DEFAULT_POOL_RECYCLE,
        # Connections run in autocommit: there is nothing to roll back when one is returned,
        # and a ROLLBACK per checkin would double the round trips of every call.
        "pool_reset_on_return": None,
        "pool_pre_ping": False,
    }
    kwargs.update(engine_args)
    return kwargs
