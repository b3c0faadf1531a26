"""TLS for real: a throwaway CA and server certificate, throwaway mariadbd servers with and
without TLS, and every URL form through the library.

The matrix (printed with the results):

==============================  ====================  ===========  =================================
URL parameters                  server certificate    host         expected
==============================  ====================  ===========  =================================
ssl_ca + verify_cert/identity   SAN localhost, IP     127.0.0.1    TLS, Ssl_cipher set
ssl_ca + verify_cert/identity   SAN localhost, IP     localhost    TLS, Ssl_cipher set
ssl_ca (pymysql URL form)       SAN localhost, IP     127.0.0.1    TLS, Ssl_cipher set
ssl_ca of an unrelated CA       SAN localhost, IP     127.0.0.1    ConnectError (unknown issuer)
ssl=true (system CA store)      SAN localhost, IP     127.0.0.1    ConnectError (unknown issuer)
ssl_ca + verify_identity        SAN localhost only    127.0.0.1    ConnectError (host mismatch)
ssl_ca + verify_identity        SAN localhost only    localhost    TLS, Ssl_cipher set
ssl_ca, verify_identity=false   SAN localhost only    127.0.0.1    TLS, Ssl_cipher set
ssl_verify_cert=false           SAN localhost, IP     127.0.0.1    TLS (unverified), Ssl_cipher set
ssl_ca + verify_cert/identity   SAN localhost, IP     localhost.   TLS, checked as "localhost"
ssl_ca + ssl_cert + ssl_key     SAN localhost, IP     127.0.0.1    TLS with a client certificate
ssl_ca                          no TLS on the server  127.0.0.1    InsecureTransportError, no auth
ssl=true                        no TLS on the server  127.0.0.1    InsecureTransportError
(none)                          no TLS on the server  127.0.0.1    plaintext, Ssl_cipher empty
==============================  ====================  ===========  =================================

Then, without a server: TLS files that cannot be used (not PEM, encrypted, mismatched, a key
without its certificate) are a ConfigurationError at construction, and TiDB Cloud host names
(any case, trailing dot) always get verified TLS that cannot be weakened. The downgrade attack
itself (a hostile server without TLS) is in ``test_tls_downgrade.py``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from langchain_core.messages import AIMessage, HumanMessage

import tidb_memory
from tests.infra import CertBundle, ThrowawayMariaDB, generate_certs
from tests.infra.fake_mysql import FakeMySQLServer
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    ConfigurationError,
    ConnectError,
    InsecureTransportError,
    RetriesExhaustedError,
    TiDBChatMessageHistory,
)

pytestmark = pytest.mark.timeout(120)

PASSWORD = "pw-never-shown"


@dataclass(frozen=True)
class Servers:
    certs: CertBundle  # SANs: DNS localhost, IP 127.0.0.1
    dns_only: CertBundle  # SAN: DNS localhost only
    both: ThrowawayMariaDB
    localhost_only: ThrowawayMariaDB
    plain: ThrowawayMariaDB


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    certs = generate_certs(tmp_path_factory.mktemp("tls-both"))
    dns_only = generate_certs(
        tmp_path_factory.mktemp("tls-dns"), hostnames=("localhost",), ip_addresses=()
    )
    with (
        ThrowawayMariaDB(
            ssl_cert=certs.server_cert, ssl_key=certs.server_key, ssl_ca=certs.ca_cert
        ) as both,
        ThrowawayMariaDB(
            ssl_cert=dns_only.server_cert, ssl_key=dns_only.server_key, ssl_ca=dns_only.ca_cert
        ) as localhost_only,
        ThrowawayMariaDB() as plain,
    ):
        yield Servers(certs, dns_only, both, localhost_only, plain)


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


def url(server: ThrowawayMariaDB, host: str, query: str, scheme: str = "mysql+aiomysql") -> str:
    base = f"{scheme}://root@{host}:{server.port}/test"
    return f"{base}?{query}" if query else base


def ca(path: Path) -> str:
    return quote(str(path), safe="/")


async def cipher_through_library(connection_string: str) -> str:
    """Round-trip a session and return the session's ``Ssl_cipher``, all through tidb-memory."""
    history = AsyncTiDBChatMessageHistory(
        "tls-" + uuid.uuid4().hex[:8], connection_string, table_name="tls"
    )
    await history.aadd_messages([HumanMessage("over TLS?"), AIMessage("let us see")])
    assert [m.content for m in await history.aget_messages()] == ["over TLS?", "let us see"]
    async with history.store.db.connection() as conn:
        rows = await conn.fetchall("SHOW STATUS LIKE 'Ssl_cipher'", ())
    return str(rows[0][1]) if rows else ""


def report(case: str, outcome: str, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[tls] {case:<62} -> {outcome}")


def verify_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    item: BaseException | None = exc
    while item is not None:
        if isinstance(item, ssl.SSLCertVerificationError):
            return item
        item = item.__cause__ or item.__context__
    return None


# --- verified TLS connects and shows a cipher ---------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "host", "query_fmt", "scheme"),
    [
        (
            "both",
            "127.0.0.1",
            "ssl_ca={ca}&ssl_verify_cert=true&ssl_verify_identity=true",
            "mysql+aiomysql",
        ),
        (
            "both",
            "localhost",
            "ssl_ca={ca}&ssl_verify_cert=true&ssl_verify_identity=true",
            "mysql+aiomysql",
        ),
        (
            "both",
            "127.0.0.1",
            "ssl_ca={ca}&ssl_verify_cert=true&ssl_verify_identity=true",
            "mysql+pymysql",
        ),
        ("localhost_only", "localhost", "ssl_ca={ca}&ssl_verify_identity=true", "mysql"),
        ("localhost_only", "127.0.0.1", "ssl_ca={ca}&ssl_verify_identity=false", "mysql"),
        ("both", "127.0.0.1", "ssl_verify_cert=false", "mysql+aiomysql"),
    ],
    ids=[
        "verified-ip",
        "verified-localhost",
        "pymysql-url-form",
        "dns-san-by-name",
        "identity-off",
        "verify-cert-off",
    ],
)
async def test_tls_connects_and_shows_a_cipher(
    servers: Servers,
    server_name: str,
    host: str,
    query_fmt: str,
    scheme: str,
    closing: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server: ThrowawayMariaDB = getattr(servers, server_name)
    bundle = servers.certs if server_name == "both" else servers.dns_only
    query = query_fmt.format(ca=ca(bundle.ca_cert))
    cipher = await cipher_through_library(url(server, host, query, scheme))
    assert cipher, "the session is not encrypted"
    report(f"{scheme} {host} {server_name} {query_fmt}", f"TLS, Ssl_cipher={cipher}", capsys)


# --- verification failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "host", "query_fmt", "reason"),
    [
        ("both", "127.0.0.1", "ssl_ca={other}&ssl_verify_cert=true", "issuer|self-signed"),
        ("both", "127.0.0.1", "ssl=true", "issuer|self-signed"),
        (
            "localhost_only",
            "127.0.0.1",
            "ssl_ca={ca}&ssl_verify_cert=true&ssl_verify_identity=true",
            "mismatch",
        ),
        ("localhost_only", "127.0.0.1", "ssl_ca={ca}", "mismatch"),
    ],
    ids=["wrong-ca", "system-store", "wrong-hostname", "wrong-hostname-by-default"],
)
async def test_tls_verification_failures_are_refused(
    servers: Servers,
    server_name: str,
    host: str,
    query_fmt: str,
    reason: str,
    closing: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server: ThrowawayMariaDB = getattr(servers, server_name)
    bundle = servers.certs if server_name == "both" else servers.dns_only
    query = query_fmt.format(ca=ca(bundle.ca_cert), other=ca(bundle.other_ca_cert))
    history = AsyncTiDBChatMessageHistory("tls-bad", url(server, host, query), table_name="tls")
    started = time.monotonic()
    with pytest.raises((ConnectError, RetriesExhaustedError)) as info:
        await history.aget_messages()
    elapsed = time.monotonic() - started
    err = info.value
    cause = verify_failure(err)
    assert cause is not None, traceback.format_exception(err)
    assert any(r in str(cause.verify_message).lower() for r in reason.split("|"))
    # A certificate that does not verify will not verify on the next attempt either.
    assert type(err) is ConnectError and err.attempts == 1
    assert elapsed < 5, elapsed
    assert "certificate" in str(err) and "ssl_ca" in str(err)
    report(f"{host} {server_name} {query_fmt}", f"{type(err).__name__}: {err}", capsys)


def test_wrong_ca_from_sync_code(servers: Servers) -> None:
    query = f"ssl_ca={ca(servers.certs.other_ca_cert)}&ssl_verify_cert=true"
    history = TiDBChatMessageHistory(
        "tls-sync", url(servers.both, "127.0.0.1", query), table_name="tls"
    )
    try:
        with pytest.raises(ConnectError) as info:
            history.messages  # noqa: B018
        assert verify_failure(info.value) is not None
    finally:
        history.close()


# --- a server without TLS -----------------------------------------------------------------


@pytest.mark.parametrize(
    "query_fmt", ["ssl_ca={ca}", "ssl=true", "ssl_ca={ca}&ssl_verify_cert=false"]
)
async def test_plaintext_server_is_refused_when_tls_was_asked_for(
    servers: Servers, query_fmt: str, closing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    query = query_fmt.format(ca=ca(servers.certs.ca_cert))
    history = AsyncTiDBChatMessageHistory(
        "tls-plain", url(servers.plain, "127.0.0.1", query), table_name="tls"
    )
    preauth = "SHOW GLOBAL STATUS LIKE 'Aborted_connects_preauth'"
    before = int(servers.plain.sync_query(preauth)[0][1])
    with pytest.raises(InsecureTransportError) as info:
        await history.aadd_messages([HumanMessage("must not travel in plaintext")])
    assert "did not offer TLS" in str(info.value)
    assert "before any credential was sent" in str(info.value)
    assert info.value.attempts == 1
    # The server itself saw one connection end before authentication (this server is private;
    # the loop must run for the closed socket to reach it, so poll without blocking it).
    for _ in range(200):
        after = int(servers.plain.sync_query(preauth)[0][1])
        if after != before:
            break
        await asyncio.sleep(0.05)
    assert after == before + 1
    report(f"127.0.0.1 plain {query_fmt}", f"InsecureTransportError: {info.value}", capsys)
    # Nothing was written: the refusal came before any statement of ours.
    rows = servers.plain.sync_query(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'tls'"
    )
    assert rows[0][0] == 0


async def test_plaintext_without_tls_params_is_allowed(
    servers: Servers, closing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cipher = await cipher_through_library(url(servers.plain, "127.0.0.1", ""))
    assert cipher == ""
    report("127.0.0.1 plain (no ssl params)", "plaintext, Ssl_cipher empty", capsys)


async def test_aclose_waits_for_the_tls_close_handshake(servers: Servers, closing: None) -> None:
    """A loop closed right after aclose() must not leak TLS sockets (ResourceWarning)."""
    from tidb_memory import engine as engine_module

    query = f"ssl_ca={ca(servers.certs.ca_cert)}"
    history = AsyncTiDBChatMessageHistory(
        "tls-close", url(servers.both, "127.0.0.1", query), table_name="tls"
    )
    await history.aget_messages()
    resources = engine_module._loops[asyncio.get_running_loop()]
    transports = list(resources.tls)
    assert transports
    await history.aclose()
    for transport in transports:
        sock = transport.get_extra_info("socket")
        assert sock is None or sock.fileno() == -1, transport


async def test_trailing_dot_host_is_verified_as_the_name_without_it(
    servers: Servers, closing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``localhost.`` is the same DNS name as ``localhost``, but a certificate names the latter.

    Python's hostname check would refuse ``localhost.`` (and this machine's resolver does not
    know it), so the library connects to, and verifies, the name without the dot.
    """
    query = f"ssl_ca={ca(servers.certs.ca_cert)}&ssl_verify_cert=true&ssl_verify_identity=true"
    cipher = await cipher_through_library(url(servers.both, "localhost.", query))
    assert cipher
    report("localhost. both verified", f"TLS, Ssl_cipher={cipher}", capsys)


async def test_client_certificate_and_key_are_presented(servers: Servers, closing: None) -> None:
    certs = servers.certs
    query = (
        f"ssl_ca={ca(certs.ca_cert)}&ssl_cert={ca(certs.client_cert)}"
        f"&ssl_key={ca(certs.client_key)}"
    )
    history = AsyncTiDBChatMessageHistory(
        "tls-client-cert", url(servers.both, "127.0.0.1", query), table_name="tls"
    )
    async with history.store.db.connection() as conn:
        rows = await conn.fetchall("SHOW STATUS LIKE 'Ssl_cipher'", ())
        assert rows[0][1]
        ssl_object = conn.driver._writer.transport.get_extra_info("ssl_object")
        assert ssl_object is not None and ssl_object.version() is not None


# --- TLS files that cannot be used: a ConfigurationError before any I/O ---------------------


@dataclass(frozen=True)
class BadFiles:
    not_pem: Path
    encrypted_key: Path
    cert_without_key: Path
    certs: CertBundle


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> BadFiles:
    from cryptography.hazmat.primitives import serialization

    directory = tmp_path_factory.mktemp("tls-bad")
    certs = generate_certs(directory / "certs")
    not_pem = directory / "not-a-pem.txt"
    not_pem.write_text("this is not a certificate\n")
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    encrypted = directory / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return BadFiles(not_pem, encrypted, certs.client_cert, certs)


BAD_TLS_FILES = {
    # case: (query built from BadFiles, the parameter the message must name, a phrase)
    "ca-not-pem": ("ssl_ca={not_pem}", "ssl_ca", "not-a-pem.txt"),
    "ca-is-a-key": ("ssl_ca={client_key}", "ssl_ca", "client-key.pem"),
    "cert-not-pem": ("ssl_cert={not_pem}&ssl_key={client_key}", "ssl_cert", "not-a-pem.txt"),
    "key-not-pem": ("ssl_cert={client_cert}&ssl_key={not_pem}", "ssl_key", "not-a-pem.txt"),
    "key-does-not-match": (
        "ssl_cert={client_cert}&ssl_key={server_key}",
        "ssl_key",
        "does not match",
    ),
    "key-encrypted": ("ssl_cert={client_cert}&ssl_key={encrypted_key}", "ssl_key", "encrypted"),
    "key-without-cert": ("ssl_ca={ca_cert}&ssl_key={client_key}", "ssl_key", "ssl_cert"),
    "cert-without-key": ("ssl_cert={client_cert}", "ssl_cert", "ssl_key"),
}


@pytest.mark.parametrize("case", list(BAD_TLS_FILES))
async def test_tls_file_that_cannot_be_used_is_a_configuration_error_before_io(
    case: str, bad_files: BadFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    """Construction reads no file (it may run on an event loop); the first call loads them in a
    worker thread and refuses a bad one before dialling. ``create_engine`` loads them at once.
    A missing ``ssl_cert`` is known from the URL alone: refused at construction."""
    query_fmt, parameter, phrase = BAD_TLS_FILES[case]
    paths = {
        "not_pem": bad_files.not_pem,
        "encrypted_key": bad_files.encrypted_key,
        "client_cert": bad_files.certs.client_cert,
        "client_key": bad_files.certs.client_key,
        "server_key": bad_files.certs.server_key,
        "ca_cert": bad_files.certs.ca_cert,
    }
    query = query_fmt.format(**{name: ca(path) for name, path in paths.items()})
    at_construction = case == "key-without-cert"

    async def first_call() -> None:
        history = AsyncTiDBChatMessageHistory("s", connection_string, table_name="tls")
        await history.aget_messages()

    with FakeMySQLServer() as fake:
        connection_string = f"mysql+aiomysql://u:{PASSWORD}@127.0.0.1:{fake.port}/test?{query}"
        with pytest.raises(ConfigurationError) as info:
            if at_construction:
                AsyncTiDBChatMessageHistory("s", connection_string, table_name="tls")
            else:
                await first_call()
        with pytest.raises(ConfigurationError) as engine_info:
            tidb_memory.create_engine(connection_string)
        for error in (info.value, engine_info.value):
            message = str(error)
            assert parameter in message and phrase in message, message
            assert "Is the server running" not in message and PASSWORD not in message
        assert fake.accepted == 0  # refused before connecting: nothing was even dialled
    report(f"bad TLS file: {case}", f"ConfigurationError: {message}", capsys)


# --- TiDB Cloud hosts ---------------------------------------------------------------------

CLOUD = "gateway01.us-east-1.prod.aws.tidbcloud.com"


@pytest.mark.parametrize(
    "host", [CLOUD, CLOUD + ".", CLOUD.upper(), "x.TiDBCloud.com."], ids=str.lower
)
def test_tidb_cloud_host_always_gets_verified_tls(host: str) -> None:
    db = tidb_memory.engine.get_database(f"mysql+pymysql://u:pw@{host}:4000/test")
    spec = db.spec
    assert spec.tidb_cloud and spec.tls is not None
    context = spec.tls.context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert spec.url.host == host.rstrip(".")  # the name the certificate is checked against


@pytest.mark.parametrize(
    "query", ["ssl=false", "ssl_verify_cert=false", "ssl_verify_identity=false"]
)
@pytest.mark.parametrize("host", [CLOUD, CLOUD + "."], ids=["name", "trailing-dot"])
def test_tidb_cloud_host_refuses_weaker_tls(host: str, query: str) -> None:
    """TiDB Cloud serves certificates that verify against the system CA store, for its host
    names: a URL that turns TLS or its checks off is a mistake, refused at construction."""
    with pytest.raises(ConfigurationError) as info:
        TiDBChatMessageHistory("s", f"mysql+pymysql://u:pw@{host}:4000/test?{query}")
    assert "TiDB Cloud" in str(info.value) and query.split("=")[0] in str(info.value)


def test_not_a_tidb_cloud_host() -> None:
    for host in ("tidbcloud.com.example.org", "nottidbcloud.com", "tidbcloud.com"):
        spec = tidb_memory.engine.get_database(f"mysql://u@{host}:4000/test").spec
        assert not spec.tidb_cloud and spec.tls is None, host
