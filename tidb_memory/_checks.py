"""Input checks shared by every face (history, sessions, saver, store, CLI). No I/O.

Each check returns the value it accepted, normalised (an ``IntEnum`` becomes an ``int``, an aware
datetime naive UTC), or raises :class:`~tidb_memory.InvalidInputError` naming the argument, so a
bad value is refused before any statement is built and nothing is half-written.

Example::

    >>> check_id("s1")
    's1'
    >>> as_count("limit", 20, high=1000)
    20
"""

from __future__ import annotations

import operator
import re
from datetime import UTC, datetime, timedelta

from .errors import InvalidInputError

__all__ = [
    "ID_MAX_CHARS",
    "ago",
    "as_count",
    "check_id",
    "check_table_name",
    "check_text",
    "to_utc",
]

#: The longest id (session, user, thread): the tables' ``VARCHAR(255)``.
ID_MAX_CHARS = 255

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_text(value: object, name: str, *, max_chars: int | None = None) -> str:
    """Return ``value`` if it is a str of valid Unicode, at most ``max_chars`` long.

    A lone surrogate (``"a\\udcc3\\udca9"``, what ``os.fsdecode`` makes of bad bytes) is refused:
    a driver that encodes with ``surrogateescape`` would store it as ``"aé"``, so two different
    strings would name one row.

    Raises:
        InvalidInputError: not a str, too long, or not encodable as UTF-8.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a str, not {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidInputError(f"{name} has {len(value)} characters; the most is {max_chars}")
    if value.isascii():  # a flag on the str: no scan, no copy
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{name} is not valid Unicode: it holds a lone surrogate at index {exc.start}"
        ) from exc
    return value


def check_id(
    value: object, name: str = "session_id", *, max_chars: int = ID_MAX_CHARS, empty: bool = False
) -> str:
    """Return ``value`` if it can be stored and compared exactly as an id.

    Example::

        >>> check_id("thread-1", "thread_id")
        'thread-1'

    Raises:
        InvalidInputError: not a str, empty (unless ``empty``), over ``max_chars`` characters,
            ending in a space (MySQL's PAD SPACE collations compare ``"a "`` equal to ``"a"``),
            or not valid Unicode (a lone surrogate).
    """
    text = check_text(value, name, max_chars=max_chars)
    if not text and not empty:
        raise InvalidInputError(f"{name} must not be empty")
    if text.endswith(" "):
        raise InvalidInputError(
            f"{name} must not end with a space: MySQL and TiDB compare 'a ' equal to 'a'"
        )
    return text


def as_count(name: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as a plain ``int`` from ``low`` to ``high`` (a limit, window, batch).

    Anything with ``__index__`` (an ``IntEnum``, an int subclass, a numpy integer) is accepted as
    the int it stands for; a float, a str or a bool is refused, so no statement ever carries
    ``LIMIT '5'``.

    Example::

        >>> as_count("window", 10)
        10

    Raises:
        InvalidInputError: not an integer, a bool, or out of range.
    """
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an int {bounds}, not a bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InvalidInputError(
            f"{name} must be an int {bounds}, not {type(value).__name__} {value!r:.40}"
        ) from exc
    if number < low or (high is not None and number > high):
        raise InvalidInputError(f"{name} must be an int {bounds}, got {number}")
    return number


def to_utc(value: object, name: str = "earliest_time") -> datetime:
    """A naive UTC datetime from ``value``; a naive input is taken to be UTC already.

    Example::

        >>> to_utc(datetime(2025, 1, 31, 9, tzinfo=timezone(timedelta(hours=1))))
        datetime.datetime(2025, 1, 31, 8, 0)

    Raises:
        InvalidInputError: ``value`` is not a datetime, or has no UTC form (year 1 at +01:00).
    """
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:
            raise InvalidInputError(
                f"{name} {value.isoformat()} is out of range in UTC; use a time "
                "from year 1 to 9999 in UTC"
            ) from exc
        value = value.replace(tzinfo=None)
    return value


def ago(delta: timedelta, name: str = "ttl") -> datetime:
    """Naive UTC now minus ``delta``.

    Raises:
        InvalidInputError: the result would fall before year 1 (a ``delta`` of millennia).
    """
    try:
        return datetime.now(UTC).replace(tzinfo=None) - delta
    except OverflowError as exc:
        raise InvalidInputError(
            f"{name} of {delta.days:,} days reaches back before year 1; use a shorter one"
        ) from exc


def check_table_name(name: object) -> str:
    """Return ``name`` if it is a plain identifier of at most 64 characters.

    Raises:
        InvalidInputError: anything else, before any I/O.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidInputError(
            f"table_name {name!r} is not a plain identifier: use 1-64 letters, digits and "
            "underscores, not starting with a digit"
        )
    return name
