"""VersionedMap (raftpy.examples.versioned_map) and the hashmap example's snapshots built on it:
a frozen view keeps the state of its moment while writes go on, without a copy."""

from __future__ import annotations

import io
import struct
import threading

import msgspec
import pytest

from raftpy.examples.hashmap import HashMapStateMachine
from raftpy.examples.versioned_map import VersionedMap


def test_a_frozen_view_keeps_its_moment_while_writes_go_on() -> None:
    m: VersionedMap[str, int] = VersionedMap({"a": 1, "b": 2})
    view = m.freeze()
    m["a"] = 10
    m["c"] = 3
    assert dict(view.data) == {"a": 1, "b": 2}  # the view: as of freeze()
    assert (m.get("a"), m.get("b"), m.get("c"), m.get("d", 0)) == (10, 2, 3, 0)
    assert "c" in m and "d" not in m and len(m) == 3
    assert dict(m.items()) == {"a": 10, "b": 2, "c": 3}
    view.release()
    m["d"] = 4  # the next write folds the layer in
    assert dict(view.data) == {"a": 10, "b": 2, "c": 3, "d": 4}  # the same dict, now free
    assert dict(m.items()) == {"a": 10, "b": 2, "c": 3, "d": 4} and len(m) == 4


def test_a_view_never_released_is_never_written_again() -> None:
    # Its reader may still be on its way (or failed before it began): the map goes on from a
    # copy rather than touch that dict.
    m: VersionedMap[str, int] = VersionedMap({"a": 1})
    first = m.freeze()
    m["a"] = 2
    second = m.freeze()
    m["a"] = 3
    m["b"] = 1
    assert dict(first.data) == {"a": 1}
    assert dict(second.data) == {"a": 2}
    second.release()
    m["c"] = 1
    assert dict(first.data) == {"a": 1}
    assert dict(m.items()) == {"a": 3, "b": 1, "c": 1}


def test_a_reader_thread_sees_one_moment_while_the_owner_writes() -> None:
    m: VersionedMap[int, int] = VersionedMap({k: 0 for k in range(20_000)})
    view = m.freeze()
    seen: list[dict[int, int]] = []
    go = threading.Event()

    def read() -> None:
        go.wait(10)
        seen.append(dict(zip(view.data.keys(), view.data.values(), strict=True)))
        view.release()

    reader = threading.Thread(target=read)
    reader.start()
    for k in range(0, 20_000, 2):
        m[k] = 1  # before the reader begins: it must not see these
    go.set()
    for k in range(40_000):
        m[k % 20_000 if k % 2 else 20_000 + k] = 1  # while it reads: changed and new keys
    reader.join(10)
    assert seen == [{k: 0 for k in range(20_000)}]
    assert m.get(1) == 1 and m.get(20_000) == 1 and m.get(0) == 1 and len(m) == 40_000


def _state(sm: HashMapStateMachine) -> dict[str, str]:
    out = io.BytesIO()
    sm.snapshot(out)
    other = HashMapStateMachine()
    other.restore(io.BytesIO(out.getvalue()))
    return dict(other.data.items())


def _put(sm: HashMapStateMachine, key: str, value: str) -> bytes:
    return sm.apply(msgspec.msgpack.encode(("put", key, value)))


def test_a_hashmap_snapshot_holds_the_state_it_was_prepared_at() -> None:
    sm = HashMapStateMachine()
    for k in range(10_000):
        _put(sm, f"k{k}", '"old"')
    write = sm.prepare_snapshot()
    for k in range(0, 10_000, 2):
        assert _put(sm, f"k{k}", '"new"') == b'"old"'
    _put(sm, "extra", "1")
    out = io.BytesIO()
    write(out)
    restored = HashMapStateMachine()
    restored.restore(io.BytesIO(out.getvalue()))
    assert dict(restored.data.items()) == {f"k{k}": '"old"' for k in range(10_000)}
    # The live machine kept every later write, before and after the fold.
    _put(sm, "after", "2")
    live = _state(sm)
    assert live["k0"] == '"new"' and live["k1"] == '"old"' and live["extra"] == "1"
    assert len(live) == 10_002


def test_a_hashmap_snapshot_of_the_first_format_still_restores() -> None:
    # The format before 2026-12-07: (key, value) pairs per batch, no marker.
    pairs = msgspec.msgpack.encode([("a", '"x"'), ("b", "[1]")])
    old = struct.pack(">I", len(pairs)) + pairs + struct.pack(">I", 0)
    sm = HashMapStateMachine()
    sm.restore(io.BytesIO(old))
    assert dict(sm.data.items()) == {"a": '"x"', "b": "[1]"}
    empty = HashMapStateMachine()
    empty.restore(io.BytesIO(struct.pack(">I", 0)))
    assert len(empty.data) == 0


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (msgspec.msgpack.encode((["a", "b"], ['"x"'])), "2 keys and 1 values"),
        (b"\xc1", "malformed hashmap snapshot"),
    ],
)
def test_a_damaged_hashmap_snapshot_is_refused(payload: bytes, why: str) -> None:
    data = b"\xff\xff\xff\xff" + struct.pack(">I", len(payload)) + payload + bytes(4)
    with pytest.raises(ValueError, match=why):
        HashMapStateMachine().restore(io.BytesIO(data))
    with pytest.raises(ValueError, match="ends early"):
        HashMapStateMachine().restore(io.BytesIO(data[:-6]))
