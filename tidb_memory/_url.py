"""Connection URLs: parsing and checking them, their defaults, and the pool defaults. No I/O.

:func:`parse_url` turns a URL into a :class:`ConnectionSpec`. It accepts ``mysql://``,
``mysql+pymysql://``, ``mysql+aiomysql://``, ``sqlite://`` and ``sqlite+aiosqlite://``, and the
TiDB Cloud form ``?ssl_ca=...&ssl_verify_cert=true&ssl_verify_identity=true``, whose ``ssl_*``
parameters become :class:`~tidb_memory._tls.TLSSettings`. A password with an unencoded ``@`` is
read up to the last ``@`` before the host, never split into a host that shows its tail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ._tls import TLS_PARAMS, TLSSettings, is_tidb_cloud, tls_settings
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_IDLE_TIMEOUT",
    "DEFAULT_POOL_RECYCLE",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_SQLITE_URL",
    "TIDB_CLOUD_POOL_RECYCLE",
    "Backend",
    "ConnectionSpec",
    "default_url",
    "display_url",
    "parse_url",
]

#: Where histories, savers and stores keep their data when no URL is configured: a SQLite file in
#: the working directory.
DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///tidb_memory.sqlite3"


def default_url() -> str:
    """``$TIDB_DATABASE_URL`` if it is set, else :data:`DEFAULT_SQLITE_URL`.

    Example::

        # TIDB_DATABASE_URL unset:
        default_url()  # 'sqlite+aiosqlite:///tidb_memory.sqlite3'
    """
    return os.environ.get("TIDB_DATABASE_URL") or DEFAULT_SQLITE_URL


DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds one statement may wait for its reply. aiomysql has no read timeout of its own, so a
#: connection whose peer falls silent (a half-dead network path) would otherwise wait forever.
DEFAULT_READ_TIMEOUT = 60.0
#: A pool keeps ``pool_size`` connections open and opens up to ``max_overflow`` more for bursts:
#: 32 per event loop and process at most, well under MySQL's and MariaDB's default of 151
#: connections for a few worker processes.
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 22
#: Seconds a connection above ``pool_size`` stays open unused, so that the connections one burst
#: opened serve the next burst instead of being closed and opened again per call.
DEFAULT_POOL_IDLE_TIMEOUT = 60.0
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_POOL_RECYCLE = 3600
#: TiDB Cloud may end connections older than 30 minutes; its docs recommend recycling at 5.
TIDB_CLOUD_POOL_RECYCLE = 300

Backend = Literal["mysql", "sqlite"]

_SCHEMES: dict[str, Backend] = {
    "mysql": "mysql",
    "mysql+pymysql": "mysql",
    "mysql+aiomysql": "mysql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
}
#: What follows the credentials' ``@``: host (or [IPv6]) and port, database, query. Neither the
#: host, the port, the database nor a parameter name holds an ``@``; a parameter value may.
_AFTER_CREDENTIALS = re.compile(
    r"(?:\[[^\]/?#@]*\]|[^\[\]/?#@:]*)(?::\d*)?(?:/[^?#@]*)?(?:\?[^=&@]*=[^&]*(?:&[^=&@]*=[^&]*)*)?"
)
_OTHER_PARAMS = frozenset({"charset", "connect_timeout", "read_timeout", "unix_socket"})
_ENGINE_ARGS = frozenset(
    {
        "pool_size",
        "max_overflow",
        "pool_timeout",
        "pool_recycle",
        "pool_pre_ping",
        "pool_idle_timeout",
        "echo",
    }
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


def _credentials_at_the_last_at(text: str) -> URL | None:
    """``text`` parsed with its credentials ending at the ``@`` the host follows, when they hold
    an unencoded ``@`` themselves; ``None`` when they hold none (the usual parse is right).

    SQLAlchemy ends the password at its first ``@``: ``mysql://u:p@ss@host/db`` would connect to
    the host ``ss@host`` and show ``ss`` wherever it shows the host.

    Example::

        >>> _credentials_at_the_last_at("mysql://u:p@ss@host/db").password
        'p@ss'
    """
    scheme, sep, rest = text.partition("://")
    if not sep or rest.count("@") < 2:
        return None
    for at in (i for i, char in enumerate(rest) if char == "@"):
        if _AFTER_CREDENTIALS.fullmatch(rest, at + 1):
            credentials, hostpart = rest[:at], rest[at + 1 :]
            break
    else:
        return None
    if "@" not in credentials:
        return None
    user, colon, password = credentials.partition(":")
    return make_url(f"{scheme}://{hostpart}").set(
        username=unquote(user), password=unquote(password) if colon else None
    )


def display_url(url: str | URL) -> str:
    """``url`` as written, with its password masked: safe to print or log.

    Example::

        >>> display_url("mysql://u:p@ss@host/db")
        'mysql://u:***@host/db'
    """
    parsed = url if isinstance(url, URL) else _parse_text(url)
    return "<unparseable URL>" if parsed is None else parsed.render_as_string(hide_password=True)


def _parse_text(text: str) -> URL | None:
    """``text`` as a URL (see :func:`_credentials_at_the_last_at`), or ``None`` if it is none."""
    try:
        return _credentials_at_the_last_at(text) or make_url(text)
    except (ArgumentError, ValueError):  # ValueError: e.g. a non-numeric port
        return None


def parse_url(url: str | URL) -> ConnectionSpec:
    """Parse and check a connection URL; no I/O.

    Example::

        >>> parse_url("mysql+pymysql://u:pw@gateway01.x.prod.aws.tidbcloud.com:4000/db").tls
        TLSSettings(ca=None, capath=None, cert=None, key=None, verify_cert=True, ...)

    Raises:
        ConfigurationError: the scheme or a parameter is not supported.
    """
    if isinstance(url, str):
        parsed_or_none = _parse_text(url)
        if parsed_or_none is None:
            # Raised outside the except block, so that neither __cause__ nor __context__ holds
            # SQLAlchemy's message: up to 2.0.x it quotes the whole URL, password included.
            raise ConfigurationError(
                "cannot parse the connection URL; expected e.g. "
                "mysql+aiomysql://user:password@host:4000/database, with the user name and "
                "password percent-encoded: urllib.parse.quote(password, safe='')"
            )
        parsed = parsed_or_none
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
            raise ConfigurationError("sqlite URLs take no query parameters")
        # sqlite:///chat.db, the sync form other libraries document, runs on aiosqlite too.
        return ConnectionSpec(backend="sqlite", url=parsed.set(drivername="sqlite+aiosqlite"))

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
        # Ours, not SQLAlchemy's: see _idle.py. create_engine() refuses it.
        "pool_idle_timeout": DEFAULT_POOL_IDLE_TIMEOUT,
    }
    kwargs.update(engine_args)
    idle = kwargs["pool_idle_timeout"]
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not idle > 0:
        raise ConfigurationError("pool_idle_timeout must be a positive number of seconds")
    return kwargs
