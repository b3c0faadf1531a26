"""chat/_schema.py (and every SQL builder): the DDL text, the statement shapes, and the first-use
checks against a real server: a foreign or seed-layout table is refused, never altered."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Target
from langchain_core.messages import HumanMessage

import tidb_memory
from tidb_memory import AsyncTiDBChatMessageHistory, InvalidInputError, SchemaError, _dialect
from tidb_memory.chat import _schema as schema
from tidb_memory.chat import _sql
from tidb_memory.chat._schema import (
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
    check_table_name,
    create_table_statements,
    quote,
)

PACKAGE = Path(tidb_memory.__file__).parent

# --- the statement builders -----------------------------------------------------------------

DOMAINS: dict[str, list[Any]] = {
    "backend": ["mysql", "sqlite"],
    "table": ["t_builder"],
    "rows": [1, 2, 7],
    "fields": [("user_id",), ("title", "metadata"), ("user_id", "title", "metadata")],
    "ttl": [None, timedelta(days=30), timedelta(hours=1)],
}


def builders() -> list[Callable[..., Any]]:
    """Every function of chat/_sql.py, chat/_schema.py and _dialect.py that builds SQL, public
    or private."""
    found = []
    for module in (_sql, schema, _dialect):
        for name, fn in vars(module).items():
            if not name.endswith(("_statement", "_statements")) or not callable(fn):
                continue
            if getattr(fn, "__module__", None) == module.__name__ or hasattr(fn, "__wrapped__"):
                found.append(fn)
    found += [statements for _version, _description, statements in schema.MIGRATIONS]
    return found


def all_statements(fn: Callable[..., Any]) -> list[tuple[str, str]]:
    """(backend, sql) for every combination of ``fn``'s arguments."""
    target = getattr(fn, "__wrapped__", fn)
    params = inspect.signature(target).parameters
    choices: dict[str, list[Any]] = {}
    for name, param in params.items():
        if name in DOMAINS:
            choices[name] = DOMAINS[name]
        elif param.annotation in (bool, "bool"):
            choices[name] = [False, True]
        else:
            pytest.fail(f"{fn.__name__} takes {name!r}: teach this test its values")
    out = []
    for values in itertools.product(*choices.values()):
        kwargs = dict(zip(choices, values, strict=True))
        built = fn(**kwargs)
        if isinstance(built, tuple):  # (sql, params)
            built = built[0]
        for sql in [built] if isinstance(built, str) else built:
            assert isinstance(sql, str)
            out.append((kwargs.get("backend", "?"), sql))
    return out


BUILDERS = builders()


def test_the_builders_are_found() -> None:
    names = {getattr(fn, "__name__", "") for fn in BUILDERS}
    expected = {
        "create_table_statements",
        "read_statement",
        "insert_values_statement",
        "insert_select_statement",
        "clear_statement",
        "_columns_statement",
        "_record_version_statement",
    }
    assert expected <= names, names


@pytest.mark.parametrize("fn", BUILDERS, ids=lambda fn: getattr(fn, "__name__", repr(fn)))
def test_no_returning_and_one_dialect_per_statement(fn: Callable[..., Any]) -> None:
    statements = all_statements(fn)
    assert statements
    for backend, sql in statements:
        assert not re.search(r"\bRETURNING\b", sql, re.IGNORECASE), sql  # TiDB has none
        if backend == "mysql":
            assert '"' not in sql and "?" not in sql, sql
        elif backend == "sqlite":
            assert "`" not in sql and "%s" not in sql, sql
        assert sql.count("/*") == sql.count("*/")


def string_literals(source: str) -> list[str]:
    """Every string constant of a module (f-string parts included), docstrings excepted."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_returning_anywhere_in_the_package_source() -> None:
    # Statements written inline (GET_LOCK, SELECT VERSION(), SHOW STATUS, the checkpointer's
    # SQL ...) are covered too: no string literal of the package says RETURNING.
    seen = 0
    for path in sorted(PACKAGE.rglob("*.py")):  # chat/, langgraph/ and cli/ too
        for text in string_literals(path.read_text()):
            seen += 1
            assert not re.search(r"\bRETURNING\b", text, re.IGNORECASE), (
                str(path.relative_to(PACKAGE)),
                text,
            )
    assert seen > 100


def test_mysql_ddl_text() -> None:
    message_table, *others = create_table_statements("mysql", "chat")
    assert message_table.startswith("CREATE TABLE IF NOT EXISTS `chat` (")
    assert "PRIMARY KEY (`session_id`, `seq`) /*T![clustered_index] CLUSTERED */" in message_table
    assert re.search(
        r"`session_id` VARCHAR\(255\) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", message_table
    )
    assert message_table.rstrip().endswith("DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
    assert "`seq` BIGINT NOT NULL" in message_table
    assert "`created_at` DATETIME(6) NOT NULL" in message_table
    assert "`message` JSON NOT NULL" in message_table
    assert re.search(r"UNIQUE KEY `\w+` \(`msg_key`\)", message_table)
    assert "AUTO_INCREMENT" not in message_table.upper()
    for statement in others:
        assert statement.startswith("CREATE TABLE IF NOT EXISTS")
        assert "/*T![clustered_index] CLUSTERED */" in statement
        assert "COLLATE=utf8mb4_bin" in statement
    assert any(f"`{MIGRATIONS_TABLE}`" in s for s in others)


def test_tidb_ttl_is_an_executable_comment() -> None:
    (message_table, *_) = create_table_statements("mysql", "chat", ttl=timedelta(days=7))
    assert "/*T![ttl] TTL=`created_at` + INTERVAL 7 DAY */" in message_table
    assert "/*T![ttl] TTL_ENABLE='ON' */" in message_table
    plain = create_table_statements("mysql", "chat")[0]
    assert "TTL" not in plain


def test_sqlite_ddl_text() -> None:
    statements = create_table_statements("sqlite", "chat")
    assert statements[0].startswith('CREATE TABLE IF NOT EXISTS "chat" (')
    assert "PRIMARY KEY (session_id, seq)" in statements[0]
    assert all("/*T!" not in s for s in statements)


@pytest.mark.parametrize("name", ["a", "_", "A_1", "x" * 64, "langchain_message_store"])
def test_plain_identifiers_are_accepted(name: str) -> None:
    assert check_table_name(name) == name
    assert quote("mysql", name) == f"`{name}`"
    assert quote("sqlite", name) == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    ["", "1a", "a-b", "a b", "a.b", "x" * 65, "a`b", 'a"b', "a;drop", "ä", "a\n", None, 3],
)
def test_other_table_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInputError):
        check_table_name(name)


# --- against the server ---------------------------------------------------------------------


def seed_ddl(backend: Target, table: str) -> str:
    """langchain-community's TiDBChatMessageHistory table."""
    if backend.name == "mysql":
        return (
            f"CREATE TABLE `{table}` (id INT AUTO_INCREMENT PRIMARY KEY, "
            "session_id VARCHAR(255) NOT NULL, message JSON NOT NULL, "
            "create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
    return (
        f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
        "session_id VARCHAR(255) NOT NULL, message JSON NOT NULL, "
        "create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )


def columns(backend: Target, table: str) -> list[str]:
    if backend.name == "mysql":
        rows = backend.query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (table,),
        )
    else:
        rows = backend.query("SELECT name FROM pragma_table_info(?)", (table,))
    return [str(row[0]) for row in rows]


@pytest.mark.parametrize("create_table", [True, False])
async def test_a_seed_layout_table_is_refused_not_altered(
    backend: Target, table: str, create_table: bool
) -> None:
    backend.execute(seed_ddl(backend, table))
    row = '{"type": "human", "data": {"content": "seed row", "type": "human"}}'
    backend.execute(
        f"INSERT INTO {backend.q(table)} (session_id, message) VALUES ({backend.ph}, {backend.ph})",
        ("s", row),
    )
    before = columns(backend, table)
    history = AsyncTiDBChatMessageHistory(
        "s", backend.url, table_name=table, create_table=create_table
    )
    for call in (history.aget_messages, lambda: history.aadd_messages([HumanMessage("x")])):
        with pytest.raises(SchemaError) as info:
            await call()
        assert "tidb-memory migrate" in str(info.value)
        assert table in str(info.value)
        assert info.value.table == table
    assert columns(backend, table) == before
    assert backend.count(table) == 1


async def test_a_foreign_table_is_refused(backend: Target, table: str) -> None:
    backend.execute(f"CREATE TABLE {backend.q(table)} (a INT, b TEXT)")
    with pytest.raises(SchemaError) as info:
        await AsyncTiDBChatMessageHistory("s", backend.url, table_name=table).aget_messages()
    assert "missing columns" in str(info.value)
    assert columns(backend, table) == ["a", "b"]
    if backend.table_exists(MIGRATIONS_TABLE):  # no schema version claimed for a foreign table
        recorded = backend.query(
            f"SELECT version FROM {backend.q(MIGRATIONS_TABLE)} WHERE table_name = {backend.ph}",
            (table,),
        )
        assert recorded == []


async def test_first_use_records_the_schema_version(backend: Target, table: str) -> None:
    await AsyncTiDBChatMessageHistory("s", backend.url, table_name=table).aget_messages()
    rows = backend.query(
        f"SELECT version FROM {backend.q(MIGRATIONS_TABLE)} WHERE table_name = {backend.ph}",
        (table,),
    )
    assert {int(r[0]) for r in rows} == set(range(1, SCHEMA_VERSION + 1))
    assert columns(backend, table)[:2] == ["session_id", "seq"]


async def test_mariadb_table_is_utf8mb4_bin(mysql: Target) -> None:
    table = mysql.new_table()
    await AsyncTiDBChatMessageHistory("s", mysql.url, table_name=table).aget_messages()
    (_, ddl), *_ = mysql.query(f"SHOW CREATE TABLE `{table}`")
    assert "utf8mb4_bin" in ddl
    assert "CHARSET=utf8mb4" in ddl
    rows = mysql.query(
        "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME, COLUMN_TYPE "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        (table,),
    )
    info = {r[0]: r[1:] for r in rows}
    assert info["session_id"][:2] == ("utf8mb4", "utf8mb4_bin")
    assert info["created_at"][2] == "datetime(6)"
    assert info["seq"][2].startswith("bigint")
    (collation,) = mysql.query(
        "SELECT TABLE_COLLATION FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        (table,),
    )[0]
    assert collation == "utf8mb4_bin"


# --- a table dropped under a running process -------------------------------------------------


async def test_a_dropped_table_is_set_up_again_on_the_next_call(
    backend: Target, table: str
) -> None:
    history = AsyncTiDBChatMessageHistory("dropped", backend.url, table_name=table)
    await history.aadd_messages([HumanMessage("before")])
    backend.execute(f"DROP TABLE {backend.q(table)}")
    # Setup ran once in this process; the next call finds error 1146 / "no such table",
    # forgets that mark, sets the table up again and retries once.
    await history.aadd_messages([HumanMessage("after")])
    assert [m.content for m in await history.aget_messages()] == ["after"]
    assert backend.count(table, "dropped") == 1
    backend.execute(f"DROP TABLE {backend.q(table)}")
    assert await history.aget_messages() == []  # a read too
    if backend.name == "sqlite":  # the shared server's sessions table is everyone's
        backend.execute(f"DROP TABLE {backend.q('tidb_memory_sessions')}")
        await history.aset_session_info(title="t")  # the sessions table too
        assert (await history.aget_session_info()).title == "t"


async def test_a_dropped_table_without_create_table_names_create_tables(
    backend: Target, table: str
) -> None:
    await AsyncTiDBChatMessageHistory("s", backend.url, table_name=table).acreate_tables()
    history = AsyncTiDBChatMessageHistory(
        "dropped", backend.url, table_name=table, create_table=False
    )
    await history.aadd_messages([HumanMessage("before")])
    backend.execute(f"DROP TABLE {backend.q(table)}")
    for _ in range(2):  # the same answer each time: never a half-set-up table
        with pytest.raises(SchemaError, match="create_tables") as info:
            await history.aadd_messages([HumanMessage("after")])
        assert table in str(info.value)
        assert not backend.table_exists(table)
    await history.acreate_tables()
    await history.aadd_messages([HumanMessage("after")])
    assert [m.content for m in await history.aget_messages()] == ["after"]
