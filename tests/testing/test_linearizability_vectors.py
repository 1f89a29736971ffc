"""The checker against histories recorded by other tools, with verdicts from porcupine's tests.

The vectors live outside the repository, in ``../shared/linearizability-vectors`` (see its
README). Two formats, parsed here rather than in the library:

- Jepsen etcd logs (a single cas register) become history operations (docs/history-format.md)
  and go through :func:`raftpy.testing.linearizability.check`, the same path as
  ``raftpy check``.
- porcupine's key-value EDN histories (get / put / append on string keys) use a model
  plugged into :func:`check_operations`: :class:`KvAppendModel`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from raftpy.testing.history import Operation, Value
from raftpy.testing.linearizability import (
    Model,
    ModelOperation,
    Verdict,
    check,
    check_operations,
)

VECTORS = Path(__file__).parents[2].parent / "shared" / "linearizability-vectors"
ROW_TIMEOUT = 30.0

_VERDICTS = {"linearizable": Verdict.LINEARIZABLE, "not-linearizable": Verdict.NOT_LINEARIZABLE}

# --- Jepsen etcd logs -----------------------------------------------------------------------

_JEPSEN_LINE = re.compile(
    r"INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*?)\s*"
)
_TIMED_OUT = ":timed-out"


def _jepsen_value(text: str) -> Any:
    """nil, an integer, ``[from to]`` (as a tuple) or the keyword ``:timed-out``."""
    if text == "nil":
        return None
    if text == _TIMED_OUT:
        return _TIMED_OUT
    if text.startswith("[") and text.endswith("]"):
        a, b = text[1:-1].split()
        return (int(a), int(b))
    return int(text)


def parse_jepsen_log(path: Path) -> list[Operation]:
    """Parse a Jepsen etcd log into history operations on the key ``"etcd"``.

    Times are line numbers. ``ok`` completes an operation; ``fail`` on a cas completes it with
    ``ok=False``; ``info``, a ``fail`` with ``:timed-out`` and an invoke never completed are
    indeterminate (pending until the end of the history).
    """
    invoked: dict[int, tuple[int, str, Any]] = {}  # process -> (line, f, invoke value)
    ops: list[tuple[int, Operation]] = []  # (call line, operation)

    def finish(call: int, process: int, f: str, arg: Any, **result: Any) -> None:
        base: dict[str, Any] = {"client": process, "op": f, "key": "etcd", "call": call}
        if f == "write":
            base["value"] = arg
        elif f == "cas":
            base["from_"], base["to"] = arg
        ops.append((call, Operation(**base, **result)))

    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        m = _JEPSEN_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"{path}:{number}: not a Jepsen log line: {line!r}")
        process, kind, f, value = int(m[1]), m[2], m[3], _jepsen_value(m[4])
        if kind == "invoke":
            if process in invoked:
                raise ValueError(f"{path}:{number}: process {process} invoked twice")
            invoked[process] = (number, f, value)
            continue
        call, f_invoked, arg = invoked.pop(process)
        if f != f_invoked:
            raise ValueError(f"{path}:{number}: {f} completes a {f_invoked}")
        if kind == "info" or value == _TIMED_OUT:
            finish(call, process, f, arg, unknown=True)
        elif kind == "ok":
            if f == "read":
                finish(call, process, f, arg, ret=number, value=value)
            elif f == "cas":
                finish(call, process, f, arg, ret=number, ok=True)
            else:
                finish(call, process, f, arg, ret=number)
        elif f == "cas":  # fail: the cas ran and did not swap
            finish(call, process, f, arg, ret=number, ok=False)
        else:
            raise ValueError(f"{path}:{number}: unexpected fail of a {f}: {line!r}")
    for process, (call, f, arg) in invoked.items():
        finish(call, process, f, arg)  # never completed: indeterminate
    ops.sort(key=lambda item: item[0])
    return [op for _, op in ops]


# --- porcupine key-value EDN histories ------------------------------------------------------

_EDN_LINE = re.compile(
    r'\{:process (\d+), :type :(invoke|ok), :f :(get|put|append), :key "([^"]*)", '
    r':value (nil|"[^"]*")\}'
)

KvAppendInput: TypeAlias = tuple[str, str, str]  # (f, key, argument)


class KvAppendModel(Model[str, KvAppendInput, str]):
    """porcupine's key-value model: a string per key, initially empty; get returns it, put
    replaces it, append concatenates to it."""

    def init(self) -> str:
        return ""

    def step(self, state: str, input: KvAppendInput, output: str) -> tuple[bool, str]:
        f, _key, arg = input
        if f == "get":
            return output == state, state
        if f == "put":
            return True, arg
        return True, state + arg

    def read_only(self, input: KvAppendInput, output: str) -> bool:
        return input[0] == "get"

    def partition(
        self, ops: Sequence[ModelOperation[KvAppendInput, str]]
    ) -> list[tuple[str, list[ModelOperation[KvAppendInput, str]]]]:
        by_key: dict[str, list[ModelOperation[KvAppendInput, str]]] = {}
        for op in ops:
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.items())

    def describe_operation(self, op: ModelOperation[KvAppendInput, str]) -> str:
        f, key, arg = op.input
        if f == "get":
            return f"get({key!r}) -> {op.output!r}"
        return f"{f}({key!r}, {arg!r})"


def parse_kv_edn(path: Path) -> list[ModelOperation[KvAppendInput, str]]:
    """Parse a porcupine key-value EDN history; times are line numbers."""
    invoked: dict[int, tuple[int, str, str, str]] = {}  # process -> (line, f, key, value)
    ops: list[ModelOperation[KvAppendInput, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        m = _EDN_LINE.fullmatch(line.strip())
        if m is None:
            raise ValueError(f"{path}:{number}: not a key-value EDN event: {line!r}")
        process, kind, f, key = int(m[1]), m[2], m[3], m[4]
        value = "" if m[5] == "nil" else m[5][1:-1]
        if kind == "invoke":
            if process in invoked:
                raise ValueError(f"{path}:{number}: process {process} invoked twice")
            invoked[process] = (number, f, key, value)
            continue
        call, f_invoked, key_invoked, arg = invoked.pop(process)
        if (f, key) != (f_invoked, key_invoked):
            raise ValueError(f"{path}:{number}: completion does not match its invoke")
        output = value if f == "get" else ""
        ops.append(ModelOperation(process, (f, key, arg), output, call, number))
    if invoked:
        raise ValueError(f"{path}: operations never completed: {sorted(invoked)}")
    ops.sort(key=lambda op: op.call)
    return ops


# --- The tests ------------------------------------------------------------------------------


def _rows() -> list[Any]:
    expected = VECTORS / "EXPECTED.tsv"
    if not expected.is_file():
        reason = f"linearizability vectors not found: looked for {expected}"
        return [pytest.param("", "", id="vectors-missing", marks=pytest.mark.skip(reason=reason))]
    rows = []
    for line in expected.read_text().splitlines()[1:]:
        if line.strip():
            name, verdict = line.split("\t")
            rows.append(pytest.param(name, verdict, id=name))
    return rows


@pytest.mark.parametrize(("name", "verdict"), _rows())
def test_checker_agrees_with_expected_verdict(name: str, verdict: str) -> None:
    path = VECTORS / name
    want = _VERDICTS[verdict]
    start = time.monotonic()
    if name.startswith("jepsen/"):
        result = check(parse_jepsen_log(path), timeout=ROW_TIMEOUT)
    else:
        result = check_operations(parse_kv_edn(path), KvAppendModel(), timeout=ROW_TIMEOUT)
    elapsed = time.monotonic() - start
    assert result.verdict is want, f"{name}: got {result.verdict} in {elapsed:.2f} s, want {want}"
    if want is Verdict.NOT_LINEARIZABLE:
        assert result.violation is not None
        assert result.violation.unplaceable, "a violation names the operations it could not place"


def test_every_vector_file_has_a_verdict() -> None:
    if not VECTORS.is_dir():
        pytest.skip(f"linearizability vectors not found: looked for {VECTORS}")
    listed = {row.values[0] for row in _rows()}
    files = {
        f"{p.parent.name}/{p.name}" for sub in ("jepsen", "kv") for p in (VECTORS / sub).iterdir()
    }
    # etcd_095.log is empty and has no verdict (README).
    assert files - listed == {"jepsen/etcd_095.log"}
    assert listed <= files


def test_jepsen_parser_reads_outcomes() -> None:
    """The parser's reading of a log drives every jepsen row, so check it on a small one."""
    if not VECTORS.is_dir():
        pytest.skip(f"linearizability vectors not found: looked for {VECTORS}")
    ops = parse_jepsen_log(VECTORS / "jepsen" / "etcd_000.log")
    first: Operation = ops[0]
    assert (first.client, first.op, first.call, first.ret, first.value) == (0, "read", 1, 7, None)
    assert any(op.op == "cas" and op.ok is False for op in ops)
    assert any(op.unknown for op in ops)
    values: set[Value] = {op.value for op in ops if op.op == "read"}
    assert values <= {None, 0, 1, 2, 3, 4}
