"""The import graph follows ARCHITECTURE.md: every layer imports only from itself and the layers below it.

Every import counts, including those inside functions, so a lazy import cannot
hide a dependency that runs against the layering.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Layer of each part of the code, and the parts it may import (besides itself).
ALLOWED: Dict[str, Set[str]] = {
    "bot.domain": set(),
    "bot.config": {"bot.domain"},
    "bot.store": {"bot.domain", "bot.config"},
    "bot.services": {"bot.domain", "bot.config", "bot.store"},
    "actions": {"bot.domain", "bot.config", "bot.store", "bot.services"},
    "connectors": {"bot.domain", "bot.config", "bot.store", "bot.services"},
    "bot.console": {"bot.domain", "bot.config", "bot.store", "bot.services", "bot.serving"},
    "bot.serving": {"bot.domain", "bot.config", "bot.store", "bot.services"},
    "bot.nlu": {"bot.domain", "bot.config"},
    "bot.cli": {"bot.domain", "bot.config", "bot.store", "bot.services", "bot.console", "bot.serving"},
    "bot.__main__": {"bot.cli"},
    "tools": {"bot.domain", "bot.config", "bot.store", "bot.services", "bot.serving"},
}

#: Libraries of transport and storage that the pure domain must not touch.
DOMAIN_FORBIDDEN = ("sqlalchemy", "sanic", "rasa", "rasa_sdk", "httpx", "socketio", "alembic")


def part_of(module: str) -> Optional[str]:
    """The entry of ALLOWED a dotted module name belongs to (the longest matching prefix)."""
    best = None
    for part in ALLOWED:
        if (module == part or module.startswith(part + ".")) and (best is None or len(part) > len(best)):
            best = part
    return best


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> Iterator[Path]:
    for top in ("bot", "actions", "connectors", "tools"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def imports_of(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, imported module) for every import statement in the file, at any depth."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from bot import config` imports the module bot.config
                yield node.lineno, f"{target}.{alias.name}"


def violations() -> List[str]:
    found = []
    for path in sources():
        if module_name(path) == "bot":
            continue  # the package's own __init__: a docstring
        here = part_of(module_name(path))
        assert here is not None, f"{path} belongs to no layer in ALLOWED: add it there and to ARCHITECTURE.md"
        for line, target in imports_of(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if here == "bot.domain" and target.split(".")[0] in DOMAIN_FORBIDDEN:
                found.append(f"{where} imports {target}: the domain stays free of storage and transport")
            top = target.split(".")[0]
            if top == "tests":
                found.append(f"{where} imports {target}: product code never imports the tests")
                continue
            there = part_of(target) if top in ("bot", "actions", "connectors", "tools") else None
            if there is None:  # a third-party module, or a bare package such as `bot`
                continue
            if there != here and there not in ALLOWED[here]:
                found.append(f"{where}: {here} imports {target} ({there})")
    return found


def test_no_module_imports_against_the_layering():
    """domain <- config <- store <- services <- actions, connectors, console, serving, cli <- tools."""
    assert violations() == []


@pytest.mark.parametrize("source, target, allowed", [
    ("bot.domain.tracking", "bot.store.queries", False),   # the domain never reaches the store
    ("bot.config", "bot.domain.policy", True),
    ("bot.store.queries", "bot.services.answers", False),  # storage does not know the services
    ("actions.jobs", "bot.console.queue", False),          # actions do not reach into the console
    ("bot.services.claims", "tools.bench", False),         # the product never imports developer tooling
    ("tools.bench", "bot.serving.runner", True),
])
def test_the_rules_themselves_tell_allowed_from_forbidden(source, target, allowed):
    """The checker would catch a wrong import (so an empty list above means something)."""
    here, there = part_of(source), part_of(target)
    assert here is not None and there is not None
    assert (there == here or there in ALLOWED[here]) is allowed


def test_every_package_is_described_in_the_architecture_notes():
    """ARCHITECTURE.md names each layer's folder, and the README's file table lists every module."""
    notes = (ROOT / "ARCHITECTURE.md").read_text()
    for part in ALLOWED:
        folder = part.replace(".", "/")
        assert f"`{folder}" in notes, f"ARCHITECTURE.md does not mention {folder}"
    readme = (ROOT / "README.md").read_text()
    for path in sources():
        relative = str(path.relative_to(ROOT))
        if path.name in ("__init__.py", "__main__.py"):
            continue
        folder = str(path.parent.relative_to(ROOT)) + "/"
        assert relative in readme or f"`{folder}`" in readme, f"the README's file table misses {relative}"
