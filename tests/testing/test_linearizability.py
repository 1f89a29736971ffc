"""Tests of the history format and the linearizability checker (raftpy.testing)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftpy.testing.history import (
    HistoryFormatError,
    HistoryRecorder,
    Operation,
    Value,
    dump_history,
    load_history,
    parse_history,
)
from raftpy.testing.linearizability import (
    KvRegisterModel,
    Verdict,
    check,
    kv_operations,
    render_html,
)

LIN = Verdict.LINEARIZABLE
NOT = Verdict.NOT_LINEARIZABLE


# --- Tiny helpers to write histories as tables ----------------------------------------------


def r(key: str, value: Value, call: int, ret: int | None, client: int = 0) -> Operation:
    """A read of ``key`` that returned ``value`` (None: absent)."""
    return Operation(client=client, op="read", key=key, call=call, ret=ret, value=value)


def w(
    key: str, value: Value, call: int, ret: int | None, client: int = 0, unknown: bool = False
) -> Operation:
    """A write; ``ret=None`` or ``unknown=True`` makes it indeterminate."""
    return Operation(
        client=client, op="write", key=key, call=call, ret=ret, value=value, unknown=unknown
    )


def cas(
    key: str,
    from_: Value,
    to: Value,
    ok: bool | None,
    call: int,
    ret: int | None,
    client: int = 0,
    unknown: bool = False,
) -> Operation:
    """A compare-and-set; ``ok=False``: it completed without swapping."""
    return Operation(
        client=client,
        op="cas",
        key=key,
        call=call,
        ret=ret,
        from_=from_,
        to=to,
        ok=ok,
        unknown=unknown,
    )


CASES: list[Any] = [
    pytest.param([], LIN, id="empty"),
    pytest.param([r("x", None, 0, 1)], LIN, id="initially-absent"),
    pytest.param([r("x", 1, 0, 1)], NOT, id="read-never-written"),
    pytest.param(
        [w("x", 1, 0, 1), r("x", 1, 2, 3), cas("x", 1, 2, True, 4, 5), r("x", 2, 6, 7)],
        LIN,
        id="sequential",
    ),
    pytest.param([w("x", 1, 0, 10), w("x", 2, 20, 30), r("x", 1, 40, 50)], NOT, id="stale-read"),
    pytest.param([w("x", "1", 0, 10), r("x", 1, 20, 30)], NOT, id="string-is-not-int"),
    # A read concurrent with a write may see the old or the new value ...
    pytest.param([w("x", 1, 0, 100), r("x", None, 10, 20)], LIN, id="concurrent-read-old"),
    pytest.param([w("x", 1, 0, 100), r("x", 1, 10, 20)], LIN, id="concurrent-read-new"),
    pytest.param(
        [w("x", 1, 0, 100, client=1), r("x", None, 10, 20), r("x", 1, 30, 40)],
        LIN,
        id="concurrent-old-then-new",
    ),
    # ... but once a later read saw the new value, an even later one cannot see the old.
    pytest.param(
        [w("x", 1, 0, 100, client=1), r("x", 1, 10, 20), r("x", None, 30, 40)],
        NOT,
        id="concurrent-new-then-old",
    ),
    pytest.param(
        [w("x", 1, 0, 50, client=1), w("x", 2, 0, 50, client=2), r("x", 2, 60, 70)],
        LIN,
        id="concurrent-writes-either-order-a",
    ),
    pytest.param(
        [w("x", 1, 0, 50, client=1), w("x", 2, 0, 50, client=2), r("x", 1, 60, 70)],
        LIN,
        id="concurrent-writes-either-order-b",
    ),
    pytest.param(
        [
            w("x", 1, 0, 50, client=1),
            w("x", 2, 0, 50, client=2),
            r("x", 1, 60, 70),
            r("x", 2, 80, 90),
        ],
        NOT,
        id="concurrent-writes-one-order-only",
    ),
    # Touching intervals (return == call) count as concurrent.
    pytest.param([w("x", 1, 0, 10), r("x", None, 10, 20)], LIN, id="touching-is-concurrent"),
    # cas semantics.
    pytest.param([w("x", 1, 0, 1), cas("x", 1, 2, True, 2, 3), r("x", 2, 4, 5)], LIN, id="cas-ok"),
    pytest.param([w("x", 1, 0, 1), cas("x", 1, 2, False, 2, 3)], NOT, id="cas-false-but-equal"),
    pytest.param([w("x", 3, 0, 1), cas("x", 1, 2, False, 2, 3)], LIN, id="cas-false-differs"),
    pytest.param(
        [w("x", 3, 0, 1), cas("x", 1, 2, False, 2, 3), r("x", 2, 4, 5)],
        NOT,
        id="cas-false-does-not-swap",
    ),
    pytest.param([cas("x", 1, 2, True, 0, 1)], NOT, id="cas-ok-on-absent"),
    pytest.param([cas("x", 1, 2, False, 0, 1), r("x", None, 2, 3)], LIN, id="cas-false-on-absent"),
    pytest.param(
        [w("x", 3, 0, 1), cas("x", 3, 4, True, 2, 3), r("x", 3, 4, 5)], NOT, id="cas-lost"
    ),
    # Indeterminate operations: they may take effect any time after the call, or never.
    pytest.param(
        [w("x", 1, 0, 10), w("x", 2, 20, None, client=1), r("x", 2, 30, 40)],
        LIN,
        id="unknown-write-happened",
    ),
    pytest.param(
        [w("x", 1, 0, 10), w("x", 2, 20, None, client=1), r("x", 1, 30, 40)],
        LIN,
        id="unknown-write-not-yet",
    ),
    pytest.param(
        [w("x", 1, 0, 10), w("x", 2, 20, None, client=1), r("x", 1, 30, 40), r("x", 2, 50, 60)],
        LIN,
        id="unknown-write-took-effect-late",
    ),
    pytest.param(
        [w("x", 1, 0, 10), w("x", 2, 20, None, client=1), r("x", 2, 30, 40), r("x", 1, 50, 60)],
        NOT,
        id="unknown-write-cannot-be-undone",
    ),
    pytest.param(
        [w("x", 2, 0, 5, client=1, unknown=True), r("x", None, 20, 30), r("x", 2, 40, 50)],
        LIN,
        id="unknown-with-return-may-act-after-it",
    ),
    pytest.param(
        [w("x", 2, 10, None, client=1), r("x", 2, 0, 5)],
        NOT,
        id="unknown-write-not-before-its-call",
    ),
    pytest.param(
        [w("x", 5, 0, None, client=1), r("x", None, 10, 20), r("x", None, 30, 40)],
        LIN,
        id="unknown-write-never-happened",
    ),
    pytest.param(
        [w("x", 1, 0, 1), cas("x", 1, 2, None, 2, None, client=1), r("x", 1, 10, 11)],
        LIN,
        id="unknown-cas-never-happened",
    ),
    pytest.param(
        [
            w("x", 1, 0, 1),
            cas("x", 1, 2, None, 2, None, client=1),
            r("x", 2, 10, 11),
            r("x", 1, 12, 13),
        ],
        NOT,
        id="unknown-cas-happened-once",
    ),
    pytest.param(
        [w("x", 3, 0, 1), cas("x", 1, 2, None, 2, None, client=1), r("x", 2, 10, 11)],
        NOT,
        id="unknown-cas-cannot-swap-unequal",
    ),
    pytest.param(
        [w("x", 1, 0, 10), r("x", 7, 20, None, client=1)],
        LIN,
        id="unknown-read-reveals-nothing",
    ),
    # Keys are independent registers.
    pytest.param(
        [w("x", 1, 0, 10), r("y", None, 20, 30), w("y", 1, 40, 50), r("x", 1, 60, 70)],
        LIN,
        id="keys-independent",
    ),
    pytest.param(
        [w("x", 1, 0, 10), r("y", 1, 20, 30)],
        NOT,
        id="keys-do-not-share-values",
    ),
]


@pytest.mark.parametrize(("history", "want"), CASES)
def test_verdict(history: list[Operation], want: Verdict) -> None:
    result = check(history)
    assert result.verdict is want, result.explain()
    assert reference_verdict(history) is want  # the table itself agrees with brute force
    assert (result.violation is not None) == (want is NOT)


def test_violation_explains_stale_read() -> None:
    history = [
        w("x", 1, 0, 10, client=1),
        w("y", 5, 5, 15, client=3),
        w("x", 2, 20, 30, client=1),
        r("x", 1, 40, 50, client=2),
    ]
    result = check(history)
    assert result.verdict is NOT
    v = result.violation
    assert v is not None
    assert v.key == "x"
    assert [op.index for op in v.prefix] == [0, 2]
    assert v.state == "2"
    assert [op.index for op in v.unplaceable] == [3]
    assert v.unplaceable[0].client == 2
    text = result.explain()
    assert "not linearizable" in text
    assert 'key "x"' in text
    assert 'read("x") -> 1' in text
    assert "call 40, return 50" in text
    assert 'write("x", 2)' in text


def test_violation_only_in_failing_key() -> None:
    history = [w(k, 1, 10 * i, 10 * i + 5) for i, k in enumerate("abcdef")]
    history.append(r("d", 2, 100, 110))
    result = check(history)
    assert result.verdict is NOT
    assert result.violation is not None
    assert result.violation.key == "d"
    assert {op.index for op in result.violation.operations} == {3, 6}
    assert result.partitions == 6


def test_render_html_marks_failing_ops() -> None:
    history = [w("x", 1, 0, 10), w("x", 2, 20, 30, client=1), r("x", 1, 40, 50, client=2)]
    result = check(history)
    page = render_html(result)
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page and "</svg>" in page
    assert "unplaceable" in page
    assert "client 2" in page
    assert "read(&quot;x&quot;) -&gt; 1" in page
    with pytest.raises(ValueError):
        render_html(check(history[:2]))


def _adversarial(n_writes: int) -> list[Operation]:
    """n concurrent writes of distinct values, then a read of a value none wrote: every order
    of the writes must be tried before giving up (n * 2^n configurations)."""
    ops = [w("x", i, 0, 1000, client=i) for i in range(n_writes)]
    ops.append(r("x", -1, 2000, 2001, client=n_writes))
    return ops


def test_adversarial_small_is_decided() -> None:
    result = check(_adversarial(10))
    assert result.verdict is NOT


def test_undecided_on_tiny_timeout() -> None:
    history = _adversarial(40)
    start = time.monotonic()
    result = check(history, timeout=0.05)
    elapsed = time.monotonic() - start
    assert result.verdict is Verdict.UNDECIDED
    assert result.undecided == ("x",)
    assert result.violation is None
    assert elapsed < 2.0, f"the time limit was overrun: {elapsed:.2f} s"


def test_timeout_zero_leaves_everything_undecided_but_a_violation_still_wins() -> None:
    history = [w("a", 1, 0, 1), r("b", 1, 0, 1)]
    assert check(history, timeout=None).verdict is NOT
    assert check(history[:1], timeout=0.0).verdict is Verdict.UNDECIDED


# --- The history format ---------------------------------------------------------------------

GOOD = (
    b'{"client": 1, "op": "write", "key": "x", "call": 10, "return": 25, "value": 3}\n'
    b'{"client": 2, "op": "read", "key": "x", "call": 12, "return": 30, "value": null}\n'
    b"\n"
    b'{"client": 3, "op": "cas", "key": "x", "call": 40, "return": 51, '
    b'"from": 3, "to": "four", "ok": true}\n'
    b'{"client": 4, "op": "write", "key": "y", "call": 41, "value": "a", "unknown": true}\n'
    b'{"client": 5, "op": "read", "key": "y", "call": 42}\n'
)


def test_parse_good_history() -> None:
    ops = parse_history(GOOD)
    assert ops == [
        w("x", 3, 10, 25, client=1),
        r("x", None, 12, 30, client=2),
        cas("x", 3, "four", True, 40, 51, client=3),
        w("y", "a", 41, None, client=4, unknown=True),
        Operation(client=5, op="read", key="y", call=42),
    ]
    assert [op.indeterminate for op in ops] == [False, False, False, True, True]
    assert check(ops).verdict is LIN


BAD_LINES = [
    pytest.param(b"{", "JSON", id="truncated-json"),
    pytest.param(b"[1, 2]", "object", id="not-an-object"),
    pytest.param(b'{"op": "read", "key": "x", "call": 1, "return": 2, "value": 1}', "client"),
    pytest.param(b'{"client": 1, "op": "get", "key": "x", "call": 1}', "op", id="unknown-op"),
    pytest.param(b'{"client": 1, "op": "read", "key": "x", "call": "1"}', "call", id="str-time"),
    pytest.param(b'{"client": 1, "op": "read", "key": "x", "call": 1, "return": 2}', "value"),
    pytest.param(
        b'{"client": 1, "op": "write", "key": "x", "call": 1, "value": 1.5}', "value", id="float"
    ),
    pytest.param(
        b'{"client": 1, "op": "write", "key": "x", "call": 1, "value": true}', "value", id="bool"
    ),
    pytest.param(b'{"client": 1, "op": "write", "key": "x", "call": 1, "value": null}', "write"),
    pytest.param(b'{"client": 1, "op": "write", "key": "x", "call": 1}', "write", id="no-value"),
    pytest.param(
        b'{"client": 1, "op": "write", "key": "x", "call": 9, "return": 2, "value": 1}',
        "before",
        id="return-before-call",
    ),
    pytest.param(
        b'{"client": 1, "op": "cas", "key": "x", "call": 1, "return": 2, "from": 1, "to": 2}',
        "ok",
        id="cas-without-ok",
    ),
    pytest.param(
        b'{"client": 1, "op": "cas", "key": "x", "call": 1, "return": 2, "to": 2, "ok": true}',
        "from",
        id="cas-without-from",
    ),
    pytest.param(
        b'{"client": 1, "op": "read", "key": "x", "call": 1, "return": 2, "value": 1, "ok": true}',
        "ok",
        id="read-with-ok",
    ),
    pytest.param(
        b'{"client": 1, "op": "read", "key": "x", "call": 1, "retrun": 2, "value": 1}',
        "retrun",
        id="misspelt-field",
    ),
    pytest.param(b"\xff\xfe", "JSON", id="binary"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_malformed_line_is_reported_with_its_number(line: bytes, reason: str) -> None:
    data = GOOD + line + b"\n" + GOOD
    with pytest.raises(HistoryFormatError) as info:
        parse_history(data, source="h.jsonl")
    assert info.value.line == 7
    assert info.value.source == "h.jsonl"
    assert str(info.value).startswith("h.jsonl:7: ")
    assert reason in info.value.reason


def test_check_rejects_malformed_operation() -> None:
    with pytest.raises(HistoryFormatError, match="operation #1"):
        check([w("x", 1, 0, 1), Operation(client=0, op="write", key="x", call=2, ret=3)])


def test_recorder_round_trip(tmp_path: Path) -> None:
    now = iter(range(100, 10_000, 10))
    rec = HistoryRecorder(clock=lambda: next(now))
    a = rec.invoke(1, "write", "x", value=1)
    b = rec.invoke(2, "read", "x")
    c = rec.invoke(3, "cas", "x", from_=1, to=2)
    d = rec.invoke(4, "write", "x", value=9)
    e = rec.invoke(5, "write", "y", value="v")
    rec.complete(a)
    rec.complete(b, 1)
    rec.indeterminate(c)
    rec.fail(d)
    rec.invoke(6, "read", "y")  # never finished
    with pytest.raises(ValueError):
        rec.complete(d)
    rec.complete(e)
    rec.append(cas("y", "v", "w", False, 1000, 1010, client=7))
    ops = rec.operations()
    assert [op.client for op in ops] == [1, 2, 3, 5, 6, 7]
    assert ops[0] == w("x", 1, 100, 150, client=1)
    assert ops[1] == r("x", 1, 110, 160, client=2)
    assert ops[2].indeterminate and ops[2].unknown and ops[2].ret == 170
    assert ops[4].indeterminate and ops[4].ret is None
    path = tmp_path / "history.jsonl"
    rec.write(path)
    assert load_history(path) == ops
    assert parse_history(dump_history(ops)) == ops
    assert check(ops).verdict is NOT  # the cas expected "v" while "v" was there and failed


def test_recorder_rejects_bad_results() -> None:
    rec = HistoryRecorder(clock=lambda: 0)
    h = rec.invoke(1, "cas", "x", from_=1, to=2)
    with pytest.raises(ValueError):
        rec.complete(h, 3)
    with pytest.raises(ValueError):
        rec.invoke(1, "write", "x")


# --- A brute-force reference and property tests ---------------------------------------------

_INF = float("inf")


def reference_verdict(history: list[Operation]) -> Verdict:
    """Linearizability by definition, for tiny histories: try every subset of the
    indeterminate operations and every order of the chosen operations."""
    model = KvRegisterModel()
    ops = kv_operations(history)
    definite = [op for op in ops if op.ret is not None]
    pending = [op for op in ops if op.ret is None]
    for k in range(len(pending) + 1):
        for chosen in itertools.combinations(pending, k):
            for order in itertools.permutations(definite + list(chosen)):
                # Real time: nothing may come after an operation that returned before its call.
                if any(
                    (b.ret if b.ret is not None else _INF) < a.call
                    for i, a in enumerate(order)
                    for b in order[i + 1 :]
                ):
                    continue
                states: dict[str, Value] = {}
                for op in order:
                    key = op.input[1]
                    ok, states[key] = model.step(states.get(key), op.input, op.output)
                    if not ok:
                        break
                else:
                    return LIN
    return NOT


VALUES = st.one_of(st.integers(0, 2), st.sampled_from(["a", "b"]))


@st.composite
def linearizable_histories(draw: st.DrawFn, min_reads: int = 0) -> list[Operation]:
    """Histories produced by a real register per key: operation i takes effect at instant
    10 * i + 5, and its interval is widened at random around that instant (so the order of
    the instants is always a valid linearization). Some writes and cas are indeterminate;
    half of those never took effect."""
    n = draw(st.integers(1, 24))
    reads_at = set(draw(st.lists(st.integers(0, n - 1), min_size=min_reads, max_size=min_reads)))
    registers: dict[str, Value] = {}
    history: list[Operation] = []
    for i in range(n):
        point = 10 * i + 5
        call = point - draw(st.integers(0, 45))
        ret: int | None = point + draw(st.integers(0, 45))
        client = draw(st.integers(0, 5))
        key = draw(st.sampled_from(["x", "y"]))
        kind = "read" if i in reads_at else draw(st.sampled_from(["read", "write", "cas"]))
        unknown = kind != "read" and draw(st.integers(0, 7)) == 0
        happened = not unknown or draw(st.booleans())
        if unknown and draw(st.booleans()):
            ret = None
        current = registers.get(key)
        if kind == "read":
            history.append(r(key, current, call, ret, client=client))
        elif kind == "write":
            value = draw(VALUES)
            if happened:
                registers[key] = value
            history.append(w(key, value, call, ret, client=client, unknown=unknown))
        else:
            expected = draw(VALUES) if current is None or draw(st.booleans()) else current
            to = draw(VALUES)
            swapped = current == expected
            if happened and swapped:
                registers[key] = to
            ok = None if unknown else swapped
            history.append(cas(key, expected, to, ok, call, ret, client=client, unknown=unknown))
    return history


@settings(max_examples=300, deadline=None)
@given(linearizable_histories())
def test_histories_of_a_real_register_are_linearizable(history: list[Operation]) -> None:
    result = check(history)
    assert result.verdict is LIN, result.explain()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linearizable_histories(min_reads=1), st.data())
def test_reading_a_value_never_written_is_not_linearizable(
    history: list[Operation], data: st.DataObject
) -> None:
    # The generator makes every read definite and puts at least one in the history.
    reads = [i for i, op in enumerate(history) if op.op == "read"]
    i = data.draw(st.sampled_from(reads))
    old = history[i]
    history[i] = r(old.key, "never written", old.call, old.ret, client=old.client)
    result = check(history)
    assert result.verdict is NOT
    assert result.violation is not None
    assert result.violation.key == old.key


@st.composite
def arbitrary_histories(draw: st.DrawFn) -> list[Operation]:
    """Small random histories, most of them not linearizable."""
    n = draw(st.integers(1, 6))
    ops = []
    for _ in range(n):
        call = draw(st.integers(0, 30))
        ret: int | None = call + draw(st.integers(0, 15))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        key = draw(st.sampled_from(["x", "x", "y"]))
        unknown = kind != "read" and draw(st.integers(0, 4)) == 0
        if unknown and draw(st.booleans()):
            ret = None
        client = draw(st.integers(0, 3))
        if kind == "read":
            ops.append(r(key, draw(st.one_of(st.none(), st.integers(0, 2))), call, ret, client))
        elif kind == "write":
            ops.append(w(key, draw(st.integers(0, 2)), call, ret, client, unknown=unknown))
        else:
            ok = None if unknown else draw(st.booleans())
            a, b = draw(st.integers(0, 2)), draw(st.integers(0, 2))
            ops.append(cas(key, a, b, ok, call, ret, client, unknown=unknown))
    return ops


@settings(max_examples=500, deadline=None)
@given(arbitrary_histories())
def test_agrees_with_brute_force(history: list[Operation]) -> None:
    assert check(history).verdict is reference_verdict(history)
