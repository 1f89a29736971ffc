"""The status fields that describe trouble and long work: ``last_error`` (raftpy.node.last_error)
and snapshot transfers in progress (``SnapshotSenders.senders``,
``SnapshotReceiver.progress``, shown as ``NodeStatus.transfers``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from raftpy.node.last_error import MAX_ERROR_CHARS, LastError
from raftpy.node.transfer import Receiving, SnapshotSenders
from tests.node.test_snapshot_transfer import (
    FOLLOWER,
    LEADER,
    META,
    MemSource,
    answer,
    chunk,
    make_request,
    new_receiver,
    payload,
    probe,
)
from tests.node.test_state_machine_failures import Faulty, leading, one_node
from tests.nodehelpers import running, set_cmd


class ClosingSource(MemSource):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_last_error_keeps_the_latest_and_cuts_long_ones() -> None:
    errors = LastError(clock=lambda: 42.0)
    assert errors.message is None and errors.time is None
    errors.note("first")
    errors.note("x" * 10_000)
    assert errors.message is not None and len(errors.message) == MAX_ERROR_CHARS
    assert errors.message.endswith("...") and errors.time == 42.0


def test_a_sending_transfer_shows_its_acknowledged_bytes() -> None:
    sent: list[object] = []
    senders = SnapshotSenders(LEADER, sent.append, chunk_bytes=100, window_bytes=200)
    before = time.time()
    senders.start(make_request(), ClosingSource(payload(250)))
    (sender,) = senders.senders()
    assert (sender.dst, sender.meta.index, sender.acked, sender.size) == (FOLLOWER, 100, 0, 250)
    assert before <= sender.started <= time.time()
    senders.on_answer(answer(0))
    senders.on_answer(answer(100))
    assert senders.senders()[0].acked == 100
    senders.on_answer(answer(250, done=True))
    assert senders.senders() == []


def test_a_receiving_transfer_shows_the_bytes_it_holds() -> None:
    receiver, _ = new_receiver()
    assert receiver.progress() is None
    data = payload(300)
    receiver.on_chunk(probe(size=300))
    receiver.on_chunk(chunk(0, data[:120], size=300))
    progress = receiver.progress()
    assert progress is not None
    assert progress == Receiving(LEADER, META.index, 120, 300, progress.started)
    assert progress.started <= time.time()


def test_a_raising_apply_is_the_nodes_last_error() -> None:
    async def main() -> None:
        async with running([one_node(Faulty())]) as (node,):
            await leading(node)
            assert node.status().last_error is None
            with pytest.raises(ValueError):
                await node.propose(set_cmd("boom", "1"))
            st = node.status()
            assert st.last_error is not None
            assert st.last_error.startswith("apply of entry ")
            assert st.last_error.endswith("raised ValueError: cannot set boom")
            assert st.last_error_time is not None and abs(st.last_error_time - time.time()) < 5

    asyncio.run(main())


def test_the_nodes_snapshot_work_lists_both_directions() -> None:
    """NodeSnapshots.transfers: what NodeStatus.transfers shows, sending and receiving."""
    from raftpy.node.snapshots import NodeSnapshots
    from raftpy.storage.fs import MemoryFileSystem
    from raftpy.storage.memory import MemoryStorage
    from raftpy.storage.snapshots import SnapshotStore
    from tests.nodehelpers import FAST, KV

    sent: list[object] = []
    snaps = NodeSnapshots(
        FOLLOWER,
        SnapshotStore("/snapshots", fs=MemoryFileSystem()),
        MemoryStorage([1, 2, 3]),
        KV(),
        FAST,
        sent.append,
        lambda: None,
        authority=lambda: (5, LEADER),  # term 5 (TERM), leader 1
    )
    assert snaps.transfers() == ()
    snaps.on_chunk(probe(size=300))
    snaps.on_chunk(chunk(0, payload(300)[:100], size=300))
    snaps._senders.start(make_request(dst=3), ClosingSource(payload(80)))
    send, receive = snaps.transfers()
    assert (send.peer, send.direction, send.index, send.bytes_done, send.size) == (
        3,
        "send",
        100,
        0,
        80,
    )
    assert (receive.peer, receive.direction, receive.index, receive.bytes_done) == (
        LEADER,
        "receive",
        100,
        100,
    )
    assert receive.size == 300 and receive.started <= time.time()
