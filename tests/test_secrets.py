"""The password never shows: not in str/repr of any object, not in any exception text (the whole
rendered cause chain included), not in any log record at any level.

Every error path runs with a sentinel password; everything it produced is scanned for it (raw
and percent-encoded).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from langchain_core.messages import HumanMessage

import tidb_memory
import tidb_memory.cli
from tests.infra import CertBundle, ThrowawayMariaDB, generate_certs
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    ConfigurationError,
    ConnectError,
    InsecureTransportError,
    InvalidInputError,
    PoolTimeoutError,
    RetriesExhaustedError,
    RetryPolicy,
    SchemaError,
    SessionStore,
    StorageError,
    TiDBChatMessageHistory,
    TiDBMemoryError,
    create_engine,
)
from tidb_memory._process import _databases
from tidb_memory.engine import get_database, parse_url

pytestmark = pytest.mark.timeout(120)

SENTINEL = "S3cr3t-Sentinel-pw"
SPECIAL = "S3cr3t@Sent:inel/pw%"  # needs percent-encoding in a URL
USER = "sentinel"
FORMS = [SENTINEL, SPECIAL, quote(SPECIAL, safe=""), quote(SENTINEL, safe="")]
QUICK = RetryPolicy(attempts=2, deadline=2.0, base_delay=0.01, max_delay=0.02)


def leaks(text: str) -> list[str]:
    return [form for form in FORMS if form in text]


def rendered(exc: BaseException) -> str:
    """Everything a user could see of an exception: str, repr, args and the full traceback."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        parts += [str(item), repr(item), repr(item.args)]
        item = item.__cause__ or item.__context__
    return "\n".join(parts)


@dataclass(frozen=True)
class Servers:
    plain: ThrowawayMariaDB
    tls: ThrowawayMariaDB
    certs: CertBundle


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    certs = generate_certs(tmp_path_factory.mktemp("secrets-certs"))
    with (
        ThrowawayMariaDB() as plain,
        ThrowawayMariaDB(
            ssl_cert=certs.server_cert, ssl_key=certs.server_key, ssl_ca=certs.ca_cert
        ) as tls,
    ):
        for server in (plain, tls):
            for password in (SENTINEL, SPECIAL):
                name = USER if password == SENTINEL else USER + "2"
                server.sync_query(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
                server.sync_query(f"GRANT ALL ON test.* TO '{name}'@'%'")
        yield Servers(plain, tls, certs)


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


def url(server: ThrowawayMariaDB, *, password: str = SENTINEL, query: str = "") -> str:
    user = USER if password == SENTINEL else USER + "2"
    base = f"mysql+aiomysql://{user}:{quote(password, safe='')}@127.0.0.1:{server.port}/test"
    return f"{base}?{query}" if query else base


class Scan:
    """Collects every error and record of a test and checks none shows the password."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.errors: list[tuple[str, BaseException]] = []

    async def expect(
        self,
        name: str,
        kind: type[BaseException] | tuple[type[BaseException], ...],
        call: Callable[[], Coroutine[Any, Any, Any]],
    ) -> BaseException:
        with pytest.raises(kind) as info:
            await call()
        self.errors.append((name, info.value))
        return info.value

    def expect_sync(
        self,
        name: str,
        kind: type[BaseException] | tuple[type[BaseException], ...],
        call: Callable[[], Any],
    ) -> BaseException:
        with pytest.raises(kind) as info:
            call()
        self.errors.append((name, info.value))
        return info.value

    def check(self) -> None:
        for name, exc in self.errors:
            assert isinstance(exc, TiDBMemoryError), (name, exc)
            assert not leaks(rendered(exc)), (name, leaks(rendered(exc)), rendered(exc))
        # Called at teardown: the records of the test itself are those of its call phase.
        records = self.caplog.get_records("setup") + self.caplog.get_records("call")
        for record in records:
            text = record.getMessage() + repr(record.args) + (record.exc_text or "")
            if record.exc_info and record.exc_info[1] is not None:
                text += rendered(record.exc_info[1])
            assert not leaks(text), (record.name, text)
        if any(isinstance(exc, StorageError) for _, exc in self.errors):
            assert records, "no log record was captured: the DEBUG capture is not working"


@pytest.fixture
def scan(caplog: pytest.LogCaptureFixture) -> Iterator[Scan]:
    caplog.set_level(logging.DEBUG)  # the root logger: tidb_memory, sqlalchemy, asyncio...
    for name in ("tidb_memory", "sqlalchemy", "sqlalchemy.pool", "sqlalchemy.engine"):
        caplog.set_level(logging.DEBUG, logger=name)
    scanner = Scan(caplog)
    yield scanner
    scanner.check()


# --- error paths ---------------------------------------------------------------------------


async def test_unreachable_server(scan: Scan, closing: None) -> None:
    for password in (SENTINEL, SPECIAL):
        dead = (
            f"mysql+aiomysql://{USER}:{quote(password, safe='')}@127.0.0.1:1/test?connect_timeout=2"
        )
        history = AsyncTiDBChatMessageHistory("s", dead, retry=QUICK)
        err = await scan.expect("unreachable", RetriesExhaustedError, history.aget_messages)
        assert "2003" in str(err)


async def test_wrong_password(servers: Servers, scan: Scan, closing: None) -> None:
    for password in (SENTINEL, SPECIAL):
        bad = url(servers.plain, password=password).replace(USER, "nobody", 1)
        history = AsyncTiDBChatMessageHistory("s", bad, retry=QUICK)
        err = await scan.expect(
            "wrong password", ConnectError, lambda h=history: h.aadd_messages([HumanMessage("hi")])
        )
        assert isinstance(err, ConnectError) and err.errno == 1045


async def test_wrong_password_on_the_shared_server(scan: Scan, closing: None) -> None:
    bad = f"mysql+aiomysql://root:{SENTINEL}@127.0.0.1:3306/test"
    history = AsyncTiDBChatMessageHistory("s", bad, retry=QUICK)
    err = await scan.expect("shared wrong password", ConnectError, history.aget_messages)
    assert isinstance(err, ConnectError) and err.errno == 1045


async def test_tls_failures(servers: Servers, scan: Scan, closing: None) -> None:
    other = quote(str(servers.certs.other_ca_cert), safe="/")
    history = AsyncTiDBChatMessageHistory(
        "s", url(servers.tls, query=f"ssl_ca={other}"), retry=QUICK
    )
    await scan.expect("wrong CA", ConnectError, history.aget_messages)
    history = AsyncTiDBChatMessageHistory(
        "s", url(servers.tls, password=SPECIAL, query="ssl=true"), retry=QUICK
    )
    await scan.expect("system store", ConnectError, history.aget_messages)
    for password in (SENTINEL, SPECIAL):
        history = AsyncTiDBChatMessageHistory(
            "s", url(servers.plain, password=password, query="ssl=true"), retry=QUICK
        )
        err = await scan.expect("plaintext refused", InsecureTransportError, history.aget_messages)
        assert "***" in str(err)  # the URL is shown, with its password masked


async def test_pool_timeout(servers: Servers, scan: Scan, closing: None) -> None:
    history = AsyncTiDBChatMessageHistory(
        "s",
        url(servers.plain, password=SPECIAL),
        table_name="secrets_pool",
        engine_args={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2},
    )
    await history.aadd_messages([HumanMessage("hi")])
    async with history.store.db.connection():
        await scan.expect("pool timeout", PoolTimeoutError, history.aget_messages)


async def test_schema_errors(servers: Servers, scan: Scan, closing: None) -> None:
    servers.plain.sync_query("CREATE TABLE IF NOT EXISTS secrets_foreign (a INT)")
    history = AsyncTiDBChatMessageHistory(
        "s", url(servers.plain), table_name="secrets_foreign", retry=QUICK
    )
    await scan.expect("foreign layout", SchemaError, history.aget_messages)
    missing = AsyncTiDBChatMessageHistory(
        "s", url(servers.plain), table_name="secrets_missing", create_table=False, retry=QUICK
    )
    await scan.expect("missing table", SchemaError, missing.aget_messages)


async def test_bad_input_with_a_live_connection(
    servers: Servers, scan: Scan, closing: None
) -> None:
    history = AsyncTiDBChatMessageHistory(
        "s", url(servers.plain, password=SPECIAL), table_name="secrets_ok"
    )
    await history.aadd_messages([HumanMessage("hello")])  # a success path, logged at DEBUG
    assert [m.content for m in await history.aget_messages()] == ["hello"]
    await scan.expect(
        "bad message",
        InvalidInputError,
        lambda: history.aadd_messages(["not a message"]),  # type: ignore[list-item]
    )
    await scan.expect(
        "too large",
        InvalidInputError,
        lambda: AsyncTiDBChatMessageHistory(
            "s", url(servers.plain), max_message_bytes=10
        ).aadd_messages([HumanMessage("far more than ten bytes")]),
    )


BAD_URLS = [
    f"mysql+aiomysql://u:{SENTINEL}@h/db?bogus=1",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?connect_timeout=abc",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?connect_timeout=0",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?ssl_ca=/nonexistent/ca.pem",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?ssl_capath=/nonexistent",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?charset=latin1",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?ssl=maybe",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?ssl=false&ssl_ca=/x",
    f"mysql+aiomysql://u:{SENTINEL}@h/db?charset=utf8mb4&charset=utf8mb4",
    f"mysql+aiomysql://u:{SENTINEL}@gateway01.x.prod.aws.tidbcloud.com:4000/db?ssl=false",
    f"postgresql://u:{SENTINEL}@h/db",
    f"mysql+mysqldb://u:{SENTINEL}@h/db",
    f"mysql+aiomysql://u:{SENTINEL}@h:notaport/db",
    f"mysql+aiomysql://u:{SENTINEL}@h:99999999999/db",
    f"://u:{SENTINEL}@h/db",
    f"u:{SENTINEL}@h/db",
    f"sqlite+aiosqlite:///x.db?password={SENTINEL}",
    "sqlite+aiosqlite://",
    f"mysql+aiomysql://u:{quote(SPECIAL, safe='')}@h/db?bogus=1",
    f"mysql+aiomysql://u:{SPECIAL}@h/db",  # not encoded: unparseable or a different host
]


@pytest.mark.parametrize("bad", BAD_URLS, ids=range(len(BAD_URLS)))
async def test_bad_urls(bad: str, scan: Scan, closing: None) -> None:
    outcome = await scan.expect(
        "bad url",
        (ConfigurationError, TiDBMemoryError),
        lambda: AsyncTiDBChatMessageHistory("s", bad, retry=QUICK).aget_messages(),
    )
    assert isinstance(outcome, TiDBMemoryError)
    for build in (
        lambda: parse_url(bad),
        lambda: get_database(bad),
        lambda: create_engine(bad),
        lambda: SessionStore(bad),
        lambda: TiDBChatMessageHistory("s", bad),
    ):
        try:
            build()
        except TiDBMemoryError as exc:
            scan.errors.append(("bad url (construct)", exc))


def test_bad_engine_args(scan: Scan) -> None:
    good = f"mysql+aiomysql://u:{SENTINEL}@h/db"
    scan.expect_sync(
        "engine args",
        ConfigurationError,
        lambda: AsyncTiDBChatMessageHistory("s", good, engine_args={"password": SENTINEL}),
    )
    scan.expect_sync(
        "engine args", ConfigurationError, lambda: create_engine(good, engine_args={"x": 1})
    )


def test_sync_paths(servers: Servers, scan: Scan) -> None:
    history = TiDBChatMessageHistory("s", url(servers.plain).replace(USER, "nobody", 1))
    history.store.retry = QUICK
    try:
        scan.expect_sync("sync wrong password", ConnectError, lambda: history.messages)
        scan.expect_sync("sync wrong password", ConnectError, history.clear)
    finally:
        history.close()


# --- repr and str of every public object --------------------------------------------------


async def test_repr_and_str_of_public_objects(servers: Servers, closing: None) -> None:
    for password in (SENTINEL, SPECIAL):
        text_url = url(servers.plain, password=password)
        cloud = (
            f"mysql+pymysql://u.root:{quote(password, safe='')}@gateway01.x.prod.aws."
            "tidbcloud.com:4000/test?ssl_verify_cert=true&ssl_verify_identity=true"
        )
        history = AsyncTiDBChatMessageHistory("s-" + uuid.uuid4().hex[:6], text_url)
        await history.aadd_messages([HumanMessage("x")])
        sync_history = TiDBChatMessageHistory("s", cloud)
        engine = create_engine(text_url)
        db = history.store.db
        objects: list[object] = [
            history,
            sync_history,
            SessionStore(text_url),
            history.store,
            db,
            db.spec,
            db.spec.url,
            db.spec.display,
            sync_history.store.db.spec,
            sync_history.store.db.spec.tls,
            parse_url(cloud),
            engine,
            engine.url,
            engine.sync_engine,
            engine.sync_engine.pool,
            await db.engine(),
            (await db.engine()).url,
            RetryPolicy(),
            tidb_memory.DEFAULT_RETRY_POLICY,
        ]
        async with db.connection() as conn:
            objects += [conn, conn.driver]
        for obj in objects:
            # LangChain's BaseChatMessageHistory.__str__ reads the session: skip it for the
            # history whose host does not exist (its repr is still checked).
            texts = [repr(obj)] if obj is sync_history else [repr(obj), str(obj), format(obj)]
            for text in texts:
                assert not leaks(text), (type(obj).__name__, text)
        await engine.dispose()
        sync_history.close()


def test_the_scan_sees_a_leak_in_a_cause_chain() -> None:
    """The scanner itself: a password buried in a cause two levels down is found."""
    try:
        try:
            raise ValueError(f"connect to mysql://u:{quote(SPECIAL, safe='')}@h failed")
        except ValueError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        caught = outer
    assert leaks(rendered(caught)) == [quote(SPECIAL, safe="")]


# --- a password with an unencoded "@" -------------------------------------------------------

AT_PASSWORD = "Head@Tail-S3ntinel"
#: What SQLAlchemy alone takes for the host's first label (``Tail-S3ntinel@127.0.0.1``).
TAIL = "Tail-S3ntinel"


def test_a_password_with_an_unencoded_at_is_read_whole(
    servers: Servers, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    server = servers.plain
    server.sync_query("CREATE USER IF NOT EXISTS 'atuser'@'%%' IDENTIFIED BY %s", (AT_PASSWORD,))
    server.sync_query("GRANT ALL ON test.* TO 'atuser'@'%'")
    raw = f"mysql+pymysql://atuser:{AT_PASSWORD}@127.0.0.1:{server.port}/test"
    spec = parse_url(raw)
    assert (spec.url.password, spec.url.host, spec.url.port) == (
        AT_PASSWORD,
        "127.0.0.1",
        server.port,
    )
    history = TiDBChatMessageHistory("at-" + uuid.uuid4().hex[:8], raw)
    texts: list[str] = []
    try:
        history.add_user_message("hi")  # it connects: the whole password reached the server
        assert [m.content for m in history.messages] == ["hi"]
        db = history.store.db
        texts += [repr(history), repr(db), db.spec.display, repr(db.spec), repr(db.spec.url)]
        # The registry holds a digest of the URL, not the URL.
        assert all(AT_PASSWORD not in key and TAIL not in key for key in _databases)
        assert db.key in _databases and len(db.key) == 64
        wrong = TiDBChatMessageHistory("s", raw.replace("Tail", "Wrong-Tail"))
        wrong.store.retry = QUICK
        with pytest.raises(ConnectError) as info:
            wrong.clear()
        texts.append(rendered(info.value))
        wrong.close()
        assert tidb_memory.cli.main(["doctor", "--url", raw]) == 0
        captured = capsys.readouterr()
        texts += [captured.out, captured.err]
        assert f"atuser:***@127.0.0.1:{server.port}/test" in captured.out
    finally:
        history.close()
    texts += [r.getMessage() + repr(r.args) + (r.exc_text or "") for r in caplog.records]
    for text in texts:
        assert TAIL not in text, text


def test_an_at_in_a_parameter_value_is_not_taken_for_credentials(tmp_path: Path) -> None:
    ca = tmp_path / "certs@2" / "ca.pem"
    ca.parent.mkdir()
    ca.write_text("not read while parsing")
    spec = parse_url(f"mysql://u:pw@h:4000/db?ssl_ca={ca}&ssl_verify_cert=true")
    assert (spec.url.username, spec.url.password, spec.url.host) == ("u", "pw", "h")
    assert spec.tls is not None and spec.tls.ca == str(ca)
    odd = parse_url("mysql://u:p@s:s/x?y@host:4000/db")  # every separator, unencoded
    assert (odd.url.password, odd.url.host, odd.url.port) == ("p@s:s/x?y", "host", 4000)
