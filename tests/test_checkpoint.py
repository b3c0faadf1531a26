"""AsyncTiDBSaver: LangGraph's conformance suite, round trips, SQL guard, bytes, limits, serde.

Runs on the local MariaDB (``TIDB_MEMORY_TEST_URL``) and on SQLite, with uuid-suffixed table
prefixes that are dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomysql
import pytest
from conftest import MYSQL_URL, aiomysql_connect
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    empty_checkpoint,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

import tidb_memory
from tests.infra import FaultProxy
from tidb_memory import _migrations
from tidb_memory.engine import Connection
from tidb_memory.errors import InvalidInputError, MessageTooLargeError, SchemaError, StorageError
from tidb_memory.langgraph import _saver_rows
from tidb_memory.langgraph import saver as saver_module
from tidb_memory.langgraph._saver_sql import (
    MIGRATIONS,
    Select,
    Tables,
    delete_thread_statements,
    insert_blobs_statement,
    insert_writes_statement,
    read_statement,
    upsert_checkpoint_statement,
)
from tidb_memory.langgraph.saver import AsyncTiDBSaver, CheckpointTooLargeError, TiDBSaver

BACKENDS = ["mysql", "sqlite"]


def _prefix() -> str:
    return "cpt_" + uuid.uuid4().hex[:10]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "mysql":
        return MYSQL_URL
    return f"sqlite+aiosqlite:///{tmp_path / 'checkpoints.db'}"


async def drop_tables(saver: AsyncTiDBSaver) -> None:
    t = saver.tables
    async with saver.db.connection() as conn:
        for name in (t.checkpoints, t.blobs, t.writes, t.migrations, t.threads):
            await conn.execute(f"DROP TABLE IF EXISTS {name}", ())


@asynccontextmanager
async def fresh_saver(url: str, **kwargs: Any) -> AsyncIterator[AsyncTiDBSaver]:
    kwargs.setdefault("table_prefix", _prefix())
    saver = AsyncTiDBSaver(url, **kwargs)
    await saver.asetup()
    try:
        yield saver
    finally:
        await drop_tables(saver)


def config(thread_id: str, checkpoint_ns: str = "", checkpoint_id: str | None = None) -> Any:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def make_checkpoint(values: dict[str, Any], versions: dict[str, Any]) -> Checkpoint:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


# --- statement recording: round trips on every backend, and the SQL guard -------------------


class Recorder:
    """Records every statement sent through tidb_memory's Connection."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str, Sequence[Any]]] = []

    def __len__(self) -> int:
        return len(self.statements)

    def clear(self) -> None:
        self.statements.clear()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    fetchall, execute, execute_all = Connection.fetchall, Connection.execute, Connection.execute_all

    async def rec_fetchall(self: Connection, sql: str, params: Any) -> list[Any]:
        rec.statements.append((self.backend, sql, params))
        return await fetchall(self, sql, params)

    async def rec_execute(self: Connection, sql: str, params: Any) -> int:
        rec.statements.append((self.backend, sql, params))
        return await execute(self, sql, params)

    async def rec_execute_all(
        self: Connection, statements: Sequence[tuple[str, Any]], *, max_bytes: int
    ) -> None:
        rec.statements += [(self.backend, sql, params) for sql, params in statements]
        await execute_all(self, statements, max_bytes=max_bytes)

    monkeypatch.setattr(Connection, "fetchall", rec_fetchall)
    monkeypatch.setattr(Connection, "execute", rec_execute)
    monkeypatch.setattr(Connection, "execute_all", rec_execute_all)
    return rec


FORBIDDEN = {
    "JSON_TABLE": re.compile(r"\bJSON_TABLE\b", re.I),
    "row alias (INSERT ... AS new)": re.compile(
        r"\bAS\s+new\b|VALUES\s*\([^)]*\)\s*AS\s+\w+\s+ON\s+DUPLICATE", re.I
    ),
    "RETURNING": re.compile(r"\bRETURNING\b", re.I),
    "CREATE INDEX IF NOT EXISTS": re.compile(r"CREATE\s+INDEX\s+IF\s+NOT\s+EXISTS", re.I),
}


def forbidden_in(sql: str) -> list[str]:
    return [name for name, pattern in FORBIDDEN.items() if pattern.search(sql)]


# --- 1. LangGraph's conformance suite ------------------------------------------------------


class SyncPath(BaseCheckpointSaver[str]):
    """Runs the conformance cases through the saver's *synchronous* methods, each called from
    a worker thread, as LangGraph's ``invoke`` does."""

    def __init__(self, inner: AsyncTiDBSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.inner.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.inner.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def run() -> list[CheckpointTuple]:
            return list(self.inner.list(config, filter=filter, before=before, limit=limit))

        for item in await asyncio.to_thread(run):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.inner.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.inner.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.inner.delete_thread, thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.inner.prune, thread_ids, strategy=strategy)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.inner.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.inner.delete_for_runs, run_ids)


async def run_conformance(url: str, *, sync: bool = False, **kwargs: Any) -> Any:
    prefix = _prefix()

    async def lifespan() -> AsyncIterator[None]:
        yield
        await drop_tables(AsyncTiDBSaver(url, table_prefix=prefix))

    async def factory() -> AsyncIterator[BaseCheckpointSaver[str]]:
        saver = AsyncTiDBSaver(url, table_prefix=prefix, **kwargs)
        await saver.asetup()
        yield SyncPath(saver) if sync else saver

    registered = checkpointer_test(name=f"tidb-{prefix}", lifespan=lifespan)(factory)
    return await validate(registered)


def assert_passed(report: Any) -> None:
    """Every capability, base and extended, detected and passed; the report is printed."""
    report.print_report()
    failures = {
        name: result.failures for name, result in report.results.items() if result.passed is False
    }
    assert report.passed_all_base(), failures
    assert {c.value for c in ALL_CAPABILITIES} <= set(report.results), report.results
    for cap in ALL_CAPABILITIES:
        result = report.results[cap.value]
        assert result.detected and result.passed is True, (cap.value, result)
        assert result.tests_passed > 0 and result.tests_failed == 0, (cap.value, result)
    assert report.passed_all() and report.conformance_level() == "FULL", failures


@pytest.mark.parametrize("inline_primitives", [True, False])
async def test_conformance_async(url: str, inline_primitives: bool) -> None:
    assert_passed(await run_conformance(url, inline_primitives=inline_primitives))


async def test_conformance_sync_path(url: str) -> None:
    assert_passed(await run_conformance(url, sync=True))


async def test_conformance_encrypted(url: str) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef")
    assert_passed(await run_conformance(url, serde=serde, inline_primitives=False))


# --- construction, exports, versions -------------------------------------------------------


def test_exports_are_lazy() -> None:
    assert tidb_memory.AsyncTiDBSaver is AsyncTiDBSaver
    assert tidb_memory.TiDBSaver is TiDBSaver is AsyncTiDBSaver
    assert "AsyncTiDBSaver" in tidb_memory.__all__ and "TiDBSaver" in tidb_memory.__all__
    assert tidb_memory.__all__ == sorted(tidb_memory.__all__)
    code = "import sys, tidb_memory; assert 'langgraph' not in sys.modules, sorted(sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(tidb_memory.__file__).parent.parent))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_construction_does_no_io() -> None:
    # Nothing listens on port 1: any I/O would fail.
    saver = AsyncTiDBSaver("mysql+aiomysql://root@127.0.0.1:1/nowhere", table_prefix="x")
    assert isinstance(saver, BaseCheckpointSaver)
    assert saver.tables == Tables("xs", "x_blobs", "x_writes", "x_migrations", "x_threads")
    with pytest.raises(InvalidInputError):
        AsyncTiDBSaver(MYSQL_URL, table_prefix="bad-name")
    with pytest.raises(InvalidInputError):
        AsyncTiDBSaver(MYSQL_URL, max_blob_bytes=0)


def test_next_version_follows_postgres_scheme() -> None:
    saver = AsyncTiDBSaver(MYSQL_URL)
    first = saver.get_next_version(None, None)
    assert re.fullmatch(r"0{31}1\.\d\.\d+", first) or re.fullmatch(r"0{31}1\.\d+\.?\d*", first)
    counter, _fraction = first.split(".", 1)
    assert len(counter) == 32 and int(counter) == 1
    second = saver.get_next_version(first, None)
    assert int(second.split(".")[0]) == 2 and second > first
    assert saver.get_next_version(7, None).startswith("0" * 30 + "08.")
    # Two forks of one checkpoint never mint the same version.
    assert len({saver.get_next_version(first, None) for _ in range(1000)}) == 1000


# --- round trips ---------------------------------------------------------------------------


class ServerCounter:
    """Statements the server ran, from SHOW STATUS ``Questions`` + ``Com_admin_commands``.

    (A multi-statement query counts once per statement: round trips are counted on the wire,
    by :func:`test_round_trips_counted_on_the_wire`.)

    Two views, both asserted exactly:

    * ``GLOBAL`` deltas read from a monitor connection. Other clients share the server and only
      ever add to them, so the measurement is repeated and its minimum taken, then calibrated
      by subtracting the minimum of the same measurement around nothing.
    * ``SESSION`` deltas of the saver's only pooled connection (``pool_size=1``), which nothing
      else uses; the same connection id before and after proves no reconnect hid in between.
    """

    def __init__(self, monitor: Any, saver: AsyncTiDBSaver) -> None:
        self.monitor = monitor
        self.saver = saver

    async def _global(self) -> int:
        async with self.monitor.cursor() as cur:
            await cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')"
            )
            return sum(int(v) for _, v in await cur.fetchall())

    async def _session(self) -> tuple[int, int]:
        async with self.saver.db.connection() as conn:
            rows = await conn.fetchall(
                "SHOW SESSION STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')",
                (),
            )
            (conn_id,) = (await conn.fetchall("SELECT CONNECTION_ID()", ()))[0]
        return sum(int(v) for _, v in rows), int(conn_id)

    async def _global_delta(self, op: Any, attempts: int, enough: int | None = None) -> int:
        best: int | None = None
        for attempt in range(1, attempts + 1):
            before = await self._global()
            await op()
            delta = await self._global() - before
            best = delta if best is None else min(best, delta)
            if enough is not None and best <= enough and attempt >= 5:
                break  # others only ever add: a lower minimum is not possible
        assert best is not None
        return best

    async def _session_delta(self, op: Any) -> int:
        before, conn_before = await self._session()
        await op()
        after, conn_after = await self._session()
        assert conn_before == conn_after, "the pooled connection was replaced"
        return after - before

    async def statements(self, op: Any, expected: int) -> tuple[int, int]:
        """(global, session) statements of ``op``, calibrated.

        The global minimum can only overstate the truth, so sampling stops once it reaches
        ``expected``; the session count, which nothing else touches, pins the exact value.
        """

        async def nothing() -> None:
            return None

        baseline = await self._global_delta(nothing, 40)
        global_ = await self._global_delta(op, 300, enough=baseline + expected) - baseline
        session = await self._session_delta(op) - await self._session_delta(nothing)
        return global_, session


@asynccontextmanager
async def server_counter(saver: AsyncTiDBSaver) -> AsyncIterator[ServerCounter]:
    conn = await aiomysql_connect(MYSQL_URL)
    try:
        yield ServerCounter(conn, saver)
    finally:
        conn.close()


async def seed_thread(saver: AsyncTiDBSaver, thread_id: str, steps: int) -> list[Any]:
    """A thread shaped like a graph's: a growing list in a blob, a str and an int inline."""
    configs = []
    parent: Any = config(thread_id)
    versions: dict[str, Any] = {}
    for step in range(steps):
        for channel in ("messages", "count", "note"):
            versions[channel] = saver.get_next_version(versions.get(channel), None)
        cp = make_checkpoint(
            {"messages": [f"m{i}" for i in range(step + 1)], "count": step, "note": "n"},
            dict(versions),
        )
        stored = await saver.aput(parent, cp, {"source": "loop", "step": step}, dict(versions))
        await saver.aput_writes(stored, [("messages", [f"w{step}"]), ("x", step)], f"task{step}")
        configs.append(stored)
        parent = stored
    return configs


class Ops:
    """The saver calls whose cost is counted, on a seeded thread; each can run many times."""

    def __init__(self, saver: AsyncTiDBSaver, url: str) -> None:
        self.saver, self.url = saver, url
        self.thread, self.other = "rt-" + uuid.uuid4().hex, "rt2-" + uuid.uuid4().hex
        self.configs: list[Any] = []
        self.built: list[AsyncTiDBSaver] = []
        self.serial = iter(range(1_000_000))

    async def seed(self) -> Ops:
        self.configs = await seed_thread(self.saver, self.thread, 5)
        return self

    async def construct(self) -> None:
        prefix = self.saver.tables.checkpoints[:-1]
        self.built.append(AsyncTiDBSaver(self.url, table_prefix=prefix))

    async def get_latest(self) -> None:
        tup = await self.saver.aget_tuple(config(self.thread))
        assert tup is not None and tup.checkpoint["channel_values"]["count"] == 4
        assert tup.checkpoint["channel_values"]["messages"] == [f"m{i}" for i in range(5)]
        assert tup.pending_writes and len(tup.pending_writes) == 2

    async def get_by_id(self) -> None:
        tup = await self.saver.aget_tuple(self.configs[1])
        assert tup is not None and tup.checkpoint["channel_values"]["messages"] == ["m0", "m1"]

    async def put(self) -> None:
        n = next(self.serial)
        cp = make_checkpoint({"messages": [n], "n": n}, {"messages": f"v{n}", "n": f"w{n}"})
        await self.saver.aput(config(self.other), cp, {"source": "loop"}, cp["channel_versions"])

    async def put_inline_only(self) -> None:
        n = next(self.serial)
        cp = make_checkpoint({"n": n}, {"n": f"w{n}"})
        await self.saver.aput(config(self.other), cp, {"source": "loop"}, cp["channel_versions"])

    async def put_writes(self) -> None:
        writes = [("a", [1]), ("b", "x"), (ERROR, "e")]
        await self.saver.aput_writes(self.configs[0], writes, f"t{next(self.serial)}")

    async def put_writes_of_ten_tasks(self) -> None:
        # As a super-step's tasks finish together: their writes share one round trip.
        await asyncio.gather(*(self.put_writes() for _ in range(10)))

    async def list_thread(self) -> None:
        assert len([t async for t in self.saver.alist(config(self.thread))]) == 5

    async def list_limit(self) -> None:
        assert len([t async for t in self.saver.alist(None, limit=3)]) == 3


async def test_statements_counted_by_the_server(recorder: Recorder) -> None:
    one_connection = {"pool_size": 1, "max_overflow": 0}
    async with (
        fresh_saver(MYSQL_URL, engine_args=one_connection) as saver,
        server_counter(saver) as counter,
    ):
        ops = await Ops(saver, MYSQL_URL).seed()
        await ops.get_latest()  # warm the pool
        assert await counter.statements(ops.construct, 0) == (0, 0)
        assert await counter.statements(ops.get_latest, 1) == (1, 1)
        assert await counter.statements(ops.get_by_id, 1) == (1, 1)
        # The blobs, the checkpoint and the thread's row between START TRANSACTION and COMMIT:
        # five statements in one round trip (test_round_trips_counted_on_the_wire counts the
        # round trips); one commit instead of three.
        assert await counter.statements(ops.put, 5) == (5, 5)
        assert await counter.statements(ops.put_inline_only, 4) == (4, 4)
        assert await counter.statements(ops.put_writes, 1) == (1, 1)
        # Ten tasks' writes from one loop iteration merge into one INSERT, atomic by itself:
        # no START TRANSACTION or COMMIT around it.
        assert await counter.statements(ops.put_writes_of_ten_tasks, 1) == (1, 1)
        assert await counter.statements(ops.list_thread, 1) == (1, 1)
        assert await counter.statements(ops.list_limit, 1) == (1, 1)

        # The client-side count agrees.
        for op, expected in [(ops.get_latest, 1), (ops.put, 5), (ops.put_writes, 1)]:
            recorder.clear()
            await op()
            assert len(recorder) == expected


async def test_the_driver_never_receives_a_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiomysql under PyMySQL >= 1.2 breaks on bytes parameters: the saver sends finished text
    (blobs as FROM_BASE64 literals), so the driver's own parameter handling never runs. Reads go
    through a cursor, grouped writes straight to the command (``_driver._run_writes``): both are
    watched, and every command on the wire is recorded."""
    cursor_calls: list[tuple[str, Any]] = []
    sent: list[str] = []
    execute = aiomysql.Cursor.execute
    command = aiomysql.Connection._execute_command

    async def spy_execute(self: Any, query: str, args: Any = None) -> Any:
        cursor_calls.append((query, args))
        return await execute(self, query, args)

    async def spy_command(self: Any, cmd: int, sql: Any) -> Any:
        sent.append(sql.decode() if isinstance(sql, bytes) else str(sql))
        return await command(self, cmd, sql)

    monkeypatch.setattr(aiomysql.Cursor, "execute", spy_execute)
    monkeypatch.setattr(aiomysql.Connection, "_execute_command", spy_command)
    async with fresh_saver(MYSQL_URL) as saver:
        ops = await Ops(saver, MYSQL_URL).seed()
        for op in (ops.get_latest, ops.put, ops.put_writes, ops.list_thread):
            await op()
        prefix = saver.tables.checkpoints[:-1]
    # (SQLAlchemy's dialect setup sends a few queries of its own when a pool first connects.)
    ours = [query for query in sent if prefix in query]
    assert len(ours) > 10
    read = [(query, args) for query, args in cursor_calls if prefix in query]
    assert read and [(query[:80], args) for query, args in read if args is not None] == []
    assert any("FROM_BASE64('" in query for query in ours)


async def test_round_trips_counted_on_the_wire() -> None:
    """Every command the client sends waits for its reply: commands on the wire = round trips.

    The proxy counts the packets that start a command (sequence id 0 after the handshake);
    the saver's single pooled connection goes through it, and nothing else does.
    """
    async with FaultProxy.in_front_of(MYSQL_URL) as proxy:
        url = proxy.url_for(MYSQL_URL)
        one_connection = {"pool_size": 1, "max_overflow": 0}
        async with fresh_saver(url, engine_args=one_connection) as saver:
            ops = await Ops(saver, url).seed()
            await ops.get_latest()  # warm the pool

            async def round_trips(op: Any) -> int:
                connections, before = proxy.stats.connections_total, proxy.stats.commands_seen
                await op()
                assert proxy.stats.connections_total == connections, "a reconnect hid in between"
                return proxy.stats.commands_seen - before

            counts = {
                name: await round_trips(getattr(ops, name))
                for name in (
                    "construct", "get_latest", "get_by_id", "put", "put_inline_only",
                    "put_writes", "put_writes_of_ten_tasks", "list_thread", "list_limit",
                )
            }  # fmt: skip
            assert counts == {
                "construct": 0,
                "get_latest": 1,
                "get_by_id": 1,
                "put": 1,  # blobs, checkpoint and thread row in a transaction: one query
                "put_inline_only": 1,
                "put_writes": 1,
                "put_writes_of_ten_tasks": 1,
                "list_thread": 1,
                "list_limit": 1,
            }


async def test_list_pages_one_statement_each(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        saver.list_page_size = 3
        thread = "pages-" + uuid.uuid4().hex
        configs = await seed_thread(saver, thread, 10)
        other = await seed_thread(saver, "other-" + uuid.uuid4().hex, 4)
        recorder.clear()
        items = [t async for t in saver.alist(config(thread))]
        assert [t.config for t in items] == list(reversed(configs))
        assert len(recorder) == 4  # pages of 3, 3, 3, 1
        assert all(len(t.pending_writes or []) == 2 for t in items)
        # Paging across threads (no config): nothing lost, nothing repeated, newest first.
        everything = [t async for t in saver.alist(None)]
        ids = [t.config["configurable"]["checkpoint_id"] for t in everything]
        assert len(ids) == len(set(ids)) == 14
        assert ids == sorted(ids, reverse=True)
        assert {c["configurable"]["checkpoint_id"] for c in configs + other} == set(ids)
        # The sync face pages the same way.
        assert [t.config for t in saver.list(config(thread), limit=5)] == list(reversed(configs))[
            :5
        ]
        before = [t async for t in saver.alist(config(thread), before=configs[5], limit=2)]
        assert [t.config for t in before] == [configs[4], configs[3]]


async def test_metadata_filters(url: str) -> None:
    async with fresh_saver(url) as saver:
        thread = "f-" + uuid.uuid4().hex
        for i, md in enumerate(
            [
                {"source": "input", "step": -1, "flag": True, "none": None, "d": {"a": 1}},
                {"source": "loop", "step": 0, "flag": False, "score": 1.5},
                {"source": "loop", "step": 1, "flag": True, "d": {"a": 2}},
            ]
        ):
            cp = make_checkpoint({}, {})
            await saver.aput(config(thread), cp, md, {})  # type: ignore[arg-type]
            del i

        async def count(**flt: Any) -> int:
            return len([t async for t in saver.alist(config(thread), filter=flt)])

        assert await count(source="loop") == 2
        assert await count(flag=True) == 2
        assert await count(flag=False) == 1
        # InMemorySaver's rule: a missing key equals None (metadata.get(key) is None).
        assert await count(none=None) == 3
        assert await count(score=1.5) == 1
        assert await count(step=1, source="loop") == 1
        assert await count(d={"a": 2}) == 1
        assert await count(source="nope") == 0


# --- the SQL guard -------------------------------------------------------------------------


def all_builder_statements() -> list[str]:
    t = Tables("gs", "g_blobs", "g_writes", "g_migrations", "g_threads")
    out: list[str] = []
    flags = ("thread", "ns", "checkpoint_id", "before", "cursor", "limit")
    for backend in ("mysql", "sqlite"):
        for mask in range(1 << len(flags)):
            chosen = {name: bool(mask >> i & 1) for i, name in enumerate(flags)}
            for filters in ((), ("text", "null", "array", "object", "number")):
                out.append(read_statement(backend, t, Select(**chosen, filters=filters)))  # type: ignore[arg-type]
        out.append(read_statement(backend, t, Select(thread=True, ns=True, latest=True)))  # type: ignore[arg-type]
        out.append(upsert_checkpoint_statement(backend, t))  # type: ignore[arg-type]
        for rows in (1, 2, 7):
            out.append(insert_blobs_statement(backend, t, rows))  # type: ignore[arg-type]
            out.append(insert_writes_statement(backend, t, rows))  # type: ignore[arg-type]
        out += delete_thread_statements(backend, t, 10)  # type: ignore[arg-type]
        out += MIGRATIONS[0][2](backend, t)  # type: ignore[arg-type]
        out.append(_migrations.ledger_statement(backend, t.migrations))  # type: ignore[arg-type]
        out.append(_migrations._record_statement(backend, t.migrations))  # type: ignore[arg-type]
    return out


def test_guard_patterns_catch_the_forbidden_sql() -> None:
    assert forbidden_in("SELECT * FROM JSON_TABLE(x, '$[*]' COLUMNS (a INT PATH '$')) t")
    assert forbidden_in("INSERT INTO t (a) VALUES (1) AS new ON DUPLICATE KEY UPDATE a = new.a")
    assert forbidden_in("INSERT INTO t (a) VALUES (%s) AS r ON DUPLICATE KEY UPDATE a = r.a")
    assert forbidden_in("DELETE FROM t RETURNING a")
    assert forbidden_in("create index if not exists i on t (a)")
    assert not forbidden_in("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)")


def test_builders_send_no_forbidden_sql() -> None:
    statements = all_builder_statements()
    assert len(statements) > 200
    bad = {sql: forbidden_in(sql) for sql in statements if forbidden_in(sql)}
    assert not bad


async def test_sent_statements_have_no_forbidden_sql(url: str, recorder: Recorder) -> None:
    """Everything the saver actually sends during setup, the conformance suite, listing with
    every option, and deletes."""
    report = await run_conformance(url)
    assert_passed(report)
    async with fresh_saver(url) as saver:
        thread = "g-" + uuid.uuid4().hex
        await seed_thread(saver, thread, 3)
        saver.list_page_size = 2
        [t async for t in saver.alist(None, filter={"source": "loop"}, limit=5)]
        [t async for t in saver.alist(config(thread, "ns"), before=config(thread, "", "z"))]
        await saver.adelete_thread(thread)
    sent = [sql for _, sql, _ in recorder.statements]
    assert len(sent) > 100
    # SQLite has CREATE INDEX IF NOT EXISTS; the rest is forbidden on every backend.
    bad = {
        sql: found
        for backend, sql, _ in recorder.statements
        if (found := [f for f in forbidden_in(sql) if backend == "mysql" or "INDEX" not in f])
    }
    assert not bad
    if url.startswith("mysql"):
        assert any("GET_LOCK" in sql for sql in sent)
        assert all(
            not isinstance(p, bytes | bytearray)
            for _, _, params in recorder.statements
            for p in params
        )


async def test_mariadb_plan_uses_primary_key_lookups() -> None:
    async with fresh_saver(MYSQL_URL) as saver:
        for i in range(40):
            await seed_thread(saver, f"plan{i}", 4)
        async with saver.db.connection() as conn:
            t = saver.tables
            for table in (t.checkpoints, t.blobs, t.writes):
                await conn.fetchall(f"ANALYZE TABLE {table}", ())
            hash_hex = _saver_rows.ns_hash("").hex()
            sel = Select(thread=True, ns=True, latest=True)
            plan = await conn.fetchall(
                "EXPLAIN " + read_statement("mysql", t, sel), ["plan7", hash_hex]
            )
        # The blobs: eq_ref on the primary key, from the expanded refs; never a scan.
        blobs = [r for r in plan if r[2] == "b"]
        assert blobs and all(r[3] == "eq_ref" and r[5] == "PRIMARY" for r in blobs), plan
        # The wide checkpoint columns and the refs: read by primary key.
        assert all(r[3] == "eq_ref" and r[5] == "PRIMARY" for r in plan if r[2] == "x"), plan
        # The writes: a primary-key prefix.
        assert all(r[3] in ("ref", "eq_ref") and r[5] == "PRIMARY" for r in plan if r[2] == "w")
        # The latest checkpoint: the primary key read backwards, no sort of the thread.
        cps = [r for r in plan if r[2] == t.checkpoints]
        assert cps and all(r[5] == "PRIMARY" and "filesort" not in str(r[9]) for r in cps), plan


# --- bytes, sizes, serde -------------------------------------------------------------------


async def test_binary_values_round_trip(url: str) -> None:
    every_byte = bytes(range(256)) * 4 + b"\x00\x00\xff\xff"
    big = os.urandom(1024 * 1024) + b"\x00\xff"
    async with fresh_saver(url) as saver:
        thread = "bin-" + uuid.uuid4().hex
        cp = make_checkpoint(
            {"raw": every_byte, "big": big, "nul_text": "a\x00b\xff"},
            {"raw": "1", "big": "1", "nul_text": "1"},
        )
        stored = await saver.aput(config(thread), cp, {"source": "loop"}, cp["channel_versions"])
        await saver.aput_writes(stored, [("raw", b"\x00\xff\x00"), ("big", big)], "task")
        tup = await saver.aget_tuple(stored)
        assert tup is not None
        assert tup.checkpoint["channel_values"]["raw"] == every_byte
        assert tup.checkpoint["channel_values"]["big"] == big
        assert tup.checkpoint["channel_values"]["nul_text"] == "a\x00b\xff"
        assert tup.pending_writes == [
            ("task", "raw", b"\x00\xff\x00"),
            ("task", "big", big),
        ]
        # The stored bytes are the serializer's bytes, exactly.
        async with saver.db.connection() as conn:
            rows = await conn.fetchall(
                f"SELECT `type`, `blob` FROM {saver.tables.blobs} WHERE `channel` = 'raw'", ()
            )
        assert [(r[0], bytes(r[1])) for r in rows] == [saver.serde.dumps_typed(every_byte)]


async def test_values_over_the_row_limit_get_a_typed_error(url: str) -> None:
    async with fresh_saver(url, max_blob_bytes=10_000) as saver:
        thread = "big-" + uuid.uuid4().hex
        cp = make_checkpoint({"messages": ["x" * 20_000]}, {"messages": "1"})
        with pytest.raises(CheckpointTooLargeError) as caught:
            await saver.aput(config(thread), cp, {}, {"messages": "1"})
        assert isinstance(caught.value, MessageTooLargeError | InvalidInputError)
        text = str(caught.value)
        assert "DeltaChannel" in text and "summarise" in text and "'messages'" in text
        assert await saver.aget_tuple(config(thread)) is None  # nothing was written
        stored = await saver.aput(config(thread), make_checkpoint({}, {}), {}, {})
        with pytest.raises(CheckpointTooLargeError, match="DeltaChannel"):
            await saver.aput_writes(stored, [("ok", 1), ("messages", "y" * 20_000)], "t")
        tup = await saver.aget_tuple(stored)
        assert tup is not None and tup.pending_writes == []
        # A long str is not inlined: it goes to a blob and is checked like any value.
        with pytest.raises(CheckpointTooLargeError):
            await saver.aput(
                config(thread), make_checkpoint({"s": "z" * 20_000}, {"s": "2"}), {}, {"s": "2"}
            )
        with pytest.raises(CheckpointTooLargeError):
            saver.put(config(thread), cp, {}, {"messages": "1"})


async def test_default_limit_is_6_mib() -> None:
    saver = AsyncTiDBSaver(MYSQL_URL, table_prefix=_prefix())  # no I/O: the check comes first
    cp = make_checkpoint({"blob": b"\x00" * (6 * 1024 * 1024 + 1)}, {"blob": "1"})
    with pytest.raises(CheckpointTooLargeError, match="6,291,456"):
        await saver.aput(config("t"), cp, {}, {"blob": "1"})


async def test_encrypted_serializer_covers_every_value(url: str) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 32)
    async with fresh_saver(url, serde=serde, inline_primitives=False) as saver:
        thread = "enc-" + uuid.uuid4().hex
        cp = make_checkpoint(
            {"secret_str": "SECRET-STRING", "secret_list": ["SECRET-ITEM"], "n": 424242},
            {"secret_str": "1", "secret_list": "1", "n": "1"},
        )
        stored = await saver.aput(config(thread), cp, {"source": "loop"}, cp["channel_versions"])
        await saver.aput_writes(stored, [("secret_str", "SECRET-WRITE")], "task")
        tup = await saver.aget_tuple(stored)
        assert tup is not None
        assert tup.checkpoint["channel_values"] == cp["channel_values"]
        assert tup.pending_writes == [("task", "secret_str", "SECRET-WRITE")]
        async with saver.db.connection() as conn:
            t = saver.tables
            raw = await conn.fetchall(f"SELECT `checkpoint`, `refs` FROM {t.checkpoints}", ())
            raw += await conn.fetchall(f"SELECT `type`, `blob` FROM {t.blobs}", ())
            raw += await conn.fetchall(f"SELECT `type`, `blob` FROM {t.writes}", ())
        dump = b"".join(v if isinstance(v, bytes) else str(v).encode() for r in raw for v in r)
        for secret in (b"SECRET", b"424242"):
            assert secret not in dump
        assert b"+aes" in dump
        # Another key cannot read it.
        other = AsyncTiDBSaver(
            url,
            table_prefix=saver.tables.checkpoints[:-1],
            serde=EncryptedSerializer.from_pycryptodome_aes(key=b"x" * 32),
        )
        with pytest.raises(ValueError):
            await other.aget_tuple(stored)


async def test_pending_write_semantics(url: str) -> None:
    async with fresh_saver(url) as saver:
        stored = await saver.aput(config("pw-" + uuid.uuid4().hex), make_checkpoint({}, {}), {}, {})
        await saver.aput_writes(stored, [("a", 1), (ERROR, "first"), (INTERRUPT, "i1")], "t")
        await saver.aput_writes(stored, [("a", 2), (ERROR, "second")], "t")
        await saver.aput_writes(stored, [(INTERRUPT, "i2")], "t")
        tup = await saver.aget_tuple(stored)
        assert tup is not None
        assert sorted(tup.pending_writes or [], key=str) == sorted(
            [("t", "a", 1), ("t", ERROR, "second"), ("t", INTERRUPT, "i2")], key=str
        )


# --- migrations ----------------------------------------------------------------------------


async def migration_rows(saver: AsyncTiDBSaver) -> list[int]:
    async with saver.db.connection() as conn:
        rows = await conn.fetchall(f"SELECT v FROM {saver.tables.migrations} ORDER BY v", ())
    return [int(r[0]) for r in rows]


async def test_setup_is_versioned_idempotent_and_concurrent(url: str) -> None:
    prefix = _prefix()
    savers = [AsyncTiDBSaver(url, table_prefix=prefix) for _ in range(6)]
    try:
        await asyncio.gather(*(s.asetup() for s in savers))
        await savers[0].asetup()
        await asyncio.to_thread(savers[1].setup)
        assert await migration_rows(savers[0]) == [v for v, _, _ in MIGRATIONS]
    finally:
        await drop_tables(savers[0])


async def test_a_version_is_recorded_only_after_its_ddl(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = _prefix()
    saver = AsyncTiDBSaver(url, table_prefix=prefix)
    last = MIGRATIONS[-1][0]
    broken = (last + 1, "a broken step", lambda backend, t: ["ALTER TABLE no_such_x ADD c INT"])
    try:
        monkeypatch.setattr(saver_module, "MIGRATIONS", (*MIGRATIONS, broken))
        with pytest.raises(StorageError):
            await saver.asetup()
        assert await migration_rows(saver) == list(range(1, last + 1))
        fixed = (
            last + 1,
            "fixed",
            lambda backend, t: [f"CREATE TABLE IF NOT EXISTS {prefix}_extra (a INT)"],
        )
        monkeypatch.setattr(saver_module, "MIGRATIONS", (*MIGRATIONS, fixed))
        await saver.asetup()
        assert await migration_rows(saver) == list(range(1, last + 2))
    finally:
        async with saver.db.connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {prefix}_extra", ())
        await drop_tables(saver)


async def test_setup_refuses_a_foreign_migrations_table(url: str) -> None:
    prefix = _prefix()
    saver = AsyncTiDBSaver(url, table_prefix=prefix)
    async with saver.db.connection() as conn:  # langgraph-checkpoint-mysql's layout
        await conn.execute(f"CREATE TABLE {prefix}_migrations (v INTEGER PRIMARY KEY)", ())
    try:
        with pytest.raises(SchemaError, match="table_prefix"):
            await saver.asetup()
    finally:
        await drop_tables(saver)


# --- delete --------------------------------------------------------------------------------


async def test_delete_thread_in_bounded_batches(url: str, recorder: Recorder) -> None:
    async with fresh_saver(url) as saver:
        saver.delete_batch = 4
        doomed, kept = "del-" + uuid.uuid4().hex, "keep-" + uuid.uuid4().hex
        await seed_thread(saver, doomed, 9)
        stored = await saver.aput(config(doomed, "child:1"), make_checkpoint({}, {}), {}, {})
        await saver.aput_writes(stored, [("a", 1)], "t")
        await seed_thread(saver, kept, 2)
        recorder.clear()
        await asyncio.to_thread(saver.delete_thread, doomed)
        deletes = [sql for _, sql, _ in recorder.statements if sql.startswith("DELETE")]
        if url.startswith("mysql"):
            assert all("LIMIT 4" in sql or "_threads`" in sql for sql in deletes)
            assert all(sql.endswith("LIMIT 1") for sql in deletes if "_threads`" in sql)
            assert len(deletes) >= 3 + 10 // 4
        assert await saver.aget_tuple(config(doomed)) is None
        assert await saver.aget_tuple(config(doomed, "child:1")) is None
        assert [t async for t in saver.alist(config(doomed))] == []
        t = saver.tables
        async with saver.db.connection() as conn:
            for table in (t.checkpoints, t.blobs, t.writes, t.threads):
                p = "%s" if url.startswith("mysql") else "?"
                sql = f"SELECT COUNT(*) FROM {table} WHERE thread_id = {p}"
                rows = await conn.fetchall(sql, [doomed])
                assert rows[0][0] == 0
        assert len([x async for x in saver.alist(config(kept))]) == 2


async def test_thread_ids_that_mysql_would_confuse_are_refused() -> None:
    saver = AsyncTiDBSaver(MYSQL_URL)
    with pytest.raises(InvalidInputError, match="space"):
        await saver.aget_tuple(config("abc "))
    with pytest.raises(InvalidInputError):
        await saver.aput(config("x" * 300), make_checkpoint({}, {}), {}, {})


def test_sync_face_from_threads(url: str) -> None:
    saver = AsyncTiDBSaver(url, table_prefix=_prefix())
    saver.setup()
    try:
        thread = "sync-" + uuid.uuid4().hex

        def work(i: int) -> None:
            cfg = saver.put(
                config(f"{thread}-{i}"), make_checkpoint({"v": [i]}, {"v": "1"}), {}, {"v": "1"}
            )
            saver.put_writes(cfg, [("v", i)], "t")
            tup = saver.get_tuple(cfg)
            assert tup is not None and tup.checkpoint["channel_values"]["v"] == [i]

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(32)))
        assert len(list(saver.list(None))) == 32
    finally:
        saver.db.run_sync(drop_tables, saver)


async def test_switching_inline_primitives_off_keeps_unchanged_values(url: str) -> None:
    async with fresh_saver(url) as inline:
        plain = AsyncTiDBSaver(url, table_prefix=inline.tables.checkpoints[:-1])
        plain.inline_primitives = False
        thread = "sw-" + uuid.uuid4().hex
        first = await inline.aput(
            config(thread), make_checkpoint({"s": "kept", "n": 5}, {"s": "1", "n": "1"}), {}, {}
        )
        cp = make_checkpoint({"s": "kept", "n": 6}, {"s": "1", "n": "2"})
        second = await plain.aput(first, cp, {}, {"n": "2"})  # "s" unchanged: no new version
        for saver in (inline, plain):
            tup = await saver.aget_tuple(second)
            assert tup is not None and tup.checkpoint["channel_values"] == {"s": "kept", "n": 6}


async def test_with_allowlist_returns_a_working_saver(url: str) -> None:
    async with fresh_saver(url) as saver:
        clone = saver.with_allowlist([("collections", "OrderedDict")])
        assert isinstance(clone, AsyncTiDBSaver) and clone.db is saver.db
        thread = "al-" + uuid.uuid4().hex
        stored = await clone.aput(
            config(thread), make_checkpoint({"x": [1]}, {"x": "1"}), {}, {"x": "1"}
        )
        tup = await saver.aget_tuple(stored)
        assert tup is not None and tup.checkpoint["channel_values"] == {"x": [1]}
