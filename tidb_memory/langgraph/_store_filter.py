"""LangGraph filters as typed SQL conditions; no I/O.

Filters compare typed JSON: a number operand matches numbers only, compared as numbers (9 < 10);
a string operand matches strings only, compared by code point; a range operator skips items that
lack the key, and ``$ne`` matches them. Top-level keys may be dotted paths (``"meta.lang"``) and
nested objects name nested keys. Operands that are lists or objects (``$eq``/``$ne``) are checked
in the client by :func:`client_match`, and a search that needs it pages in the client too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine import Backend
from ..errors import InvalidInputError

__all__ = ["Condition", "client_match", "compile_filter", "condition_sql"]

_NUMERIC_MYSQL = "('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL')"
_OPERATORS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def p(backend: Backend) -> str:
    return "%s" if backend == "mysql" else "?"


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter test: the JSON path, the operator (``$eq``... or ``object``), the operand."""

    path: tuple[str, ...]
    op: str
    operand: Any

    @property
    def in_sql(self) -> bool:
        """False for list and object operands, which the client compares."""
        return not isinstance(self.operand, (list, tuple, dict))


def _flatten(path: tuple[str, ...], spec: Any, out: list[Condition]) -> None:
    if isinstance(spec, Mapping):
        operators = [k for k in spec if isinstance(k, str) and k.startswith("$")]
        if operators:
            for op, operand in spec.items():
                if op not in _OPERATORS:
                    raise InvalidInputError(
                        f"unknown filter operator {op!r} at {'.'.join(path)!r}; use one of "
                        + ", ".join(_OPERATORS)
                    )
                if op not in ("$eq", "$ne") and (
                    isinstance(operand, bool) or not isinstance(operand, (int, float, str))
                ):
                    raise InvalidInputError(
                        f"filter {op} at {'.'.join(path)!r} needs a number or a string, "
                        f"not {operand!r}"
                    )
                out.append(Condition(path, op, operand))
            return
        if not spec:
            out.append(Condition(path, "object", None))
        for key, sub in spec.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"filter keys must be str, not {key!r}")
            _flatten((*path, key), sub, out)
        return
    out.append(Condition(path, "$eq", spec))


def compile_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """A LangGraph filter as conditions, checked before any I/O.

    Top-level keys may be dotted paths (``"meta.lang"``); nested objects name nested keys.

    Raises:
        InvalidInputError: an unknown operator, a range operand that is neither a number nor
            a string, or a key the JSON path syntax cannot carry (``"`` or ``\\``).
    """
    if not filter:
        return []
    if not isinstance(filter, Mapping):
        raise InvalidInputError("filter must be a dict")
    out: list[Condition] = []
    for key, spec in filter.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"filter keys must be non-empty str, not {key!r}")
        _flatten(tuple(key.split(".")), spec, out)
    for cond in out:
        for part in cond.path:
            if '"' in part or "\\" in part or not part:
                raise InvalidInputError(
                    f"filter path {'.'.join(cond.path)!r} has an empty part or a quote or "
                    "backslash, which JSON paths cannot carry"
                )
    return out


def _json_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{part}"' for part in path)


def condition_sql(backend: Backend, cond: Condition, column: str) -> tuple[str, list[Any]]:
    """SQL for one :attr:`Condition.in_sql` condition."""
    ph = p(backend)
    jp = _json_path(cond.path)
    op, operand = cond.op, cond.operand
    params: list[Any]
    if backend == "mysql":
        x = f"JSON_EXTRACT({column}, {ph})"
        typ = f"JSON_TYPE({x})"
        if op == "object":
            return f"{typ} = 'OBJECT'", [jp]
        if operand is None:
            eq = f"({x} IS NULL OR {typ} = 'NULL')"
            params = [jp, jp]
        elif isinstance(operand, bool):
            eq = f"({typ} = 'BOOLEAN' AND JSON_UNQUOTE({x}) = '{'true' if operand else 'false'}')"
            params = [jp, jp]
        elif isinstance(operand, (int, float)):
            cmp = "=" if op in ("$eq", "$ne") else _OPERATORS[op]
            eq = f"({typ} IN {_NUMERIC_MYSQL} AND CAST({x} AS DOUBLE) {cmp} {ph})"
            params = [jp, jp, float(operand)]
        else:
            cmp = "=" if op in ("$eq", "$ne") else _OPERATORS[op]
            eq = (
                f"({typ} = 'STRING' AND CAST(JSON_UNQUOTE({x}) AS BINARY) {cmp} "
                f"CAST({ph} AS BINARY))"
            )
            params = [jp, jp, str(operand)]
    else:
        x = f"json_extract({column}, {ph})"
        typ = f"json_type({column}, {ph})"
        if op == "object":
            return f"{typ} = 'object'", [jp]
        if operand is None:
            eq = f"({typ} IS NULL OR {typ} = 'null')"
            params = [jp, jp]
        elif isinstance(operand, bool):
            eq = f"{typ} = '{'true' if operand else 'false'}'"
            params = [jp]
        elif isinstance(operand, (int, float)):
            cmp = "=" if op in ("$eq", "$ne") else _OPERATORS[op]
            eq = f"({typ} IN ('integer', 'real') AND {x} {cmp} {ph})"
            params = [jp, jp, operand]
        else:
            cmp = "=" if op in ("$eq", "$ne") else _OPERATORS[op]
            eq = f"({typ} = 'text' AND {x} {cmp} {ph})"
            params = [jp, jp, str(operand)]
    if op == "$ne":
        return f"NOT COALESCE({eq}, 0)", params
    return f"COALESCE({eq}, 0)" if operand is None else eq, params


_MISSING = object()


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def client_match(value: Mapping[str, Any], conditions: Sequence[Condition]) -> bool:
    """The list and object conditions, which SQL does not check: JSON equality."""
    for cond in conditions:
        if cond.in_sql:
            continue
        found = _at(value, cond.path)
        operand = list(cond.operand) if isinstance(cond.operand, tuple) else cond.operand
        equal = found is not _MISSING and _json_equal(found, operand)
        if equal != (cond.op == "$eq"):
            return False
    return True


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b
