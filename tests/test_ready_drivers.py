"""Every driver of the core handles every field of :class:`~raftpy.core.ready.Ready`.

A driver is a function outside the core that takes a ``Ready`` (the node's and the simulator's
Ready handlers). When the core gains a field (a new effect), each driver must read it, or the
effect is silently dropped in one of them: this test names the driver and the field.
"""

from __future__ import annotations

import ast
from pathlib import Path

from raftpy.core.ready import Ready

SRC = Path(__file__).resolve().parents[1] / "src" / "raftpy"

# Fields that are inputs to the driver's bookkeeping rather than effects: none today. A field
# listed here must say why a driver may ignore it.
NOT_EFFECTS: dict[str, str] = {}


def ready_handlers(root: Path) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """``module:function`` -> the function, for every function outside the core that has a
    parameter annotated ``Ready``."""
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for path in sorted(root.rglob("*.py")):
        if "core" in path.relative_to(root).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if any(ast.unparse(a.annotation) == "Ready" for a in args if a.annotation):
                found[f"{path.relative_to(root)}:{node.name}"] = node
    return found


def unread_fields(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The Ready fields the function never reads (as ``<param>.<field>``)."""
    args = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
    params = {a.arg for a in args if a.annotation and ast.unparse(a.annotation) == "Ready"}
    read = {
        n.attr
        for n in ast.walk(function)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in params
    }
    fields = [f for f in Ready.__struct_fields__ if f not in NOT_EFFECTS]
    return [f for f in fields if f not in read]


def test_both_drivers_are_found() -> None:
    handlers = ready_handlers(SRC)
    drivers = {name.split(":")[0].split("/")[0] for name in handlers}
    assert {"node", "testing"} <= drivers, sorted(handlers)


def test_every_driver_handles_every_ready_field() -> None:
    problems = {}
    for name, function in ready_handlers(SRC).items():
        missing = unread_fields(function)
        if missing:
            problems[name] = missing
    assert problems == {}


def test_a_driver_that_drops_a_field_is_caught(tmp_path: Path) -> None:
    """The check can fail: a driver that never reads ``read_states`` is named."""
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "fake.py").write_text(
        "def handle(rd: Ready) -> None:\n"
        + "".join(f"    print(rd.{f})\n" for f in Ready.__struct_fields__ if f != "read_states")
    )
    handlers = ready_handlers(tmp_path)
    assert list(handlers) == ["node/fake.py:handle"]
    assert unread_fields(handlers["node/fake.py:handle"]) == ["read_states"]
