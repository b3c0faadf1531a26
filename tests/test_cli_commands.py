"""Every ``tidb-memory`` subcommand but ``demo``, end to end, against MariaDB.

Each test runs the console script in a subprocess: the installed ``tidb-memory`` when there is
one next to this interpreter (``make test`` installs the package), else a script generated the
way pip generates it, from the ``[project.scripts]`` entry of ``pyproject.toml``. Progress bars
are checked on a real pseudo-terminal, and their absence when stderr is a pipe.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MYSQL_URL, SENTINEL_PASSWORD, Target, mysql_connection
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from sqlalchemy.engine import make_url
from test_migrate import insert_seed_row, seed_history, seed_messages

from tests.infra import CertBundle, ThrowawayMariaDB, generate_certs
from tidb_memory import AsyncTiDBChatMessageHistory, SessionStore
from tidb_memory.chat._schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = f"mysql+aiomysql://root:{SENTINEL_PASSWORD}@127.0.0.1:1/test"


@pytest.fixture(scope="session")
def console_script(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    installed = Path(sys.executable).with_name("tidb-memory")
    if installed.is_file() and os.access(installed, os.X_OK):
        return [str(installed)]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["tidb-memory"].split(":")
    path = tmp_path_factory.mktemp("bin") / "tidb-memory"
    path.write_text(
        f"#!{sys.executable}\n"
        "import re, sys\n"
        f"from {module} import {function}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({function}())\n"
    )
    path.chmod(0o755)
    return [str(path)]


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ["PYTHONWARNINGS"] = "default::ResourceWarning"
    environ.pop("TIDB_DATABASE_URL", None)
    environ.update(env or {})
    return environ


class CLI:
    """Runs the console script against one table of the test server."""

    def __init__(self, script: list[str], table: str, cwd: Path) -> None:
        self.script = script
        self.table = table
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        url: str | None = MYSQL_URL,
        table: str | None = None,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        command = [*self.script, *args, "--table", table or self.table]
        if url is not None:
            command += ["--url", url]
        return subprocess.run(
            command,
            cwd=self.cwd,
            env=_environment(env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def json(self, *args: str, **kwargs: Any) -> Any:
        result = self(*args, "--json", **kwargs)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # piped: no progress bar, no noise
        return json.loads(result.stdout)

    def on_tty(self, *args: str) -> tuple[int, str, str]:
        """Run with stderr on a pseudo-terminal; returns (status, stdout, terminal output)."""
        leader, follower = pty.openpty()
        command = [*self.script, *args, "--table", self.table, "--url", MYSQL_URL]
        proc = subprocess.Popen(
            command,
            cwd=self.cwd,
            env=_environment(None),
            stdout=subprocess.PIPE,
            stderr=follower,
            stdin=subprocess.DEVNULL,
        )
        os.close(follower)
        chunks: list[bytes] = []
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            if not ready:
                proc.kill()
                raise AssertionError("no output from the console script for 60 s")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        proc.stdout.close()
        return proc.wait(60), stdout, b"".join(chunks).decode()


@pytest.fixture
def cli(console_script: list[str], mysql: Target, tmp_path: Path) -> CLI:
    return CLI(console_script, mysql.new_table("cli"), tmp_path)


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The error contract: a non-zero status, one line on stderr, no traceback, no password."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tidb-memory: error: ")
    assert "Traceback" not in result.stderr and SENTINEL_PASSWORD not in result.stderr
    assert SENTINEL_PASSWORD not in result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def populate(table: str) -> None:
    """Three sessions: alice (tools, metadata, title), bob, carol (user u2)."""

    async def go() -> None:
        alice = AsyncTiDBChatMessageHistory("alice", MYSQL_URL, table_name=table)
        await alice.aadd_messages(
            [
                SystemMessage("be brief"),
                HumanMessage("weather? 🌦"),
                AIMessage(
                    "", tool_calls=[{"name": "weather", "args": {"c": "Zürich"}, "id": "t1"}]
                ),
                ToolMessage("sunny", tool_call_id="t1"),
            ]
        )
        await alice.aadd_messages([AIMessage("Sunny ☀")], metadata={"tokens": 7})
        await asyncio.sleep(0.01)
        bob = AsyncTiDBChatMessageHistory("bob", MYSQL_URL, table_name=table)
        await bob.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
        await asyncio.sleep(0.01)
        carol = AsyncTiDBChatMessageHistory("carol", MYSQL_URL, table_name=table)
        await carol.aadd_messages([HumanMessage("yo")])
        sessions = SessionStore(MYSQL_URL, table_name=table)
        await sessions.aset_session_info("alice", user_id="u1", title="Weather", metadata={"k": 1})
        await sessions.aset_session_info("bob", user_id="u1")
        await sessions.aset_session_info("carol", user_id="u2")

    asyncio.run(go())


def raw_rows(mysql: Target, table: str) -> list[tuple[Any, ...]]:
    return mysql.query(
        f"SELECT session_id, seq, msg_key, message, metadata, created_at FROM `{table}` "
        "ORDER BY session_id, seq"
    )


# --- init, doctor ----------------------------------------------------------------------------


def test_init_creates_then_reports_up_to_date(cli: CLI, mysql: Target) -> None:
    created = cli.json("init", "--ttl", "30d")
    assert created["action"] == "created" and created["schema_version"] == SCHEMA_VERSION
    assert created["previous_version"] is None
    assert mysql.table_exists(cli.table)
    again = cli("init")
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout.strip() == (
        f"Table {cli.table!r} is up to date (schema version {SCHEMA_VERSION})."
    )
    one_line_error(cli("init", "--ttl", "soon"), "'soon' is not a duration")


def test_init_and_doctor_refuse_a_seed_table(cli: CLI, mysql: Target) -> None:
    with seed_history("s", cli.table) as h:
        h.add_message(HumanMessage("old"))
    one_line_error(cli("init"), f"tidb-memory migrate --table {cli.table}")
    doctor = cli("doctor")
    assert doctor.returncode == 1
    assert f"problem:  table {cli.table!r} has langchain-community's layout" in doctor.stdout
    assert "seq" not in {r[0] for r in mysql.query(f"SHOW COLUMNS FROM `{cli.table}`")}


def test_doctor_reports_server_schema_and_latency(cli: CLI) -> None:
    missing = cli.json("doctor")
    assert missing["layout"] == "missing" and missing["problems"] == []
    cli.json("init")
    report = cli.json("doctor")
    version = asyncio.run(_server_version())
    assert report["server_version"] == version
    assert report["backend"] == "mysql" and report["tidb"] is False
    assert report["tls_cipher"] is None  # the shared test server has TLS disabled
    assert report["tls_version"] is None
    assert report["layout"] == "current" and report["schema_version"] == SCHEMA_VERSION
    assert 0 < report["latency_ms"] < 1000
    assert report["url"] == make_url(MYSQL_URL).render_as_string(hide_password=True)
    text = cli("doctor")
    assert text.returncode == 0 and text.stderr == ""
    assert f"server:   {version} (MySQL/MariaDB)" in text.stdout
    assert "TiDB:     no" in text.stdout and "TLS:      off (plaintext)" in text.stdout
    assert f"schema version {SCHEMA_VERSION}" in text.stdout
    assert "latency:  " in text.stdout and text.stdout.rstrip().endswith("ok")


async def _server_version() -> str:
    import aiomysql

    u = make_url(MYSQL_URL)
    conn = await aiomysql.connect(
        host=u.host, port=u.port or 3306, user=u.username or "root", db=u.database
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT VERSION()")
            return str((await cur.fetchone())[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThrowawayMariaDB, CertBundle]]:
    certs = generate_certs(tmp_path_factory.mktemp("certs"))
    with ThrowawayMariaDB(
        ssl_cert=certs.server_cert, ssl_key=certs.server_key, ssl_ca=certs.ca_cert
    ) as server:
        yield server, certs


def test_doctor_shows_the_tls_cipher(
    console_script: list[str], tmp_path: Path, tls_server: tuple[ThrowawayMariaDB, CertBundle]
) -> None:
    server, certs = tls_server
    url = f"{server.url}?ssl_ca={certs.ca_cert}"
    result = CLI(console_script, "tls_probe", tmp_path)("doctor", "--json", url=url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tls_cipher"] and report["tls_cipher"] != "off"
    assert report["tls_version"] in ("TLSv1.2", "TLSv1.3")
    text = CLI(console_script, "tls_probe", tmp_path)("doctor", url=url)
    assert f"TLS:      {report['tls_cipher']}, {report['tls_version']}" in text.stdout
    assert "ssl_ca" in report["url"]


# --- sessions, show --------------------------------------------------------------------------


def test_sessions_lists_filters_and_pages(cli: CLI) -> None:
    populate(cli.table)
    listing = cli("sessions")
    assert listing.returncode == 0 and listing.stderr == ""
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "MESSAGES", "LAST", "ACTIVITY", "(UTC)", "USER", "TITLE"]
    assert [line.split()[0] for line in lines[2:]] == ["carol", "bob", "alice"]
    assert lines[4].split()[1] == "5" and lines[4].endswith("u1    Weather")
    page = cli.json("sessions", "--user", "u1", "--limit", "1")
    assert [s["session_id"] for s in page["sessions"]] == ["bob"]
    assert page["next_cursor"]
    rest = cli.json("sessions", "--user", "u1", "--limit", "1", "--cursor", page["next_cursor"])
    assert [s["session_id"] for s in rest["sessions"]] == ["alice"]
    assert rest["sessions"][0]["title"] == "Weather"
    assert rest["sessions"][0]["metadata"] == {"k": 1}
    text = cli("sessions", "--user", "u1", "--limit", "1")
    assert f"More: tidb-memory sessions --cursor {page['next_cursor']}" in text.stdout
    assert cli.json("sessions", "--user", "nobody")["sessions"] == []
    one_line_error(cli("sessions", "--cursor", "garbage"), "cursor")


def test_show_prints_info_and_pages(cli: CLI) -> None:
    populate(cli.table)
    result = cli("show", "alice")
    assert result.returncode == 0 and result.stderr == ""
    out = result.stdout
    assert "session:  alice" in out and "title:    Weather" in out and "messages: 5" in out
    assert 'metadata: {"k": 1}' in out
    assert "weather? 🌦" in out and 'calls weather({"c": "Zürich"})' in out
    document = cli.json("show", "alice", "--limit", "2")
    assert [r["seq"] for r in document["records"]] == [4, 5]
    assert document["records"][1]["metadata"] == {"tokens": 7}
    assert document["records"][1]["message"]["data"]["content"] == "Sunny ☀"
    assert document["next_before"] == 4
    older = cli.json("show", "alice", "--limit", "2", "--before", "4")
    assert [r["seq"] for r in older["records"]] == [2, 3]
    assert "Older: tidb-memory show alice --before 4" in cli("show", "alice", "--limit", "2").stdout
    one_line_error(cli("show", "nobody"), "'nobody' has no messages")


# --- export, import --------------------------------------------------------------------------


def test_export_import_round_trip_is_idempotent(cli: CLI, mysql: Target, tmp_path: Path) -> None:
    populate(cli.table)
    exported = cli("export")
    assert exported.returncode == 0 and exported.stderr == ""  # piped: no progress bar
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["session_id"], r["seq"]) for r in lines] == [
        ("alice", 1), ("alice", 2), ("alice", 3), ("alice", 4), ("alice", 5),
        ("bob", 1), ("bob", 2), ("carol", 1),
    ]  # fmt: skip
    assert lines[4]["metadata"] == {"tokens": 7} and lines[4]["message"]["type"] == "ai"
    assert lines[2]["message"]["data"]["tool_calls"][0]["args"] == {"c": "Zürich"}
    assert datetime.fromisoformat(lines[0]["created_at"]).tzinfo is not None
    one = cli("export", "--session", "bob")
    assert [json.loads(x)["session_id"] for x in one.stdout.splitlines()] == ["bob", "bob"]
    dump = tmp_path / "dump.jsonl"
    summary = cli.json("export", "--output", str(dump), "--batch", "3")
    assert summary == {"table": cli.table, "output": str(dump), "records": 8, "sessions": 3}
    assert dump.read_text() == exported.stdout

    target = mysql.new_table("imp")
    first = cli.json("import", str(dump), table=target)
    assert (first["records"], first["inserted"], first["skipped"]) == (8, 8, 0)
    rows = raw_rows(mysql, target)
    again = cli("import", str(dump), table=target)
    assert again.returncode == 0 and again.stderr == ""
    assert "Imported 0 of 8 records" in again.stdout and "8 already present" in again.stdout
    assert raw_rows(mysql, target) == rows  # re-importing changed nothing at all
    # Through stdin, in small batches: still nothing new.
    piped = cli.json("import", "-", "--batch", "2", table=target, stdin=dump.read_text())
    assert piped["inserted"] == 0
    assert raw_rows(mysql, target) == rows
    # What was imported reads back exactly, and exports identically.
    assert cli("export", table=target).stdout == exported.stdout
    # A partial file, then the whole: the missing records are added, nothing else changes.
    partial = mysql.new_table("imp")
    head = tmp_path / "head.jsonl"
    head.write_text("".join(exported.stdout.splitlines(keepends=True)[:3]))
    assert cli.json("import", str(head), table=partial)["inserted"] == 3
    assert cli.json("import", str(dump), table=partial)["inserted"] == 5
    assert cli("export", table=partial).stdout == exported.stdout


def test_import_reports_a_bad_line(cli: CLI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {
        "session_id": "s",
        "seq": 1,
        "created_at": "2025-01-01T00:00:00+00:00",
        "message": {"type": "human", "data": {"content": "hi"}},
        "metadata": None,
    }
    bad.write_text(json.dumps(good) + "\n\n" + '{"session_id": "s"}\n')
    one_line_error(cli("import", str(bad)), f"{bad}:3: not a tidb-memory export record")
    bad.write_text("not json\n")
    one_line_error(cli("import", str(bad)), f"{bad}:1: not JSON")
    one_line_error(cli("import", str(tmp_path / "missing.jsonl")), "cannot read")
    one_line_error(cli("export", "--output", str(tmp_path / "no" / "dir.jsonl")), "cannot write")


# --- clear, purge ----------------------------------------------------------------------------


def test_clear_deletes_one_session(cli: CLI, mysql: Target) -> None:
    populate(cli.table)
    assert cli.json("clear", "bob")["deleted"] == 2
    assert mysql.count(cli.table, "bob") == 0 and mysql.count(cli.table, "alice") == 5
    info = SessionStore(MYSQL_URL, table_name=cli.table).get_session_info("bob")
    assert info.user_id == "u1"  # the info row is kept without --with-info
    result = cli("clear", "alice", "--with-info")
    assert result.returncode == 0
    assert result.stdout.strip() == f"Deleted 5 messages of session 'alice' from {cli.table!r}."
    info = SessionStore(MYSQL_URL, table_name=cli.table).get_session_info("alice")
    assert (info.title, info.user_id) == (None, None)
    assert mysql.count(cli.table, "carol") == 1


def test_purge_deletes_old_messages_in_batches(cli: CLI, mysql: Target) -> None:
    populate(cli.table)
    old = (datetime.now(UTC) - timedelta(days=40)).replace(tzinfo=None)
    mysql.execute(
        f"UPDATE `{cli.table}` SET created_at = %s WHERE session_id IN ('alice', 'bob')", (old,)
    )
    result = cli.json("purge", "--older-than", "30d", "--batch", "2")
    assert result["deleted"] == 7
    assert mysql.count(cli.table) == 1
    assert cli.json("purge", "--older-than", "2000-01-01T00:00")["deleted"] == 0
    one_line_error(cli("purge", "--older-than", "yesterday"), "neither a duration")
    missing = cli("purge")
    assert missing.returncode == 2 and "--older-than" in missing.stderr  # argparse usage


@pytest.mark.parametrize(
    ("older_than", "words"),
    [
        ("99999999999999999999d", "too long"),
        ("9999999999w", "too long"),
        ("0001-01-01T00:00:00+05:00", "out of range"),
        ("9999-12-31T23:59:59-05:00", "out of range"),
    ],
)
def test_purge_with_an_extreme_time_is_one_line(cli: CLI, older_than: str, words: str) -> None:
    one_line_error(cli("purge", "--older-than", older_than), words)


# --- migrate ---------------------------------------------------------------------------------


def test_migrate_no_swap_then_swap(cli: CLI, mysql: Target) -> None:
    mysql.tables += [f"{cli.table}_migrated", f"{cli.table}_seed_backup"]
    with seed_history("alice", cli.table) as h:
        h.add_message(HumanMessage("first 🌍"))
    insert_seed_row(cli.table, 50, "bob", AIMessage("bob"))
    insert_seed_row(cli.table, 20, "alice", AIMessage("second"))  # before 50, after 1
    expected = seed_messages("alice", cli.table)
    report = cli.json("migrate", "--no-swap", "--batch", "2")
    assert report["swapped"] is False and report["rows"] == 3 and report["copied"] == 3
    assert report["new_table"] == f"{cli.table}_migrated" and report["backup_table"] is None
    text = cli("migrate")
    assert text.returncode == 0 and text.stderr == ""
    assert "Copied 0 rows; verified 3 rows of 2 sessions" in text.stdout
    assert f"the old table is '{cli.table}_seed_backup'" in text.stdout
    messages = AsyncTiDBChatMessageHistory("alice", MYSQL_URL, table_name=cli.table).messages
    assert messages == expected
    assert cli.json("migrate")["already_migrated"] is True
    assert cli.json("doctor")["layout"] == "current"


# --- progress on a terminal ------------------------------------------------------------------


def test_long_operations_show_progress_on_a_terminal_only(
    cli: CLI, mysql: Target, tmp_path: Path
) -> None:
    populate(cli.table)
    dump = tmp_path / "dump.jsonl"
    status, _, terminal = cli.on_tty("export", "--output", str(dump), "--batch", "2")
    assert status == 0
    assert "\rexport" in terminal and "8 rows" in terminal and "Traceback" not in terminal
    status, stdout, terminal = cli.on_tty("export", "--session", "alice")
    assert status == 0 and "[" in terminal and "100%" in terminal  # a known total: a bar
    assert len(stdout.splitlines()) == 5
    other = mysql.new_table("imp")
    cli.table, table = other, cli.table
    status, _, terminal = cli.on_tty("import", str(dump), "--batch", "3")
    assert status == 0 and "\rimport [" in terminal and "100%" in terminal
    cli.table = table
    mysql.execute(f"UPDATE `{table}` SET created_at = '2001-01-01 00:00:00'")
    status, _, terminal = cli.on_tty("purge", "--older-than", "1d", "--batch", "3")
    assert status == 0 and "\rpurge" in terminal and "8 rows deleted" in terminal
    seed = mysql.new_table("seed")
    mysql.tables += [f"{seed}_migrated", f"{seed}_seed_backup"]
    with seed_history("s", seed) as h:
        for i in range(5):
            h.add_message(HumanMessage(f"m{i}"))
    cli.table = seed
    status, _, terminal = cli.on_tty("migrate", "--batch", "2")
    assert status == 0 and "\rcopy [" in terminal and "\rverify [" in terminal
    assert "100%" in terminal
    # The same commands piped: not a byte on stderr.
    cli.table = table
    assert cli("export").stderr == ""
    assert cli("purge", "--older-than", "1d").stderr == ""


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["init"],
        ["doctor"],
        ["sessions"],
        ["show", "s"],
        ["export"],
        ["clear", "s"],
        ["purge", "--older-than", "1d"],
        ["migrate"],
    ],
    ids=lambda a: a[0],
)
def test_unreachable_server_is_one_line_without_password(cli: CLI, args: list[str]) -> None:
    one_line_error(cli(*args, url=UNREACHABLE))


def test_unreachable_server_from_the_environment(cli: CLI) -> None:
    one_line_error(cli("doctor", url=None, env={"TIDB_DATABASE_URL": UNREACHABLE}))


def test_import_to_unreachable_server(cli: CLI, tmp_path: Path) -> None:
    dump = tmp_path / "d.jsonl"
    dump.write_text(
        json.dumps(
            {
                "session_id": "s",
                "seq": 1,
                "created_at": "2025-01-01T00:00:00+00:00",
                "message": {"type": "human", "data": {"content": "hi"}},
                "metadata": None,
            }
        )
        + "\n"
    )
    one_line_error(cli("import", str(dump), url=UNREACHABLE))


def test_url_from_the_environment(cli: CLI) -> None:
    populate(cli.table)
    result = cli("sessions", "--json", url=None, env={"TIDB_DATABASE_URL": MYSQL_URL})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["sessions"]) == 3


def test_migrate_interrupted_by_ctrl_c_resumes(cli: CLI, mysql: Target) -> None:
    """Ctrl-C mid-copy: exit 130 with one line; the next run resumes after the last row."""
    mysql.tables += [f"{cli.table}_migrated", f"{cli.table}_seed_backup"]
    with seed_history("s0", cli.table):
        pass  # the seed's own DDL
    rows = [
        (f"s{i % 37}", json.dumps({"type": "human", "data": {"content": f"m{i} 🌍"}}))
        for i in range(3000)
    ]
    with mysql_connection() as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO `{cli.table}` (session_id, message) VALUES (%s, %s)", rows)
    command = [*cli.script, "migrate", "--batch", "5", "--table", cli.table, "--url", MYSQL_URL]
    proc = subprocess.Popen(
        command,
        cwd=cli.cwd,
        env=_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    target = f"{cli.table}_migrated"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if mysql.table_exists(target) and mysql.count(target) > 300:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr == "tidb-memory: error: interrupted\n"
    copied = mysql.count(target)
    assert 300 < copied < 3000
    assert "seq" not in {r[0] for r in mysql.query(f"SHOW COLUMNS FROM `{cli.table}`")}
    report = cli.json("migrate")
    assert report["resumed_after_id"] == copied  # ids 1..3000, copied in order
    assert report["copied"] == 3000 - copied and report["rows"] == 3000 and report["swapped"]
    for session in ("s0", "s5", "s36"):
        seqs = [r[0] for r in mysql.rows(cli.table, session)]
        assert seqs == list(range(1, len(seqs) + 1))
    contents = [
        m.content
        for m in AsyncTiDBChatMessageHistory("s5", MYSQL_URL, table_name=cli.table).messages
    ]
    assert contents == [f"m{i} 🌍" for i in range(5, 3000, 37)]
