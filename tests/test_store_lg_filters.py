"""Typed filters in SQL against a reference written independently, in Python, here.

Seeded random items (numbers, strings across Unicode planes, booleans, nulls, lists, nested
objects, missing keys) and random filters; each filter's matches must equal the reference's on
MariaDB and SQLite. The reference is the contract: a number operand matches numbers only
(booleans are not numbers), a string operand strings only, compared by code point; ``None``
matches a null or a missing key; ``$ne`` is the negation of ``$eq`` (so it keeps missing keys);
a range skips values of another type and missing keys.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from conftest import Target
from langgraph.store.base import PutOp

from tests.graph.stores import fresh_store

STRINGS = [
    "",
    "a",
    "a ",
    "A",
    "b",
    "ab",
    "á",
    "é",
    "z",
    "9",
    "10",
    "😀",
    "中文",
    "\U0001f600x",
    "~",
]
MISSING = object()


def random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randint(-5, 12)
    if kind == 1:
        return round(rng.uniform(-5, 12), rng.choice([0, 1, 3]))
    if kind == 2:
        return rng.choice(STRINGS)
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    return rng.choice([[1, 2], ["a"], {"k": 1}])


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def reference(value: Any, op: str, operand: Any) -> bool:
    """The contract, independently of the library."""
    if op in ("$eq", "$ne"):
        if operand is None:
            equal = value is MISSING or value is None
        elif isinstance(operand, bool):
            equal = isinstance(value, bool) and value == operand
        elif is_number(operand):
            equal = is_number(value) and value == operand
        else:
            equal = isinstance(value, str) and value == operand
        return equal if op == "$eq" else not equal
    same_type = (is_number(operand) and is_number(value)) or (
        isinstance(operand, str) and isinstance(value, str)
    )
    if not same_type:
        return False
    return {
        "$gt": value > operand,
        "$gte": value >= operand,
        "$lt": value < operand,
        "$lte": value <= operand,
    }[op]


@pytest.mark.parametrize("seed", [5, 6])
async def test_random_filters_match_the_reference(backend: Target, seed: int) -> None:
    rng = random.Random(seed)
    values: dict[str, dict[str, Any]] = {}
    for i in range(60):
        value: dict[str, Any] = {}
        if rng.random() < 0.85:
            value["v"] = random_scalar(rng)
        value["meta"] = {"w": random_scalar(rng)} if rng.random() < 0.7 else {}
        values[f"k{i}"] = value
    async with fresh_store(backend) as store:
        await store.abatch([PutOp(("f",), key, value) for key, value in values.items()])
        for _ in range(70):
            op = rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
            if op in ("$eq", "$ne"):
                operand = random_scalar(rng)
                if isinstance(operand, (list, dict)):
                    operand = rng.choice(STRINGS)
            else:
                operand = rng.choice(
                    [rng.randint(-5, 12), rng.uniform(-5, 12), rng.choice(STRINGS)]
                )
            nested = rng.random() < 0.4
            flt = {"meta.w" if nested else "v": {op: operand}}
            found = {i.key for i in await store.asearch(("f",), filter=flt, limit=1000)}
            expected = {
                key
                for key, value in values.items()
                if reference(
                    value.get("meta", {}).get("w", MISSING) if nested else value.get("v", MISSING),
                    op,
                    operand,
                )
            }
            assert found == expected, (flt, sorted(found ^ expected))
