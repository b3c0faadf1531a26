"""Shared helpers for the benchmark scripts (not part of the ``tidb_memory`` package).

Everything here is deliberately boring: URL handling, a raw aiomysql connection for DDL and
bulk prefill, deterministic "realistic" chat messages, small statistics helpers and a plain-text
table renderer. The scripts print with ``emit``/``note`` (stdout/stderr) rather than ``print``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import platform
import random
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomysql  # type: ignore[import-untyped,unused-ignore]
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict
from sqlalchemy.engine import make_url

URL_ENV = "TIDB_MEMORY_BENCH_URL"
DEFAULT_URL = "mysql+aiomysql://root@127.0.0.1:3306/test"

# Every table a benchmark creates starts with this, followed by a per-process token, so that
# teardown can drop exactly what this process created (and nothing else).
TABLE_PREFIX = "bench_"

# The floor schema from the speed issue: one row per message, clustered on (session_id, seq).
FLOOR_DDL = (
    "CREATE TABLE {table} ("
    " session_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
    " seq BIGINT NOT NULL,"
    " message JSON NOT NULL,"
    " created_at DATETIME(6) NOT NULL,"
    " PRIMARY KEY (session_id, seq)"
    ") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
)
FLOOR_SELECT = "SELECT seq, message FROM {table} WHERE session_id = %s ORDER BY seq"
FLOOR_INSERT = "INSERT INTO {table} (session_id, seq, message, created_at) VALUES (%s,%s,%s,%s)"


# --------------------------------------------------------------------------- output


def emit(line: str = "") -> None:
    """Result output (stdout)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def note(line: str) -> None:
    """Progress / diagnostics (stderr), so ``--json`` stdout stays machine-readable."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain fixed-width table; first column left-aligned, the rest right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------- URLs / connections


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def with_driver(url: str, driver: str) -> str:
    """Same URL with the SQLAlchemy driver swapped, e.g. ``mysql+pymysql``."""
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """URL with the password masked, for reports."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class MySQLParams:
    host: str
    port: int
    user: str
    password: str
    db: str

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.db,
            "charset": "utf8mb4",
            "autocommit": True,
        }


def mysql_params(url: str) -> MySQLParams:
    """Host/port/user/password/database of a MySQL URL (query options such as TLS are ignored)."""
    u = make_url(url)
    if not u.drivername.startswith("mysql"):
        raise SystemExit(f"benchmarks need a MySQL-family URL, got {u.drivername!r}")
    return MySQLParams(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        db=u.database or "test",
    )


async def raw_connect(url: str) -> Any:
    """One autocommit aiomysql connection (used for DDL, prefill, monitoring, the floor read)."""
    return await aiomysql.connect(**mysql_params(url).connect_kwargs())


class Admin:
    """The benchmark's own side connection (DDL, prefill, monitoring, cleanup).

    The server may be shared (other test suites kill connections or restart it), so every use
    re-checks the connection and reconnects once if it was lost.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    async def conn(self) -> Any:
        if self._conn is not None:
            try:
                await self._conn.ping(reconnect=True)
                return self._conn
            except Exception:
                self.close()
        self._conn = await raw_connect(self.url)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


async def raw_pool(url: str, size: int) -> Any:
    kwargs = mysql_params(url).connect_kwargs()
    return await aiomysql.create_pool(minsize=size, maxsize=size, **kwargs)


async def server_version(conn: Any) -> str:
    async with conn.cursor() as cur:
        await cur.execute("SELECT VERSION()")
        row = await cur.fetchone()
    return str(row[0])


async def global_status(conn: Any, name: str) -> int:
    """One counter of ``SHOW GLOBAL STATUS``, e.g. ``Threads_connected`` or ``Connections``."""
    async with conn.cursor() as cur:
        await cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        row = await cur.fetchone()
    return int(row[1])


async def threads_connected(conn: Any) -> int:
    return await global_status(conn, "Threads_connected")


async def connections_opened(conn: Any) -> int:
    """The server's count of connection attempts since it started (``Connections``)."""
    return await global_status(conn, "Connections")


async def execute(conn: Any, sql: str, args: Sequence[Any] | None = None) -> None:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)


async def bulk_insert(conn: Any, sql: str, rows: Sequence[Sequence[Any]], chunk: int = 500) -> None:
    """``executemany`` in chunks; aiomysql rewrites each chunk into one multi-row INSERT."""
    async with conn.cursor() as cur:
        for start in range(0, len(rows), chunk):
            await cur.executemany(sql, rows[start : start + chunk])


def run_token() -> str:
    return f"{os.getpid()}_{secrets.token_hex(3)}"


def table_name(token: str, slug: str) -> str:
    return f"{TABLE_PREFIX}{token}_{slug}"


async def drop_run_tables(conn: Any, token: str) -> list[str]:
    """Drop every table whose name starts with this run's prefix (libraries may add helpers)."""
    pattern = f"{TABLE_PREFIX}{token}_".replace("_", r"\_") + "%"
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name LIKE %s",
            (pattern,),
        )
        names = [str(r[0]) for r in await cur.fetchall()]
        for name in names:
            await cur.execute(f"DROP TABLE IF EXISTS `{name}`")
    return names


async def forget_run_rows(conn: Any, token: str, module: ModuleType | None) -> int:
    """Delete this run's rows from tidb-memory's shared bookkeeping tables.

    tidb-memory records every message table it manages in shared tables (sessions, schema
    versions) keyed by ``table_name``; those tables may be in use by others, so only the rows
    naming this run's tables are removed, and the tables themselves stay.
    """
    schema = getattr(module, "schema", None)
    names = [getattr(schema, a, None) for a in ("SESSIONS_TABLE", "MIGRATIONS_TABLE")]
    pattern = f"{TABLE_PREFIX}{token}_".replace("_", r"\_") + "%"
    removed = 0
    async with conn.cursor() as cur:
        for name in names:
            if not isinstance(name, str) or not name.isidentifier():
                continue
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE()"
                " AND table_name = %s AND column_name = 'table_name'",
                (name,),
            )
            if (await cur.fetchone())[0]:
                removed += await cur.execute(
                    f"DELETE FROM `{name}` WHERE table_name LIKE %s",
                    (pattern,),
                )
    return int(removed)


def utcnow_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def dump_message(message: BaseMessage) -> str:
    """The serialisation every baseline uses: ``json.dumps(message_to_dict(m))``."""
    return json.dumps(message_to_dict(message))


# --------------------------------------------------------------------------- messages

_WORD_TEXT = (
    "the a an and or but if then because while when where which that this these those "
    "database table index query session message history latency throughput request response "
    "python async await connection pool engine cursor commit transaction row column schema "
    "customer order invoice shipping refund account password email address payment card "
    "please could you would help explain summarise compare list show give me why how what "
    "model token prompt context window tool call function argument result error retry timeout "
    "is are was were be been has have had do does did can will should must may might "
    "fast slow large small new old first last next previous other same different "
    "café naïve déjà vu über résumé 東京 数据库 😀 ✓"
)
_WORDS = tuple(_WORD_TEXT.split())


def text_of_length(rng: random.Random, low: int, high: int) -> str:
    """Sentence-ish text whose length is uniform in [low, high] characters."""
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    sentence_start = True
    while size < target:
        word = rng.choice(_WORDS)
        if sentence_start:
            word = word.capitalize()
            sentence_start = False
        if rng.random() < 0.08:
            word += rng.choice(".?!")
            sentence_start = True
        elif rng.random() < 0.05:
            word += ","
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts)[:target]


def _token_usage(rng: random.Random) -> tuple[dict[str, int], dict[str, Any]]:
    inp = rng.randint(200, 6000)
    out = rng.randint(20, 400)
    usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    token_usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
    return usage, token_usage


def ai_message(
    rng: random.Random, low: int, high: int, *, tool_call: bool, usage: bool
) -> AIMessage:
    """An AIMessage shaped like what a chat model integration returns."""
    usage_md, token_usage = _token_usage(rng)
    kwargs: dict[str, Any] = {
        "id": f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
        "response_metadata": {
            "model_name": "gpt-4o-mini-2024-07-18",
            "finish_reason": "tool_calls" if tool_call else "stop",
            "system_fingerprint": "fp_0ba0d124f1",
            **({"token_usage": token_usage} if usage else {}),
        },
    }
    if usage:
        kwargs["usage_metadata"] = usage_md
    if tool_call:
        kwargs["tool_calls"] = [
            {
                "name": rng.choice(["search_docs", "get_order", "lookup_customer"]),
                "args": {"query": text_of_length(rng, 20, 80), "top_k": rng.randint(1, 10)},
                "id": f"call_{rng.getrandbits(96):024x}",
                "type": "tool_call",
            }
        ]
        return AIMessage(content=text_of_length(rng, 0, 120), **kwargs)
    return AIMessage(content=text_of_length(rng, low, high), **kwargs)


def turn_pair(seed: int) -> tuple[HumanMessage, AIMessage]:
    """The (human, ai) pair appended by one benchmark turn; deterministic in ``seed``.

    Human 60-300 chars, AI 200-600 chars with response/usage metadata; every 7th pair's AI
    message carries a tool call.
    """
    rng = random.Random(seed)
    human = HumanMessage(content=text_of_length(rng, 60, 300))
    ai = ai_message(rng, 200, 600, tool_call=seed % 7 == 3, usage=True)
    return human, ai


def plain_pair(seed: int) -> tuple[HumanMessage, AIMessage]:
    """A (human, ai) pair of plain text messages: no id, no metadata, no tool calls.

    Human 60-300 chars, AI 200-600 chars, as in :func:`turn_pair`.
    """
    rng = random.Random(seed)
    return (
        HumanMessage(content=text_of_length(rng, 60, 300)),
        AIMessage(content=text_of_length(rng, 200, 600)),
    )


def large_session(n: int, seed: int = 1234) -> list[BaseMessage]:
    """``n`` alternating Human/AI messages of ~200-500 chars.

    Every 5th AI message carries a tool call; two thirds carry usage_metadata.
    """
    rng = random.Random(seed)
    out: list[BaseMessage] = []
    for i in range(n):
        if i % 2 == 0:
            out.append(HumanMessage(content=text_of_length(rng, 200, 500)))
        else:
            k = i // 2
            out.append(ai_message(rng, 200, 500, tool_call=k % 5 == 4, usage=k % 3 != 0))
    return out


# --------------------------------------------------------------------------- stats & misc


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def import_tidb_memory() -> tuple[ModuleType | None, str | None]:
    """Import the package under test lazily; ``(module, None)`` or ``(None, error)``."""
    repo_root = str(Path(__file__).resolve().parent.parent)
    if repo_root not in sys.path:  # `python benchmarks/x.py` from a checkout, not installed
        sys.path.append(repo_root)
    try:
        import tidb_memory  # type: ignore[import-not-found,unused-ignore]

        missing = [
            n for n in ("AsyncTiDBChatMessageHistory", "aclose_all") if not hasattr(tidb_memory, n)
        ]
        if missing:
            return None, f"missing {', '.join(missing)}"
        return tidb_memory, None
    except Exception as exc:  # any import-time failure just skips those rows
        return None, f"{type(exc).__name__}: {exc}"


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in (
        "langchain-core",
        "langchain-community",
        "sqlalchemy",
        "aiomysql",
        "pymysql",
        "tidb-memory",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def quiet_library_noise() -> None:
    """langchain-community warns about its sunset on import; that is not benchmark output."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"langchain_community.*")
    warnings.filterwarnings("ignore", message=r".*langchain-community.*")


class ErrorCounter(logging.Handler):
    """Counts ERROR records of a logger (lc-tidb logs and swallows its SQL errors)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = record.getMessage()[:300]

    @classmethod
    def attach(cls, logger_name: str) -> ErrorCounter:
        handler = cls()
        logger = logging.getLogger(logger_name)
        logger.addHandler(handler)
        logger.propagate = False  # counted and reported, not spammed to stderr
        return handler


def collect() -> None:
    """Full GC between measured slots (lc-tidb leaves connections to unreachable engines)."""
    gc.collect()


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.asynccontextmanager
async def postgres_pool(pg_url: str, size: int, schema: str) -> AsyncIterator[Any]:
    """A psycopg pool of ``size`` on a fresh schema (LangGraph's settings), dropped afterwards."""
    import psycopg
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        pool = AsyncConnectionPool(
            pg_url,
            min_size=size,
            max_size=size,
            open=False,
            kwargs={
                "autocommit": True,
                "prepare_threshold": 0,
                "row_factory": dict_row,
                "options": f"-c search_path={schema}",
            },
        )
        await pool.open(wait=True)
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
