"""Statement text: ``%s`` placeholders become MySQL literals, escaped here, so the driver receives
finished text and never a parameter."""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Binary"]

#: pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES, likewise.
_NO_BACKSLASH_ESCAPES = 1 << 9


@dataclass(frozen=True, slots=True)
class Binary:
    """A ``bytes`` parameter.

    aiomysql cannot send ``bytes`` under PyMySQL >= 1.2, so on MySQL and TiDB the value is
    written into the statement as ``FROM_BASE64('...')``: base64 needs no escaping and is half
    the size of hex. SQLite receives the bytes themselves.
    """

    data: bytes


def _render(driver: Any, sql: str, params: Sequence[Any]) -> str:
    """``sql`` with its ``%s`` placeholders replaced by ``params`` as MySQL literals.

    The driver then receives finished text and never a parameter. Text is escaped here (see
    :func:`_escape`), other types by the driver.
    """
    backslashes = not driver.server_status & _NO_BACKSLASH_ESCAPES
    literals: list[str] = []
    for value in params:
        kind = type(value)
        if kind is str:
            text = _escape(value) if backslashes else value.replace("'", "''")
            literals.append("'" + text + "'")
        elif kind is Binary:
            literals.append("FROM_BASE64('" + b2a_base64(value.data, newline=False).decode() + "')")
        elif kind is int:
            literals.append(str(value))
        elif value is None:
            literals.append("NULL")
        else:
            literals.append(driver.escape(value))
    return sql % tuple(literals)


#: What :func:`_escape` replaces, in order: the backslash first, so that the escapes added
#: after it are not doubled.
_ESCAPES = (
    ("\\", "\\\\"),
    ("'", "\\'"),
    ("\0", "\\0"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\x1a", "\\Z"),
)


def _escape(text: str) -> str:
    """``text`` for a single-quoted literal, with MySQL's backslash escapes.

    The characters mysql_real_escape_string escapes, less the double quote, which needs none
    inside single quotes. Each is looked for with ``in`` (a memchr-speed scan) and replaced
    only if present: most values (ids, versions, JSON without quotes) need nothing, and a
    30 KB value costs 1.6 µs instead of the 160 µs of one regex character-class scan (or the
    58 µs of pymysql's ``escape_string``, a ``str.translate``, on 1.9 KB of JSON).
    """
    for char, escaped in _ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return text


def _sqlite_params(params: Sequence[Any]) -> list[Any]:
    return [value.data if type(value) is Binary else value for value in params]
