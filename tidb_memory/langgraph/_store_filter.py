"""LangGraph filters as typed SQL conditions; no I/O.

Filters compare typed JSON: a number operand matches numbers only, compared as numbers (9 < 10);
a string operand matches strings only, compared by code point; a range operator skips items that
lack the key, and ``$ne`` matches them. Top-level keys may be dotted paths (``"meta.lang"``) and
nested objects name nested keys. Operands that are lists or objects (``$eq``/``$ne``) are checked
in the client by :func:`client_match`, and a search that needs it pages in the client too.
"""

from __future__ import annotations

import re
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


#: Per backend: the JSON value at a path (``{x}``), its JSON type (``{t}``), and each test.
#: ``{cmp}`` is the SQL operator and ``{ph}`` the operand's placeholder.
_SQL = {
    "mysql": {
        "x": "JSON_EXTRACT({col}, %s)",
        "t": "JSON_TYPE(JSON_EXTRACT({col}, %s))",
        "object": "{t} = 'OBJECT'",
        "null": "({x} IS NULL OR {t} = 'NULL')",
        "true": "({t} = 'BOOLEAN' AND JSON_UNQUOTE({x}) = 'true')",
        "false": "({t} = 'BOOLEAN' AND JSON_UNQUOTE({x}) = 'false')",
        "number": "({t} IN " + _NUMERIC_MYSQL + " AND CAST({x} AS DOUBLE) {cmp} {ph})",
        "string": (
            "({t} = 'STRING' AND CAST(JSON_UNQUOTE({x}) AS BINARY) {cmp} CAST({ph} AS BINARY))"
        ),
    },
    "sqlite": {
        "x": "json_extract({col}, ?)",
        "t": "json_type({col}, ?)",
        "object": "{t} = 'object'",
        "null": "({t} IS NULL OR {t} = 'null')",
        "true": "{t} = 'true'",
        "false": "{t} = 'false'",
        "number": "({t} IN ('integer', 'real') AND {x} {cmp} {ph})",
        "string": "({t} = 'text' AND {x} {cmp} {ph})",
    },
}
_SLOT = re.compile(r"\{(x|t|ph)\}")


def _kind(cond: Condition) -> str:
    operand = cond.operand
    if cond.op == "object":
        return "object"
    if operand is None:
        return "null"
    if isinstance(operand, bool):
        return "true" if operand else "false"
    return "number" if isinstance(operand, (int, float)) else "string"


def condition_sql(backend: Backend, cond: Condition, column: str) -> tuple[str, list[Any]]:
    """SQL for one :attr:`Condition.in_sql` condition, and its parameters in order."""
    sql = _SQL[backend]
    kind = _kind(cond)
    jp = _json_path(cond.path)
    operand: Any = cond.operand
    if kind == "number":
        operand = float(operand) if backend == "mysql" else operand
    elif kind == "string":
        operand = str(operand)
    params: list[Any] = []

    def fill(match: re.Match[str]) -> str:
        slot = match.group(1)
        params.append(operand if slot == "ph" else jp)
        return p(backend) if slot == "ph" else sql[slot].format(col=column)

    cmp = "=" if cond.op in ("$eq", "$ne", "object") else _OPERATORS[cond.op]
    test = _SLOT.sub(fill, sql[kind].replace("{cmp}", cmp))
    if cond.op == "$ne":  # true where the value is missing, or of another type
        return f"NOT COALESCE({test}, 0)", params
    return test, params


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
