"""Reusable infrastructure for real (mock-free) fault-injection and TLS tests.

* :class:`ThrowawayMariaDB` - a private ``mariadbd`` on its own port/datadir that can be
  stopped, restarted, crashed and started with TLS (never touches the shared :3306 server).
* :class:`FaultProxy` - a MySQL-aware asyncio TCP proxy that cuts connections on demand.
* :func:`generate_certs` - throwaway CA / server / client / unrelated-CA PEM files.
"""

from .certs import CertBundle, generate_certs
from .mariadb import (
    MariaDBNotAvailableError,
    MariaDBStartError,
    ThrowawayMariaDB,
    find_mariadb_binaries,
    require_mariadb,
)
from .proxy import (
    COM_PING,
    COM_QUERY,
    COM_QUIT,
    Arm,
    CutMode,
    CutRecord,
    FaultProxy,
    Matcher,
    ProxyStats,
)

__all__ = [
    "COM_PING",
    "COM_QUERY",
    "COM_QUIT",
    "Arm",
    "CertBundle",
    "CutMode",
    "CutRecord",
    "FaultProxy",
    "MariaDBNotAvailableError",
    "MariaDBStartError",
    "Matcher",
    "ProxyStats",
    "ThrowawayMariaDB",
    "find_mariadb_binaries",
    "generate_certs",
    "require_mariadb",
]
