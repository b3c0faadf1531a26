"""engine.py: URL parsing, TLS, pool defaults and the shared registry. No server needed: every
test here must pass without any I/O (the URLs point at hosts that do not exist)."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from conftest import SENTINEL_PASSWORD
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import tidb_memory
from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    ConfigurationError,
    RetryPolicy,
    TiDBChatMessageHistory,
    create_engine,
)
from tidb_memory import engine as engine_mod
from tidb_memory.engine import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_RECYCLE,
    INIT_COMMAND,
    TIDB_CLOUD_POOL_RECYCLE,
    get_database,
    parse_url,
)

CLOUD_HOST = "gateway01.us-west-2.prod.aws.tidbcloud.com"


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    """A real CA bundle in a temp file, as TiDB Cloud's docs have users download."""
    for candidate in ("/etc/ssl/certs/ca-certificates.crt", ssl.get_default_verify_paths().cafile):
        if candidate and Path(candidate).is_file():
            path = tmp_path / "ca.pem"
            shutil.copyfile(candidate, path)
            return str(path)
    import certifi  # pragma: no cover - only where the system has no bundle

    return certifi.where()  # pragma: no cover


def tidb_cloud_url(ca: str, host: str = "host") -> str:
    # The exact form from langchain-community's TiDBChatMessageHistory documentation.
    return (
        f"mysql+pymysql://user:pw@{host}:4000/db?ssl_ca={ca}"
        "&ssl_verify_cert=true&ssl_verify_identity=true"
    )


def assert_verifying(ctx: object) -> None:
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname is True


# --- schemes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("mysql://u:p@db.example:4000/app", "mysql"),
        ("mysql+pymysql://u:p@db.example:4000/app", "mysql"),
        ("mysql+aiomysql://u:p@db.example:4000/app", "mysql"),
        ("sqlite+aiosqlite:///relative.db", "sqlite"),
        ("sqlite+aiosqlite:////tmp/absolute.db", "sqlite"),
    ],
)
def test_supported_schemes(url: str, backend: str) -> None:
    spec = parse_url(url)
    assert spec.backend == backend
    if backend == "mysql":
        # Every MySQL flavour runs on aiomysql, with the host, port, user and database kept.
        assert spec.url.drivername == "mysql+aiomysql"
        assert (spec.url.host, spec.url.port, spec.url.username) == ("db.example", 4000, "u")
        assert spec.url.password == "p"
        assert spec.url.database == "app"
        assert spec.tls is None
        assert spec.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    else:
        assert spec.url.drivername == "sqlite+aiosqlite"


def test_unparseable_url_is_a_configuration_error() -> None:
    url = f"mysql://u:{SENTINEL_PASSWORD}@h:notaport/db"
    with pytest.raises(ConfigurationError) as info:
        AsyncTiDBChatMessageHistory("s", url)
    assert SENTINEL_PASSWORD not in str(info.value)


def test_url_objects_are_accepted() -> None:
    assert parse_url(make_url("mysql://u@h/db")).backend == "mysql"
    with pytest.raises(ConfigurationError):
        parse_url(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h/db",
        "mysql+mysqldb://u:p@h/db",
        "mysql+asyncmy://u:p@h/db",
        "sqlite+pysqlcipher:///x.db",
        "tidb://u:p@h/db",
        "not a url at all",
        "",
    ],
)
def test_unsupported_scheme_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)
    with pytest.raises(ConfigurationError):
        AsyncTiDBChatMessageHistory("s", url)
    with pytest.raises(ConfigurationError):
        TiDBChatMessageHistory("s", url)


@pytest.mark.parametrize(
    "query",
    [
        "foo=bar",
        "ssl_mode=REQUIRED",
        "charset=latin1",
        "connect_timeout=abc",
        "connect_timeout=0",
        "connect_timeout=-1",
        "ssl_verify_cert=maybe",
        "ssl=false&ssl_ca=/etc/hosts",
        "connect_timeout=1&connect_timeout=2",
    ],
)
def test_unsupported_or_bad_parameters_are_refused(query: str) -> None:
    url = f"mysql+pymysql://u:{SENTINEL_PASSWORD}@db.example:4000/app?{query}"
    with pytest.raises(ConfigurationError) as info:
        AsyncTiDBChatMessageHistory("s", url)
    assert SENTINEL_PASSWORD not in str(info.value)
    assert SENTINEL_PASSWORD not in repr(info.value)


@pytest.mark.parametrize(
    "query", ["ssl_ca=/definitely/not/here.pem", "ssl_capath=/definitely/not/here"]
)
async def test_missing_tls_files_are_refused_on_first_use_without_connecting(query: str) -> None:
    # Construction reads no file (it may run on an event loop); the engine build does, off the
    # loop, and refuses at once: a ConfigurationError, never a retried connection error.
    url = f"mysql+pymysql://u:{SENTINEL_PASSWORD}@127.0.0.1:1/app?{query}"
    history = AsyncTiDBChatMessageHistory("s", url, retry=RetryPolicy(attempts=3))
    with pytest.raises(ConfigurationError, match="cannot load CA certificates") as info:
        await history.aget_messages()
    assert SENTINEL_PASSWORD not in str(info.value) and "/definitely/not/here" in str(info.value)
    with pytest.raises(ConfigurationError, match="cannot load CA certificates"):
        create_engine(url)  # the application's own engine: at once


def test_sqlite_takes_no_parameters() -> None:
    with pytest.raises(ConfigurationError):
        parse_url("sqlite+aiosqlite:///x.db?mode=ro")


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
def test_in_memory_sqlite_is_refused_at_construction(url: str) -> None:
    # Each pooled connection would see its own empty database. ConfigurationError's contract is
    # "raised at construction, before any I/O".
    with pytest.raises(ConfigurationError) as info:
        AsyncTiDBChatMessageHistory("s", url)
    assert "in-memory" in str(info.value)


def test_connect_timeout_and_unix_socket_are_honoured() -> None:
    spec = parse_url("mysql://u@localhost/db?connect_timeout=2.5&unix_socket=/run/mysqld.sock")
    assert spec.connect_timeout == 2.5
    assert spec.url.query == {"unix_socket": "/run/mysqld.sock"}


# --- TLS -----------------------------------------------------------------------------------


def test_tidb_cloud_url_becomes_a_verifying_context(ca_file: str) -> None:
    spec = parse_url(tidb_cloud_url(ca_file))
    assert spec.backend == "mysql"
    assert spec.url.drivername == "mysql+aiomysql"
    assert dict(spec.url.query) == {}  # aiomysql could not take the ssl_* parameters itself
    assert spec.tls is not None
    assert spec.tls.ca == ca_file
    assert spec.tls.verify_cert is True
    assert spec.tls.verify_identity is True
    ctx = spec.tls.context()
    assert_verifying(ctx)
    assert ctx.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded


def test_tidb_cloud_url_is_accepted_by_both_classes(ca_file: str) -> None:
    url = tidb_cloud_url(ca_file)
    drop_in = TiDBChatMessageHistory("code_gen", url)
    native = AsyncTiDBChatMessageHistory("code_gen", url)
    for history in (drop_in, native):
        assert history.store.db.spec.tls is not None
        assert_verifying(history.store.db.spec.tls.context())


async def test_the_driver_gets_the_verifying_context(
    ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What aiomysql's Connection is really built with, for the TiDB Cloud URL."""
    import aiomysql

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    class FakeConnection:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        async def _connect(self) -> None:
            raise Stop

        def close(self) -> None:
            seen["closed"] = True

    monkeypatch.setattr(aiomysql, "Connection", FakeConnection)
    connect = engine_mod._mysql_creator(parse_url(tidb_cloud_url(ca_file, host="db.internal")))
    with pytest.raises(Stop):
        await connect()
    assert_verifying(seen["ssl"])
    assert (seen["host"], seen["port"], seen["user"], seen["password"], seen["db"]) == (
        "db.internal",
        4000,
        "user",
        "pw",
        "db",
    )
    assert seen["autocommit"] is True
    assert seen["charset"] == "utf8mb4"
    assert seen["init_command"] == INIT_COMMAND
    assert "= 'READ-COMMITTED'" in INIT_COMMAND
    assert seen["local_infile"] is False
    assert seen["connect_timeout"] == DEFAULT_CONNECT_TIMEOUT
    assert seen["closed"] is True  # the half-open connection is closed on failure


@pytest.mark.parametrize(
    ("query", "mode", "hostname"),
    [
        ("ssl=true", ssl.CERT_REQUIRED, True),
        ("ssl_verify_cert=true&ssl_verify_identity=false", ssl.CERT_REQUIRED, False),
        ("ssl_verify_cert=true&ssl_check_hostname=false", ssl.CERT_REQUIRED, False),
        ("ssl_verify_cert=false", ssl.CERT_NONE, False),
    ],
)
def test_tls_options(query: str, mode: ssl.VerifyMode, hostname: bool) -> None:
    spec = parse_url(f"mysql://u@db.example/app?{query}")
    assert spec.tls is not None
    ctx = spec.tls.context()
    assert ctx.verify_mode is mode
    assert ctx.check_hostname is hostname


def test_ssl_false_means_plaintext() -> None:
    assert parse_url("mysql://u@db.example/app?ssl=false").tls is None


def test_tidb_cloud_host_gets_tls_and_short_recycle_without_parameters() -> None:
    url = f"mysql://u:p@{CLOUD_HOST}:4000/db"
    spec = parse_url(url)
    assert spec.tidb_cloud is True
    assert spec.tls is not None
    assert_verifying(spec.tls.context())
    engine = create_engine(url)
    try:
        assert engine.pool._recycle == TIDB_CLOUD_POOL_RECYCLE == 300
    finally:
        engine.sync_engine.dispose()
    other = create_engine("mysql://u:p@db.example:4000/db")
    try:
        assert other.pool._recycle == DEFAULT_POOL_RECYCLE
    finally:
        other.sync_engine.dispose()
    with pytest.raises(ConfigurationError):
        parse_url(f"{url}?ssl=false")


# --- the registry --------------------------------------------------------------------------


def test_equal_urls_share_one_database() -> None:
    url = "mysql+aiomysql://u:p@shared.example:3306/db"
    a = AsyncTiDBChatMessageHistory("a", url)
    b = AsyncTiDBChatMessageHistory("b", url, table_name="other")
    c = TiDBChatMessageHistory("c", url)
    assert a.store.db is b.store.db is c.store.db is get_database(url)
    tuned = AsyncTiDBChatMessageHistory("d", url, engine_args={"pool_size": 2})
    assert tuned.store.db is not a.store.db
    assert get_database(url, engine_args={"pool_size": 2}) is tuned.store.db


def test_engine_args_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        AsyncTiDBChatMessageHistory("s", "mysql://u@h/db", engine_args={"poolsize": 3})
    engine = create_engine("mysql://u@h/db", engine_args={"pool_size": 3, "max_overflow": 1})
    try:
        assert isinstance(engine, AsyncEngine)
        assert engine.pool.size() == 3
    finally:
        engine.sync_engine.dispose()
    with pytest.raises(ConfigurationError):
        create_engine("mysql://u@h/db", engine_args={"bogus": 1})


def test_engine_and_url_are_exclusive() -> None:
    engine = create_engine("sqlite+aiosqlite:///x.db")
    try:
        with pytest.raises(ConfigurationError):
            AsyncTiDBChatMessageHistory("s", "sqlite+aiosqlite:///x.db", engine=engine)
        with pytest.raises(ConfigurationError):
            AsyncTiDBChatMessageHistory("s", engine=engine, engine_args={"pool_size": 1})
        with pytest.raises(ConfigurationError):
            AsyncTiDBChatMessageHistory("s", engine="not an engine")  # type: ignore[arg-type]
        assert AsyncTiDBChatMessageHistory("s", engine=engine).store.db._pinned_engine is engine
    finally:
        engine.sync_engine.dispose()


def test_no_url_means_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDB_DATABASE_URL", raising=False)
    assert tidb_memory.default_url() == tidb_memory.DEFAULT_SQLITE_URL
    assert AsyncTiDBChatMessageHistory("s").store.db.backend == "sqlite"
    monkeypatch.setenv("TIDB_DATABASE_URL", "mysql://u@from-env.example/db")
    history = AsyncTiDBChatMessageHistory("s")
    assert history.store.db.spec.url.host == "from-env.example"


# --- no password anywhere ------------------------------------------------------------------


def test_repr_and_str_never_show_the_password(ca_file: str) -> None:
    urls = [
        f"mysql+aiomysql://root:{SENTINEL_PASSWORD}@127.0.0.1:1/test",
        f"mysql://root:{SENTINEL_PASSWORD}@{CLOUD_HOST}:4000/db",
        tidb_cloud_url(ca_file).replace(":pw@", f":{SENTINEL_PASSWORD}@"),
    ]
    for url in urls:
        for history in (
            AsyncTiDBChatMessageHistory("s", url),
            TiDBChatMessageHistory("s", url),
        ):
            db = history.store.db
            # (str() of a LangChain history reads its messages: that is I/O, see test_errors.py)
            texts = [
                repr(history),
                repr(history.store),
                repr(db),
                str(db),
                db.spec.display,
                str(db.spec.url),
                repr(db.spec.url),
                repr(db.spec),
            ]
            for text in texts:
                assert SENTINEL_PASSWORD not in text, text
            assert "***" in db.spec.display


def test_configuration_errors_never_show_the_password() -> None:
    for url in [
        f"postgresql://u:{SENTINEL_PASSWORD}@h/db",
        f"mysql://u:{SENTINEL_PASSWORD}@h/db?nope=1",
    ]:
        with pytest.raises(ConfigurationError) as info:
            AsyncTiDBChatMessageHistory("s", url)
        assert SENTINEL_PASSWORD not in str(info.value)
        assert SENTINEL_PASSWORD not in repr(info.value)
        cause = info.value.__cause__
        while cause is not None:
            assert SENTINEL_PASSWORD not in str(cause), cause
            cause = cause.__cause__
