"""The package's layers import only downwards (docs/architecture.md, "Layers").

Every import in ``src/raftpy`` is read from the source (function-level imports included), so a
shortcut across a boundary fails here before it becomes a habit:

- ``raftpy.core`` is sans-I/O: it imports the core itself, ``raftpy.errors``, msgspec and the
  standard library's pure modules, never asyncio, sockets, the file system, threads or clocks;
- ``raftpy.storage`` and ``raftpy.transport`` never import the runtime (``raftpy.node``), the
  clients, the command lines, the examples or the test tools;
- nothing in the library imports the test tools (``raftpy.testing``), except the front ends that
  exist to run them: the ``raftpy check`` / ``raftpy jepsen`` commands and the simulated demo.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Standard-library modules the core may not import: I/O, time, threads, processes.
CORE_FORBIDDEN_STDLIB = {
    "asyncio",
    "concurrent",
    "io",
    "mmap",
    "multiprocessing",
    "os",
    "pathlib",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "ssl",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
}
CORE_ALLOWED_RAFTPY = ("raftpy.core", "raftpy.errors")
CORE_ALLOWED_THIRD_PARTY = {"msgspec"}

LOWER_LAYERS = ("raftpy.storage", "raftpy.transport")
ABOVE_LOWER_LAYERS = (
    "raftpy.node",
    "raftpy.node_snapshots",
    "raftpy.client",
    "raftpy.cli",
    "raftpy.examples",
    "raftpy.demos",
    "raftpy.demo",
    "raftpy.demo_cluster",
    "raftpy.testing",
)

# The front ends of the test tools: they exist to run them.
TESTING_FRONT_ENDS = ("raftpy.testing", "raftpy.cli", "raftpy.demos", "raftpy.demo")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in the file, relative ones resolved."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from raftpy import testing`` names a module too.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


MODULES = sorted(SRC.rglob("*.py"))


def core_may_import(imported: str) -> bool:
    top = imported.split(".")[0]
    if top == "raftpy":
        return imported == "raftpy" or within(imported, CORE_ALLOWED_RAFTPY)
    if top in CORE_FORBIDDEN_STDLIB:
        return False
    return top in CORE_ALLOWED_THIRD_PARTY or is_stdlib(top)


def breaks(rule: str, name: str, imported: str) -> bool:
    """Whether module ``name`` importing ``imported`` breaks ``rule``."""
    if rule == "core":
        return within(name, ("raftpy.core",)) and not core_may_import(imported)
    if rule == "lower":
        return within(name, LOWER_LAYERS) and within(imported, ABOVE_LOWER_LAYERS)
    if rule == "testing":
        return not within(name, TESTING_FRONT_ENDS) and within(imported, ("raftpy.testing",))
    raise AssertionError(rule)


def violations(rule: str, src: Path = SRC, modules: list[Path] = MODULES) -> list[str]:
    out: list[str] = []
    for path in modules:
        name = module_name(path, src)
        for line, imported in imports_of(path, src):
            if breaks(rule, name, imported):
                out.append(f"{path.relative_to(src)}:{line} imports {imported}")
    return out


def is_stdlib(top: str) -> bool:
    import sys

    return top in sys.stdlib_module_names or top == "__future__"


@pytest.mark.parametrize("rule", ["core", "lower", "testing"])
def test_layers_import_only_downwards(rule: str) -> None:
    assert MODULES, f"no sources found under {SRC}"
    assert violations(rule) == []


@pytest.mark.parametrize(
    ("rule", "where", "source", "want"),
    [
        (
            "core",
            "core/bad.py",
            "def f():\n    import asyncio\n    from ..node import RaftNode\n",
            [
                "raftpy/core/bad.py:2 imports asyncio",
                "raftpy/core/bad.py:3 imports raftpy.node",
                "raftpy/core/bad.py:3 imports raftpy.node.RaftNode",
            ],
        ),
        (
            "lower",
            "storage/bad.py",
            "from raftpy.client import Client\n",
            [
                "raftpy/storage/bad.py:1 imports raftpy.client",
                "raftpy/storage/bad.py:1 imports raftpy.client.Client",
            ],
        ),
        (
            "testing",
            "node/bad.py",
            "from raftpy import testing\n",
            ["raftpy/node/bad.py:1 imports raftpy.testing"],
        ),
    ],
)
def test_the_layer_check_sees_a_planted_violation(
    tmp_path: Path, rule: str, where: str, source: str, want: list[str]
) -> None:
    """The check must be able to fail: a planted import across each boundary is found."""
    assert "raftpy.core.messages" in [m for _, m in imports_of(SRC / "raftpy/core/log.py")]
    bad = tmp_path / "src" / "raftpy" / where
    bad.parent.mkdir(parents=True)
    bad.write_text(source)
    assert violations(rule, tmp_path / "src", [bad]) == want
