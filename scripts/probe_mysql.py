"""Connectivity probe used by scripts/ensure-mysql.sh (stdlib + pymysql only).

It runs with the project's venv Python because pymysql arrives there as an
aiomysql dependency; that way we never depend on a `mysql` CLI being present.

    probe_mysql.py check URL [--create-db]
        Connect to the SQLAlchemy-style URL (mysql+aiomysql://user:pw@host:port/db)
        and run SELECT 1. With --create-db, connect without a database first and
        CREATE DATABASE IF NOT EXISTS (used only for the local root@127.0.0.1 server).

    probe_mysql.py bootstrap --socket PATH --db NAME [--port 3306]
        For a server ensure-mysql.sh just started: log in as root over the unix socket
        (MariaDB's default unix_socket auth for OS root), create the database and
        let root@127.0.0.1 in over TCP with an empty password, like the dev box.

Exit codes are part of the contract with ensure-mysql.sh.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

EXIT_OK = 0
EXIT_OTHER = 1  # bad URL, missing privilege, anything unexpected
EXIT_UNREACHABLE = 2  # nothing listening / timeout: worth starting a server
EXIT_DENIED = 3  # server is up but refused the credentials
EXIT_NO_DB = 4  # server is up but the database does not exist
EXIT_NO_DRIVER = 5  # pymysql not importable: venv not installed yet

# MySQL client/server error numbers we classify.
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_DENIED = {1044, 1045, 1130, 1698}  # 1130: host not allowed
_UNKNOWN_DB = 1049
# Busy rather than broken (a shared server under someone's load test): retry.
_TRANSIENT = {1040, 1203, 1226}  # too many connections / user connection limits
_RETRY_DELAYS = (0.5, 1, 2, 4, 4, 4)  # ~15 s in total

# URL query options that map 1:1 onto pymysql.connect() keyword arguments.
_PASSTHROUGH = {"unix_socket", "charset", "ssl_ca", "ssl_cert", "ssl_key"}
_BOOL_OPTS = {"ssl_verify_cert", "ssl_verify_identity"}


def log(msg: str) -> None:
    print(f"probe_mysql: {msg}", file=sys.stderr)


def redact(url: str) -> str:
    """Hide the password so URLs can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def parse_url(url: str) -> tuple[dict[str, Any], str | None]:
    """Turn a SQLAlchemy MySQL URL into pymysql.connect() kwargs plus the database name."""
    parts = urlsplit(url)
    backend = parts.scheme.split("+", 1)[0]
    if backend not in {"mysql", "mariadb"}:
        raise ValueError(
            f"expected a mysql+aiomysql:// URL, got scheme {parts.scheme!r} "
            "(the DB test suite needs a MySQL-compatible server, not SQLite)"
        )
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "connect_timeout": 5,
    }
    for key, value in parse_qsl(parts.query):
        if key in _PASSTHROUGH:
            kwargs[key] = value
        elif key in _BOOL_OPTS:
            kwargs[key] = value.lower() in {"1", "true", "yes", "on"}
        else:
            log(f"ignoring URL option {key}={value!r} for the probe")
    database = unquote(parts.path.lstrip("/")) or None
    return kwargs, database


def _connect(**kwargs: Any) -> Any:
    import pymysql

    return pymysql.connect(autocommit=True, **kwargs)


def _classify(exc: BaseException) -> int:
    code = _error_code(exc)
    if code in _UNREACHABLE:
        return EXIT_UNREACHABLE
    if code in _DENIED:
        return EXIT_DENIED
    if code == _UNKNOWN_DB:
        return EXIT_NO_DB
    return EXIT_OTHER


def _quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _error_code(exc: BaseException) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def check(url: str, create_db: bool) -> int:
    for delay in _RETRY_DELAYS:
        rc, exc = _check_once(url, create_db)
        if exc is None or _error_code(exc) not in _TRANSIENT:
            return rc
        log(f"server busy, retrying in {delay}s")
        time.sleep(delay)
    return _check_once(url, create_db)[0]


def _check_once(url: str, create_db: bool) -> tuple[int, BaseException | None]:
    kwargs, database = parse_url(url)
    try:
        if create_db and database:
            conn = _connect(**kwargs)
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {_quote_ident(database)}")
            conn.close()
        conn = _connect(database=database, **kwargs)
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
        conn.close()
    except Exception as exc:
        log(f"{redact(url)}: {exc!r}")
        return _classify(exc), exc
    log(f"{redact(url)}: OK, server {row[0] if row else '?'}")
    return EXIT_OK, None


def _tcp_root_ok(port: int) -> bool:
    try:
        _connect(host="127.0.0.1", port=port, user="root", password="", connect_timeout=5).close()
    except Exception as exc:
        log(f"root@127.0.0.1:{port} over TCP: {exc!r}")
        return False
    return True


def bootstrap(socket: str, database: str, port: int) -> int:
    try:
        conn = _connect(unix_socket=socket, user="root", password="", connect_timeout=5)
    except Exception as exc:
        log(f"root login over {socket} failed: {exc!r}")
        return _classify(exc)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {_quote_ident(database)}")
        # Servers with skip-name-resolve match TCP clients against root@127.0.0.1.
        cur.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''")
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
        if not _tcp_root_ok(port):
            # Others resolve 127.0.0.1 to "localhost", whose MariaDB default is
            # unix_socket only: keep socket auth and also accept an empty password.
            log("also allowing root@localhost with an empty password")
            cur.execute(
                "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket "
                "OR mysql_native_password USING PASSWORD('')"
            )
    conn.close()
    if not _tcp_root_ok(port):
        return EXIT_DENIED
    log(f"bootstrapped database {database!r}; root@127.0.0.1:{port} works with no password")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MySQL probe for ensure-mysql.sh")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_check = sub.add_parser("check")
    p_check.add_argument("url")
    p_check.add_argument("--create-db", action="store_true")
    p_boot = sub.add_parser("bootstrap")
    p_boot.add_argument("--socket", required=True)
    p_boot.add_argument("--db", required=True)
    p_boot.add_argument("--port", type=int, default=3306)
    args = parser.parse_args(argv)

    try:
        import pymysql  # noqa: F401
    except ImportError:
        log(f"pymysql is not importable by {sys.executable}; run `make install` first")
        return EXIT_NO_DRIVER

    try:
        if args.cmd == "check":
            return check(args.url, args.create_db)
        return bootstrap(args.socket, args.db, args.port)
    except ValueError as exc:
        log(str(exc))
        return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
