"""A linearizability checker for histories of concurrent operations.

A history is linearizable (Herlihy & Wing 1990) if every operation can be given one instant
between its call and its return, such that running the operations one at a time in the order
of those instants on a sequential model of the object gives every result the clients saw.

The search is the one of Wing & Gong (1993), with the improvements of Lowe ("Testing for
linearizability", 2017) in the form popularised by the porcupine checker (Athalye):

- The calls and returns of all operations are put in one doubly linked list sorted by time.
  An operation can be linearized next if its call comes before the first return in the list
  (every operation that had already returned before it was called is linearized).
- Linearizing an operation *lifts* its call and return out of the list; backtracking *unlifts*
  them again, restoring the pointers in reverse order (as in Knuth's dancing links), so
  neither needs to copy the list.
- A configuration is the set of linearized operations (a bitset held in a Python int, relative
  to the oldest operation not yet linearized) together with the model state. Lowe's
  memoization remembers every configuration ever reached: a second way of reaching one cannot
  succeed where the first failed, so it is not explored again.
- A read-only operation that fits is linearized at once and its alternatives are not tried
  (a partial-order reduction; see ``_search``).
- Linearizability is local (Herlihy & Wing; P-compositionality, Horn & Kroening 2015): a
  history of independent objects, e.g. the keys of a key-value store, is linearizable iff
  the sub-history of each object is. The model's ``partition`` splits the history and each
  part is searched on its own, which turns one exponential search into many small ones.

Indeterminate operations (the client never learned the outcome) may take effect at any time
after their call, or never. They get a return time of +infinity, and the search succeeds as
soon as every *completed* operation is linearized: indeterminate ones may stay out of the
linearization, which is how "it never happened" is expressed. An indeterminate read has no
effect and reveals nothing, so the key-value model drops it before searching.

:func:`check` checks a key-value history (docs/history-format.md: a register per key, with
read, write and cas); :func:`check_operations` checks any history against any :class:`Model`.
"""

from __future__ import annotations

import enum
import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

import msgspec

from raftpy.testing.history import (
    HistoryFormatError,
    Operation,
    OpKind,
    Value,
    validate_operation,
)

__all__ = [
    "KV_REGISTER_MODEL",
    "CheckResult",
    "KvInput",
    "KvOutput",
    "KvRegisterModel",
    "Model",
    "ModelOperation",
    "ReportedOperation",
    "Verdict",
    "Violation",
    "check",
    "check_operations",
    "kv_operations",
    "render_html",
]

S = TypeVar("S")
I = TypeVar("I")  # noqa: E741 (the conventional name of a model's input type)
O = TypeVar("O")  # noqa: E741

# How many search steps run between two looks at the clock: reading it on every step would
# cost more than the step itself.
_CLOCK_EVERY = 2048


@dataclass(frozen=True, slots=True)
class ModelOperation(Generic[I, O]):
    """One operation as the checker sees it, for any model.

    ``input`` is what the client asked for and ``output`` what it got back (both defined by the
    model). ``call`` and ``ret`` are times on one clock; ``ret is None`` marks an indeterminate
    operation, which may take effect at any time after ``call``, or never. ``index`` is the
    operation's position in the caller's history, used in reports (``None``: its position in
    the sequence given to :func:`check_operations`).
    """

    client: int
    input: I
    output: O
    call: int
    ret: int | None
    index: int | None = None


class Model(Protocol[S, I, O]):
    """A sequential specification: the object the history is checked against.

    States must be hashable and compare by value (they are memoized). ``step`` must be a pure
    function. Subclass this protocol explicitly to inherit the defaults of the optional methods:
    ``partition`` (no partitioning), ``read_only`` (never) and the descriptions.
    """

    def init(self) -> S:
        """The initial state."""
        ...

    def step(self, state: S, input: I, output: O) -> tuple[bool, S]:
        """Apply one operation: whether ``output`` is a possible result in ``state``, and the
        state after it. For an indeterminate operation the output is whatever the caller put
        in its :class:`ModelOperation` (the key-value model uses ``None``)."""
        ...

    def partition(
        self, ops: Sequence[ModelOperation[I, O]]
    ) -> list[tuple[str, list[ModelOperation[I, O]]]]:
        """Split a history into independent parts, each with a label (e.g. its key)."""
        return [("", list(ops))]

    def read_only(self, input: I, output: O) -> bool:
        """Whether the operation leaves the state unchanged in every state that accepts it.

        Optional (the default says no); answering yes lets the search prune (see
        ``_search``). A wrong yes makes the checker wrong."""
        return False

    def describe_operation(self, op: ModelOperation[I, O]) -> str:
        """A short human-readable description of an operation and its result."""
        pending = " (outcome unknown)" if op.ret is None else ""
        return f"{op.input!r} -> {op.output!r}{pending}"

    def describe_state(self, state: S) -> str:
        """A short human-readable description of a state."""
        return repr(state)


# --- The key-value register model ---------------------------------------------

KvInput: TypeAlias = tuple[OpKind, str, Value, Value]
"""(op, key, a, b): a read has ``a = b = None``; a write writes ``a``; a cas swaps ``a`` for
``b``."""

KvOutput: TypeAlias = Value | bool
"""The value read (``None``: absent), a cas's ``ok``, or ``None`` for a write and for an
indeterminate cas."""


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


class KvRegisterModel(Model[Value, KvInput, KvOutput]):
    """One register per key, initially absent (``None``), with read, write and cas.

    A read must return the current value. A write sets it. A cas with ``ok=True`` requires the
    current value to equal ``from`` and sets it to ``to``; with ``ok=False`` it requires the
    current value to differ from ``from`` (the cas ran and did not swap). An indeterminate cas,
    if it takes effect, swaps exactly when the value equals ``from``. Values are compared as
    given: the string ``"1"`` is not the integer ``1``.
    """

    def init(self) -> Value:
        """Every key starts absent."""
        return None

    def step(self, state: Value, input: KvInput, output: KvOutput) -> tuple[bool, Value]:
        """Apply one read, write or cas to the register of one key."""
        kind, _key, a, b = input
        if kind == "read":
            return output == state, state
        if kind == "write":
            return True, a
        if output is None:  # an indeterminate cas that took effect
            return True, (b if state == a else state)
        if output:
            return state == a, b
        return state != a, state

    def read_only(self, input: KvInput, output: KvOutput) -> bool:
        """Reads, and cas that completed without swapping, never change the register."""
        return input[0] == "read" or (input[0] == "cas" and output is False)

    def partition(
        self, ops: Sequence[ModelOperation[KvInput, KvOutput]]
    ) -> list[tuple[str, list[ModelOperation[KvInput, KvOutput]]]]:
        """One part per key, in order of first appearance."""
        by_key: dict[str, list[ModelOperation[KvInput, KvOutput]]] = {}
        for op in ops:
            key = op.input[1]
            part = by_key.get(key)
            if part is None:
                by_key[key] = [op]
            else:
                part.append(op)
        return list(by_key.items())

    def describe_operation(self, op: ModelOperation[KvInput, KvOutput]) -> str:
        """E.g. ``write("x", 3)``, ``read("x") -> 3``, ``cas("x", 3, 4) -> ok``."""
        kind, key, a, b = op.input
        if kind == "read":
            return f"read({_json(key)}) -> {_json(op.output)}"
        if kind == "write":
            result = " -> unknown" if op.ret is None else ""
            return f"write({_json(key)}, {_json(a)}){result}"
        if op.ret is None or op.output is None:
            result = "unknown"
        else:
            result = "ok" if op.output else "failed (no swap)"
        return f"cas({_json(key)}, {_json(a)}, {_json(b)}) -> {result}"

    def describe_state(self, state: Value) -> str:
        """The value as JSON; ``null`` means absent."""
        return "null (absent)" if state is None else _json(state)


KV_REGISTER_MODEL = KvRegisterModel()


def kv_operations(history: Sequence[Operation]) -> list[ModelOperation[KvInput, KvOutput]]:
    """Convert a history to the key-value model's operations.

    Every operation is validated (:class:`HistoryFormatError` naming its position otherwise).
    Indeterminate reads are dropped: they change nothing and their result is unknown, so they
    constrain nothing. Indeterminate writes and cas get ``ret=None`` (return at +infinity).
    """
    out: list[ModelOperation[KvInput, KvOutput]] = []
    for i, op in enumerate(history):
        try:
            validate_operation(op)
        except HistoryFormatError as e:
            raise HistoryFormatError(f"operation #{i}: {e.reason}") from None
        pending = op.indeterminate
        if op.op == "read":
            if pending:
                continue
            inp: KvInput = ("read", op.key, None, None)
            output: KvOutput = op.value
        elif op.op == "write":
            inp = ("write", op.key, op.value, None)
            output = None
        else:
            inp = ("cas", op.key, op.from_, op.to)
            output = None if pending else op.ok
        ret = None if pending else op.ret
        out.append(ModelOperation(op.client, inp, output, op.call, ret, i))
    return out


# --- Results -------------------------------------------------------------------------------


class Verdict(enum.Enum):
    """The outcome of a check."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class ReportedOperation:
    """An operation in a report: its position in the history, client, description and times."""

    index: int
    client: int
    description: str
    call: int
    ret: int | None

    def __str__(self) -> str:
        ret = "never (outcome unknown)" if self.ret is None else str(self.ret)
        return (
            f"#{self.index} client {self.client}: {self.description}"
            f"  [call {self.call}, return {ret}]"
        )


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one part (key) of a history is not linearizable.

    ``prefix`` is the longest sequence of operations the search could linearize, in
    linearization order, and ``state`` the model state after it. ``unplaceable`` are the
    operations that real-time order allowed next at that point, none of which the model
    accepts in that state (or, if empty, the next operation to return could not be placed).
    ``operations`` holds every operation of the part, in call order, for rendering.
    """

    key: str
    operations: tuple[ReportedOperation, ...]
    prefix: tuple[ReportedOperation, ...]
    state: str
    unplaceable: tuple[ReportedOperation, ...]

    def explain(self, max_prefix: int = 10) -> str:
        """A readable explanation (showing at most the last ``max_prefix`` of the prefix)."""
        lines = [f"not linearizable: key {_json(self.key)} ({len(self.operations)} operations)"]
        shown = self.prefix[-max_prefix:] if max_prefix > 0 else ()
        n = len(self.prefix)
        if n == 0:
            lines.append("No operation can be linearized first.")
        else:
            lines.append(f"Longest linearizable prefix: {n} operations, in linearization order")
            if len(shown) < n:
                lines.append(f"  ... {n - len(shown)} earlier operations")
            lines.extend(f"  {op}" for op in shown)
        lines.append(f"State after it: {self.state}")
        lines.append("None of these operations, which may come next in real time, fits there:")
        lines.extend(f"  {op}" for op in self.unplaceable)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The result of a check.

    ``verdict`` is NOT_LINEARIZABLE as soon as one part fails (the search stops there and
    ``violation`` explains it); UNDECIDED if the time limit passed before every part was
    decided (``undecided`` names them); LINEARIZABLE otherwise. ``elapsed`` is in seconds.
    """

    verdict: Verdict
    violation: Violation | None
    undecided: tuple[str, ...]
    partitions: int
    operations: int
    elapsed: float

    def explain(self) -> str:
        """A readable summary, with the explanation of the violation if there is one."""
        head = (
            f"{self.verdict.value}: {self.operations} operations in {self.partitions} "
            f"part(s), checked in {self.elapsed:.3f} s"
        )
        if self.verdict is Verdict.UNDECIDED:
            keys = ", ".join(_json(k) for k in self.undecided[:20])
            more = f" and {len(self.undecided) - 20} more" if len(self.undecided) > 20 else ""
            head += f"\ntime limit reached; undecided: {keys}{more}"
        if self.violation is not None:
            head += "\n" + self.violation.explain()
        return head


# --- The search ------------------------------------------------------------------------------


# Waiver of the complexity rule: the search's hot loop stays one function, so that its state
# lives in local variables (each helper call would cost more than the step it takes).
def _search(  # noqa: C901
    ops: Sequence[ModelOperation[I, O]], model: Model[S, I, O], deadline: float | None
) -> tuple[Verdict, list[int], S]:
    """Search for a linearization of one part (Wing & Gong; Lowe; see the module docstring).

    Returns the verdict and, for NOT_LINEARIZABLE, the longest linearizable prefix found (as
    positions in ``ops``) and the state after it.
    """
    n = len(ops)
    state = model.init()
    if n == 0:
        return Verdict.LINEARIZABLE, [], state
    # Operations are numbered in call order (see the bitset below); by_call maps back.
    by_call = sorted(range(n), key=lambda k: ops[k].call)
    sorted_ops = [ops[k] for k in by_call]
    # Nodes of the event list: the call of operation i is node i, its return node n + i;
    # 2n is the head sentinel and 2n + 1 the tail sentinel. At equal times calls sort before
    # returns, so operations that merely touch are treated as concurrent (the lenient choice).
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(sorted_ops):
        events.append((op.call, 0, i))
        events.append((float("inf") if op.ret is None else op.ret, 1, n + i))
    events.sort()
    head = 2 * n
    tail = head + 1
    nxt = [0] * (tail + 1)
    prv = [0] * (tail + 1)
    prev = head
    for _, _, node in events:
        nxt[prev] = node
        prv[node] = prev
        prev = node
    nxt[prev] = tail
    prv[tail] = prev
    # Reaching the tail, or the return of an indeterminate operation (they all come after
    # every real return), means every completed operation has been linearized: success.
    done = [False] * (tail + 2)
    done[tail] = True
    for i, op in enumerate(sorted_ops):
        if op.ret is None:
            done[n + i] = True
    inputs = [op.input for op in sorted_ops]
    outputs = [op.output for op in sorted_ops]
    # A completed read-only operation that may come next and fits the current state can be
    # linearized next without loss of generality: in any valid continuation it could be moved
    # to the front (real time allows it, and taking it out later changes no state). So once
    # it fits, the other choices at this point need not be tried: if the continuation after
    # it fails, the search backtracks past this point at once. (A partial-order reduction on
    # top of Wing & Gong's search.) The node `stuck` is a return that is never in the list:
    # moving to it just makes the search backtrack.
    read_only = model.read_only
    forced = [op.ret is not None and read_only(op.input, op.output) for op in sorted_ops]
    stuck = tail + 1

    step = model.step
    # The set of linearized operations is kept as (base, window): every operation numbered
    # below `base` is linearized, `base` is not, and bit j of the int `window` says whether
    # operation base + j is. Operations are numbered in call order and the search linearizes
    # them roughly in that order, so the window stays about as wide as the concurrency and
    # a long history does not make every memoized configuration, and every step, cost O(n).
    base = 0
    window = 0
    cache: set[tuple[int, int, S]] = set()
    cache_add = cache.add
    # The current linearization, as a linked stack of frames (operation, state, base and
    # window before it, frame below). Frames are never changed, so remembering the deepest
    # linearization reached (for the report) only keeps a reference to its top frame.
    top: tuple[int, S, int, int, Any] | None = None
    depth = 0
    best_depth = 0
    best_top: tuple[int, S, int, int, Any] | None = None
    best_state = state
    budget = _CLOCK_EVERY
    monotonic = time.monotonic

    entry = nxt[head]
    while True:
        if entry < n:  # a call: try to linearize this operation now
            budget -= 1
            if budget == 0:
                budget = _CLOCK_EVERY
                if deadline is not None and monotonic() > deadline:
                    return Verdict.UNDECIDED, [], state
            ok, new_state = step(state, inputs[entry], outputs[entry])
            if ok:
                if entry == base:
                    # Shift out the run of linearized operations now at the bottom.
                    new_window = window | 1
                    shift = (new_window ^ (new_window + 1)).bit_length() - 1
                    new_window >>= shift
                    new_base = base + shift
                else:
                    new_window = window | (1 << (entry - base))
                    new_base = base
                size = len(cache)
                cache_add((new_base, new_window, new_state))
                if len(cache) == size:  # a configuration seen before, and it failed
                    if forced[entry]:
                        entry = stuck
                        continue
                else:
                    top = (entry, state, base, window, top)
                    depth += 1
                    state = new_state
                    base = new_base
                    window = new_window
                    # Lift the call and the return out of the list.
                    p = prv[entry]
                    q = nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    r = entry + n
                    p = prv[r]
                    q = nxt[r]
                    nxt[p] = q
                    prv[q] = p
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:  # a return: its operation must have been linearized before this point
            if done[entry]:
                return Verdict.LINEARIZABLE, [], state
            if top is None:
                prefix: list[int] = []
                while best_top is not None:
                    prefix.append(by_call[best_top[0]])
                    best_top = best_top[4]
                prefix.reverse()
                return Verdict.NOT_LINEARIZABLE, prefix, best_state
            if depth > best_depth:
                best_depth = depth
                best_top = top
                best_state = state
            i, state, base, window, top = top
            depth -= 1
            # Unlift in the reverse order of the lift: the return first, then the call.
            r = i + n
            p = prv[r]
            q = nxt[r]
            nxt[p] = r
            prv[q] = r
            p = prv[i]
            q = nxt[i]
            nxt[p] = i
            prv[q] = i
            entry = stuck if forced[i] else nxt[i]


def _violation(
    key: str,
    ops: Sequence[ModelOperation[I, O]],
    model: Model[S, I, O],
    prefix: list[int],
    state: S,
    positions: dict[int, int],
) -> Violation:
    """Build the report of a failed part from the deepest point of its search."""

    def report(i: int) -> ReportedOperation:
        op = ops[i]
        index = op.index if op.index is not None else positions.get(id(op), -1)
        return ReportedOperation(index, op.client, model.describe_operation(op), op.call, op.ret)

    placed = set(prefix)
    rest = [i for i in range(len(ops)) if i not in placed]
    # The operations that may come next: called no later than the earliest return among the
    # operations not linearized yet (the same rule the search applies).
    first_return = min((r for i in rest if (r := ops[i].ret) is not None), default=None)
    nexts = [
        i
        for i in rest
        if first_return is not None and ops[i].call <= first_return
        if not model.step(state, ops[i].input, ops[i].output)[0]
    ]
    nexts.sort(key=lambda i: (ops[i].call, i))
    in_call_order = sorted(range(len(ops)), key=lambda i: (ops[i].call, i))
    return Violation(
        key=key,
        operations=tuple(report(i) for i in in_call_order),
        prefix=tuple(report(i) for i in prefix),
        state=model.describe_state(state),
        unplaceable=tuple(report(i) for i in nexts),
    )


def check_operations(
    ops: Sequence[ModelOperation[I, O]],
    model: Model[S, I, O],
    timeout: float | None = None,
) -> CheckResult:
    """Check whether ``ops`` is linearizable with respect to ``model``.

    The history is split with ``model.partition`` and each part is searched on its own,
    smallest first; the search stops at the first part that is not linearizable. ``timeout``
    (seconds, for the whole check; ``None``: no limit) makes the verdict UNDECIDED if it passes
    first. The clock is read every few thousand search steps, so it may overrun slightly.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    parts = model.partition(ops)
    order = sorted(range(len(parts)), key=lambda j: len(parts[j][1]))
    undecided: list[str] = []
    for j in order:
        key, part = parts[j]
        if deadline is not None and time.monotonic() > deadline:
            undecided.append(key)
            continue
        verdict, prefix, state = _search(part, model, deadline)
        if verdict is Verdict.UNDECIDED:
            undecided.append(key)
        elif verdict is Verdict.NOT_LINEARIZABLE:
            positions = {id(op): i for i, op in enumerate(ops)}
            violation = _violation(key, part, model, prefix, state, positions)
            return CheckResult(
                Verdict.NOT_LINEARIZABLE,
                violation,
                tuple(undecided),
                len(parts),
                len(ops),
                time.monotonic() - start,
            )
    verdict = Verdict.UNDECIDED if undecided else Verdict.LINEARIZABLE
    undecided_keys = tuple(sorted(undecided))
    return CheckResult(
        verdict, None, undecided_keys, len(parts), len(ops), time.monotonic() - start
    )


def check(history: Sequence[Operation], timeout: float | None = None) -> CheckResult:
    """Check whether a key-value history is linearizable (a register per key).

    ``timeout`` is in seconds (``None``: no limit). Raises :class:`HistoryFormatError` if an
    operation is malformed. ``CheckResult.operations`` counts every operation given, including
    the indeterminate reads that the model ignores.
    """
    start = time.monotonic()
    ops = kv_operations(history)
    remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
    result = check_operations(ops, KV_REGISTER_MODEL, remaining)
    return CheckResult(
        result.verdict,
        result.violation,
        result.undecided,
        result.partitions,
        len(history),
        time.monotonic() - start,
    )


# --- Rendering -------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 1em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.timeline { overflow-x: auto; border: 1px solid #ccc; }
rect.op { fill: #b8c4d6; stroke: #51606f; }
rect.prefix { fill: #9fd3a4; stroke: #2f7a38; }
rect.unplaceable { fill: #f08c8c; stroke: #a11c1c; stroke-width: 2; }
rect.pending { fill-opacity: 0.45; stroke-dasharray: 4 3; }
text { font-size: 11px; font-family: monospace; pointer-events: none; }
text.client { font-weight: bold; }
"""


def render_html(result: CheckResult) -> str:
    """A self-contained HTML page with an SVG timeline of the violation's key.

    One row per client; each operation is a bar from its call to its return (indeterminate
    ones are dashed and run to the end). Operations of the longest linearizable prefix are
    green, with their linearization position; those that could not be placed after it are
    red. Hovering a bar shows the operation. Raises ValueError if there is no violation.
    """
    v = result.violation
    if v is None:
        raise ValueError("the result has no violation to render")
    ops = v.operations
    clients = sorted({op.client for op in ops})
    row = {c: k for k, c in enumerate(clients)}
    t0 = min((op.call for op in ops), default=0)
    t1 = max([op.call for op in ops] + [op.ret for op in ops if op.ret is not None] + [t0 + 1])
    t_end = t1 + (t1 - t0) * 0.03 + 1
    left, row_h, top = 90, 30, 10
    width = max(1000, min(40000, 14 * len(ops)))
    height = top + row_h * len(clients) + 10

    def x(t: float) -> float:
        return left + (t - t0) / (t_end - t0) * (width - left - 10)

    position = {op.index: k for k, op in enumerate(v.prefix)}
    stuck = {op.index for op in v.unplaceable}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
    ]
    for c in clients:
        y = top + row[c] * row_h
        parts.append(
            f'<text class="client" x="4" y="{y + row_h / 2 + 4}">client {html.escape(str(c))}'
            "</text>"
        )
    for op in ops:
        y = top + row[op.client] * row_h + 4
        x0 = x(op.call)
        x1 = max(x(t_end if op.ret is None else op.ret), x0 + 3)
        classes = ["op"]
        label = op.description
        if op.index in position:
            classes.append("prefix")
            label = f"{position[op.index] + 1}. {label}"
        if op.index in stuck:
            classes.append("unplaceable")
        if op.ret is None:
            classes.append("pending")
        tip = html.escape(str(op))
        parts.append(
            f'<g><title>{tip}</title><rect class="{" ".join(classes)}" x="{x0:.1f}" '
            f'y="{y}" width="{x1 - x0:.1f}" height="{row_h - 8}" rx="3"/>'
            # A nested svg clips the label to its bar.
            f'<svg x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="{row_h - 8}">'
            f'<text x="3" y="{row_h / 2 - 2}">{html.escape(label)}</text></svg></g>'
        )
    parts.append("</svg>")
    title = f"raftpy check: key {html.escape(_json(v.key))} is not linearizable"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1>"
        "<p>Green: the longest linearizable prefix (numbered in linearization order). "
        "Red: operations that could not be linearized after it. Dashed: outcome unknown.</p>"
        f"<div class='timeline'>{''.join(parts)}</div>"
        f"<pre>{html.escape(result.explain())}</pre>"
        "</body></html>\n"
    )
