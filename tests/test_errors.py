"""Errors: typed, named, chained, bounded in time, and never carrying a password.

Also the "no I/O at construction" rule: an audit hook records every socket connect, so a
constructor that touched the network would be caught even when the connect succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import pytest
from conftest import CLOSED_PORT_URL, SENTINEL_PASSWORD, Target, mysql_url_for
from langchain_core.messages import HumanMessage

from tidb_memory import (
    AsyncTiDBChatMessageHistory,
    ConfigurationError,
    ConnectError,
    InsecureTransportError,
    InvalidInputError,
    RetriesExhaustedError,
    RetryPolicy,
    StorageError,
    TiDBChatMessageHistory,
    TiDBMemoryError,
)

_connects: list[object] = []
_recording = threading.Event()


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _recording.is_set() and event == "socket.connect":
        _connects.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def no_network() -> Iterator[list[object]]:
    """Records the socket connects made while the test body runs."""
    _connects.clear()
    _recording.set()
    try:
        yield _connects
    finally:
        _recording.clear()


def closed_port_url(password: str = SENTINEL_PASSWORD) -> str:
    return CLOSED_PORT_URL.replace("root@", f"root:{password}@")


#: Quick to give up, so that failing tests stay fast.
QUICK = RetryPolicy(attempts=3, deadline=5.0, base_delay=0.01, max_delay=0.05)


# --- no I/O at construction -----------------------------------------------------------------


async def test_the_connect_recorder_works(no_network: list[object]) -> None:
    history = AsyncTiDBChatMessageHistory("s", closed_port_url(), retry=QUICK)
    with pytest.raises(TiDBMemoryError):
        await history.aget_messages()
    assert ("127.0.0.1", 1) in no_network


def test_construction_does_no_io(no_network: list[object], tmp_path: object) -> None:
    started = time.monotonic()
    histories = [
        AsyncTiDBChatMessageHistory("s", closed_port_url()),
        AsyncTiDBChatMessageHistory("s", "mysql+aiomysql://u:p@db.invalid:4000/x"),
        AsyncTiDBChatMessageHistory("s", f"sqlite+aiosqlite:///{tmp_path}/never-created.db"),
        TiDBChatMessageHistory(
            "s", "mysql+pymysql://u:p@gateway01.x.prod.aws.tidbcloud.com:4000/d"
        ),
        TiDBChatMessageHistory("s", "mysql://u@db.invalid/x", "some_table", None),
    ]
    assert time.monotonic() - started < 1.0
    assert no_network == []
    assert len(histories) == 5
    assert not (tmp_path / "never-created.db").exists()  # type: ignore[operator]


async def test_first_call_on_a_closed_port_fails_in_bounded_time() -> None:
    history = AsyncTiDBChatMessageHistory("s", closed_port_url(), table_name="t_closed")
    started = time.monotonic()
    with pytest.raises((ConnectError, RetriesExhaustedError)) as info:
        await history.aget_messages()
    elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed  # the default policy: 8 attempts, sub-second backoff
    error = info.value
    assert isinstance(error, StorageError)
    assert error.errno == 2003
    assert error.table == "t_closed"
    assert "t_closed" in str(error)
    assert error.__cause__ is not None
    assert "Is the server running" in str(error)


def test_sync_first_call_on_a_closed_port_fails_in_bounded_time() -> None:
    history = AsyncTiDBChatMessageHistory(
        "s", closed_port_url(), table_name="t_closed", retry=QUICK
    )
    started = time.monotonic()
    with pytest.raises((ConnectError, RetriesExhaustedError)):
        history.messages  # noqa: B018
    with pytest.raises((ConnectError, RetriesExhaustedError)):
        history.add_messages([HumanMessage("x")])
    assert time.monotonic() - started < 10


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung proxy or server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


async def test_a_server_that_never_answers_fails_within_the_connect_timeout(
    silent_server: int,
) -> None:
    url = f"mysql+aiomysql://root:{SENTINEL_PASSWORD}@127.0.0.1:{silent_server}/test"
    history = AsyncTiDBChatMessageHistory(
        "s", url + "?connect_timeout=1", table_name="t_silent", retry=QUICK
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            with pytest.raises((ConnectError, RetriesExhaustedError)) as info:
                await history.aget_messages()
    except TimeoutError:
        pytest.fail(
            "connect_timeout=1 did not bound the connection: the MySQL handshake with a server "
            "that accepts TCP but never sends its greeting waited for 10 s and more"
        )
    # 3 attempts of at most 1 s each, plus backoff.
    assert time.monotonic() - started < 6
    assert SENTINEL_PASSWORD not in str(info.value)


async def test_bad_input_is_refused_before_any_io(no_network: list[object]) -> None:
    # Against a closed port: had any of these touched the network, it would be a ConnectError.
    history = AsyncTiDBChatMessageHistory("s", closed_port_url(), max_message_bytes=1000)
    bad_batches: list[object] = [
        [HumanMessage("ok"), "not a message"],
        [HumanMessage("ok"), HumanMessage("nan", additional_kwargs={"x": float("nan")})],
        [HumanMessage("ok"), HumanMessage("tuple", additional_kwargs={"x": (1,)})],
        [HumanMessage("x" * 2000)],
        HumanMessage("a message, not a batch"),
        "a string is not a batch",
    ]
    for batch in bad_batches:
        with pytest.raises(InvalidInputError):
            await history.aadd_messages(batch)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await asyncio.to_thread(history.add_messages, batch)  # type: ignore[arg-type]
    for session_id in ["", "x" * 256, "trailing ", None]:
        with pytest.raises(InvalidInputError):
            AsyncTiDBChatMessageHistory(session_id, closed_port_url())  # type: ignore[arg-type]
    for table in ["bad-name", "x" * 65, "t; DROP TABLE t"]:
        with pytest.raises(InvalidInputError):
            AsyncTiDBChatMessageHistory("s", closed_port_url(), table_name=table)
    with pytest.raises(ConfigurationError):
        AsyncTiDBChatMessageHistory("s", "postgresql://u@h/db")
    assert no_network == []


# --- typed errors that name the operation and the table ------------------------------------


def test_every_error_is_a_tidb_memory_error() -> None:
    import tidb_memory.errors as errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(classes) >= 11
    for cls in classes:
        assert issubclass(cls, TiDBMemoryError), cls
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.SyncCallError, RuntimeError)
    assert issubclass(errors.MessageTooLargeError, InvalidInputError)
    assert issubclass(errors.InsecureTransportError, ConnectError)


async def test_wrong_password_is_a_connect_error_with_its_cause(mysql: Target) -> None:
    url = mysql_url_for("root", SENTINEL_PASSWORD)
    history = AsyncTiDBChatMessageHistory("s", url, table_name="t_auth")
    with pytest.raises(ConnectError) as info:
        await history.aget_messages()
    error = info.value
    assert error.errno == 1045
    assert error.table == "t_auth"
    assert "t_auth" in str(error)
    assert "password" in str(error)  # the hint, never the password itself
    assert error.__cause__ is not None
    assert error.attempts == 1  # an auth failure is not retried


async def test_tls_required_but_the_server_has_none(mysql: Target) -> None:
    url = mysql_url_for("root") + "?ssl=true&ssl_verify_cert=false"
    history = AsyncTiDBChatMessageHistory("s", url, table_name="t_tls", retry=QUICK)
    rows = mysql.query("SHOW VARIABLES LIKE 'have_ssl'")
    if rows and rows[0][1] == "YES":  # a server with TLS would simply accept this URL
        assert await history.aget_messages() == []
        return
    with pytest.raises(InsecureTransportError) as info:
        await history.aget_messages()
    assert "plaintext" in str(info.value)
    assert info.value.attempts == 1


# --- no password anywhere -------------------------------------------------------------------


def scan(error: BaseException, records: list[logging.LogRecord]) -> None:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    cause = error.__cause__ or error.__context__
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__ or cause.__context__
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts.append("".join(traceback.format_exception(record.exc_info[1])))
    for text in texts:
        assert SENTINEL_PASSWORD not in text, text


@pytest.mark.parametrize("where", ["closed-port", "wrong-password"])
@pytest.mark.parametrize("api", ["async", "sync"])
async def test_no_password_in_errors_or_logs(
    where: str, api: str, mysql_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = closed_port_url() if where == "closed-port" else mysql_url_for("root", SENTINEL_PASSWORD)
    history = TiDBChatMessageHistory("s", url, "t_secret", retry=QUICK)
    assert SENTINEL_PASSWORD not in repr(history)
    with pytest.raises(TiDBMemoryError) as info:
        if api == "async":
            await history.aadd_messages([])  # nothing to write: no I/O, no error ...
            await history.aget_messages()  # ... but this must fail
        else:
            await asyncio.to_thread(lambda: history.messages)
    scan(info.value, caplog.records)
    with pytest.raises(TiDBMemoryError) as info:
        await history.aclear()
    scan(info.value, caplog.records)
    if where == "closed-port":
        # the retries were logged (at DEBUG), and those lines were scanned too
        assert any("attempt" in r.getMessage() for r in caplog.records)
