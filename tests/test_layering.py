"""The data path is also the import order: the foundation (URL, engine, dialect, migrations,
retries, codec) imports no table set, and the LangGraph package does not import the chat one.
A table set that reached into another's schema module would pull its DDL and setup along and
tie their releases together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tidb_memory"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against its package."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


FOUNDATION = sorted(
    p
    for p in PACKAGE.glob("*.py")
    if (p.name.startswith("_") and p.name != "__init__.py")
    or p.name in {"engine.py", "codec.py", "errors.py"}
)
LANGGRAPH = sorted((PACKAGE / "langgraph").glob("*.py"))


#: The chat table set, and the old top-level modules that re-export it.
CHAT = ("chat", "history", "schema", "store", "migrate")


def _reaches(path: Path, *packages: str) -> list[str]:
    names = [f"tidb_memory.{p}" for p in packages]
    return sorted(
        m for m in imported_modules(path) for n in names if m == n or m.startswith(n + ".")
    )


def test_the_resolver_sees_relative_and_absolute_imports() -> None:
    """The check below is only as good as the resolver: it must see both spellings."""
    saver = PACKAGE / "langgraph" / "saver.py"
    assert "tidb_memory._url.default_url" in imported_modules(saver)
    store = PACKAGE / "langgraph" / "store.py"
    assert "tidb_memory._dialect.table_columns" in imported_modules(store)
    assert "tidb_memory.chat._schema.quote" in _reaches(PACKAGE / "schema.py", *CHAT)


@pytest.mark.parametrize("path", FOUNDATION, ids=lambda p: p.name)
def test_the_foundation_imports_no_table_set(path: Path) -> None:
    assert _reaches(path, *CHAT, "langgraph") == []


@pytest.mark.parametrize("path", LANGGRAPH, ids=lambda p: p.name)
def test_langgraph_does_not_import_the_chat_package(path: Path) -> None:
    assert _reaches(path, *CHAT) == []
