"""A store batch, checked and planned before any I/O.

:func:`plan` turns LangGraph ops into a :class:`Plan`: every key, label, value and filter is
checked first, so bad input raises :class:`~tidb_memory.InvalidInputError` and nothing is
written. Plans of concurrent callers merge into one (:meth:`Plan.merge`): reads see the state
before the batch's writes, and the last put of a key wins, as in ``InMemoryStore``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from langgraph.store.base import (
    GetOp,
    ListNamespacesOp,
    Op,
    PutOp,
    SearchOp,
    validate_op_namespace,
)

from .._checks import as_count, check_text
from ..errors import InvalidInputError, MessageTooLargeError
from ._store_filter import Condition, compile_filter
from ._store_sql import KEY_MAX_BYTES, NS_MAX_BYTES

__all__ = ["Get", "Plan", "Put", "Search", "check_ns", "plan"]

NsKey = tuple[tuple[str, ...], str]


@dataclass(slots=True)
class Get:
    index: int
    ns: tuple[str, ...]
    key: str
    refresh: bool


@dataclass(slots=True)
class Search:
    index: int
    op: SearchOp
    conditions: list[Condition]
    limit: int
    offset: int


@dataclass(slots=True)
class Put:
    ns: tuple[str, ...]
    key: str
    #: The JSON text, or None to delete.
    value: str | None
    parsed: dict[str, Any] | None
    index: list[str] | bool | None
    ttl: float | None


@dataclass(slots=True)
class Plan:
    size: int = 0
    gets: list[Get] = field(default_factory=list)
    searches: list[Search] = field(default_factory=list)
    lists: list[tuple[int, ListNamespacesOp]] = field(default_factory=list)
    puts: dict[NsKey, Put] = field(default_factory=dict)

    @classmethod
    def merge(cls, plans: Iterable[Plan]) -> tuple[Plan, list[int]]:
        """One plan of several, and each one's first result index in it."""
        out = cls()
        starts: list[int] = []
        for one in plans:
            base = out.size
            starts.append(base)
            out.gets += [Get(g.index + base, g.ns, g.key, g.refresh) for g in one.gets]
            out.searches += [
                Search(s.index + base, s.op, s.conditions, s.limit, s.offset) for s in one.searches
            ]
            out.lists += [(i + base, op) for i, op in one.lists]
            for key, put in one.puts.items():
                out.puts.pop(key, None)  # re-insert: the last put's position wins
                out.puts[key] = put
            out.size += one.size
        return out, starts


def check_ns(namespace: object, *, what: str) -> tuple[str, ...]:
    if not isinstance(namespace, tuple):
        raise InvalidInputError(f"{what} must be a tuple of str, not {type(namespace).__name__}")
    size = sum(len(check_text(label, f"{what} label").encode()) + 1 for label in namespace)
    if size > NS_MAX_BYTES:
        raise InvalidInputError(f"{what} {namespace!r} is over {NS_MAX_BYTES} bytes of UTF-8")
    return namespace


def _check_key(key: object) -> str:
    # Any str of valid Unicode: a trailing space, a NUL or nothing at all are exact keys here
    # (binary columns), unlike the ids of the chat tables.
    text = check_text(key, "key")
    size = len(text.encode())
    if size > KEY_MAX_BYTES:
        raise InvalidInputError(f"key is {size} bytes of UTF-8, over the {KEY_MAX_BYTES} allowed")
    return text


def _check_value(value: object, max_bytes: int) -> tuple[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"value must be a dict (a JSON object), not {type(value).__name__}")
    as_dict = dict(value)
    try:
        text = orjson.dumps(as_dict)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInputError(
            f"value is not JSON: {exc}. Store JSON types only (dict, list, str, int, float, "
            "bool, None); convert messages with langchain_core.messages.message_to_dict"
        ) from exc
    parsed = orjson.loads(text)
    if parsed != as_dict:
        raise InvalidInputError(
            "value would not read back equal as JSON (a tuple, a NaN or infinity, a datetime, "
            "or a non-str dict key?); store JSON types only"
        )
    if len(text) > max_bytes:
        raise MessageTooLargeError(
            f"value is {len(text):,} bytes of JSON, over max_value_bytes={max_bytes:,}; "
            "nothing was written"
        )
    return text.decode(), parsed


def plan(ops: Iterable[Op], *, max_value_bytes: int) -> Plan:
    """Check ``ops`` and plan them. No I/O.

    Raises:
        InvalidInputError: an op is not a LangGraph op, or a namespace, key, value, filter,
            limit or ttl is invalid.
    """
    out = Plan()
    for i, op in enumerate(ops):
        out.size += 1
        try:
            validate_op_namespace(op)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if isinstance(op, GetOp):
            ns = check_ns(op.namespace, what="namespace")
            out.gets.append(Get(i, ns, _check_key(op.key), bool(op.refresh_ttl)))
        elif isinstance(op, SearchOp):
            check_ns(op.namespace_prefix, what="namespace_prefix")
            if op.query is not None and not isinstance(op.query, str):
                raise InvalidInputError("query must be a str")
            limit = as_count("limit", op.limit, low=0)
            offset = as_count("offset", op.offset, low=0)
            out.searches.append(Search(i, op, compile_filter(op.filter), limit, offset))
        elif isinstance(op, ListNamespacesOp):
            for cond in op.match_conditions or ():
                if cond.match_type not in ("prefix", "suffix"):
                    raise InvalidInputError(f"unknown match_type {cond.match_type!r}")
            if op.max_depth is not None:
                as_count("max_depth", op.max_depth)
            as_count("limit", op.limit, low=0)
            as_count("offset", op.offset, low=0)
            out.lists.append((i, op))
        elif isinstance(op, PutOp):
            ns = check_ns(op.namespace, what="namespace")
            if not ns:
                raise InvalidInputError("namespace cannot be empty")
            if ns[0] == "langgraph":
                raise InvalidInputError('the root label of a namespace cannot be "langgraph"')
            key = _check_key(op.key)
            ttl = op.ttl
            if ttl is not None and (
                isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
            ):
                raise InvalidInputError(f"ttl must be a positive number of minutes, not {ttl!r}")
            if op.value is None:
                put = Put(ns, key, None, None, None, None)
            else:
                text, parsed = _check_value(op.value, max_value_bytes)
                index = op.index
                if (
                    index is not None
                    and index is not False
                    and (isinstance(index, str) or not all(isinstance(p, str) for p in index))
                ):
                    raise InvalidInputError("index must be False, None or a list of field paths")
                put = Put(ns, key, text, parsed, index, None if ttl is None else float(ttl))
            out.puts.pop((ns, key), None)
            out.puts[(ns, key)] = put
        else:
            raise InvalidInputError(f"unknown store operation: {type(op).__name__}")
    return out
