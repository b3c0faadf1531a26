"""``tidb_memory.chat.seed`` and the versioned schema migrations of ``chat/_schema.py``.

The seed tables are made by langchain-community's own ``TiDBChatMessageHistory`` (its exact DDL),
plus rows inserted by hand with explicit, out-of-order ids across sessions, emoji, tool calls
and timestamps written under a non-UTC session time zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MYSQL_URL, Target, mysql_connection
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)
from sqlalchemy.engine import make_url

from tidb_memory import AsyncTiDBChatMessageHistory, InvalidInputError, SchemaError, StorageError
from tidb_memory.chat import _schema as schema_module
from tidb_memory.chat._schema import MIGRATIONS_TABLE
from tidb_memory.chat.seed import MigrationReport, amigrate_seed_table, seed_key
from tidb_memory.codec import _FIELDS, encode
from tidb_memory.engine import get_database

SEED_URL = make_url(MYSQL_URL).set(drivername="mysql+pymysql").render_as_string(False)


def _seed_class() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community announces its sunset on import
        from langchain_community.chat_message_histories.tidb import TiDBChatMessageHistory
    return TiDBChatMessageHistory


@contextlib.contextmanager
def seed_history(session_id: str, table: str) -> Iterator[Any]:
    """The seed class itself, closed afterwards (it never closes its engine)."""
    history = _seed_class()(session_id, SEED_URL, table_name=table)
    try:
        yield history
    finally:
        history.session.close()
        history.engine.dispose()


def seed_messages(session_id: str, table: str) -> list[BaseMessage]:
    """A session of the seed table as the seed class decodes it, ordered by id, matching the
    session id exactly (the seed class matches it under the column's collation, which on
    MariaDB's default is case-insensitive; tidb-memory keeps such ids apart)."""
    with mysql_connection() as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT message FROM `{table}` WHERE BINARY session_id = BINARY %s ORDER BY id",
            (session_id,),
        )
        return messages_from_dict([json.loads(row[0]) for row in cur.fetchall()])


def seed_class_messages(session_id: str, table: str) -> list[BaseMessage]:
    """What the seed class itself reads for a session."""
    with seed_history(session_id, table) as history:
        return list(history.messages)


def insert_seed_row(
    table: str, row_id: int, session_id: str, message: BaseMessage, when: str | None = None
) -> None:
    """A seed row with an explicit id, written as the seed class writes it (json.dumps)."""
    with mysql_connection() as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+05:00'")  # TIMESTAMP literals are local to the session
        cur.execute(
            f"INSERT INTO `{table}` (id, session_id, message, create_time) "
            "VALUES (%s, %s, %s, COALESCE(%s, CURRENT_TIMESTAMP))",
            (row_id, session_id, json.dumps(message_to_dict(message)), when),
        )


TOOL_CALL = AIMessage(
    "",
    tool_calls=[{"name": "lookup", "args": {"city": "Zürich", "n": 3}, "id": "call_1"}],
)


@pytest.fixture
def seed_table(mysql: Target) -> Iterator[str]:
    """A seed table with two sessions interleaved and ids out of order across them.

    Session ``alice`` (by id): 5 system, 10 human, 30 tool call, 40 tool result, 60 ai,
    then 61.. from the seed class. Session ``bob``: 7, 20, 50. ``Alice`` (case differs) : 8.
    """
    table = mysql.new_table("seed")
    for suffix in ("_migrated", "_seed_backup"):
        mysql.tables.append(table + suffix)
    with seed_history("alice", table):
        pass  # creates the table with the seed's exact DDL
    insert_seed_row(table, 40, "alice", ToolMessage("sunny 🌞", tool_call_id="call_1"))
    insert_seed_row(table, 5, "alice", SystemMessage("You are terse."), "2020-01-02 08:04:05")
    insert_seed_row(table, 20, "bob", AIMessage("bob's answer ✅"))
    insert_seed_row(table, 10, "alice", HumanMessage("Weather in Zürich? 🌦"))
    insert_seed_row(table, 7, "bob", HumanMessage("bob's question"))
    insert_seed_row(table, 30, "alice", TOOL_CALL)
    insert_seed_row(table, 8, "Alice", HumanMessage("a different session: ids are exact"))
    insert_seed_row(table, 60, "alice", AIMessage("Sunny."))
    insert_seed_row(table, 50, "bob", HumanMessage("thanks"))
    with seed_history("alice", table) as history:
        history.add_message(HumanMessage("and tomorrow? 🤔"))  # id 61, CURRENT_TIMESTAMP
        history.add_message(AIMessage("Rain.", response_metadata={"model": "x"}))
    return table


def _db() -> Any:
    return get_database(MYSQL_URL)


def migrate(table: str, **kwargs: Any) -> MigrationReport:
    return asyncio.run(amigrate_seed_table(_db(), table, **kwargs))


def read(table: str, session_id: str) -> list[BaseMessage]:
    async def go() -> list[BaseMessage]:
        return await AsyncTiDBChatMessageHistory(
            session_id, MYSQL_URL, table_name=table
        ).aget_messages()

    return asyncio.run(go())


def columns(mysql: Target, table: str) -> set[str]:
    rows = mysql.query(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        (table,),
    )
    return {r[0] for r in rows}


# --- first use of a seed table --------------------------------------------------------------


def test_first_use_of_a_seed_table_names_the_migration_and_changes_nothing(
    mysql: Target, seed_table: str
) -> None:
    before = mysql.query(f"SHOW CREATE TABLE `{seed_table}`")
    count = mysql.count(seed_table)
    with pytest.raises(SchemaError, match="tidb-memory migrate --table " + seed_table):
        read(seed_table, "alice")
    assert mysql.query(f"SHOW CREATE TABLE `{seed_table}`") == before
    assert mysql.count(seed_table) == count
    if mysql.table_exists(MIGRATIONS_TABLE):
        recorded = f"SELECT * FROM `{MIGRATIONS_TABLE}` WHERE table_name = %s"
        assert not mysql.query(recorded, (seed_table,))


# --- a full migration -----------------------------------------------------------------------


def test_migrate_keeps_order_timestamps_and_messages(mysql: Target, seed_table: str) -> None:
    expected = {sid: seed_messages(sid, seed_table) for sid in ("alice", "bob", "Alice")}
    assert [m.content for m in expected["alice"]][:2] == ["You are terse.", "Weather in Zürich? 🌦"]
    total = mysql.count(seed_table)
    old_times = dict(
        mysql.query(f"SELECT id, UNIX_TIMESTAMP(create_time) FROM `{seed_table}` ORDER BY id")
    )
    seen: list[tuple[str, int, int]] = []

    report = migrate(seed_table, batch=4, progress=lambda *a: seen.append(a))

    assert report.swapped and not report.already_migrated
    assert report.rows == report.copied == total == 11
    assert report.sessions == 3 and report.resumed_after == 0 and len(report.digest) == 64
    assert report.case_variants == 1  # "Alice" and "alice": one session to the seed class
    assert report.backup == f"{seed_table}_seed_backup"
    # The old table is kept, untouched, under the backup name; the new one took its name.
    assert columns(mysql, report.backup) == {"id", "session_id", "message", "create_time"}
    assert mysql.count(report.backup) == total
    assert {"seq", "msg_key", "created_at"} <= columns(mysql, seed_table)
    assert not mysql.table_exists(f"{seed_table}_migrated")
    # Progress: copy then verify, monotonic, ending at the totals.
    copy = [d for p, d, _ in seen if p == "copy"]
    verify = [d for p, d, _ in seen if p == "verify"]
    assert copy == sorted(copy) and copy[-1] == total
    assert verify == sorted(verify) and verify[-1] == 2 * total
    assert [p for p, _, _ in seen] == sorted([p for p, _, _ in seen])  # "copy" < "verify"

    for sid, messages in expected.items():
        assert read(seed_table, sid) == messages
    assert read(seed_table, "bob") == seed_class_messages("bob", report.backup)
    rows = mysql.query(
        f"SELECT session_id, seq, msg_key, message, created_at FROM `{seed_table}` "
        "ORDER BY session_id, seq"
    )
    by_session: dict[str, list[int]] = {}
    for sid, seq, key, message, created in rows:
        by_session.setdefault(sid, []).append(seq)
        old_id = int(key[len("seed") :])
        assert key == seed_key(old_id)
        # created_at is the old TIMESTAMP as UTC, whatever the writer's time zone was.
        assert created == datetime.fromtimestamp(old_times[old_id], UTC).replace(tzinfo=None)
        # Re-encoded by the codec: exactly the field set its fast path expects.
        stored = json.loads(message)
        cls = type(expected[sid][seq - 1])
        assert set(stored["data"]) == _FIELDS[cls]
        assert message == encode(expected[sid][seq - 1])
    assert by_session == {"alice": [1, 2, 3, 4, 5, 6, 7], "bob": [1, 2, 3], "Alice": [1]}
    # Session order is by old id: 5, 10, 30, 40, 60, 61, 62.
    keys = mysql.query(
        f"SELECT msg_key FROM `{seed_table}` WHERE session_id = 'alice' ORDER BY seq"
    )
    assert [int(k[0][4:]) for k in keys][:5] == [5, 10, 30, 40, 60]
    # 2020-01-02 08:04:05 written at +05:00 is 03:04:05 UTC.
    first = mysql.query(
        f"SELECT created_at FROM `{seed_table}` WHERE session_id = 'alice' AND seq = 1"
    )
    assert first[0][0] == datetime(2020, 1, 2, 3, 4, 5)
    # The schema versions are recorded under the table's name, not the temporary one.
    versions = mysql.query(
        f"SELECT table_name, version FROM `{MIGRATIONS_TABLE}` WHERE table_name IN (%s, %s)",
        (seed_table, f"{seed_table}_migrated"),
    )
    assert versions == [(seed_table, schema_module.SCHEMA_VERSION)]

    # The migrated table is an ordinary tidb-memory table: windows, appends, records.
    async def use() -> None:
        history = AsyncTiDBChatMessageHistory("alice", MYSQL_URL, table_name=seed_table, window=3)
        assert [m.content for m in await history.aget_messages()] == [
            "Sunny.",
            "and tomorrow? 🤔",
            "Rain.",
        ]
        await history.aadd_messages([HumanMessage("new")])
        records = await history.aget_records(limit=2)
        assert [r.seq for r in records] == [7, 8]

    asyncio.run(use())

    # Running it again is a no-op that says so.
    again = migrate(seed_table)
    assert again.already_migrated and again.copied == 0


def test_interrupted_migration_resumes_and_converges(mysql: Target, seed_table: str) -> None:
    expected = {sid: seed_messages(sid, seed_table) for sid in ("alice", "bob", "Alice")}
    ids = [r[0] for r in mysql.query(f"SELECT id FROM `{seed_table}` ORDER BY id")]

    class Stop(Exception):
        pass

    def stop_after_six(phase: str, done: int, total: int) -> None:
        if phase == "copy" and done >= 6:
            raise Stop

    with pytest.raises(Stop):  # the callback's own exception, unchanged
        migrate(seed_table, batch=3, progress=stop_after_six)
    target = f"{seed_table}_migrated"
    assert mysql.count(target) == 6
    assert mysql.count(seed_table) == len(ids)  # the old table is untouched, and not swapped
    assert "seq" not in columns(mysql, seed_table)

    # Interrupted again, inside the next batch of the resumed run.
    def stop_after_nine(phase: str, done: int, total: int) -> None:
        if phase == "copy" and done >= 9:
            raise Stop

    with pytest.raises(Stop):
        migrate(seed_table, batch=3, progress=stop_after_nine)
    assert mysql.count(target) == 9

    report = migrate(seed_table, batch=3)
    assert report.resumed_after == ids[8]
    assert report.copied == len(ids) - 9
    assert report.rows == len(ids) and report.swapped
    for sid, messages in expected.items():
        assert read(seed_table, sid) == messages
    # Dense seqs, no duplicates, despite three runs.
    for sid, messages in expected.items():
        seqs = [r[0] for r in mysql.rows(seed_table, sid)]
        assert seqs == list(range(1, len(messages) + 1))


def test_no_swap_leaves_both_tables_then_a_later_run_swaps(mysql: Target, seed_table: str) -> None:
    first = migrate(seed_table, swap=False)
    target = f"{seed_table}_migrated"
    assert not first.swapped and first.backup is None and first.target == target
    assert "seq" not in columns(mysql, seed_table) and mysql.count(target) == first.rows
    assert read(target, "bob") == seed_messages("bob", seed_table)
    # Re-running converges: nothing more to copy, the same digest.
    second = migrate(seed_table, swap=False)
    assert second.copied == 0 and second.digest == first.digest
    third = migrate(seed_table)
    assert third.swapped and third.copied == 0 and third.digest == first.digest


def test_custom_target_and_backup_names(mysql: Target, seed_table: str) -> None:
    target, backup = mysql.new_table("mt"), mysql.new_table("bk")
    report = migrate(seed_table, target=target, backup=backup)
    assert report.backup == backup and report.swapped
    assert not mysql.table_exists(target)
    assert mysql.count(backup) == mysql.count(seed_table) == report.rows


def test_verification_catches_a_changed_or_missing_row(mysql: Target, seed_table: str) -> None:
    migrate(seed_table, swap=False)
    target = f"{seed_table}_migrated"
    original = mysql.query(f"SELECT message FROM `{target}` WHERE msg_key = %s", (seed_key(20),))
    changed = original[0][0].replace("bob's answer", "bob's answeR")
    mysql.execute(f"UPDATE `{target}` SET message = %s WHERE msg_key = %s", (changed, seed_key(20)))
    with pytest.raises(SchemaError, match="digests differ"):
        migrate(seed_table)
    assert "seq" not in columns(mysql, seed_table)  # nothing swapped
    # Two rows of a session swapped in place: same rows, other order.
    mysql.execute(
        f"UPDATE `{target}` SET message = %s WHERE msg_key = %s", (original[0][0], seed_key(20))
    )
    mysql.execute(f"UPDATE `{target}` SET seq = 99 WHERE msg_key = %s", (seed_key(7),))
    mysql.execute(f"UPDATE `{target}` SET seq = 1 WHERE msg_key = %s", (seed_key(20),))
    mysql.execute(f"UPDATE `{target}` SET seq = 2 WHERE msg_key = %s", (seed_key(7),))
    with pytest.raises(SchemaError, match="digests differ"):
        migrate(seed_table)
    mysql.execute(f"DELETE FROM `{target}` WHERE msg_key = %s", (seed_key(50),))
    with pytest.raises(SchemaError, match=r"11 rows but .* has 10"):
        migrate(seed_table)
    assert "seq" not in columns(mysql, seed_table)


def test_refusals_happen_before_anything_is_written(mysql: Target, seed_table: str) -> None:
    target = f"{seed_table}_migrated"
    # A session id MySQL compares equal to another (trailing space).
    insert_seed_row(seed_table, 70, "bob ", HumanMessage("pad space"))
    with pytest.raises(SchemaError, match="ending in a space"):
        migrate(seed_table)
    assert not mysql.table_exists(target)
    mysql.execute(f"DELETE FROM `{seed_table}` WHERE id = 70")
    # A row that holds no message: the error names its id; rows before it are kept.
    with mysql_connection() as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO `{seed_table}` (id, session_id, message) VALUES (9, 'x', %s)",
            (json.dumps({"type": "nonsense"}),),
        )
    with pytest.raises(SchemaError, match="row id=9"):
        migrate(seed_table, batch=2)
    assert mysql.count(target) == 2  # ids 5 and 7: the batch before the bad row
    mysql.execute(f"DELETE FROM `{seed_table}` WHERE id = 9")
    assert migrate(seed_table).resumed_after == 7
    # A table that is neither layout.
    other = mysql.new_table("other")
    mysql.execute(f"CREATE TABLE `{other}` (x INT)")
    with pytest.raises(SchemaError, match="neither"):
        migrate(other)


def test_backup_name_taken(mysql: Target, seed_table: str) -> None:
    backup = f"{seed_table}_seed_backup"
    mysql.execute(f"CREATE TABLE `{backup}` (x INT)")
    with pytest.raises(SchemaError, match="taken"):
        migrate(seed_table)
    assert not mysql.table_exists(f"{seed_table}_migrated")


def test_bad_arguments_fail_before_io(tmp_path: Path, mysql: Target) -> None:
    with pytest.raises(InvalidInputError):
        migrate("bad name")
    with pytest.raises(InvalidInputError, match="64"):
        migrate("t" * 60)
    with pytest.raises(InvalidInputError, match="different"):
        migrate("t1", target="t1")
    with pytest.raises(InvalidInputError, match="batch"):
        migrate("t1", batch=0)
    sqlite = get_database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InvalidInputError, match="SQLite"):
        asyncio.run(amigrate_seed_table(sqlite, "t1"))
    with pytest.raises(SchemaError, match="does not exist"):
        migrate(mysql.new_table("missing"))


# --- versioned schema migrations ------------------------------------------------------------


def _probe_v2(fail: list[bool]) -> Any:
    def statements(backend: str, table: str) -> list[str]:
        q = f"`{table}_v2`" if backend == "mysql" else f'"{table}_v2"'
        first = f"CREATE TABLE IF NOT EXISTS {q} (x INT)"
        if fail[0]:
            return [first, "THIS IS NOT SQL"]
        return [first]

    return statements


def test_versioned_migrations_apply_in_order_and_record_after_success(
    backend: Target, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.tables.append(f"{table}_v2")
    m = backend.q(MIGRATIONS_TABLE)

    def versions() -> list[int]:
        rows = backend.query(
            f"SELECT version FROM {m} WHERE table_name = {backend.ph} ORDER BY version", (table,)
        )
        return [r[0] for r in rows]

    async def use() -> None:
        history = AsyncTiDBChatMessageHistory("s", backend.url, table_name=table)
        await history.aadd_messages([HumanMessage("hi")])

    def fresh() -> None:
        schema_module.forget()

    asyncio.run(use())
    assert versions() == [1]
    fail = [True]
    monkeypatch.setattr(
        schema_module, "MIGRATIONS", (*schema_module.MIGRATIONS, (2, "probe", _probe_v2(fail)))
    )
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", 2)
    fresh()
    # A request never runs an ALTER: the first use names the command that upgrades.
    with pytest.raises(SchemaError, match="tidb-memory init --table " + table):
        asyncio.run(use())

    async def upgrade() -> None:
        await AsyncTiDBChatMessageHistory("s", backend.url, table_name=table).acreate_tables()

    with pytest.raises(StorageError, match=r"NOT SQL|syntax"):
        asyncio.run(upgrade())
    assert versions() == [1]  # not recorded: one of its statements failed
    fail[0] = False
    asyncio.run(upgrade())
    assert versions() == [1, 2]
    assert backend.table_exists(f"{table}_v2")
    fresh()
    asyncio.run(use())
    assert backend.count(table) == 2
    # A fresh table records every version at once.
    other = backend.new_table()
    asyncio.run(AsyncTiDBChatMessageHistory("s", backend.url, table_name=other).acreate_tables())
    rows = backend.query(
        f"SELECT version FROM {m} WHERE table_name = {backend.ph} ORDER BY version", (other,)
    )
    assert [r[0] for r in rows] == [1, 2]
    assert not backend.table_exists(f"{other}_v2")  # the DDL already has the latest layout


def test_a_table_from_a_newer_version_is_refused(backend: Target, table: str) -> None:
    async def use() -> None:
        await AsyncTiDBChatMessageHistory("s", backend.url, table_name=table).aadd_messages(
            [HumanMessage("hi")]
        )

    asyncio.run(use())
    backend.execute(
        f"INSERT INTO {backend.q(MIGRATIONS_TABLE)} (table_name, version, applied_at) "
        f"VALUES ({backend.ph}, 99, '2030-01-01 00:00:00')",
        (table,),
    )
    schema_module.forget()
    with pytest.raises(SchemaError, match="newer"):
        asyncio.run(use())


def test_created_at_from_migration_is_utc_even_for_recent_rows(
    mysql: Target, seed_table: str
) -> None:
    migrate(seed_table)
    newest = mysql.query(f"SELECT MAX(created_at) FROM `{seed_table}`")[0][0]
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs(now - newest) < timedelta(minutes=5)
