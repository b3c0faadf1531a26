"""TLS cannot be downgraded: a server that offers no TLS never receives a credential.

The attacker is :class:`tests.infra.fake_mysql.FakeMySQLServer`, a real TCP server on the
wire. Its greeting leaves ``CLIENT_SSL`` out, it answers any handshake response with an auth
switch to ``mysql_clear_password`` (so an obedient client writes the password itself), and it
reports a made-up ``Ssl_cipher`` to any client that asks. It records every byte it receives.

For every URL that asks for TLS, through the real library (history classes, pool, driver), the
call must fail with ``InsecureTransportError`` and the fake must have received **nothing at
all**: no handshake response, hence no user name, scramble or password. One connection is
accepted and none is retried: a server without TLS will not grow it on the next attempt.

TiDB Cloud host names (``*.tidbcloud.com``, also written with DNS's trailing dot) must not
need a real DNS entry or an edit of /etc/hosts. The ``cloud_dns`` fixture replaces only
``socket.getaddrinfo`` (which asyncio's ``loop.getaddrinfo`` calls in its executor) with a
resolver that maps those names to 127.0.0.1 and leaves every other name to the system. The
library, SQLAlchemy and aiomysql run unchanged: they connect by the cloud host name, build
the TLS context for it, and meet the fake.

A control test shows that the assertions can fail: the same fake, reached through the library's
connect function with a URL that does not ask for TLS, receives the password in cleartext.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from langchain_core.messages import HumanMessage

import tidb_memory
from tests.infra import generate_certs
from tests.infra.fake_mysql import FakeMySQLServer
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    InsecureTransportError,
    TiDBChatMessageHistory,
)
from tidb_memory._driver import _mysql_creator
from tidb_memory._url import parse_url
from tidb_memory.chat._messages import MessageStore
from tidb_memory.engine import get_database

pytestmark = pytest.mark.timeout(60)

USER = "3pTAoNNegb47Uc8.root"
PASSWORD = "Dg7-never-in-cleartext"
CLOUD_HOST = "gateway01.us-east-1.prod.aws.tidbcloud.com"


@pytest.fixture
def fake() -> Iterator[FakeMySQLServer]:
    with FakeMySQLServer() as server:
        yield server


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_certs(tmp_path_factory.mktemp("downgrade-ca")).ca_cert


@pytest.fixture
def cloud_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve ``*.tidbcloud.com`` (with or without the trailing dot) to 127.0.0.1."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.rstrip(".").lower().endswith(".tidbcloud.com"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


def tls_urls(port: int, ca: Path) -> dict[str, str]:
    """Every way a URL asks for TLS, each pointing at the fake on ``port``."""
    cred = f"{quote(USER)}:{quote(PASSWORD)}"
    verified = f"ssl_ca={quote(str(ca), safe='/')}&ssl_verify_cert=true&ssl_verify_identity=true"
    return {
        "ssl-params": f"mysql+aiomysql://{cred}@127.0.0.1:{port}/test?{verified}",
        "ssl-params-pymysql-form": f"mysql+pymysql://{cred}@127.0.0.1:{port}/test?{verified}",
        "ssl=true": f"mysql://{cred}@127.0.0.1:{port}/test?ssl=true",
        "ssl-unverified": f"mysql+aiomysql://{cred}@127.0.0.1:{port}/test?ssl_verify_cert=false",
        "tidbcloud-host": f"mysql+pymysql://{cred}@{CLOUD_HOST}:{port}/test",
        "tidbcloud-host-trailing-dot": f"mysql+pymysql://{cred}@{CLOUD_HOST}.:{port}/test",
        "tidbcloud-host-upper-case": f"mysql+pymysql://{cred}@{CLOUD_HOST.upper()}:{port}/test",
    }


FORMS = list(tls_urls(0, Path("ca.pem")))


def assert_nothing_reached(fake: FakeMySQLServer, err: InsecureTransportError) -> None:
    assert fake.accepted == 1, "refused once, never retried"
    received = fake.received
    assert PASSWORD.encode() not in received
    assert USER.encode() not in received
    assert received == b"", f"the client sent {len(received)} bytes to a server without TLS"
    assert fake.connections[0].auth_packets == []
    text = f"{err} {err!r}"
    assert PASSWORD not in text
    assert "did not offer TLS" in text and "before any credential was sent" in text


@pytest.mark.parametrize("form", FORMS)
async def test_async_call_refuses_a_server_without_tls_before_any_credential(
    form: str, fake: FakeMySQLServer, ca_file: Path, cloud_dns: None, closing: None
) -> None:
    url = tls_urls(fake.port, ca_file)[form]
    history = AsyncTiDBChatMessageHistory("s-" + uuid.uuid4().hex[:8], url, table_name="tls")
    with pytest.raises(InsecureTransportError) as info:
        await history.aadd_messages([HumanMessage("must not travel in plaintext")])
    assert info.value.attempts == 1
    assert_nothing_reached(fake, info.value)


@pytest.mark.parametrize("form", ["ssl-params", "tidbcloud-host-trailing-dot"])
def test_sync_call_refuses_a_server_without_tls_before_any_credential(
    form: str, fake: FakeMySQLServer, ca_file: Path, cloud_dns: None
) -> None:
    url = tls_urls(fake.port, ca_file)[form]
    history = TiDBChatMessageHistory("s-" + uuid.uuid4().hex[:8], url, table_name="tls")
    try:
        with pytest.raises(InsecureTransportError) as info:
            history.add_messages([HumanMessage("must not travel in plaintext")])
    finally:
        history.close()
    assert_nothing_reached(fake, info.value)


async def test_control_without_tls_asked_the_fake_receives_the_password(
    fake: FakeMySQLServer,
) -> None:
    """The fake is a working attacker: through the library's own connect function (the one the
    pool calls), a URL that asks for no TLS hands it the password in cleartext. So the
    ``received == b""`` assertions above are able to fail.
    """
    url = f"mysql+aiomysql://{quote(USER)}:{quote(PASSWORD)}@127.0.0.1:{fake.port}/test"
    conn = await _mysql_creator(parse_url(url))()
    conn.close()
    assert fake.accepted == 1
    assert PASSWORD.encode() + b"\x00" in fake.connections[0].auth_packets


async def test_status_reads_tls_from_the_socket_not_from_the_server(
    fake: FakeMySQLServer,
) -> None:
    """``astatus`` (what ``tidb-memory doctor`` prints) reports the TLS of the client's own
    socket. The fake, on a plaintext connection, claims a cipher when asked: a status that asked
    the server would print that cipher for a connection that encrypts nothing.
    """
    url = f"mysql+aiomysql://{quote(USER)}:{quote(PASSWORD)}@127.0.0.1:{fake.port}/test"
    db = get_database(url)
    try:
        status = await MessageStore(db, "doctor_probe").astatus(pings=1)
    finally:
        await db.aclose()
    assert status.server_version == fake.server_version and status.tidb
    assert status.tls_cipher is None and status.tls_version is None
    queries = [q for c in fake.connections for q in c.queries]
    assert "SELECT VERSION()" in queries  # the fake answered the status's questions
