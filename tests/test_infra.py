"""Tests for the fault-injection / TLS test infrastructure in ``tests/infra``.

Everything here is real: a private mariadbd, real sockets, real TLS. Nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomysql
import pytest
from cryptography import x509
from pymysql.err import OperationalError

from tests.infra import (
    COM_PING,
    CertBundle,
    CutMode,
    FaultProxy,
    MariaDBNotAvailableError,
    MariaDBStartError,
    ThrowawayMariaDB,
    generate_certs,
    require_mariadb,
)

CR_CONN_HOST_ERROR = 2003
CR_SERVER_LOST = 2013


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayMariaDB]:
    with ThrowawayMariaDB(wait_timeout=3600, extra_args=["--max-connections=77"]) as db:
        yield db


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    return generate_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(certs: CertBundle) -> Iterator[ThrowawayMariaDB]:
    with ThrowawayMariaDB(
        ssl_cert=certs.server_cert, ssl_key=certs.server_key, ssl_ca=certs.ca_cert
    ) as db:
        yield db


@pytest.fixture
async def proxy(server: ThrowawayMariaDB) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(server.host, server.port) as p:
        yield p


@asynccontextmanager
async def connect(host: str, port: int, **kwargs: Any) -> AsyncIterator[Any]:
    """aiomysql connection (autocommit=True: no COM_QUERY is sent while connecting)."""
    params: dict[str, Any] = {
        "user": "root",
        "password": "",
        "db": "test",
        "autocommit": True,
        "connect_timeout": 10,
    }
    params.update(kwargs)
    conn = await aiomysql.connect(host=host, port=port, **params)
    try:
        yield conn
    finally:
        await aclose(conn)


async def aclose(conn: Any) -> None:
    """Close an aiomysql connection and wait until its socket is really closed.

    ``Connection.close()`` only starts closing; over TLS the close_notify exchange finishes
    on later loop iterations. If the test's event loop is torn down first, the socket leaks
    and ``filterwarnings=error`` turns the ResourceWarning into a failure of a random later
    test. aiomysql exposes no public handle, hence ``_writer``.
    """
    writer = conn._writer
    conn.close()
    if writer is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await writer.wait_closed()


async def query(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def expect_lost(conn: Any, sql: str, args: Any = None) -> OperationalError:
    with pytest.raises(OperationalError) as excinfo:
        await query(conn, sql, args)
    assert excinfo.value.args[0] == CR_SERVER_LOST, excinfo.value.args
    return excinfo.value


def fresh_table(db: ThrowawayMariaDB, name: str) -> None:
    db.sync_query(f"DROP TABLE IF EXISTS `{name}`")
    db.sync_query(f"CREATE TABLE `{name}` (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")


def ids(db: ThrowawayMariaDB, table: str) -> list[int]:
    return [row[0] for row in db.sync_query(f"SELECT id FROM `{table}` ORDER BY id")]


# --------------------------------------------------------------------------- certs


def test_generate_certs_chain_and_sans(tmp_path: Path) -> None:
    bundle = generate_certs(tmp_path / "pki", hostnames=("localhost", "db.test"))
    ca = x509.load_pem_x509_certificate(bundle.ca_cert.read_bytes())
    other = x509.load_pem_x509_certificate(bundle.other_ca_cert.read_bytes())
    server_cert = x509.load_pem_x509_certificate(bundle.server_cert.read_bytes())
    client_cert = x509.load_pem_x509_certificate(bundle.client_cert.read_bytes())

    server_cert.verify_directly_issued_by(ca)
    client_cert.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)
    with pytest.raises(ValueError):
        server_cert.verify_directly_issued_by(other)
    assert ca.subject != other.subject

    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "db.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for key in (bundle.ca_key, bundle.server_key, bundle.client_key, bundle.other_ca_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()

    # Python's own verifier agrees (this is what aiomysql uses).
    ctx = ssl.create_default_context(cafile=str(bundle.ca_cert))
    ctx.load_verify_locations(cafile=str(bundle.ca_cert))
    assert len(ctx.get_ca_certs()) == 1


# --------------------------------------------------------------------------- throwaway server


async def test_throwaway_server_accepts_queries(server: ThrowawayMariaDB) -> None:
    assert server.port != 3306
    assert server.url == f"mysql+aiomysql://root@127.0.0.1:{server.port}/test"
    assert server.is_running
    async with connect(server.host, server.port) as conn:
        rows = await query(
            conn,
            "SELECT 1, DATABASE(), CURRENT_USER(), @@port, @@global.wait_timeout, "
            "@@max_connections, @@performance_schema, @@character_set_server",
        )
    assert rows == [(1, "test", "root@127.0.0.1", server.port, 3600, 77, 0, "utf8mb4")]


def test_real_authentication_is_enforced(server: ThrowawayMariaDB) -> None:
    import pymysql

    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        pymysql.connect(host=server.host, port=server.port, user="root", password="wrong")
    assert excinfo.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR: grant tables are live


async def test_restart_keeps_data_and_port(server: ThrowawayMariaDB) -> None:
    fresh_table(server, "restart_t")
    server.sync_query("INSERT INTO restart_t VALUES (1, 'kept')")
    port, pid = server.port, server.pid
    await server.arestart()
    assert server.port == port
    assert server.pid != pid
    async with connect(server.host, server.port) as conn:
        assert await query(conn, "SELECT id, v FROM restart_t") == [(1, "kept")]


async def test_kill_is_a_crash_and_committed_data_survives(server: ThrowawayMariaDB) -> None:
    fresh_table(server, "crash_t")
    server.sync_query("INSERT INTO crash_t VALUES (7, 'committed')")
    port = server.port
    await server.akill()
    assert not server.is_running
    with pytest.raises(OperationalError) as excinfo:
        async with connect(server.host, port):
            pass
    assert excinfo.value.args[0] == CR_CONN_HOST_ERROR
    await server.astart()
    assert server.port == port
    assert ids(server, "crash_t") == [7]


def test_missing_binaries_raise_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDB_MEMORY_MARIADBD", "/nonexistent/mariadbd")
    with pytest.raises(MariaDBNotAvailableError, match="never skipped"):
        require_mariadb()
    with pytest.raises(MariaDBNotAvailableError):
        ThrowawayMariaDB()


def test_start_failure_reports_error_log_and_cleans_up() -> None:
    db = ThrowawayMariaDB(extra_args=["--definitely-not-an-option=1"], startup_timeout=20)
    root = db.root
    try:
        with pytest.raises(MariaDBStartError, match="definitely-not-an-option"):
            db.start()
        assert not db.is_running
    finally:
        db.close()
    assert not root.exists()


def test_server_and_temp_dir_die_with_a_killed_owner_process() -> None:
    """SIGKILL of the owning process (no finalizers run) must not leave a mariadbd behind."""
    child = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, sys.argv[1])
        from tests.infra import ThrowawayMariaDB
        db = ThrowawayMariaDB()
        db.start()
        print(db.pid, db.root, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    repo = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(
        [sys.executable, "-c", child, repo], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid_text, root_text = proc.stdout.split()
    pid, root = int(pid_text), Path(root_text)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (Path(f"/proc/{pid}").exists() or root.exists()):
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "orphaned mariadbd still running"
    assert not root.exists(), "temp dir of the killed owner was not removed"


# --------------------------------------------------------------------------- proxy


async def test_proxy_forwards_queries(server: ThrowawayMariaDB, proxy: FaultProxy) -> None:
    assert proxy.port not in (0, server.port)
    assert proxy.url() == f"mysql+aiomysql://root@127.0.0.1:{proxy.port}/test"
    async with connect(proxy.host, proxy.port) as conn:
        assert await query(conn, "SELECT 1 + 1, @@port") == [(2, server.port)]
        assert proxy.active_connections == 1
        await conn.ensure_closed()  # sends COM_QUIT (plain close() does not)
    await proxy.wait_idle()
    s = proxy.stats
    assert s.connections_total == 1
    assert s.connections_active == 0
    # COM_QUERY(SELECT) + COM_QUIT on close
    assert s.queries_seen == 1
    assert s.commands_seen == 2
    assert s.bytes_client_to_server > 0
    assert s.bytes_server_to_client > 0
    assert s.total_cuts == 0


async def test_before_request_drops_the_write(server: ThrowawayMariaDB, proxy: FaultProxy) -> None:
    fresh_table(server, "before_t")
    arm = proxy.arm(CutMode.BEFORE_REQUEST)  # no predicate: first COM_QUERY after connect
    async with connect(proxy.host, proxy.port) as conn:
        assert proxy.stats.commands_seen == 0  # handshake traffic is never cut
        err = await expect_lost(conn, "INSERT INTO before_t VALUES (1, 'x')")
    assert isinstance(err.__cause__, ConnectionResetError)
    await arm.wait()
    assert arm.fired == 1 and arm.exhausted
    assert ids(server, "before_t") == []  # never reached the server
    assert proxy.stats.cuts[CutMode.BEFORE_REQUEST] == 1
    assert proxy.cut_log[0].text == "INSERT INTO before_t VALUES (1, 'x')"
    async with connect(proxy.host, proxy.port) as conn:  # arm exhausted: traffic flows
        await query(conn, "INSERT INTO before_t VALUES (2, 'y')")
    assert ids(server, "before_t") == [2]


async def test_after_request_commits_but_client_sees_error(
    server: ThrowawayMariaDB, proxy: FaultProxy
) -> None:
    fresh_table(server, "after_t")
    arm = proxy.arm(CutMode.AFTER_REQUEST, match="insert into after_t")
    async with connect(proxy.host, proxy.port) as conn:
        assert await query(conn, "SELECT COUNT(*) FROM after_t") == [(0,)]  # not matched
        await expect_lost(conn, "INSERT INTO after_t VALUES (1, 'ambiguous')")
    await arm.wait()
    # The statement ran and committed although the client saw "lost connection".
    assert ids(server, "after_t") == [1]
    assert proxy.stats.cuts[CutMode.AFTER_REQUEST] == 1


async def test_after_request_without_waiting_for_reply(
    server: ThrowawayMariaDB, proxy: FaultProxy
) -> None:
    fresh_table(server, "after_nowait_t")
    arm = proxy.arm(CutMode.AFTER_REQUEST, match="INSERT", wait_for_reply=False)
    async with connect(proxy.host, proxy.port) as conn:
        await expect_lost(conn, "INSERT INTO after_nowait_t VALUES (1, 'x')")
    await arm.wait()
    # The server got the whole command before FIN; poll briefly for it to finish.
    for _ in range(200):
        if ids(server, "after_nowait_t") == [1]:
            break
        await asyncio.sleep(0.01)
    assert ids(server, "after_nowait_t") == [1]


async def test_during_reply_truncates_large_result(proxy: FaultProxy) -> None:
    proxy.arm(CutMode.DURING_REPLY, match="REPEAT", reply_bytes=1000)
    async with connect(proxy.host, proxy.port) as conn:
        before = proxy.stats.bytes_server_to_client
        await expect_lost(conn, "SELECT REPEAT('x', 200000)")
        assert proxy.stats.bytes_server_to_client - before == 1000
    assert proxy.stats.cuts[CutMode.DURING_REPLY] == 1
    assert proxy.stats.bytes_dropped > 0


async def test_during_reply_always_withholds_part_of_a_short_reply(proxy: FaultProxy) -> None:
    async with connect(proxy.host, proxy.port) as conn:
        before = proxy.stats.bytes_server_to_client
        assert await query(conn, "SELECT 42") == [(42,)]
        full_reply = proxy.stats.bytes_server_to_client - before
        arm = proxy.arm(CutMode.DURING_REPLY, reply_bytes=10_000)
        before = proxy.stats.bytes_server_to_client
        await expect_lost(conn, "SELECT 42")
        assert proxy.stats.bytes_server_to_client - before == full_reply - 1
    await arm.wait()


async def test_skip_and_count_select_exact_statements(
    server: ThrowawayMariaDB, proxy: FaultProxy
) -> None:
    fresh_table(server, "skip_t")
    arm = proxy.arm(CutMode.BEFORE_REQUEST, match="INSERT INTO skip_t", skip=1, count=2)
    outcomes: list[bool] = []
    for i in range(1, 5):
        async with connect(proxy.host, proxy.port) as conn:
            try:
                await query(conn, "INSERT INTO skip_t VALUES (%s, 'v')", (i,))
                outcomes.append(True)
            except OperationalError as exc:
                assert exc.args[0] == CR_SERVER_LOST
                outcomes.append(False)
    assert outcomes == [True, False, False, True]
    assert ids(server, "skip_t") == [1, 4]
    assert arm.matched == 3 and arm.fired == 2


async def test_arm_other_commands_ping(proxy: FaultProxy) -> None:
    arm = proxy.arm(CutMode.BEFORE_REQUEST, commands=[COM_PING])
    async with connect(proxy.host, proxy.port) as conn:
        assert await query(conn, "SELECT 1") == [(1,)]  # COM_QUERY is not armed
        with pytest.raises(OperationalError) as excinfo:
            await conn.ping(reconnect=False)
        assert excinfo.value.args[0] == CR_SERVER_LOST
    assert arm.fired == 1


async def test_cut_all_resets_every_live_connection(proxy: FaultProxy) -> None:
    async with (
        connect(proxy.host, proxy.port) as a,
        connect(proxy.host, proxy.port) as b,
    ):
        assert await query(a, "SELECT 1") == [(1,)]
        assert await query(b, "SELECT 2") == [(2,)]
        assert proxy.cut_all() == 2
        await expect_lost(a, "SELECT 1")
        await expect_lost(b, "SELECT 2")
    assert proxy.stats.manual_cuts == 2
    await proxy.wait_idle()
    async with connect(proxy.host, proxy.port) as c:
        assert await query(c, "SELECT 3") == [(3,)]


async def test_refuse_new_connections(proxy: FaultProxy) -> None:
    proxy.refuse_new = True
    with pytest.raises(OperationalError) as excinfo:
        async with connect(proxy.host, proxy.port):
            pass
    assert excinfo.value.args[0] == CR_SERVER_LOST  # reset while reading the greeting
    assert proxy.stats.connections_refused == 1
    proxy.refuse_new = False
    async with connect(proxy.host, proxy.port) as conn:
        assert await query(conn, "SELECT 1") == [(1,)]


async def test_upstream_down_and_restart_behind_proxy(
    server: ThrowawayMariaDB, proxy: FaultProxy
) -> None:
    async with connect(proxy.host, proxy.port) as conn:
        assert await query(conn, "SELECT 1") == [(1,)]
        await server.astop()
        await proxy.wait_idle()  # server-side close propagated through the proxy
        with pytest.raises(OperationalError) as excinfo:
            await query(conn, "SELECT 1")
        assert excinfo.value.args[0] == CR_SERVER_LOST
    with pytest.raises(OperationalError) as excinfo:
        async with connect(proxy.host, proxy.port):
            pass
    assert excinfo.value.args[0] == CR_SERVER_LOST
    assert proxy.stats.upstream_connect_failures == 1
    await server.astart()
    async with connect(proxy.host, proxy.port) as conn:
        assert await query(conn, "SELECT 1") == [(1,)]


async def _chaos_run(server: ThrowawayMariaDB, seed: int, probability: float) -> list[bool]:
    outcomes: list[bool] = []
    async with FaultProxy(server.host, server.port) as p:
        p.set_chaos(probability, seed=seed, match="SELECT", reply_bytes=(0, 40))
        conn: Any = None
        try:
            for i in range(30):
                if conn is None:
                    conn = await aiomysql.connect(
                        host=p.host, port=p.port, user="root", password="", autocommit=True
                    )
                try:
                    assert await query(conn, "SELECT %s", (i,)) == [(i,)]
                    outcomes.append(True)
                except OperationalError as exc:
                    assert exc.args[0] == CR_SERVER_LOST
                    outcomes.append(False)
                    await aclose(conn)
                    conn = None
        finally:
            if conn is not None:
                await aclose(conn)
        assert p.stats.chaos_cuts == outcomes.count(False)
        assert {r.source for r in p.cut_log} <= {"chaos"}
    return outcomes


async def test_chaos_is_reproducible_with_a_seed(server: ThrowawayMariaDB) -> None:
    first = await _chaos_run(server, seed=1234, probability=0.4)
    second = await _chaos_run(server, seed=1234, probability=0.4)
    assert first == second
    assert 0 < first.count(False) < len(first)
    assert all(await _chaos_run(server, seed=1, probability=0.0))
    assert not any(await _chaos_run(server, seed=1, probability=1.0))


# --------------------------------------------------------------------------- TLS


async def test_tls_with_generated_ca(tls_server: ThrowawayMariaDB, certs: CertBundle) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    assert ctx.check_hostname
    async with connect(tls_server.host, tls_server.port, ssl=ctx) as conn:
        ((_, cipher),) = await query(conn, "SHOW STATUS LIKE 'Ssl_cipher'")
        ((_, version),) = await query(conn, "SHOW STATUS LIKE 'Ssl_version'")
    assert cipher
    assert version.startswith("TLSv1.")


async def test_tls_wrong_ca_fails(tls_server: ThrowawayMariaDB, certs: CertBundle) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.other_ca_cert))
    with pytest.raises(OperationalError) as excinfo:
        async with connect(tls_server.host, tls_server.port, ssl=ctx):
            pass
    assert excinfo.value.args[0] == CR_CONN_HOST_ERROR
    assert isinstance(excinfo.value.__cause__, ssl.SSLCertVerificationError)


async def test_tls_hostname_mismatch_fails_only_with_check_hostname(
    tls_server: ThrowawayMariaDB, certs: CertBundle
) -> None:
    # 127.0.0.2 is loopback but not in the certificate's SANs (localhost, 127.0.0.1).
    async with FaultProxy(tls_server.host, tls_server.port, listen_host="127.0.0.2") as p:
        strict = ssl.create_default_context(cafile=str(certs.ca_cert))
        with pytest.raises(OperationalError) as excinfo:
            async with connect(p.host, p.port, ssl=strict):
                pass
        cause = excinfo.value.__cause__
        assert isinstance(cause, ssl.SSLCertVerificationError)
        assert "mismatch" in str(cause)

        relaxed = ssl.create_default_context(cafile=str(certs.ca_cert))
        relaxed.check_hostname = False
        async with connect(p.host, p.port, ssl=relaxed) as conn:
            ((_, cipher),) = await query(conn, "SHOW STATUS LIKE 'Ssl_cipher'")
            assert cipher
            # TLS is opaque to the proxy, but cut_all still works on it.
            assert p.stats.tls_passthrough == 2
            assert p.stats.commands_seen == 0
            assert p.cut_all() == 1
            await expect_lost(conn, "SELECT 1")
