"""The ``tidb-memory`` console script, run for real in a subprocess.

It runs the installed entry point when there is one next to this interpreter (``make test``
installs the package in editable mode), else ``python -m tidb_memory.cli``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mysql_query
from sqlalchemy.engine import make_url

from tidb_memory.cli import COMMANDS, DEMO_SEED, DEMO_TURNS, build_parser, display_url, main

ROOT = Path(__file__).resolve().parent.parent
MYSQL_URL = os.environ.get("TIDB_MEMORY_TEST_URL") or "mysql+aiomysql://root@127.0.0.1:3306/test"
SENTINEL = "S3cr3t-Sentinel-pw"
UNREACHABLE_URL = f"mysql+aiomysql://root:{SENTINEL}@127.0.0.1:1/test"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("tidb-memory")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "tidb_memory.cli"]


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ["PYTHONWARNINGS"] = "default::ResourceWarning"
    for name in ("OPENAI_API_KEY", "TIDB_DATABASE_URL"):
        environ.pop(name, None)
    environ.update(env or {})
    return subprocess.run(
        [*_cli(), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _execute(url: str, *statements: str) -> None:
    assert url == MYSQL_URL, "only the test server is set up and torn down here"
    for statement in statements:
        mysql_query(statement)


@pytest.fixture
def mysql_table() -> Iterator[str]:
    table = f"cli_{uuid.uuid4().hex[:12]}"
    yield table
    _execute(MYSQL_URL, f"DROP TABLE IF EXISTS `{table}`")
    with contextlib.suppress(Exception):  # the bookkeeping table may not exist on a new server
        _execute(MYSQL_URL, f"DELETE FROM tidb_memory_migrations WHERE table_name = '{table}'")


def _expected_history() -> list[dict[str, str]]:
    history = [{"type": role, "content": content} for role, content in DEMO_SEED]
    for _, question, reply in DEMO_TURNS:
        history += [{"type": "human", "content": question}, {"type": "ai", "content": reply}]
    return history


def _check_demo_json(result: subprocess.CompletedProcess[str], session: str) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["session_id"] == session
    assert document["model"] == "GenericFakeChatModel (canned replies)"
    turns = document["turns"]
    assert [t["call"] for t in turns] == ["invoke", "ainvoke", "invoke"]
    # Every turn saw the whole session so far: system prompt + history + the question.
    assert [t["context_messages"] for t in turns] == [4, 6, 8]
    assert [t["reply"] for t in turns] == [reply for _, _, reply in DEMO_TURNS]
    assert document["history"] == _expected_history()
    return document


# --- demo ------------------------------------------------------------------------------------


def test_demo_sqlite_default(tmp_path: Path) -> None:
    result = _run("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "database: sqlite+aiosqlite:///tidb_memory.sqlite3" in out
    assert "table:    langchain_message_store" in out
    assert "session:  demo" in out
    assert "[invoke] you: Today is Jan 1st." in out
    assert "[ainvoke] ai:  31 days is about four and a half weeks." in out
    assert "(the model saw 8 messages: system prompt + 6 from history + you)" in out
    assert "Reloaded with a new history object: 8 messages" in out
    assert (tmp_path / "tidb_memory.sqlite3").is_file()

    # Runs again from a clean session, and --json gives the same conversation.
    again = _run("--json", "demo", cwd=tmp_path)
    _check_demo_json(again, "demo")


def test_demo_sqlite_options_after_subcommand(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    session = f"s-{uuid.uuid4().hex[:8]}"
    result = _run(
        "demo", "--url", url, "--table", "my_chat", "--session", session, "--json", cwd=tmp_path
    )
    document = _check_demo_json(result, session)
    assert document["table"] == "my_chat"
    assert document["url"] == url
    assert (tmp_path / "other.db").is_file()
    assert not (tmp_path / "tidb_memory.sqlite3").exists()


def test_demo_mysql_from_environment(tmp_path: Path, mysql_table: str) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    result = _run(
        "--json",
        "demo",
        "--table",
        mysql_table,
        "--session",
        session,
        cwd=tmp_path,
        env={"TIDB_DATABASE_URL": MYSQL_URL},
    )
    document = _check_demo_json(result, session)
    assert document["url"] == display_url(MYSQL_URL)
    assert str(document["url"]).startswith("mysql")
    password = make_url(MYSQL_URL).password
    assert not password or str(password) not in result.stdout
    assert not (tmp_path / "tidb_memory.sqlite3").exists()


def test_demo_mysql_text(tmp_path: Path, mysql_table: str) -> None:
    result = _run("--url", MYSQL_URL, "--table", mysql_table, "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"table:    {mysql_table}" in result.stdout
    assert "Reloaded with a new history object: 8 messages" in result.stdout


# --- errors ----------------------------------------------------------------------------------


def _check_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tidb-memory: error: ")
    assert "Traceback" not in result.stderr
    assert SENTINEL not in result.stderr
    assert SENTINEL not in result.stdout
    return lines[0]


def test_unreachable_server_is_one_line_without_password(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _run("demo", "--url", UNREACHABLE_URL, "--table", "never_created", cwd=tmp_path)
    elapsed = time.monotonic() - started
    line = _check_one_line_error(result)
    assert "2003" in line or "connect" in line.lower()
    assert elapsed < 60
    # The URL is echoed, masked.
    assert "mysql+aiomysql://root:***@127.0.0.1:1/test" in result.stdout


def test_password_in_environment_url_is_not_shown(tmp_path: Path) -> None:
    result = _run("--json", "demo", cwd=tmp_path, env={"TIDB_DATABASE_URL": UNREACHABLE_URL})
    _check_one_line_error(result)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--url", f"postgresql://u:{SENTINEL}@localhost/db"], "unsupported URL scheme"),
        (["--table", "no-dashes-allowed"], "table_name"),
        (["--session", "trailing "], "session_id"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = _run("demo", *args, cwd=tmp_path)
    assert fragment in _check_one_line_error(result)
    assert not (tmp_path / "tidb_memory.sqlite3").exists()  # failed before any I/O


# --- in process ------------------------------------------------------------------------------


def test_main_in_process_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["demo", "--url", f"mysql+aiomysql://u:{SENTINEL}@h/db?bogus=1"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.count("\n") == 1
    assert "unsupported URL parameter" in captured.err
    assert SENTINEL not in captured.err + captured.out


def test_parser_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert "demo" in COMMANDS
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([])
    assert exc.value.code == 2


def test_display_url_masks_the_password() -> None:
    assert display_url(UNREACHABLE_URL) == "mysql+aiomysql://root:***@127.0.0.1:1/test"
    assert SENTINEL not in display_url("not a url " + SENTINEL)
