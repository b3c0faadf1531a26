"""Print pip constraints that pin every direct dependency to the lowest version pyproject allows.

``make test-lowest`` installs the package with these constraints, so that the lower bounds in
pyproject.toml are tested rather than assumed. The direct dependencies are ``[project]
dependencies`` and the extras a user installs (``langgraph``); the test tools are left to
resolve freely. Every such dependency must carry a ``>=`` lower bound: one without is an error
here, because "any version" cannot be tested.

Usage: ``python scripts/lowest_pins.py [pyproject.toml] > constraints.txt``; with ``--check``
(run by the venv's Python) it prints each installed version and fails unless it is the pin.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: Extras whose dependencies are part of what users install (test and bench tools are not).
USER_EXTRAS = ("langgraph",)

#: Packages that declare a dependency range wider than they work with, and the cap that holds
#: beside the lowest pins. langgraph-prebuilt 1.0.9 and later import ``ExecutionInfo`` from
#: ``langgraph.runtime``, which langgraph 1.0.6 lacks, yet accept it: without the cap,
#: ``from langchain.agents import create_agent`` fails on the lowest langgraph.
UPSTREAM_CAPS = ("langgraph-prebuilt<1.0.9",)

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def lowest_pins(pyproject: dict[str, object]) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    requirements = list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    for extra in USER_EXTRAS:
        requirements += extras.get(extra, [])
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot parse the requirement {requirement!r}")
        name, _, specifiers, _ = match.groups()
        lower = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip()[:2] == ">="]
        if len(lower) != 1:
            raise SystemExit(f"{requirement!r} needs exactly one '>=' lower bound to be tested")
        key = re.sub(r"[-_.]+", "-", name).lower()
        if pins.get(key, lower[0]) != lower[0]:
            raise SystemExit(f"{name} has two different lower bounds in pyproject.toml")
        pins[key] = lower[0]
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def check(pins: list[str]) -> None:
    """Fail unless the running environment holds exactly the pinned versions."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    wrong = []
    for pin in pins:
        name, wanted = pin.split("==")
        try:
            found = version(name)
        except PackageNotFoundError:
            found = "(not installed)"
        ok = found[0].isdigit() and Version(found) == Version(wanted)
        print(f"  {name:<22} {found:<12} {'ok' if ok else 'WANTED ' + wanted}")
        if not ok:
            wrong.append(name)
    if wrong:
        raise SystemExit(f"not at the lowest allowed version: {', '.join(wrong)}")


def main(argv: list[str]) -> None:
    args = [a for a in argv[1:] if a != "--check"]
    path = Path(args[0] if args else "pyproject.toml")
    with path.open("rb") as fh:
        pins = lowest_pins(tomllib.load(fh))
    if "--check" in argv:
        check(pins)
    else:
        print("\n".join([*pins, *UPSTREAM_CAPS]))


if __name__ == "__main__":
    main(sys.argv)
