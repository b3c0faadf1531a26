"""Output of the ``tidb-memory`` command: text or one ``--json`` document, progress bars on
a terminal, tables, times and durations."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tidb_memory.chat._messages import MessageStore
from tidb_memory.chat.sessions import SessionStore
from tidb_memory.engine import get_database
from tidb_memory.errors import InvalidInputError

PROG = "tidb-memory"


EXIT_ERROR = 1


EXIT_INTERRUPTED = 130


PROGRESS_WIDTH = 30


@dataclass
class Output:
    """Where a command writes: human-readable lines, or one JSON document with ``--json``."""

    json: bool = False
    document: dict[str, Any] = field(default_factory=dict)

    def line(self, text: str = "") -> None:
        """A line for people; suppressed under ``--json``."""
        if not self.json:
            print(text, flush=True)

    def flush(self) -> None:
        """Print the JSON document, if ``--json`` was given."""
        if self.json:
            print(json.dumps(self.document, ensure_ascii=False, indent=2), flush=True)


def one_line(text: str) -> str:
    return " ".join(text.split())


class Progress:
    """A progress bar on stderr when stderr is a terminal; nothing at all when it is not.

    Example::

        bar = Progress("export")
        bar.update(120, 1000)
        bar.close()
    """

    def __init__(self, label: str, *, unit: str = "rows", enabled: bool | None = None) -> None:
        self.label = label
        self.unit = unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False
        self._pending: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None = None, *, label: str | None = None) -> None:
        """Redraw (at most ten times a second, and always at 100%)."""
        if not self.enabled:
            return
        if label is not None and label != self.label:
            self.close()
            self.label = label
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            self._pending = (done, total)  # drawn by the next update, or by close()
            return
        self._last = now
        self._pending = None
        if total:
            share = min(done / total, 1.0)
            filled = int(share * PROGRESS_WIDTH)
            bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
            text = f"{self.label} [{bar}] {share:4.0%}  {done:,}/{total:,} {self.unit}"
        else:
            text = f"{self.label}  {done:,} {self.unit}"
        sys.stderr.write("\r" + text + "\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """Draw the last state, and end the bar's line."""
        if self._pending is not None:
            done, total = self._pending
            self._last = 0.0
            self.update(done, total)
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False


_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


_DURATION = re.compile(r"(?:(\d+)([wdhms]))+")


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"1d12h"``, ``"90m"``, ``"45s"``, ``"2w"`` as a timedelta.

    Raises:
        InvalidInputError: anything else, or zero.
    """
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise InvalidInputError(
            f"{text!r} is not a duration; use a number and a unit (w, d, h, m, s), e.g. 30d"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([wdhms])", cleaned))
    if seconds <= 0:
        raise InvalidInputError(f"{text!r} is not a positive duration")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidInputError(
            f"{text!r} is too long a duration; the longest is {timedelta.max.days:,} days"
        ) from None


def moment(text: str) -> datetime:
    """A duration before now (``30d``), or an ISO 8601 time (naive means UTC)."""
    if _DURATION.fullmatch(text.strip().lower()):
        delta = parse_duration(text)
        try:
            return datetime.now(UTC) - delta
        except OverflowError:
            raise InvalidInputError(
                f"{text!r} is too long a duration: it reaches back before year 1"
            ) from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{text!r} is neither a duration (30d, 12h) nor an ISO time (2025-01-31T00:00)"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        # Every later step works in UTC: a time with no UTC form is refused here, once.
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(
            f"{text!r} is out of range in UTC; use a time from year 1 to 9999 in UTC"
        ) from None


def when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def clip(text: str, width: int = 60) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: a header, a rule, then the rows, columns padded to fit."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


def message_store(args: argparse.Namespace, **options: Any) -> MessageStore:
    return MessageStore(get_database(args.url), args.table, **options)


def session_store(args: argparse.Namespace) -> SessionStore:
    return SessionStore(args.url, table_name=args.table, create_table=False)


def page_out(
    out: Output,
    what: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    more: str | None,
) -> None:
    """A page of a listing: "No <what>.", or the table, then how to get the next page."""
    if not rows:
        out.line(f"No {what}.")
        return
    for line in table_lines(headers, rows):
        out.line(line)
    if more:
        out.line()
        out.line(f"More: {PROG} {more}")


def activity_row(
    key: str, count: int, last: datetime | None, user_id: str | None, title: str | None
) -> list[str]:
    """One row of the sessions and threads listings."""
    return [key, str(count), when(last), user_id or "-", clip(title or "-", 40)]
