"""A private, throwaway ``mariadbd`` for tests that must stop, crash or reconfigure a server.

The shared server on 127.0.0.1:3306 is never touched: every :class:`ThrowawayMariaDB` gets its
own temporary data directory, socket, pid file and free TCP port on 127.0.0.1, with real
authentication (``root`` with an empty password over TCP, no ``--skip-grant-tables``).

If ``mariadbd`` or ``mariadb-install-db`` cannot be found, :class:`MariaDBNotAvailableError`
is raised: tests that need a throwaway server fail loudly instead of being skipped. Set
``TIDB_MEMORY_MARIADBD`` / ``TIDB_MEMORY_MARIADB_INSTALL_DB`` to point at other binaries.

Data directories are initialised once per process into a cached template (~1 s, ~22 MB) and
then copied for each instance, so further instances start in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pymysql

__all__ = [
    "MariaDBNotAvailableError",
    "MariaDBStartError",
    "ThrowawayMariaDB",
    "find_mariadb_binaries",
    "require_mariadb",
]

HOST = "127.0.0.1"
DEFAULT_DATABASE = "test"

# Options that keep startup fast and the footprint small. Durability settings are left at
# their defaults on purpose: crash tests (``kill()`` + ``restart()``) rely on them.
_FAST_SERVER_ARGS: tuple[str, ...] = (
    "--skip-name-resolve",
    "--performance-schema=OFF",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-log-buffer-size=2M",
    "--skip-log-bin",
    "--loose-feedback=OFF",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--max-connections=200",
    "--max-allowed-packet=64M",
)
# Same sizing during bootstrap so the first start does not have to resize the redo log.
_INSTALL_SERVER_ARGS: tuple[str, ...] = (
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--loose-feedback=OFF",
)


class MariaDBNotAvailableError(RuntimeError):
    """``mariadbd`` / ``mariadb-install-db`` are not installed (tests must fail, not skip)."""


class MariaDBStartError(RuntimeError):
    """The throwaway server did not come up; the message carries its error-log tail."""


def _find(env_var: str, names: Sequence[str], extra_dirs: Sequence[str]) -> str | None:
    override = os.environ.get(env_var)
    if override:
        return override if os.access(override, os.X_OK) else None
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    for name in names:
        found = shutil.which(name, path=search_path)
        if found:
            return found
    return None


def find_mariadb_binaries() -> tuple[str, str] | None:
    """Return ``(mariadbd, mariadb-install-db)`` paths, or ``None`` if either is missing."""
    sbin = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
    server = _find("TIDB_MEMORY_MARIADBD", ["mariadbd", "mysqld"], sbin)
    install = _find(
        "TIDB_MEMORY_MARIADB_INSTALL_DB", ["mariadb-install-db", "mysql_install_db"], sbin
    )
    if server is None or install is None:
        return None
    return server, install


def require_mariadb() -> tuple[str, str]:
    """Like :func:`find_mariadb_binaries` but raise a clear error instead of returning None.

    Use this (never ``pytest.skip``) in fixtures: a missing server binary is an environment
    error that must make the test run fail.
    """
    found = find_mariadb_binaries()
    if found is None:
        raise MariaDBNotAvailableError(
            "mariadbd and mariadb-install-db are required for fault-injection/TLS tests but "
            "were not found on PATH or in /usr/sbin. Install the MariaDB server package "
            "(Debian: `apt-get install mariadb-server`) or set TIDB_MEMORY_MARIADBD and "
            "TIDB_MEMORY_MARIADB_INSTALL_DB. These tests are never skipped."
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tail(path: Path, lines: int, since: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(since)
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _run_as_root_args() -> list[str]:
    return ["--user=root"] if os.geteuid() == 0 else []


# --------------------------------------------------------------------------- template cache

_template_lock = threading.Lock()


def _template_datadir(mariadbd: str, install_db: str) -> Path:
    """Return a pristine, initialised data directory to copy from.

    It is built once per machine (keyed by the binaries and bootstrap options) under the
    temp dir as ``tidb-memory-mariadb-template-<hash>`` and published with an atomic
    rename, so concurrent test processes share it safely. It is never modified afterwards.
    """
    st = os.stat(mariadbd)
    fingerprint = repr(
        (mariadbd, st.st_size, st.st_mtime_ns, install_db, _INSTALL_SERVER_ARGS, os.geteuid())
    )
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    final = Path(tempfile.gettempdir()) / f"tidb-memory-mariadb-template-{key}"
    ready = final / "READY"
    if ready.exists():
        return final / "data"
    with _template_lock:
        if ready.exists():
            return final / "data"
        work = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-"))
        try:
            cmd = [
                install_db,
                "--no-defaults",
                f"--datadir={work / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *_run_as_root_args(),
                *_INSTALL_SERVER_ARGS,
            ]
            basedir = Path(mariadbd).resolve().parent.parent
            if basedir != Path("/usr"):
                cmd.append(f"--basedir={basedir}")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
            if proc.returncode != 0:
                raise MariaDBStartError(
                    f"{install_db} failed with exit code {proc.returncode}:\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
                )
            (work / "READY").write_text(fingerprint)
            if final.exists() and not ready.exists():
                shutil.rmtree(final, ignore_errors=True)  # leftover of a broken attempt
            try:
                os.rename(work, final)
            except OSError:
                if not ready.exists():  # lost the race to a process that then failed
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return final / "data"


# The watchdog holds the read end of a pipe whose write end only this process has. When this
# process dies for any reason (even SIGKILL), the pipe hits EOF and the watchdog kills the
# server recorded in ROOT/server.pid (checking its command line mentions ROOT, so a reused
# pid is never hit) and deletes ROOT. On a normal close() we stop the server ourselves,
# remove server.pid, then close the pipe; the watchdog then just deletes ROOT.
_WATCHDOG_SCRIPT = r"""
read _ignored
pid=$(cat "$1/server.pid" 2>/dev/null)
if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$1"; then
    kill -KILL "$pid" 2>/dev/null
    i=0
    while [ "$i" -lt 100 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
fi
rm -rf -- "$1"
"""


# --------------------------------------------------------------------------- server


class _State:
    """Everything the finalizer needs; kept separate so it does not reference the owner."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file: Any = None
        self.watchdog = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG_SCRIPT, "tidb-memory-mariadb-watchdog", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def server_pid_file(self) -> Path:
        return self.root / "server.pid"


def _finalize(state: _State) -> None:
    proc = state.proc
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    state.proc = None
    state.server_pid_file.unlink(missing_ok=True)
    if state.log_file is not None:
        state.log_file.close()
        state.log_file = None
    if state.watchdog.stdin is not None:
        with contextlib.suppress(OSError):
            state.watchdog.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        state.watchdog.wait(timeout=10)
    shutil.rmtree(state.root, ignore_errors=True)


class ThrowawayMariaDB:
    """A private ``mariadbd`` on 127.0.0.1 with its own temp datadir and port.

    Lifecycle methods are synchronous (they block for ~0.2-1 s); ``astart``/``astop``/
    ``arestart``/``akill`` run them in a worker thread for use inside async tests, so that
    e.g. a :class:`~tests.infra.proxy.FaultProxy` on the same event loop keeps running.
    """

    def __init__(
        self,
        *,
        ssl_cert: str | os.PathLike[str] | None = None,
        ssl_key: str | os.PathLike[str] | None = None,
        ssl_ca: str | os.PathLike[str] | None = None,
        wait_timeout: int | None = None,
        extra_args: Sequence[str] = (),
        database: str = DEFAULT_DATABASE,
        startup_timeout: float = 60.0,
    ) -> None:
        self._mariadbd, self._install_db = require_mariadb()
        if (ssl_cert is None) != (ssl_key is None):
            raise ValueError("ssl_cert and ssl_key must be given together")
        self.ssl_cert = Path(ssl_cert) if ssl_cert is not None else None
        self.ssl_key = Path(ssl_key) if ssl_key is not None else None
        self.ssl_ca = Path(ssl_ca) if ssl_ca is not None else None
        self.wait_timeout = wait_timeout
        self.extra_args = tuple(extra_args)
        self.database = database
        self.startup_timeout = startup_timeout
        self._port: int | None = None
        self._initialised = False
        self._lock = threading.RLock()
        self._state = _State(Path(tempfile.mkdtemp(prefix="tm-mdb-")))
        self._finalizer = weakref.finalize(self, _finalize, self._state)
        self.last_start_seconds: float | None = None

    # ------------------------------------------------------------------ properties
    @property
    def root(self) -> Path:
        return self._state.root

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_path(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "mysqld.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ThrowawayMariaDB has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """``mysql+aiomysql://root@127.0.0.1:PORT/test``."""
        return self.url_for()

    def url_for(self, database: str | None = None, driver: str = "mysql+aiomysql") -> str:
        return f"{driver}://root@{HOST}:{self.port}/{database or self.database}"

    @property
    def tls_enabled(self) -> bool:
        return self.ssl_cert is not None

    @property
    def pid(self) -> int | None:
        proc = self._state.proc
        return proc.pid if proc is not None else None

    @property
    def is_running(self) -> bool:
        proc = self._state.proc
        return proc is not None and proc.poll() is None

    def connect_kwargs(self, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``aiomysql.connect`` / ``pymysql.connect`` (no TLS)."""
        return {
            "host": HOST,
            "port": self.port,
            "user": "root",
            "password": "",
            "db": database or self.database,
        }

    @property
    def stdout_log(self) -> Path:
        return self.root / "stdout.log"

    def error_log_tail(self, lines: int = 40, *, since: int = 0) -> str:
        """Last ``lines`` lines of the error log written after byte offset ``since``."""
        return _tail(self.error_log, lines, since)

    def _failure_logs(self, err_offset: int, out_offset: int) -> str:
        text = f"Error log tail ({self.error_log}):\n{_tail(self.error_log, 40, err_offset)}"
        out = _tail(self.stdout_log, 20, out_offset)
        if out:
            text += f"\nstdout/stderr tail ({self.stdout_log}):\n{out}"
        return text

    # ------------------------------------------------------------------ lifecycle
    def _command(self) -> list[str]:
        cmd = [
            self._mariadbd,
            "--no-defaults",
            *_run_as_root_args(),
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.root}",
            *_FAST_SERVER_ARGS,
        ]
        if self.ssl_cert is not None and self.ssl_key is not None:
            cmd += [f"--ssl-cert={self.ssl_cert}", f"--ssl-key={self.ssl_key}"]
            if self.ssl_ca is not None:
                cmd.append(f"--ssl-ca={self.ssl_ca}")
        if self.wait_timeout is not None:
            cmd.append(f"--wait-timeout={self.wait_timeout}")
        cmd += self.extra_args
        return cmd

    def _probe_ssl(self) -> ssl.SSLContext | None:
        if not self.tls_enabled:
            return None
        # Readiness only: verification is what the tests themselves are about.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect_sync(self, database: str | None, timeout: float) -> Any:
        return pymysql.connect(
            host=HOST,
            port=self.port,
            user="root",
            password="",
            database=database,
            connect_timeout=timeout,
            ssl=self._probe_ssl(),
            autocommit=True,
        )

    def start(self) -> None:
        """Start the server and block until it accepts authenticated connections."""
        with self._lock:
            if self.is_running:
                raise RuntimeError("ThrowawayMariaDB is already running")
            if self._finalizer.alive is False:
                raise RuntimeError("ThrowawayMariaDB has been closed")
            first = not self._initialised
            if first and not self.datadir.exists():
                shutil.copytree(_template_datadir(self._mariadbd, self._install_db), self.datadir)
            attempts = 5 if self._port is None else 1
            for attempt in range(attempts):
                if self._port is None or (first and attempt > 0):
                    self._port = _free_port()
                try:
                    self._start_once()
                    break
                except MariaDBStartError as exc:
                    if attempt + 1 < attempts and "already in use" in str(exc).lower():
                        continue
                    raise
            if first:
                conn = self._connect_sync(None, 10)
                try:
                    with conn.cursor() as cur:
                        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                finally:
                    conn.close()
                self._initialised = True

    def _start_once(self) -> None:
        for stale in (self.pid_file, self.socket_path, Path(f"{self.socket_path}.lock")):
            stale.unlink(missing_ok=True)
        err_offset = _size(self.error_log)
        out_offset = _size(self.stdout_log)
        if self._state.log_file is None:
            self._state.log_file = self.stdout_log.open("ab")
        started = time.monotonic()
        proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._state.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in pytest must not race our own shutdown
        )
        self._state.proc = proc
        self._state.server_pid_file.write_text(str(proc.pid))
        deadline = started + self.startup_timeout
        last_error: BaseException | None = None
        while True:
            if proc.poll() is not None:
                self._clear_proc()
                raise MariaDBStartError(
                    f"mariadbd exited with code {proc.returncode} during startup on port "
                    f"{self._port}. {self._failure_logs(err_offset, out_offset)}"
                )
            try:
                conn = self._connect_sync(None, 2)
            except pymysql.MySQLError as exc:
                last_error = exc
            else:
                conn.close()
                break
            if time.monotonic() > deadline:
                self._kill_proc(proc)
                self._clear_proc()
                raise MariaDBStartError(
                    f"mariadbd did not accept connections on {HOST}:{self._port} within "
                    f"{self.startup_timeout:.0f}s (last error: {last_error!r}). "
                    f"{self._failure_logs(err_offset, out_offset)}"
                )
            time.sleep(0.03)
        self.last_start_seconds = time.monotonic() - started

    def _clear_proc(self) -> None:
        self._state.proc = None
        self._state.server_pid_file.unlink(missing_ok=True)

    @staticmethod
    def _kill_proc(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown: SIGTERM and wait; SIGKILL if it takes longer than ``timeout``."""
        with self._lock:
            proc = self._state.proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._kill_proc(proc)
            self._clear_proc()

    def kill(self) -> None:
        """SIGKILL the server (crash simulation). Committed InnoDB data survives a restart."""
        with self._lock:
            proc = self._state.proc
            if proc is None:
                return
            self._kill_proc(proc)
            self._clear_proc()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and datadir, keeping data."""
        with self._lock:
            self.stop()
            self.start()

    def close(self) -> None:
        """Stop the server and delete its temp directory. Idempotent."""
        with self._lock:
            self.stop()
            self._finalizer()

    # ------------------------------------------------------------------ async wrappers
    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self, grace: float = 30.0) -> None:
        await asyncio.to_thread(self.stop, grace)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def arestart(self) -> None:
        await asyncio.to_thread(self.restart)

    # ------------------------------------------------------------------ helpers
    def sync_query(
        self, sql: str, args: Sequence[Any] | None = None, *, database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement over a fresh direct (non-proxied) connection, autocommit."""
        conn = self._connect_sync(database or self.database, 10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<ThrowawayMariaDB {HOST}:{self._port} {state} root={self.root}>"
