"""ReadOnly: a leader's open ReadIndex requests, from arrival to answer or drop (Thesis §6.4)."""

from __future__ import annotations

import pytest

from raftpy.core.quorum import JointConfig
from raftpy.core.read_only import ReadOnly
from raftpy.core.ready import ReadState
from raftpy.errors import LocalProtocolError

THREE = JointConfig(frozenset({1, 2, 3}))


def test_waiting_reads_come_out_in_arrival_order_once() -> None:
    ro = ReadOnly()
    ro.wait_for_commit(b"a")
    ro.wait_for_commit(b"b")
    assert ro.has_waiting()
    assert ro.take_waiting() == [b"a", b"b"]
    assert not ro.has_waiting()
    assert ro.take_waiting() == []


@pytest.mark.parametrize("waiting", [True, False], ids=["waiting", "confirming"])
def test_a_context_cannot_be_open_twice(waiting: bool) -> None:
    ro = ReadOnly()
    if waiting:
        ro.wait_for_commit(b"a")
        with pytest.raises(LocalProtocolError):
            ro.wait_for_commit(b"a")
    else:
        ro.add_request(5, b"a", 1)
        with pytest.raises(LocalProtocolError):
            ro.add_request(5, b"a", 1)


@pytest.mark.parametrize(
    ("acks", "want"),
    [
        ([], []),
        ([(2, b"b")], [ReadState(4, b"a"), ReadState(5, b"b")]),
        ([(2, b"a")], [ReadState(4, b"a")]),
        ([(2, b"c")], [ReadState(4, b"a"), ReadState(5, b"b"), ReadState(6, b"c")]),
        ([(2, b"x")], []),
    ],
    ids=["none", "later-confirms-earlier", "first-only", "all", "unknown-context"],
)
def test_a_quorum_confirms_a_read_and_every_earlier_one(
    acks: list[tuple[int, bytes]], want: list[ReadState]
) -> None:
    ro = ReadOnly()
    for index, ctx in [(4, b"a"), (5, b"b"), (6, b"c")]:
        ro.add_request(index, ctx, 1)
    got: list[ReadState] = []
    for src, ctx in acks:
        got += ro.recv_ack(src, ctx, THREE.has_quorum)
    assert got == want
    assert ro.pending_count() == 3 - len(want)


def test_reset_drops_every_open_read_until_taken() -> None:
    ro = ReadOnly()
    ro.add_request(4, b"confirming", 1)
    ro.wait_for_commit(b"waiting")
    ro.reset()
    assert (ro.pending_count(), ro.has_waiting(), ro.last_context()) == (0, False, None)
    # Those being confirmed arrived first (the waiting ones exist only before the first commit).
    assert ro.take_dropped() == [b"confirming", b"waiting"]
    assert ro.take_dropped() == []
    ro.reset()
    assert ro.take_dropped() == []
