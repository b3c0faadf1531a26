"""A Jepsen-style checker for the append workload, and the load that feeds it.

Every appended message carries a unique marker ``<run|session|writer|batch|i|n>`` at the start
of its content. The checker records each append (invoked, then acknowledged or failed) and each
read (the markers it returned, and when), and checks them against the final state of the table,
read directly from the server once the faults have stopped:

* every acknowledged append is present, exactly once, whole and contiguous (**lost = 0**);
* no append, acknowledged or not, appears twice (**duplicated = 0**), and nothing appears that
  was never appended;
* a writer's acknowledged batches appear in the order it made them; and in real time: a batch
  acknowledged before another batch of the same session was invoked comes before it;
* every read taken during the load is a prefix of the session's final order that ends on a
  batch boundary (never a partial batch, never a reordered session), and contains every batch
  acknowledged before the read began;
* ``seq`` is dense (1..N) and unique in every session.

An append that failed is indeterminate: it may have landed (the connection died after the
commit) or not. It may appear once, whole, or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pymysql
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from tidb_memory import AsyncTiDBChatMessageHistory, RetryPolicy, TiDBMemoryError

__all__ = [
    "AppendChecker",
    "Batch",
    "LoadResult",
    "Read",
    "Report",
    "RetryCounter",
    "final_from_rows",
    "read_final_state",
    "run_append_load",
]


@dataclass(slots=True)
class Batch:
    session: str
    writer: int
    index: int
    markers: tuple[str, ...]
    invoked: float
    completed: float | None = None
    ok: bool | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Read:
    session: str
    invoked: float
    completed: float
    markers: tuple[str, ...]


@dataclass(slots=True)
class Report:
    appends: int = 0
    acknowledged: int = 0
    failed: int = 0
    failed_landed: int = 0
    messages_acknowledged: int = 0
    reads: int = 0
    lost: int = 0
    duplicated: int = 0
    anomalies: list[str] = field(default_factory=list)

    def anomaly(self, text: str) -> None:
        if len(self.anomalies) < 50:
            self.anomalies.append(text)
        elif len(self.anomalies) == 50:
            self.anomalies.append("... more anomalies not shown")


class AppendChecker:
    """Records an append workload and checks it against the final state (see module doc)."""

    def __init__(self, run: str) -> None:
        if "|" in run or ">" in run:
            raise ValueError("run must not contain | or >")
        self.run = run
        self.batches: dict[tuple[str, int, int], Batch] = {}
        self.reads: list[Read] = []
        self._owner: dict[str, Batch] = {}

    # -- recording

    def new_batch(
        self, session: str, writer: int, index: int, size: int, *, pad: int = 0
    ) -> tuple[Batch, list[BaseMessage]]:
        """A batch of ``size`` messages with unique markers; record it as invoked."""
        key = (session, writer, index)
        if key in self.batches:
            raise ValueError(f"batch {key} was already made")
        markers = tuple(f"<{self.run}|{session}|{writer}|{index}|{i}|{size}>" for i in range(size))
        filler = "x" * pad
        messages: list[BaseMessage] = []
        for i, marker in enumerate(markers):
            cls = HumanMessage if i % 2 == 0 else AIMessage
            messages.append(cls(content=marker + filler, additional_kwargs={"m": marker}))
        batch = Batch(session, writer, index, markers, invoked=time.monotonic())
        self.batches[key] = batch
        for marker in markers:
            self._owner[marker] = batch
        return batch, messages

    @staticmethod
    def acknowledge(batch: Batch) -> None:
        batch.completed = time.monotonic()
        batch.ok = True

    @staticmethod
    def fail(batch: Batch, exc: BaseException) -> None:
        batch.completed = time.monotonic()
        batch.ok = False
        batch.error = f"{type(exc).__name__}: {str(exc)[:200]}"

    def record_read(self, session: str, invoked: float, messages: Sequence[BaseMessage]) -> None:
        completed = time.monotonic()
        self.reads.append(Read(session, invoked, completed, tuple(map(marker_of, messages))))

    # -- checking

    def check(self, final: Mapping[str, Sequence[str]]) -> Report:
        """Check everything recorded against ``final``: session -> markers in seq order."""
        report = Report()
        report.appends = len(self.batches)
        report.acknowledged = sum(1 for b in self.batches.values() if b.ok)
        report.failed = sum(1 for b in self.batches.values() if b.ok is False)
        report.messages_acknowledged = sum(len(b.markers) for b in self.batches.values() if b.ok)
        report.reads = len(self.reads)
        unfinished = [b for b in self.batches.values() if b.ok is None]
        if unfinished:
            report.anomaly(f"{len(unfinished)} appends never completed, e.g. {unfinished[0]}")

        by_session: dict[str, list[Batch]] = defaultdict(list)
        for batch in self.batches.values():
            by_session[batch.session].append(batch)
        reads: dict[str, list[Read]] = defaultdict(list)
        for read in self.reads:
            reads[read.session].append(read)

        for session in sorted(set(by_session) | set(final) | set(reads)):
            markers = list(final.get(session, ()))
            self._check_session(
                report, session, markers, by_session.get(session, []), reads.get(session, [])
            )
        return report

    def _check_session(
        self,
        report: Report,
        session: str,
        markers: list[str],
        batches: list[Batch],
        reads: list[Read],
    ) -> None:
        counts = Counter(markers)
        for marker, count in counts.items():
            if count > 1:
                report.duplicated += count - 1
                report.anomaly(f"{session}: {marker} appears {count} times")
            owner = self._owner.get(marker)
            if owner is None:
                report.anomaly(f"{session}: {marker!r} was never appended")
            elif owner.session != session:
                report.anomaly(f"{session}: {marker} belongs to session {owner.session}")

        first_pos: dict[str, int] = {}
        for pos, marker in enumerate(markers):
            first_pos.setdefault(marker, pos)

        # Present batches, in final order; each must be whole and contiguous.
        start_of: dict[tuple[str, int, int], int] = {}
        for batch in batches:
            present = [m for m in batch.markers if m in first_pos]
            key = (batch.session, batch.writer, batch.index)
            if not present:
                if batch.ok:
                    report.lost += len(batch.markers)
                    report.anomaly(f"{session}: acknowledged batch {key} is missing")
                continue
            if batch.ok is False:
                report.failed_landed += 1
            if len(present) != len(batch.markers):
                report.lost += len(batch.markers) - len(present)
                report.anomaly(
                    f"{session}: batch {key} is partial ({len(present)}/{len(batch.markers)})"
                )
                continue
            start = first_pos[batch.markers[0]]
            if [first_pos[m] for m in batch.markers] != list(
                range(start, start + len(batch.markers))
            ):
                report.anomaly(f"{session}: batch {key} is not contiguous and in order")
                continue
            start_of[key] = start

        # Per writer: acknowledged batches in the order the writer made them.
        per_writer: dict[int, list[Batch]] = defaultdict(list)
        for batch in batches:
            if batch.ok and (batch.session, batch.writer, batch.index) in start_of:
                per_writer[batch.writer].append(batch)
        for writer, items in per_writer.items():
            items.sort(key=lambda b: b.index)
            positions = [start_of[(b.session, b.writer, b.index)] for b in items]
            if positions != sorted(positions):
                report.anomaly(f"{session}: writer {writer}'s acknowledged batches are reordered")

        # Real time: if A was acknowledged before B was invoked, A comes before B.
        ordered = sorted(
            (start, self.batches[key]) for key, start in start_of.items() if key in self.batches
        )
        suffix_min_ack = math.inf
        for _, batch in reversed(ordered):
            if suffix_min_ack < batch.invoked:
                report.anomaly(
                    f"{session}: a batch acknowledged before batch "
                    f"{(batch.writer, batch.index)} was invoked comes after it"
                )
                break
            if batch.ok and batch.completed is not None:
                suffix_min_ack = min(suffix_min_ack, batch.completed)

        # Reads: prefixes of the final order, on batch boundaries, and never stale.
        acked = sorted(
            (b.completed, start_of.get((b.session, b.writer, b.index), -1) + len(b.markers))
            for b in batches
            if b.ok and b.completed is not None
        )
        for read in reads:
            got = list(read.markers)
            if got != markers[: len(got)]:
                report.anomaly(
                    f"{session}: a read of {len(got)} messages is not a prefix of the final "
                    "order (partial or reordered)"
                )
                continue
            if got:
                owner = self._owner.get(got[-1])
                if owner is None or got[-1] != owner.markers[-1]:
                    report.anomaly(f"{session}: a read ends inside a batch ({got[-1]})")
                    continue
            need = max((end for done, end in acked if done < read.invoked), default=0)
            if need > len(got):
                report.anomaly(
                    f"{session}: a read of {len(got)} messages misses a batch acknowledged "
                    f"before the read began (needs {need})"
                )


def marker_of(message: BaseMessage) -> str:
    content = message.content
    if not isinstance(content, str) or not content.startswith("<"):
        return f"?{content!r:.60}"
    return content[: content.index(">") + 1]


# --- final state ---------------------------------------------------------------------------


def read_final_state(
    connect_kwargs: Mapping[str, Any], table: str, *, prefix: str
) -> tuple[dict[str, list[str]], list[str]]:
    """Read every session starting with ``prefix`` directly (no proxy, no library).

    Returns the markers per session in seq order, and a list of seq anomalies (a seq that is not
    dense 1..N, or a duplicate msg_key).
    """
    kwargs = dict(connect_kwargs)
    if "db" in kwargs:  # aiomysql's spelling; pymysql wants "database"
        kwargs["database"] = kwargs.pop("db")
    conn = pymysql.connect(**kwargs, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT session_id, seq, msg_key, message FROM `{table}` "
                "WHERE session_id LIKE %s ORDER BY session_id, seq",
                (prefix.replace("_", r"\_").replace("%", r"\%") + "%",),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    return final_from_rows(rows)


def final_from_rows(
    rows: Sequence[Sequence[Any]],
) -> tuple[dict[str, list[str]], list[str]]:
    """Markers per session from ``(session_id, seq, msg_key, message)`` rows in seq order, and
    the seq and msg_key anomalies (seqs not dense 1..N, a msg_key stored twice)."""
    final: dict[str, list[str]] = defaultdict(list)
    seqs: dict[str, list[int]] = defaultdict(list)
    keys: Counter[str] = Counter()
    for session_id, seq, msg_key, message in rows:
        content = orjson.loads(message)["data"]["content"]
        final[session_id].append(content[: content.index(">") + 1])
        seqs[session_id].append(int(seq))
        keys[msg_key] += 1
    problems = [
        f"{sid}: seqs are not 1..{len(values)}"
        for sid, values in seqs.items()
        if values != list(range(1, len(values) + 1))
    ]
    problems += [f"msg_key {key} stored {n} times" for key, n in keys.items() if n > 1]
    return dict(final), problems


# --- counting retries ----------------------------------------------------------------------


class RetryCounter(logging.Handler):
    """Counts the failed attempts tidb-memory logged as retried, by kind of failure."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.retries = 0
        self.by_kind: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "tidb_memory" and "retrying in" in record.msg:
            self.retries += 1
            self.by_kind[str(record.args[3]) if record.args else "?"] += 1  # type: ignore[index]

    @contextmanager
    def installed(self) -> Iterator[RetryCounter]:
        logger = logging.getLogger("tidb_memory")
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


# --- the load ------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadResult:
    elapsed: float
    read_failures: int
    unexpected: list[str]


async def run_append_load(
    url: str,
    checker: AppendChecker,
    *,
    table: str,
    sessions: Sequence[str],
    writers_per_session: int = 1,
    min_batches: int,
    max_batches: int | None = None,
    until: Callable[[], bool] = lambda: True,
    readers: int = 4,
    pad: int = 0,
    max_batch_size: int = 3,
    retry: RetryPolicy | None = None,
    engine_args: Mapping[str, Any] | None = None,
    shared_history: bool = False,
    seed: int = 0,
    pause: Callable[[], Awaitable[None]] | None = None,
) -> LoadResult:
    """Append batches to ``sessions`` while readers read them, recording all in ``checker``.

    Each writer appends at least ``min_batches`` batches, one at a time, and keeps going until
    ``until()`` is true (at most ``max_batches``). ``shared_history`` makes the writers of a
    session share one history object (and its last-seq hint) instead of one each.
    """
    rng = random.Random(seed)
    options: dict[str, Any] = {"table_name": table, "engine_args": dict(engine_args or {})}
    if retry is not None:
        options["retry"] = retry
    histories: dict[tuple[str, int], AsyncTiDBChatMessageHistory] = {}
    for session in sessions:
        shared = AsyncTiDBChatMessageHistory(session, url, **options)
        for writer in range(writers_per_session):
            histories[(session, writer)] = (
                shared if shared_history else AsyncTiDBChatMessageHistory(session, url, **options)
            )
    readers_for = {s: AsyncTiDBChatMessageHistory(s, url, **options) for s in sessions}
    unexpected: list[str] = []
    read_failures = 0
    writing = True
    started = time.monotonic()
    limit = max_batches if max_batches is not None else min_batches * 20

    async def writer_task(session: str, writer: int) -> None:
        history = histories[(session, writer)]
        local = random.Random(rng.random())
        index = 0
        while index < min_batches or (not until() and index < limit):
            batch, messages = checker.new_batch(
                session, writer, index, local.randint(1, max_batch_size), pad=pad
            )
            index += 1
            try:
                await history.aadd_messages(messages)
            except TiDBMemoryError as exc:
                checker.fail(batch, exc)
            except Exception as exc:  # a crash that escaped the library's error types
                checker.fail(batch, exc)
                unexpected.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
            else:
                checker.acknowledge(batch)
            if pause is not None:
                await pause()
            else:
                await asyncio.sleep(0)

    async def reader_task(seed_value: float) -> None:
        nonlocal read_failures
        local = random.Random(seed_value)
        while writing:
            session = local.choice(list(sessions))
            invoked = time.monotonic()
            try:
                messages = await readers_for[session].aget_messages()
            except TiDBMemoryError:
                read_failures += 1
            except Exception as exc:
                unexpected.append(f"read: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            else:
                checker.record_read(session, invoked, messages)
            await asyncio.sleep(local.uniform(0, 0.01))

    reader_tasks = [asyncio.create_task(reader_task(rng.random())) for _ in range(readers)]
    try:
        await asyncio.gather(
            *(writer_task(s, w) for s in sessions for w in range(writers_per_session))
        )
    finally:
        writing = False
        await asyncio.gather(*reader_tasks, return_exceptions=True)
    return LoadResult(time.monotonic() - started, read_failures, unexpected)
