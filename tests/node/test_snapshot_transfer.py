"""Unit tests of the chunked, flow-controlled, resumable snapshot transfer
(:mod:`raftpy.node.transfer`): :class:`SnapshotSender` and :class:`SnapshotReceiver`, pure
and deterministic, over in-memory sources and sinks defined here, with the test playing the
network (a lock-step :class:`Link`, or a random lossy :class:`Channel`).

Leader 1 (term 5) streams snapshot index 100 (snapshot term 4) to follower 2; a second leader
is node 3.

Randomized: ``test_random_channel`` runs seeds 0..199 (test ids ``seed17``), each driven by
``random.Random(seed)``, over a channel that delays, reorders, duplicates and drops messages both
ways, with ticks interleaved and verification taking a few ticks; some seeds add a connection
outage (short, or longer than ``give_up_ticks``), a follower restart, and a second transfer (a
newer leader with other bytes, a deposed older leader still streaming, or a brand-new sender for
the same transfer). It checks flow control and that bytes are never corrupt, Completed never
comes twice for one transfer, the transfer ends done (or failed, only for a reason), and that
the core's next attempt then ends done sending only what the follower lacks. Each run prints
its seed and parameters, and every failure message ends with its replay command::

    RAFTPY_TRANSFER_SEED=17 .venv/bin/pytest -q tests/node/test_snapshot_transfer.py -k random -s

(``RAFTPY_TRANSFER_SEED`` also takes a comma-separated list of seeds.)

The "Regressions" section pins down defects found while writing these tests, now fixed: a late
answer from an earlier term, a lost final answer, and a window that is not a multiple of the
chunk size.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from raftpy.core.messages import ConfState, InstallSnapshot, InstallSnapshotResponse, SnapshotMeta
from raftpy.core.ready import SnapshotRequest
from raftpy.node.transfer import (
    Completed,
    SnapshotReceiver,
    SnapshotSender,
    SnapshotSenders,
)

LEADER = 1
FOLLOWER = 2
OTHER_LEADER = 3
TERM = 5
CONF = ConfState(voters=(1, 2, 3))
META = SnapshotMeta(index=100, term=4, conf=CONF)

Msg = InstallSnapshot | InstallSnapshotResponse


def payload(size: int, salt: int = 0) -> bytes:
    """``size`` deterministic pseudo-random bytes (different salts give different bytes)."""
    return random.Random(size * 1_000_003 + salt).randbytes(size)


def make_request(
    *, term: int = TERM, meta: SnapshotMeta = META, dst: int = FOLLOWER
) -> SnapshotRequest:
    """The core's request that starts a transfer (``Ready.snapshot_requests``)."""
    return SnapshotRequest(dst, term, meta)


def ended(sender: SnapshotSender) -> tuple[SnapshotRequest, bool, int]:
    """What a finished sender reports to its core (the request, whether the follower holds
    the snapshot), and how many bytes the follower acknowledged."""
    request, ok = sender.report()
    return request, ok, sender.acked


def chunk(
    offset: int,
    data: bytes,
    *,
    done: bool = False,
    leader: int = LEADER,
    term: int = TERM,
    meta: SnapshotMeta = META,
    size: int = 50,
    transfer: int = 1,
) -> InstallSnapshot:
    """A chunk of a ``size``-byte file (by default PARTIAL's 50 bytes), of transfer 1 (a
    :class:`SnapshotSender`'s id by default)."""
    return InstallSnapshot(term, leader, FOLLOWER, meta, offset, data, done, size, transfer)


def probe(**kw: object) -> InstallSnapshot:
    return chunk(0, b"", **kw)  # type: ignore[arg-type]


def answer(
    offset: int,
    *,
    done: bool = False,
    rejected: bool = False,
    src: int = FOLLOWER,
    dst: int = LEADER,
    term: int = TERM,
    index: int = META.index,
    transfer: int = 1,
    ahead: int = 0,
) -> InstallSnapshotResponse:
    return InstallSnapshotResponse(term, src, dst, index, offset, done, rejected, transfer, ahead)


class MemSource:
    """A snapshot file in memory, read by position; records every read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, n: int) -> bytes:
        self.reads.append((offset, n))
        return self.data[offset : offset + n]


class MemSink:
    """A snapshot file being received, in a bytearray; refuses writes once aborted."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.buf = bytearray()
        self.aborted = False
        self.writes = 0

    @property
    def size(self) -> int:
        return len(self.buf)

    def write(self, data: bytes) -> None:
        assert not self.aborted, f"write to aborted sink {self.tag}"
        self.buf += data
        self.writes += 1


class Authority:
    """The follower's current term and leader, as its core knows them: the receiver takes
    chunks from that leader in that term only (``learn`` plays the leader's heartbeat)."""

    def __init__(self, term: int = TERM, leader: int | None = LEADER) -> None:
        self.term = term
        self.leader = leader

    def __call__(self) -> tuple[int, int | None]:
        return self.term, self.leader

    def learn(self, term: int, leader: int | None) -> None:
        self.term, self.leader = term, leader


class Sinks:
    """The receiver's ``begin``/``abort`` callbacks, recording every sink opened and aborted,
    and the follower's :class:`Authority`."""

    def __init__(self) -> None:
        self.opened: list[MemSink] = []
        self.aborted: list[MemSink] = []
        self.auth = Authority()

    def begin(self, tag: str) -> MemSink:
        sink = MemSink(tag)
        self.opened.append(sink)
        return sink

    def abort(self, sink: MemSink) -> None:
        assert not sink.aborted, f"sink {sink.tag} aborted twice"
        sink.aborted = True
        self.aborted.append(sink)


def new_receiver() -> tuple[SnapshotReceiver[MemSink], Sinks]:
    sinks = Sinks()
    return SnapshotReceiver(sinks.begin, sinks.abort, authority=sinks.auth), sinks


def keep(_m: object) -> bool:
    return False


class Link:
    """One sender and one receiver joined by two FIFO queues, driven step by step.

    Checks flow control on every message the sender emits: a chunk never ends more than
    ``window_bytes`` past the highest offset delivered to the sender so far.
    """

    def __init__(
        self,
        data: bytes,
        *,
        request: SnapshotRequest | None = None,
        leader: int = LEADER,
        receiver: SnapshotReceiver[MemSink] | None = None,
        sinks: Sinks | None = None,
        chunk_bytes: int = 10,
        window_bytes: int = 40,
        retry_ticks: int = 4,
        give_up_ticks: int = 50,
        auto_finish: bool = True,
    ) -> None:
        self.data = data
        self.source = MemSource(data)
        self.request = request or make_request()
        self.sender = SnapshotSender(
            leader,
            self.request,
            self.source,
            chunk_bytes=chunk_bytes,
            window_bytes=window_bytes,
            retry_ticks=retry_ticks,
            give_up_ticks=give_up_ticks,
        )
        if receiver is None:
            receiver, sinks = new_receiver()
        assert sinks is not None
        # The follower knows this leader and term (its heartbeat came first).
        sinks.auth.learn(self.request.term, leader)
        self.receiver = receiver
        self.sinks = sinks
        self.window = window_bytes
        self.auto_finish = auto_finish
        self.to_follower: deque[InstallSnapshot] = deque()
        self.to_leader: deque[InstallSnapshotResponse] = deque()
        self.sent: list[InstallSnapshot] = []
        self.answers: list[InstallSnapshotResponse] = []
        self.completed: list[Completed[MemSink]] = []
        self.acked_seen = 0  # the highest offset delivered to the sender

    def _out(self, messages: list[InstallSnapshot]) -> list[InstallSnapshot]:
        for m in messages:
            end = m.offset + len(m.data)
            assert end - self.acked_seen <= self.window, (
                f"chunk [{m.offset}, {end}) is more than window {self.window} "
                f"past the acknowledged {self.acked_seen}"
            )
            self.sent.append(m)
            self.to_follower.append(m)
        return messages

    @property
    def sink(self) -> MemSink:
        return self.sinks.opened[-1]

    @property
    def in_flight(self) -> bool:
        return bool(self.to_follower or self.to_leader)

    def start(self) -> list[InstallSnapshot]:
        return self._out(self.sender.start())

    def tick(self) -> list[InstallSnapshot]:
        return self._out(self.sender.tick())

    def deliver_to_follower(self, drop: Callable[[InstallSnapshot], bool] = keep) -> None:
        while self.to_follower:
            m = self.to_follower.popleft()
            if drop(m):
                continue
            ans, completed = self.receiver.on_chunk(m)
            if completed is not None:
                assert completed.message.done and completed.message.transfer == m.transfer
                self.completed.append(completed)
            if ans is not None:
                self.answers.append(ans)
                self.to_leader.append(ans)
            if completed is not None and self.auto_finish:
                self.finish(completed, ok=True)

    def finish(self, completed: Completed[MemSink], ok: bool) -> InstallSnapshotResponse:
        final = self.receiver.finished(completed, ok)
        self.answers.append(final)
        self.to_leader.append(final)
        return final

    def deliver_to_leader(self, drop: Callable[[InstallSnapshotResponse], bool] = keep) -> None:
        while self.to_leader:
            a = self.to_leader.popleft()
            if drop(a):
                continue
            if a.src == self.sender.dst and a.index == self.sender.meta.index:
                self.acked_seen = max(self.acked_seen, min(a.offset, self.sender.size))
            self._out(self.sender.on_response(a))

    def round(self) -> None:
        self.deliver_to_follower()
        self.deliver_to_leader()

    def run(self, max_ticks: int = 1000) -> int:
        """Deliver everything, ticking whenever nothing is in flight, until the sender
        finished and the queues are empty; returns the ticks taken."""
        if not self.sent:
            self.start()
        ticks = 0
        while True:
            self.round()
            if self.sender.finished and not self.in_flight:
                return ticks
            if not self.in_flight:
                self.tick()
                ticks += 1
                assert ticks <= max_ticks, f"transfer still running after {max_ticks} ticks"


# ----------------------------------------------------------------------------------------------
# Happy path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 9, 10, 11, 39, 40, 41, 203])
def test_happy_path(size: int) -> None:
    data = payload(size)
    link = Link(data, chunk_bytes=10, window_bytes=40, auto_finish=False)
    first = link.start()
    assert first == [InstallSnapshot(TERM, LEADER, FOLLOWER, META, 0, b"", False, size, 1)]

    # The probe: the follower holds nothing yet and opens a sink for this transfer.
    link.deliver_to_follower()
    assert link.answers == [answer(0)]
    assert len(link.sinks.opened) == 1
    assert link.receiver.receiving
    # Its answer opens the whole window at once.
    link.deliver_to_leader()
    burst = link.sent[1:]
    assert [m.offset for m in burst] == list(range(0, min(size, 40), 10))
    assert sum(len(m.data) for m in burst) == min(size, 40)

    while not link.completed:
        assert link.in_flight, "the transfer stalled without loss"
        link.round()
    chunks = link.sent[1:]
    assert [m.offset for m in chunks] == list(range(0, size, 10))
    assert [len(m.data) for m in chunks] == [min(10, size - off) for off in range(0, size, 10)]
    assert [m.done for m in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(m.meta == META and m.term == TERM for m in chunks)
    assert b"".join(m.data for m in chunks) == data

    # Completed comes exactly once, on the last chunk, with the whole file.
    assert len(link.completed) == 1
    completed = link.completed[0]
    assert completed.message == chunks[-1]
    assert bytes(completed.sink.buf) == data
    assert completed.sink is link.sink and not completed.sink.aborted
    assert not link.sink.aborted and link.sinks.aborted == []
    # Every chunk was answered with the bytes held after it; the last one not yet done.
    assert [a.offset for a in link.answers[1:]] == [m.offset + len(m.data) for m in chunks]
    assert not any(a.done or a.rejected for a in link.answers)
    link.deliver_to_leader()
    assert not link.sender.finished, "done before the follower verified the file"
    assert link.sender.acked == size

    final = link.receiver.finished(completed, ok=True)
    assert final == InstallSnapshotResponse(
        TERM, FOLLOWER, LEADER, META.index, size, True, False, 1
    )
    assert not link.receiver.receiving
    assert link.sender.on_response(final) == []
    assert link.sender.done and link.sender.finished and not link.sender.failed
    assert ended(link.sender) == (make_request(), True, size)
    assert link.sender.bytes_sent == size
    assert link.sender.chunks_sent == math.ceil(size / 10)
    # The sender read each byte of the source exactly once, in order.
    assert link.source.reads == [(m.offset, len(m.data)) for m in chunks]


def test_window_is_refilled_as_acks_arrive() -> None:
    """Each acknowledgement of one chunk lets exactly one more chunk go."""
    data = payload(100)
    link = Link(data, chunk_bytes=10, window_bytes=30)
    link.start()
    link.round()
    assert [m.offset for m in link.sent[1:]] == [0, 10, 20]
    s = link.sender
    assert s.on_response(answer(10)) == [chunk(30, data[30:40], size=100)]
    assert s.on_response(answer(10)) == []  # a repeat of the same offset opens nothing
    assert [m.offset for m in s.on_response(answer(30))] == [40, 50]
    assert s.acked == 30 and s.next == 60


def test_chunk_size_and_window_may_be_equal() -> None:
    data = payload(55)
    link = Link(data, chunk_bytes=8, window_bytes=8)
    assert link.run() == 0
    assert link.sender.done and bytes(link.sink.buf) == data
    assert max(len(m.data) for m in link.sent) == 8


# ----------------------------------------------------------------------------------------------
# Loss: go-back-N
# ----------------------------------------------------------------------------------------------


def drop_first(offset: int, times: int = 1) -> Callable[[InstallSnapshot], bool]:
    """A network that loses the first ``times`` chunks sent at ``offset``."""
    dropped: list[int] = []

    def drop(m: InstallSnapshot) -> bool:
        if m.offset == offset and len(dropped) < times:
            dropped.append(m.offset)
            return True
        return False

    return drop


def test_lost_chunk_is_resent_at_once() -> None:
    """A lost chunk: the chunks after it are held aside and their answers report the gap; the
    second report resends just the lost chunk, without waiting for a retry (TCP's fast
    retransmit); nothing else goes twice and nothing is written twice."""
    data = payload(200)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=4, give_up_ticks=50)
    link.start()
    link.round()  # probe answered: chunks 0, 10, 20, 30 in flight
    assert [m.offset for m in link.to_follower] == [0, 10, 20, 30]

    link.answers.clear()
    link.deliver_to_follower(drop_first(10))
    # Chunks after the gap are held aside, unwritten, and answered with the gap.
    assert link.answers == [answer(10), answer(10, ahead=20), answer(10, ahead=30)]
    assert bytes(link.sink.buf) == data[:10] and link.sink.writes == 1

    sent_before = len(link.sent)
    link.deliver_to_leader()
    # The first answer made progress (chunk 40 goes); the second gap report resends 10.
    assert [m.offset for m in link.sent[sent_before:]] == [40, 10]
    assert link.sender.acked == 10
    link.deliver_to_follower()
    # Chunk 10 closes the gap: 20, 30 and 40, held aside, follow it onto the file.
    assert link.answers[-1] == answer(50) and bytes(link.sink.buf) == data[:50]

    assert link.run() == 0  # no retry timer ever fired
    assert link.sender.done and not link.sender.failed
    assert bytes(link.sink.buf) == data
    assert link.sender.bytes_sent == 200 + 10  # only the lost chunk went twice
    assert link.sink.writes == 20  # each chunk written once


def test_lost_chunk_go_back_n() -> None:
    """The lost chunk's early resend is lost too: after retry_ticks without progress, the
    window goes again from the acknowledged offset (go-back-N)."""
    data = payload(200)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=4, give_up_ticks=50)
    link.start()
    link.round()
    drop = drop_first(10, times=2)
    link.deliver_to_follower(drop)
    link.deliver_to_leader()
    assert [m.offset for m in link.to_follower] == [40, 10]
    link.deliver_to_follower(drop)
    assert link.answers[-1] == answer(10, ahead=40) and link.sink.size == 10
    link.deliver_to_leader()
    assert not link.in_flight  # the gap report was answered once already: no resend storm

    # No progress: nothing for retry_ticks - 1 ticks, then the window again from byte 10.
    assert [link.tick() for _ in range(3)] == [[], [], []]
    resent = link.tick()
    assert resent == [chunk(off, data[off : off + 10], size=200) for off in (10, 20, 30, 40)]

    link.run()
    assert link.sender.done and not link.sender.failed
    assert bytes(link.sink.buf) == data
    assert link.sender.bytes_sent == 200 + 10 + 40
    assert link.sink.writes == 20  # each chunk written once


def test_progress_restarts_the_retry_timer() -> None:
    """go-back-N fires retry_ticks ticks after the last *progress*, not every retry_ticks."""
    data = payload(200)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=4, give_up_ticks=50)
    link.start()
    link.round()
    link.deliver_to_follower()  # chunks 0..30 held; their answers are slow
    assert [link.tick() for _ in range(3)] == [[], [], []]
    link.deliver_to_leader()  # progress: acked 40, chunks 40..70 go
    assert link.sender.acked == 40
    assert [m.offset for m in link.to_follower] == [40, 50, 60, 70]
    link.to_follower.clear()  # ... and are lost
    assert [link.tick() for _ in range(3)] == [[], [], []]
    assert [m.offset for m in link.tick()] == [40, 50, 60, 70]


def test_lost_answers_resend_is_answered_with_held_offset() -> None:
    """Answers lost: the resent chunks are already held, the receiver says so and the sender
    jumps ahead without sending them a third time; nothing is appended twice."""
    data = payload(120)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=3, give_up_ticks=30)
    link.start()
    link.round()
    link.deliver_to_follower()
    assert link.sink.size == 40
    link.deliver_to_leader(drop=lambda a: True)
    assert link.sender.acked == 0
    assert [link.tick() for _ in range(2)] == [[], []]
    assert [m.offset for m in link.tick()] == [0, 10, 20, 30]
    link.answers.clear()
    link.deliver_to_follower()
    assert link.answers == [answer(40)] * 4
    assert link.sink.size == 40 and link.sink.writes == 4
    link.deliver_to_leader()
    assert link.sender.acked == 40
    assert [m.offset for m in link.to_follower] == [40, 50, 60, 70]
    link.run()
    assert link.sender.done and bytes(link.sink.buf) == data
    assert link.sink.writes == 12
    assert link.sender.bytes_sent == 120 + 40


def test_lost_probe_is_repeated() -> None:
    data = payload(30)
    link = Link(data, retry_ticks=2, give_up_ticks=20)
    link.start()
    link.to_follower.clear()
    assert link.tick() == []
    assert link.tick() == [probe(size=30)]
    assert link.run() == 0
    assert link.sender.done and bytes(link.sink.buf) == data
    assert link.sender.bytes_sent == 30


# ----------------------------------------------------------------------------------------------
# Resuming
# ----------------------------------------------------------------------------------------------


def test_connection_drop_costs_about_one_window() -> None:
    size, window = 400, 40
    data = payload(size)
    link = Link(data, chunk_bytes=10, window_bytes=window, retry_ticks=4, give_up_ticks=50)
    link.start()
    link.round()
    while link.sink.size < 150:
        link.round()
    # The connection drops: the receiver got one more window, but its answers are lost, and
    # for 30 ticks (below give_up_ticks) nothing gets through either way.
    link.deliver_to_follower()
    link.to_leader.clear()
    for _ in range(30):
        link.tick()
        link.to_follower.clear()
    assert not link.sender.finished
    held = link.sink.size
    assert link.sender.acked == held - window
    sent_before = link.sender.bytes_sent
    writes_before = link.sink.writes

    link.run()
    assert link.sender.done and bytes(link.sink.buf) == data
    resent = link.sender.bytes_sent - sent_before - (size - held)
    assert 0 <= resent <= window, f"resent {resent} bytes after the drop"
    # The receiver kept its partial file: it appended only what it lacked.
    assert link.sink.writes - writes_before == (size - held) // 10
    assert len(link.sinks.opened) == 1 and link.sinks.aborted == []


def test_new_sender_resumes_at_held_offset() -> None:
    """A leader restarts the transfer (a new SnapshotSender for the same request): the probe
    learns the receiver's offset and only the rest is sent."""
    size, held = 400, 170
    data = payload(size)
    first = Link(data, chunk_bytes=10, window_bytes=40)
    first.start()
    for _ in range(10):
        first.deliver_to_follower(drop=lambda m: m.offset >= held)
        first.deliver_to_leader()
    assert first.sink.size == held and not first.sender.finished

    second = Link(data, receiver=first.receiver, sinks=first.sinks, chunk_bytes=10)
    second.start()
    second.deliver_to_follower()
    assert second.answers == [answer(held)]
    second.deliver_to_leader()
    assert second.sender.acked == held
    assert second.source.reads[0] == (held, 10)
    second.run()
    assert second.sender.done and bytes(second.sink.buf) == data
    assert second.sender.bytes_sent == size - held
    assert min(off for off, _ in second.source.reads) == held
    assert ended(second.sender) == (make_request(), True, size)
    assert len(first.sinks.opened) == 1 and first.sinks.aborted == []


def test_new_sender_resumes_with_another_chunk_size() -> None:
    """The held offset need not be a multiple of the new sender's chunk size."""
    size, held = 300, 130
    data = payload(size)
    first = Link(data, chunk_bytes=10, window_bytes=40)
    first.start()
    for _ in range(10):
        first.deliver_to_follower(drop=lambda m: m.offset >= held)
        first.deliver_to_leader()
    second = Link(data, receiver=first.receiver, sinks=first.sinks, chunk_bytes=16, window_bytes=32)
    second.run()
    assert second.sender.done and bytes(second.sink.buf) == data
    assert second.sender.bytes_sent == size - held
    assert [off for off, _ in second.source.reads][:3] == [130, 146, 162]


def test_new_leader_term_starts_over() -> None:
    """A partial from leader 1 (term 5) is no use to leader 3 (term 6) with other bytes: the
    new transfer starts from 0 in a new sink and the old partial is aborted."""
    size = 200
    old = Link(payload(size, salt=1), chunk_bytes=10, window_bytes=40)
    old.start()
    for _ in range(10):
        old.deliver_to_follower(drop=lambda m: m.offset >= 100)
        old.deliver_to_leader()
    assert old.sink.size == 100
    old_sink = old.sink

    new_data = payload(size, salt=2)
    new = Link(
        new_data,
        request=make_request(term=TERM + 1),
        leader=OTHER_LEADER,
        receiver=old.receiver,
        sinks=old.sinks,
    )
    new.run()
    assert new.sender.done and new.sender.bytes_sent == size
    assert new.sink is not old_sink and bytes(new.sink.buf) == new_data
    assert old.sinks.aborted == [old_sink]
    assert bytes(old_sink.buf) == old.data[:100]


# ----------------------------------------------------------------------------------------------
# Giving up, rejection, the end of a transfer
# ----------------------------------------------------------------------------------------------


def test_gives_up_after_give_up_ticks_without_answer() -> None:
    sender = SnapshotSender(
        LEADER,
        make_request(),
        MemSource(payload(50)),
        chunk_bytes=10,
        window_bytes=20,
        retry_ticks=4,
        give_up_ticks=10,
    )
    assert sender.start() == [probe()]
    out = [sender.tick() for _ in range(9)]
    # The probe is repeated every retry_ticks while nobody answers.
    assert out == [[], [], [], [probe()], [], [], [], [probe()], []]
    assert not sender.finished
    assert sender.tick() == []
    assert sender.failed and sender.finished and not sender.done
    assert ended(sender) == (make_request(), False, 0)
    # A finished sender does nothing more, whatever arrives.
    assert [sender.tick() for _ in range(20)] == [[]] * 20
    assert sender.on_response(answer(0)) == []
    assert sender.on_response(answer(50, done=True)) == []
    assert sender.failed and not sender.done
    assert ended(sender) == (make_request(), False, 0)
    assert sender.chunks_sent == 0 and sender.bytes_sent == 0


def test_gives_up_mid_transfer_and_reports_acked_offset() -> None:
    data = payload(200)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=3, give_up_ticks=12)
    link.start()
    link.round()
    link.round()  # the first window is acknowledged: 40 bytes held
    link.to_follower.clear()
    assert link.sender.acked == 40
    ticks = 0
    while not link.sender.finished:
        link.tick()
        link.to_follower.clear()  # the follower is gone
        ticks += 1
    # The silence started with the last answer: give_up_ticks ticks later the sender fails.
    assert ticks == 12
    assert link.sender.failed
    assert ended(link.sender) == (make_request(), False, 40)


def test_answers_keep_sender_alive_past_give_up_ticks() -> None:
    """give_up_ticks counts ticks without *any* answer, not the transfer's length."""
    data = payload(300)
    link = Link(data, chunk_bytes=10, window_bytes=10, retry_ticks=2, give_up_ticks=3)
    ticks = 0
    link.start()
    while not link.sender.finished:
        link.round()
        link.tick()  # one tick per round trip: far more ticks than give_up_ticks in all
        ticks += 1
    assert ticks > 3 and link.sender.done and bytes(link.sink.buf) == data


def test_done_sender_ignores_everything() -> None:
    data = payload(25)
    link = Link(data)
    link.run()
    s = link.sender
    assert s.done and s.report() == (make_request(), True)
    sent = s.bytes_sent
    assert [s.tick() for _ in range(200)] == [[]] * 200
    assert s.on_response(answer(0)) == []
    assert s.on_response(answer(0, rejected=True)) == []
    assert s.done and not s.failed and s.bytes_sent == sent
    assert ended(s) == (make_request(), True, 25)


def test_rejected_file_fails_sender_and_receiver_starts_over() -> None:
    data = payload(64)
    link = Link(data, chunk_bytes=16, window_bytes=32, auto_finish=False)
    link.start()
    while not link.completed:
        link.round()
    link.deliver_to_leader()
    completed = link.completed[0]
    final = link.finish(completed, ok=False)
    assert final == InstallSnapshotResponse(TERM, FOLLOWER, LEADER, 100, 64, False, True, 1)
    assert not link.receiver.receiving
    # The sink now belongs to the driver: the receiver does not abort it itself.
    assert link.sinks.aborted == []
    link.deliver_to_leader()
    assert link.sender.failed and not link.sender.done
    assert ended(link.sender) == (make_request(), False, 64)
    assert link.sender.tick() == []

    # The key is not remembered as completed: a late chunk of it is refused ...
    assert link.receiver.on_chunk(chunk(16, data[16:32])) == (REFUSED, None)
    # ... and a new transfer (here the same leader restarting it) starts from 0 in a new sink.
    again = Link(data, receiver=link.receiver, sinks=link.sinks, chunk_bytes=16, window_bytes=32)
    again.run()
    assert again.sender.done and again.sender.bytes_sent == 64
    assert len(link.sinks.opened) == 2 and bytes(link.sinks.opened[1].buf) == data
    assert len(again.completed) == 1


def test_rejected_answer_before_completion_fails_sender() -> None:
    """A receiver that cannot store the file (the node answers ``rejected``) ends it."""
    link = Link(payload(100))
    link.start()
    link.round()
    assert link.sender.on_response(answer(10, rejected=True)) == []
    assert link.sender.failed and link.sender.report() == (make_request(), False)


# ----------------------------------------------------------------------------------------------
# Answers the sender must not take
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "foreign",
    [
        {"src": OTHER_LEADER},
        {"src": LEADER},
        {"index": META.index + 1},
        {"index": META.index - 1},
    ],
    ids=["other-node", "own-id", "newer-index", "older-index"],
)
def test_sender_ignores_answers_for_other_transfers(foreign: dict[str, int]) -> None:
    data = payload(100)
    link = Link(data, chunk_bytes=10, window_bytes=20, retry_ticks=3, give_up_ticks=10)
    link.start()
    link.round()
    s = link.sender
    assert (s.acked, s.next) == (0, 20)
    for a in (
        answer(20, **foreign),
        answer(100, done=True, **foreign),
        answer(0, rejected=True, **foreign),
        answer(10_000, **foreign),
    ):
        assert s.on_response(a) == [], a
        assert not s.finished, a
        assert (s.acked, s.next) == (0, 20), a
    # Foreign answers do not count as signs of life either.
    for _ in range(10):
        s.tick()
        if s.finished:
            break
        s.on_response(answer(0, **foreign))
    assert s.failed


def test_answer_beyond_size_fails_sender() -> None:
    link = Link(payload(100))
    link.start()
    link.round()
    s = link.sender
    assert s.on_response(answer(100)) == []  # offset == size is fine: all held
    assert s.acked == 100 and not s.finished
    s2 = Link(payload(100)).sender
    s2.start()
    assert s2.on_response(answer(101)) == []
    assert s2.failed and not s2.done
    assert s2.report() == (make_request(), False)
    assert s2.bytes_sent == 0


def test_probe_answer_of_whole_file_waits_for_done() -> None:
    """The receiver holds every byte (it is verifying): nothing is sent, done comes later."""
    s = Link(payload(100)).sender
    s.start()
    assert s.on_response(answer(100)) == []
    assert s.acked == 100 and not s.finished and s.bytes_sent == 0
    assert s.on_response(answer(100, done=True)) == []
    assert s.done and ended(s) == (make_request(), True, 100)


# ----------------------------------------------------------------------------------------------
# Keys: bytes of one transfer are never continued with bytes of another
# ----------------------------------------------------------------------------------------------

PARTIAL = payload(50, salt=7)

OTHER_KEYS = [
    pytest.param({"leader": OTHER_LEADER}, id="other-leader"),
    pytest.param({"term": TERM + 1}, id="newer-leader-term"),
    pytest.param({"meta": SnapshotMeta(101, 4, CONF)}, id="other-index"),
    pytest.param({"meta": SnapshotMeta(100, 3, CONF)}, id="other-snapshot-term"),
    pytest.param({"leader": OTHER_LEADER, "term": TERM + 1}, id="new-leader"),
]


def partial_receiver(held: int = 20) -> tuple[SnapshotReceiver[MemSink], Sinks, MemSink]:
    """A receiver holding the first ``held`` bytes of leader 1's PARTIAL."""
    receiver, sinks = new_receiver()
    assert receiver.on_chunk(probe()) == (answer(0), None)
    for off in range(0, held, 10):
        assert receiver.on_chunk(chunk(off, PARTIAL[off : off + 10])) == (answer(off + 10), None)
    assert len(sinks.opened) == 1
    return receiver, sinks, sinks.opened[0]


def answer_to(
    m: InstallSnapshot, offset: int, *, done: bool = False, rejected: bool = False
) -> InstallSnapshotResponse:
    """The receiver's answer to ``m``."""
    ahead = m.offset if m.offset > offset and not (done or rejected) else 0
    return InstallSnapshotResponse(
        m.term, FOLLOWER, m.src, m.meta.index, offset, done, rejected, m.transfer, ahead
    )


REFUSED = answer(0, rejected=True)  # "I hold nothing of this transfer": the sender ends


def new_authority(other: dict[str, object]) -> bool:
    """Whether the key ``other`` names another leader or term (the follower takes its chunks
    only once it learned them from that leader's heartbeat)."""
    return "leader" in other or "term" in other


def learn(sinks: Sinks, other: dict[str, object]) -> None:
    """The follower hears the heartbeat of the leader of the key ``other``."""
    sinks.auth.learn(int(other.get("term", TERM)), int(other.get("leader", LEADER)))  # type: ignore[call-overload]


@pytest.mark.parametrize("other", OTHER_KEYS)
def test_chunk_of_another_key_is_not_appended(other: dict[str, object]) -> None:
    """Another transfer's chunk that starts exactly where the partial ends is still not
    appended to it: it is refused (nothing held of *that* transfer: offset 0, rejected), or,
    from a leader or term the follower does not know (yet), dropped unanswered."""
    receiver, sinks, sink = partial_receiver(held=20)
    if new_authority(other):
        for done in (False, True):
            m = chunk(20, b"X" * 10, done=done, **other)  # type: ignore[arg-type]
            assert receiver.on_chunk(m) == (None, None)
        assert receiver.refused == 2
        learn(sinks, other)
    for done in (False, True):
        m = chunk(20, b"X" * 10, done=done, **other)  # type: ignore[arg-type]
        assert receiver.on_chunk(m) == (answer_to(m, 0, rejected=True), None)
    assert bytes(sink.buf) == PARTIAL[:20] and sink.writes == 2
    assert len(sinks.opened) == 1 and sinks.aborted == []
    nxt = chunk(20, PARTIAL[20:30])
    if new_authority(other):
        # The original leader is deposed: its chunks are dropped unwritten.
        assert receiver.on_chunk(nxt) == (None, None)
        assert bytes(sink.buf) == PARTIAL[:20]
    else:
        # The original transfer goes on where it was.
        assert receiver.on_chunk(nxt) == (answer(30), None)
        assert bytes(sink.buf) == PARTIAL[:30]


@pytest.mark.parametrize("other", OTHER_KEYS)
def test_new_transfer_from_offset_0_replaces_partial(other: dict[str, object]) -> None:
    receiver, sinks, old_sink = partial_receiver(held=20)
    fresh = payload(30, salt=9)
    if new_authority(other):
        learn(sinks, other)
    m = chunk(0, fresh[:10], size=30, **other)  # type: ignore[arg-type]
    assert receiver.on_chunk(m) == (answer_to(m, 10), None)
    assert sinks.aborted == [old_sink]
    assert len(sinks.opened) == 2
    new_sink = sinks.opened[1]
    assert bytes(new_sink.buf) == fresh[:10]
    assert bytes(old_sink.buf) == PARTIAL[:20]
    # The old transfer's next chunks go nowhere: dropped (its leader is deposed) or refused (it
    # is unknown now); in neither case appended to the new partial.
    stale = None if new_authority(other) else REFUSED
    assert receiver.on_chunk(chunk(20, PARTIAL[20:30])) == (stale, None)
    assert receiver.on_chunk(chunk(10, PARTIAL[10:20], done=True)) == (stale, None)
    assert bytes(new_sink.buf) == fresh[:10] and bytes(old_sink.buf) == PARTIAL[:20]
    m = chunk(10, fresh[10:30], done=True, size=30, **other)  # type: ignore[arg-type]
    ans, completed = receiver.on_chunk(m)
    assert ans == answer_to(m, 30)
    assert completed is not None and bytes(completed.sink.buf) == fresh
    assert completed.sink is new_sink and len(sinks.opened) == 2


def test_older_leader_term_is_ignored() -> None:
    receiver, sinks, sink = partial_receiver(held=20)
    for m in (
        probe(term=TERM - 1),
        chunk(0, PARTIAL[:10], term=TERM - 1),
        chunk(20, PARTIAL[20:30], term=TERM - 1),
        probe(term=TERM - 1, leader=OTHER_LEADER),
        probe(term=TERM - 1, meta=SnapshotMeta(200, 4, CONF)),
    ):
        assert receiver.on_chunk(m) == (None, None), m
    assert sinks.aborted == [] and len(sinks.opened) == 1
    assert bytes(sink.buf) == PARTIAL[:20]
    assert receiver.on_chunk(chunk(20, PARTIAL[20:30])) == (answer(30), None)


def test_unknown_key_with_nonzero_offset_is_refused() -> None:
    receiver, sinks = new_receiver()
    for m in (chunk(30, b"y" * 10, done=True), chunk(10, b"y" * 10)):
        assert receiver.on_chunk(m) == (REFUSED, None)
    assert sinks.opened == [] and not receiver.receiving


def test_duplicate_and_late_chunks_of_same_key() -> None:
    receiver, sinks, sink = partial_receiver(held=30)
    # A repeat of a held chunk, a repeat probe: answered, not written.
    for m in (chunk(10, PARTIAL[10:20]), probe(), chunk(0, b"z")):
        assert receiver.on_chunk(m) == (answer(30), None), m
    # A chunk past the end: answered with the gap it leaves, held aside, not written.
    assert receiver.on_chunk(chunk(40, PARTIAL[40:50])) == (answer(30, ahead=40), None)
    assert bytes(sink.buf) == PARTIAL[:30] and sink.writes == 3
    assert len(sinks.opened) == 1


def test_other_transfers_ignored_while_verifying() -> None:
    receiver, sinks, sink = partial_receiver(held=40)
    last = chunk(40, PARTIAL[40:50], done=True)
    ans, completed = receiver.on_chunk(last)
    assert ans == answer(50) and completed is not None
    assert completed == Completed(last, sink) and bytes(sink.buf) == PARTIAL
    # Verifying: another (even newer) transfer is ignored, the partial is not aborted.
    for m in (
        probe(term=TERM + 1, leader=OTHER_LEADER),
        chunk(0, b"n" * 10, term=TERM + 1),
        chunk(50, b"n" * 10, meta=SnapshotMeta(101, 4, CONF), size=60),
    ):
        assert receiver.on_chunk(m) == (None, None), m
    # The same transfer's repeats are answered with the whole size, never completed again.
    for m in (probe(), chunk(0, PARTIAL[:10]), last, chunk(50, b"", done=True)):
        assert receiver.on_chunk(m) == (answer(50), None), m
    # A byte past its announced size is refused; the file being verified is not touched.
    assert receiver.on_chunk(chunk(50, b"w", done=True)) == (REFUSED, None)
    assert sinks.aborted == [] and len(sinks.opened) == 1 and bytes(sink.buf) == PARTIAL

    assert receiver.finished(completed, ok=True) == answer(50, done=True)
    assert not receiver.receiving
    # Done: any repeat of this transfer is told so, and nothing is opened for it.
    for m in (probe(), chunk(20, PARTIAL[20:30]), last):
        ans, again = receiver.on_chunk(m)
        assert again is None and ans is not None, m
        assert ans.done and not ans.rejected, m
        assert (ans.term, ans.src, ans.dst, ans.index) == (TERM, FOLLOWER, LEADER, 100)
    assert len(sinks.opened) == 1
    # And the next transfer is taken again, once its leader is known.
    sinks.auth.learn(TERM + 1, OTHER_LEADER)
    m = probe(term=TERM + 1, leader=OTHER_LEADER)
    assert receiver.on_chunk(m) == (answer_to(m, 0), None)
    assert len(sinks.opened) == 2 and sinks.aborted == []


def test_completed_key_still_known_after_another_transfer() -> None:
    receiver, sinks = new_receiver()
    a = Link(PARTIAL, receiver=receiver, sinks=sinks)
    a.run()
    other = payload(40, salt=3)
    b = Link(
        other,
        request=make_request(meta=SnapshotMeta(120, 5, CONF)),
        receiver=receiver,
        sinks=sinks,
    )
    b.run()
    assert a.sender.done and b.sender.done
    ans, completed = receiver.on_chunk(probe())
    assert completed is None and ans is not None and ans.done
    assert len(sinks.opened) == 2
    # A brand-new sender for the finished transfer is done at once, sending no byte.
    again = Link(PARTIAL, receiver=receiver, sinks=sinks)
    again.run()
    assert again.sender.done and again.sender.bytes_sent == 0
    assert ended(again.sender) == (make_request(), True, len(PARTIAL))


def test_reset_aborts_partial_but_not_a_file_being_verified() -> None:
    receiver, sinks, sink = partial_receiver(held=20)
    receiver.reset()
    assert sinks.aborted == [sink] and not receiver.receiving
    assert receiver.on_chunk(chunk(20, PARTIAL[20:30])) == (REFUSED, None)
    receiver.reset()  # nothing to abort

    receiver, sinks, sink = partial_receiver(held=40)
    _, completed = receiver.on_chunk(chunk(40, PARTIAL[40:], done=True))
    assert completed is not None
    receiver.reset()
    assert sinks.aborted == []  # the driver owns the sink being verified
    assert receiver.finished(completed, ok=True) == answer(50, done=True)


# ----------------------------------------------------------------------------------------------
# Who may write, and how much: the current leader of the current term, up to the announced size
# ----------------------------------------------------------------------------------------------


def test_chunks_from_anyone_but_the_current_leader_of_its_term_open_and_write_nothing() -> None:
    receiver, sinks = new_receiver()  # the follower knows leader 1 in term 5
    data = PARTIAL[:10]
    refused = [
        probe(term=TERM - 1),  # a deposed leader
        chunk(0, data, term=TERM - 1),
        probe(term=TERM + 1),  # a newer term, not learned yet
        chunk(0, data, term=TERM + 1, leader=OTHER_LEADER),
        chunk(0, data, leader=OTHER_LEADER),  # not the leader of this term
        chunk(0, data, leader=FOLLOWER),
    ]
    for m in refused:
        assert receiver.on_chunk(m) == (None, None), m
    # No leader known in this term (just voted, say): nobody's chunks are taken.
    sinks.auth.learn(TERM, None)
    assert receiver.on_chunk(probe()) == (None, None)
    assert sinks.opened == [] and not receiver.receiving
    assert receiver.refused == len(refused) + 1
    # The leader's heartbeat arrives: its chunks are taken.
    sinks.auth.learn(TERM, LEADER)
    assert receiver.on_chunk(chunk(0, data)) == (answer(10), None)
    assert len(sinks.opened) == 1 and bytes(sinks.opened[0].buf) == data


def test_a_newer_leader_transfer_resumes_once_its_heartbeat_taught_the_term() -> None:
    data = payload(100)
    link = Link(data, request=make_request(term=TERM + 1), leader=OTHER_LEADER)
    link.sinks.auth.learn(TERM, LEADER)  # the new leader's heartbeat has not arrived yet
    link.start()
    for _ in range(12):  # probes are dropped unanswered; the sender retries
        link.round()
        link.tick()
    assert link.sinks.opened == [] and link.answers == [] and not link.sender.finished
    assert link.receiver.refused >= 3
    link.sinks.auth.learn(TERM + 1, OTHER_LEADER)
    link.run()
    assert link.sender.done and bytes(link.sink.buf) == data


def test_a_never_ending_stale_term_transfer_writes_nothing_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, sinks = new_receiver()
    sinks.auth.learn(TERM + 1, OTHER_LEADER)  # leader 1 of term 5 was deposed
    block = b"s" * 4096
    with caplog.at_level(logging.WARNING, logger="raftpy.snapshot"):
        for k in range(5000):  # 20 MB of a file that "never ends"
            m = InstallSnapshot(TERM, LEADER, FOLLOWER, META, k * 4096, block, False, 1 << 40)
            assert receiver.on_chunk(m) == (None, None)
    assert sinks.opened == [] and receiver.refused == 5000
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "term 5 is stale (ours is 6)" in lines[0].getMessage()


def test_refusal_log_lines_are_rate_limited_across_transfers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    sinks = Sinks()
    receiver = SnapshotReceiver(
        sinks.begin, sinks.abort, authority=sinks.auth, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="raftpy.snapshot"):
        for k in range(100):  # a new (stale) transfer every chunk
            receiver.on_chunk(probe(term=TERM - 1, meta=SnapshotMeta(1000 + k, 1, CONF)))
        now[0] = 1.5
        receiver.on_chunk(probe(term=TERM - 1))
    assert receiver.refused == 101
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 2


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(chunk(20, b"x" * 31), id="chunk-ends-past-the-size"),
        pytest.param(chunk(20, b"x" * 10, size=60), id="another-size-announced"),
        pytest.param(chunk(20, b"x" * 10, size=20), id="a-smaller-size-announced"),
        pytest.param(chunk(20, b"x" * 10, done=True), id="last-chunk-leaves-it-short"),
    ],
)
def test_bytes_past_the_announced_size_end_the_transfer_and_delete_the_partial(
    bad: InstallSnapshot,
) -> None:
    receiver, sinks, sink = partial_receiver(held=20)  # a 50-byte file, 20 bytes held
    assert receiver.on_chunk(bad) == (REFUSED, None)
    assert sinks.aborted == [sink] and not receiver.receiving
    assert bytes(sink.buf) == PARTIAL[:20] and sink.writes == 2  # nothing more was written
    assert receiver.refused == 1
    # Its next chunks find nothing to continue: refused, so the sender ends.
    assert receiver.on_chunk(chunk(20, PARTIAL[20:30])) == (REFUSED, None)
    assert len(sinks.opened) == 1


def test_a_first_chunk_past_its_own_size_opens_nothing() -> None:
    receiver, sinks = new_receiver()
    for m in (chunk(0, b"x" * 11, size=10), chunk(0, b"x", size=0)):
        assert receiver.on_chunk(m) == (REFUSED, None)
    # A sender that announces no size (0) may probe, never write.
    assert receiver.on_chunk(probe(size=0)) == (answer(0), None)
    assert receiver.on_chunk(chunk(0, b"x", size=0)) == (REFUSED, None)
    assert [s.writes for s in sinks.opened] == [0] and sinks.aborted == sinks.opened


def test_the_sender_announces_the_file_size_in_every_chunk() -> None:
    link = Link(payload(95), chunk_bytes=10, window_bytes=40)
    link.run()
    assert link.sender.done
    assert {m.size for m in link.sent} == {95}


# ----------------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk_bytes", "window_bytes", "retry_ticks", "give_up_ticks"),
    [
        (0, 10, 4, 100),
        (-1, 10, 4, 100),
        (11, 10, 4, 100),
        (10, 10, 0, 100),
        (10, 10, 5, 5),
        (10, 10, 6, 5),
    ],
)
def test_constructor_validation(
    chunk_bytes: int, window_bytes: int, retry_ticks: int, give_up_ticks: int
) -> None:
    with pytest.raises(ValueError, match="need 1 <="):
        SnapshotSender(
            LEADER,
            make_request(),
            MemSource(b"abc"),
            chunk_bytes=chunk_bytes,
            window_bytes=window_bytes,
            retry_ticks=retry_ticks,
            give_up_ticks=give_up_ticks,
        )


def test_constructor_accepts_boundaries() -> None:
    s = SnapshotSender(
        LEADER,
        make_request(),
        MemSource(b"abc"),
        chunk_bytes=1,
        window_bytes=1,
        retry_ticks=1,
        give_up_ticks=2,
    )
    assert (s.size, s.dst, s.meta, s.acked, s.next) == (3, FOLLOWER, META, 0, 0)
    assert not s.finished


def test_short_read_raises_oserror() -> None:
    class Truncated(MemSource):
        def read(self, offset: int, n: int) -> bytes:
            return super().read(offset, n)[:-1]

    s = SnapshotSender(
        LEADER, make_request(), Truncated(payload(30)), chunk_bytes=10, window_bytes=20
    )
    s.start()
    with pytest.raises(OSError, match="short read"):
        s.on_response(answer(0))


# ----------------------------------------------------------------------------------------------
# Regressions (defects found by these tests, fixed)
# ----------------------------------------------------------------------------------------------


def test_follower_restart_mid_transfer_refuses_and_new_transfer_starts_over() -> None:
    """The follower restarted and lost its partial file: the next chunk is refused, the sender
    fails at once (rather than resending into the void forever) and the core's next transfer
    sends the whole file again."""
    data = payload(200)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=4, give_up_ticks=50)
    link.start()
    while link.sender.acked < 80:
        link.round()
    link.to_follower.clear()
    link.to_leader.clear()
    old_sink = link.sink
    link.receiver.reset()  # the follower restarted: its partial file is gone
    assert link.sinks.aborted == [old_sink]
    ticks = link.run(max_ticks=10)
    assert ticks == 4  # the first go-back-N resend is refused
    assert link.sender.failed and not link.sender.done
    assert link.answers[-1] == REFUSED
    assert ended(link.sender) == (make_request(), False, 80)

    again = Link(data, receiver=link.receiver, sinks=link.sinks)
    again.run()
    assert again.sender.done and again.sender.bytes_sent == 200
    assert again.sink is not old_sink and bytes(again.sink.buf) == data


def _stuck_at_120(data: bytes) -> Link:
    """A transfer of ``data`` in 10-byte chunks whose follower holds 120 bytes: every chunk
    from offset 120 on was lost, ten rounds running."""
    link = Link(data, chunk_bytes=10, window_bytes=40)
    link.start()
    for _ in range(10):
        link.deliver_to_follower(drop=lambda m: m.offset >= 120)
        link.deliver_to_leader()
    assert link.sink.size == 120
    return link


def test_late_answer_from_older_term_is_ignored() -> None:
    data = payload(200)
    old = _stuck_at_120(data)
    # The same node leads again in a newer term and restarts the transfer.
    new = Link(data, request=make_request(term=TERM + 1), receiver=old.receiver, sinks=old.sinks)
    new.start()
    new.deliver_to_follower()  # the newer term's probe replaces the old partial
    assert new.answers == [answer(0, term=TERM + 1)]
    new.to_leader.appendleft(answer(120, term=TERM))  # late answer of the old transfer
    for _ in range(500):
        new.round()
        new.tick()
        if new.sender.finished:
            break
    assert new.sender.finished, (
        f"neither done nor failed after 500 ticks: acked {new.sender.acked}, "
        f"the receiver holds {new.sink.size}"
    )
    if new.sender.done:
        assert bytes(new.sink.buf) == data


def test_lost_final_answer_still_ends_done() -> None:
    data = payload(100)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=4, give_up_ticks=50)
    link.start()
    while True:
        link.deliver_to_follower()
        if link.completed:
            break  # the final answer is queued, not yet delivered
        link.deliver_to_leader()
    assert link.answers[-1].done
    link.deliver_to_leader(drop=lambda a: a.done)  # only the final answer is lost
    assert link.sender.acked == 100 and not link.sender.finished
    for _ in range(200):
        link.tick()
        link.round()
        if link.sender.finished:
            break
    assert link.sender.done, "the follower holds the snapshot, yet the transfer failed"


def test_follower_that_lost_a_whole_acknowledged_file_ends_the_transfer() -> None:
    """The follower restarted while verifying the whole file: it answers every probe with
    offset 0 (a sign of life each time), so the sender, which holds every byte acknowledged,
    used to probe forever. It now ends the transfer (the core starts a new one)."""
    data = payload(40)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=2, give_up_ticks=20)
    link.auto_finish = False
    link.start()
    while not link.completed:
        link.round()
    link.deliver_to_leader()
    assert link.sender.acked == 40
    link.receiver, link.sinks = new_receiver()  # restarted: the file being verified is gone
    for _ in range(100):
        link.tick()
        link.round()
        if link.sender.finished:
            break
    assert link.sender.failed, "the sender never ends"
    assert ended(link.sender) == (make_request(), False, 40)


def test_late_answer_to_an_earlier_transfer_of_the_same_snapshot_is_ignored() -> None:
    """The livelock the simulator fuzz found (``run_fuzz(7, 385, schedule="swarm")``): the
    follower restarted and refused the first transfer; the leader started a second one for
    the same snapshot; a late answer to the first ("I hold 120") reached the second, which
    took it, sent from 120 on, and got "I hold 20" back for ever, every answer a sign of life.
    Answers carry the transfer's id: the second transfer ignores the first one's."""
    data = payload(200)
    _stuck_at_120(data)  # the first transfer: its follower holds 120 bytes
    receiver, sinks = new_receiver()  # the follower restarted: its partial file is gone
    second = Link(data, receiver=receiver, sinks=sinks)
    second.sender = SnapshotSender(
        LEADER, make_request(), second.source, chunk_bytes=10, window_bytes=40, transfer=2
    )
    second.start()
    second.deliver_to_follower()
    second.deliver_to_follower()
    assert second.answers == [answer(0, transfer=2)]
    second.to_leader.appendleft(answer(120))  # the late answer to transfer 1
    second.deliver_to_leader()
    assert second.sender.acked == 0
    assert [m.offset for m in second.to_follower] == [0, 10, 20, 30]
    assert second.run() == 0  # finished without a single retry
    assert second.sender.done and bytes(second.sink.buf) == data


def test_follower_answering_less_than_acknowledged_ends_the_transfer() -> None:
    """Whatever the cause (a receiver that restarted and began again from a late duplicate
    of the first chunk; a peer without transfer ids mixing two transfers' answers), a
    receiver that answers retry after retry with less than it acknowledged makes the sender
    end the transfer rather than resend the same window for ever; the core starts a new
    one, whose probe resumes from what the receiver really holds."""
    data = payload(200)
    link = Link(data, chunk_bytes=10, window_bytes=40, retry_ticks=2, give_up_ticks=20)
    link.start()
    while link.sender.acked < 100:
        link.round()
    # The follower restarts; a late duplicate of chunk 0 begins a new partial file there.
    link.receiver, link.sinks = new_receiver()
    link.sinks.auth.learn(TERM, LEADER)
    link.to_follower.appendleft(chunk(0, data[:10], size=200))
    for _ in range(100):
        link.tick()
        link.round()
        if link.sender.finished:
            break
    assert link.sender.failed, "the sender never ends"
    assert link.sender.acked >= 100


def test_reordered_window_is_held_aside_and_written_in_order() -> None:
    """A window that arrives backwards: every chunk is taken (held aside until the gap before
    it fills), written once and at its place; the answers name each gap."""
    receiver, sinks = new_receiver()
    sinks.auth.learn(TERM, LEADER)
    data = payload(60)
    assert receiver.on_chunk(probe(size=60)) == (answer(0), None)
    for off in (50, 40, 30, 20, 10):
        m = chunk(off, data[off : off + 10], size=60, done=off == 50)
        assert receiver.on_chunk(m) == (answer(0, ahead=off), None)
    sink = sinks.opened[0]
    assert sink.size == 0 and sink.writes == 0  # nothing written out of place
    ans, completed = receiver.on_chunk(chunk(0, data[:10], size=60))
    assert ans == answer(60) and completed is not None
    assert completed.message == chunk(50, data[50:], size=60, done=True)
    assert bytes(sink.buf) == data and sink.writes == 6


def test_chunks_held_aside_are_bounded() -> None:
    """At most ``held_chunks`` chunks and ``held_bytes`` bytes wait in memory; the rest are
    dropped (the sender resends them), and duplicates are held once."""
    sinks = Sinks()
    sinks.auth.learn(TERM, LEADER)
    receiver = SnapshotReceiver(
        sinks.begin, sinks.abort, authority=sinks.auth, held_chunks=3, held_bytes=25
    )
    data = payload(100)
    receiver.on_chunk(probe(size=100))
    for off in (10, 10, 20, 30, 40):  # 10 twice; 30 would pass 25 bytes; 40 too
        assert receiver.on_chunk(chunk(off, data[off : off + 10], size=100))[0] == answer(
            0, ahead=off
        )
    assert receiver.on_chunk(chunk(0, data[:10], size=100)) == (answer(30), None)
    assert bytes(sinks.opened[0].buf) == data[:30]  # 30 and 40 were dropped, not held
    with pytest.raises(ValueError, match="held"):
        SnapshotReceiver(sinks.begin, sinks.abort, authority=sinks.auth, held_bytes=-1)


def test_held_chunk_breaking_the_announced_size_ends_the_transfer() -> None:
    """A chunk ahead of the offset is checked like any other before it is held: a last
    chunk that leaves the file short ends the transfer and deletes the partial."""
    receiver, sinks, sink = partial_receiver(held=20)
    assert receiver.on_chunk(chunk(30, PARTIAL[30:40], done=True)) == (REFUSED, None)
    assert sinks.aborted == [sink] and not receiver.receiving


ROUNDS = 30  # measured: 10 to 20 rounds for seeds 0..19 (with none held aside: 49 to 88)


@pytest.mark.parametrize("seed", range(20), ids=lambda s: f"seed{s}")
def test_shuffled_duplicated_and_lossy_delivery_finishes_in_few_rounds(seed: int) -> None:
    """Each round, the chunks in flight arrive in random order, some twice, 10% not at all:
    a 2 KB file in 64-byte chunks (32 chunks, window of 4) still finishes in a bounded
    number of rounds (before chunks were held aside, most rounds wasted their window)."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    data = payload(2048, salt=seed)
    link = Link(data, chunk_bytes=64, window_bytes=256, retry_ticks=3, give_up_ticks=60)
    link.start()
    rounds = 0
    while not link.sender.finished:
        rounds += 1
        assert rounds <= ROUNDS, (
            f"not finished after {ROUNDS} rounds (seed={seed}): acked {link.sender.acked}"
        )
        batch = list(link.to_follower)
        batch += [m for m in batch if rng.random() < 0.3]  # duplicates
        rng.shuffle(batch)
        link.to_follower = deque(m for m in batch if rng.random() >= 0.1)
        link.round()
        if not link.in_flight:
            link.tick()
    assert link.sender.done and bytes(link.sink.buf) == data


def test_window_not_multiple_of_chunk_is_respected() -> None:
    s = SnapshotSender(
        LEADER, make_request(), MemSource(payload(200)), chunk_bytes=10, window_bytes=35
    )
    s.start()
    burst = s.on_response(answer(0))
    unacked = sum(len(m.data) for m in burst)
    assert unacked <= 35, f"{unacked} bytes unacknowledged with window_bytes=35"


# ----------------------------------------------------------------------------------------------
# Randomized: delays, reordering, duplicates, loss, outages and a second leader
# ----------------------------------------------------------------------------------------------

DEFAULT_SEEDS = 200


def _seeds() -> list[int]:
    raw = os.environ.get("RAFTPY_TRANSFER_SEED")
    if raw:
        return [int(s) for s in raw.replace(" ", "").split(",") if s]
    return list(range(DEFAULT_SEEDS))


def replay_command(seed: int) -> str:
    return (
        f"RAFTPY_TRANSFER_SEED={seed} .venv/bin/pytest -q tests/node/test_snapshot_transfer.py "
        f"-k random -s"
    )


class Channel:
    """Both directions of a lossy network: each message is dropped, or delivered after a
    random delay (possibly twice); messages due at the same tick come in random order.
    During an outage everything due is lost."""

    def __init__(self, rng: random.Random, p_drop: float, p_dup: float, max_delay: int) -> None:
        self.rng = rng
        self.p_drop = p_drop
        self.p_dup = p_dup
        self.max_delay = max_delay
        self.now = 0
        self.shuffle = True
        self.outage = (0, 0)
        self.queue: list[tuple[int, Msg]] = []
        self.lost: list[Msg] = []

    def send(self, m: Msg) -> None:
        if self.rng.random() < self.p_drop:
            self.lost.append(m)
            return
        copies = 2 if self.rng.random() < self.p_dup else 1
        for _ in range(copies):
            self.queue.append((self.now + self.rng.randint(0, self.max_delay), m))

    def down(self) -> bool:
        return self.outage[0] <= self.now < self.outage[1]

    def take_due(self) -> list[Msg]:
        due = [m for t, m in self.queue if t <= self.now]
        self.queue = [(t, m) for t, m in self.queue if t > self.now]
        if self.shuffle:
            self.rng.shuffle(due)
        if self.down():
            self.lost.extend(due)
            return []
        return due


Key = tuple[int, int, int, int]  # leader, leader term, snapshot index, snapshot term


def key_of(m: InstallSnapshot) -> Key:
    return (m.src, m.term, m.meta.index, m.meta.term)


@dataclass
class LeaderSide:
    """One SnapshotSender, and what the test knows about it."""

    leader: int
    request: SnapshotRequest
    data: bytes
    sender: SnapshotSender
    started_at: int
    acked_seen: int = 0  # the highest offset delivered to it

    @property
    def key(self) -> Key:
        r = self.request
        return (self.leader, r.term, r.meta.index, r.meta.term)


@dataclass
class FollowerSide:
    """The follower's SnapshotReceiver and the driver around it (verification, restarts)."""

    receiver: SnapshotReceiver[MemSink] = field(init=False)
    incarnation: int = 0  # bumped by every restart
    sink_keys: dict[int, Key] = field(default_factory=dict)  # id(sink) -> its transfer
    sinks: list[MemSink] = field(default_factory=list)
    latest_sink: dict[Key, MemSink] = field(default_factory=dict)
    completed: set[tuple[int, Key]] = field(default_factory=set)  # (incarnation, key)
    handed_over: set[int] = field(default_factory=set)  # id(sink) of completed files
    verified: set[Key] = field(default_factory=set)
    current: InstallSnapshot | None = None
    auth: Authority = field(default_factory=Authority)  # what its core knows; kept on restart

    def __post_init__(self) -> None:
        self.receiver = SnapshotReceiver(self._begin, self._abort, authority=self.auth)

    def _begin(self, tag: str) -> MemSink:
        assert self.current is not None
        sink = MemSink(tag)
        key = key_of(self.current)
        self.sink_keys[id(sink)] = key
        self.sinks.append(sink)
        self.latest_sink[key] = sink
        return sink

    def _abort(self, sink: MemSink) -> None:
        assert not sink.aborted, f"sink {sink.tag} aborted twice"
        assert id(sink) not in self.handed_over, f"receiver aborted completed file {sink.tag}"
        sink.aborted = True

    def restart(self) -> None:
        """The node restarts: the partial file and the receiver's memory are gone."""
        self.receiver.reset()
        self.receiver = SnapshotReceiver(self._begin, self._abort, authority=self.auth)
        self.incarnation += 1

    def held(self, key: Key, size: int) -> int:
        if (self.incarnation, key) in self.completed:
            return size
        sink = self.latest_sink.get(key)
        if sink is None or sink.aborted or id(sink) in self.handed_over:
            return 0  # nothing, or a file the driver took (the receiver forgot it: restart)
        return sink.size


def run_random(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 600)
    chunk_bytes = rng.randint(4, 64)
    window = chunk_bytes * rng.randint(1, 6)
    retry = rng.randint(2, 6)
    give_up = rng.randint(80, 120)
    ch = Channel(
        rng,
        p_drop=rng.choice([0.0, 0.05, 0.15, 0.25]),
        p_dup=rng.choice([0.0, 0.1, 0.3]),
        max_delay=rng.randint(0, 4),
    )
    if rng.random() < 0.4:
        start = rng.randint(0, 200)
        long = rng.random() < 0.4
        length = rng.randint(give_up, 2 * give_up) if long else rng.randint(1, give_up // 2)
        ch.outage = (start, start + length)
    outage = ch.outage
    # A second transfer: "newer": node 3 takes over in term 6 with other bytes, node 1 goes on
    # streaming for `lag` ticks before it learns; "older": a deposed leader of term 4 keeps
    # streaming its own bytes alongside; "restart": node 1 starts a brand-new sender for the
    # same transfer (it must resume where the receiver is).
    second = rng.choices([None, "newer", "older", "restart"], weights=[4, 2, 2, 2])[0]
    second_at = rng.randint(0, 150) if second else None
    lag = rng.randint(0, 60)
    size_b = size if rng.random() < 0.5 else rng.randint(1, 600)
    follower_restart_at = rng.randint(0, 200) if rng.random() < 0.15 else None
    # The follower learns the newer leader (its heartbeat) this many ticks after it started:
    # meanwhile that leader's chunks are dropped unwritten, and its retries resume the transfer.
    learn_delay = rng.randint(0, 10)
    params = (
        f"seed={seed} size={size} chunk={chunk_bytes} window={window} retry={retry} "
        f"give_up={give_up} drop={ch.p_drop} dup={ch.p_dup} delay<={ch.max_delay} "
        f"outage={outage} second={second}@{second_at} lag={lag} size_b={size_b} "
        f"follower_restart_at={follower_restart_at} learn_delay={learn_delay}"
    )
    print(params)
    where = f"[{params}] replay: {replay_command(seed)}"

    data_by_key: dict[Key, bytes] = {}
    leaders: dict[int, LeaderSide] = {}  # node -> its current sender
    follower = FollowerSide()
    verifying: list[tuple[int, Completed[MemSink]]] = []  # (due tick, file)

    transfer_ids = itertools.count(1)

    def start_leader(node: int, term: int, data: bytes) -> LeaderSide:
        request = make_request(term=term)
        sender = SnapshotSender(
            node,
            request,
            MemSource(data),
            transfer=next(transfer_ids),  # a new sender of the same file gets a new id
            chunk_bytes=chunk_bytes,
            window_bytes=window,
            retry_ticks=retry,
            give_up_ticks=give_up,
        )
        side = LeaderSide(node, request, data, sender, started_at=ch.now)
        assert data_by_key.setdefault(side.key, data) == data
        leaders[node] = side  # replaces this node's previous sender, if any
        send_chunks(side, sender.start())
        return side

    def send_chunks(side: LeaderSide, messages: list[InstallSnapshot]) -> None:
        for m in messages:
            assert key_of(m) == side.key, where
            end = m.offset + len(m.data)
            assert m.data == side.data[m.offset : end], f"sender sent wrong bytes {where}"
            assert m.done == (end == len(side.data)) or not m.data, where
            assert end - side.acked_seen <= window, f"window exceeded {where}"
            ch.send(m)

    def to_follower(m: InstallSnapshot) -> None:
        follower.current = m
        ans, completed = follower.receiver.on_chunk(m)
        follower.current = None
        if ans is not None:
            assert (ans.term, ans.src, ans.dst, ans.index) == (
                m.term,
                FOLLOWER,
                m.src,
                m.meta.index,
            ), where
            ch.send(ans)
        if completed is not None:
            key = key_of(completed.message)
            # The done chunk (it may have been held aside), answered to m's transfer.
            done = completed.message
            assert done.done and key_of(done) == key_of(m), where
            assert done.transfer == m.transfer, where
            assert follower.sink_keys[id(completed.sink)] == key, where
            assert bytes(completed.sink.buf) == data_by_key[key], f"corrupt file {where}"
            assert (follower.incarnation, key) not in follower.completed, (
                f"Completed twice for {key} {where}"
            )
            follower.completed.add((follower.incarnation, key))
            follower.handed_over.add(id(completed.sink))
            verifying.append((ch.now + rng.randint(0, 5), completed))

    def to_leader(a: InstallSnapshotResponse) -> None:
        side = leaders.get(a.dst)
        if side is None:
            return  # a transfer that ended already
        side.acked_seen = max(side.acked_seen, min(a.offset, len(side.data)))
        send_chunks(side, side.sender.on_response(a))

    def verify(completed: Completed[MemSink]) -> None:
        assert not completed.sink.aborted, f"file aborted while being verified {where}"
        follower.verified.add(key_of(completed.message))
        ch.send(follower.receiver.finished(completed, ok=True))

    def deliver_due() -> None:
        while due := ch.take_due():
            for m in due:
                if isinstance(m, InstallSnapshot):
                    to_follower(m)
                else:
                    to_leader(m)

    active = start_leader(LEADER, TERM, payload(size, salt=1))
    stop_at: dict[int, int] = {}  # node -> tick its deposed leader's transfer ends
    at_outage: tuple[LeaderSide, bool] | None = None
    # Transfers under way when the follower restarted: answers from before the restart may
    # still arrive, and its new incarnation refuses their chunks.
    restart_keys: set[Key] = set()
    max_ticks = 30_000
    for now in range(max_ticks):
        ch.now = now
        if second == "newer" and second_at is not None and now == second_at + learn_delay:
            follower.auth.learn(TERM + 1, OTHER_LEADER)
        if now == second_at:
            if second == "newer":
                stop_at[LEADER] = now + lag
                active = start_leader(OTHER_LEADER, TERM + 1, payload(size_b, salt=2))
            elif second == "older":
                start_leader(OTHER_LEADER, TERM - 1, payload(size_b, salt=3))
            else:
                active = start_leader(LEADER, TERM, active.data)
        for node, t in list(stop_at.items()):
            if now >= t:
                del leaders[node], stop_at[node]
        if now == outage[0] and outage[1] > outage[0]:
            at_outage = (active, active.sender.finished)
        if now == follower_restart_at:
            restart_keys |= {x.key for x in leaders.values()}
            for _, completed in verifying:  # files not verified yet are lost too
                follower.handed_over.discard(id(completed.sink))
                follower._abort(completed.sink)
            verifying.clear()
            follower.restart()
        deliver_due()
        for t, completed in [v for v in verifying if v[0] <= now]:
            verifying.remove((t, completed))
            verify(completed)
        for side in list(leaders.values()):
            send_chunks(side, side.sender.tick())
        # The sender never believes the receiver holds more than it does.
        if active.key not in restart_keys and not active.sender.finished:
            held = follower.held(active.key, len(active.data))
            assert active.sender.acked <= held, f"acked {active.sender.acked} > {held} {where}"
        if (
            active.sender.finished
            and not verifying
            and (second_at is None or now >= second_at)
            and (follower_restart_at is None or now >= follower_restart_at)
            and now >= outage[1]
        ):
            break
    else:
        pytest.fail(f"transfer neither done nor failed after {max_ticks} ticks {where}")

    sender = active.sender
    leader, term = active.leader, active.request.term
    size = len(active.data)
    long_outage = outage[1] - outage[0] >= give_up
    if sender.done:
        assert active.key in follower.verified, f"done, yet the follower never verified {where}"
        assert ended(sender) == (active.request, True, size), where
    else:
        assert sender.failed, where
        assert sender.report() == (active.request, False), where
        # A lost final answer no longer fails a transfer (the sender probes again once every
        # byte is acknowledged): only a long outage or a follower restart may.
        restarted = active.key in restart_keys
        assert long_outage or restarted, f"failed for no reason {where}"
    if at_outage is not None and long_outage:
        side, finished_then = at_outage
        if side is active and not finished_then:
            silent = outage[1] - outage[0]
            assert sender.failed, f"no answer for {silent} ticks, yet not failed {where}"
    print(
        "outcome:",
        "done" if sender.done else "failed",
    )

    # Whatever happened, the core's next attempt (a new sender for the same transfer) ends
    # done with the right bytes, sending only what the receiver lacks. First everything still
    # in flight arrives (late duplicates must not corrupt anything), then the network is
    # perfect.
    ch.outage = (0, 0)
    ch.p_drop = ch.p_dup = 0.0
    ch.max_delay = 0
    for node in [n for n in leaders if n != leader]:
        del leaders[node]
    while ch.queue or verifying:
        ch.now = max([t for t, _ in ch.queue] + [t for t, _ in verifying] + [ch.now])
        deliver_due()
        for _, completed in verifying:
            verify(completed)
        verifying.clear()
    held = follower.held(active.key, size)
    ch.shuffle = False
    again = start_leader(leader, term, active.data)
    for now in range(ch.now, ch.now + 100):
        ch.now = now
        deliver_due()
        for _, completed in verifying:
            verify(completed)
        verifying.clear()
        deliver_due()
        if again.sender.finished:
            break
        send_chunks(again, again.sender.tick())
    assert again.sender.done, f"the next attempt did not end done {where}"
    assert again.sender.bytes_sent == size - held, f"did not resume at {held} {where}"
    final = follower.latest_sink[active.key]
    assert bytes(final.buf) == active.data and not final.aborted, where

    # Nothing anywhere is corrupt, and no sink leaked: each is aborted, handed over as a
    # completed file, or the one partial the receiver is working on.
    for sink in follower.sinks:
        key = follower.sink_keys[id(sink)]
        assert data_by_key[key].startswith(bytes(sink.buf)), f"corrupt partial {key} {where}"
    open_sinks = [x for x in follower.sinks if not x.aborted and id(x) not in follower.handed_over]
    assert len(open_sinks) <= (1 if follower.receiver.receiving else 0), where


@pytest.mark.parametrize("seed", _seeds(), ids=lambda s: f"seed{s}")
def test_random_channel(seed: int) -> None:
    run_random(seed)


# ----------------------------------------------------------------------------------------------
# SnapshotSenders: the leader's table of transfers (shared by the node and the simulator)
# ----------------------------------------------------------------------------------------------


class ClosingSource(MemSource):
    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        super().__init__(data)
        self.closed = False
        self.fail_at = fail_at

    def read(self, offset: int, n: int) -> bytes:
        if self.fail_at is not None and offset >= self.fail_at:
            raise OSError("disk read failed")
        return super().read(offset, n)

    def close(self) -> None:
        self.closed = True


def test_senders_route_answers_and_report_the_end() -> None:
    sent: list[InstallSnapshot] = []
    table = SnapshotSenders(LEADER, sent.append, chunk_bytes=10, window_bytes=20)
    source = ClosingSource(payload(25))
    table.start(make_request(), source)
    assert sent == [probe(size=25)] and len(table) == 1
    assert table.on_answer(answer(0)) is None
    assert [m.offset for m in sent[1:]] == [0, 10]
    assert table.on_answer(answer(0, src=3)) is None  # nobody sends to 3: ignored
    assert table.on_answer(answer(20)) is None
    report = table.on_answer(answer(25, done=True))
    assert report == (make_request(), True)
    assert source.closed and len(table) == 0
    assert sum(len(m.data) for m in sent) == 25  # every byte the table put on the wire
    assert table.on_answer(answer(25, done=True)) is None  # ended already


def test_senders_replace_stop_and_fail_on_read_errors() -> None:
    sent: list[InstallSnapshot] = []
    table = SnapshotSenders(LEADER, sent.append, chunk_bytes=10, window_bytes=20)
    first, second = ClosingSource(payload(30)), ClosingSource(payload(30), fail_at=10)
    table.start(make_request(), first)
    table.start(make_request(), second)  # the core asked again: the old one ends unreported
    assert first.closed and not second.closed and len(table) == 1
    assert table.on_answer(answer(0)) is None  # the first transfer's answer: ignored
    report = table.on_answer(answer(0, transfer=2))  # reading at 10 fails: it ends as failed
    assert report == (make_request(), False)
    assert second.closed and len(table) == 0
    third = ClosingSource(payload(30))
    table.start(make_request(dst=3), third)
    assert table.tick() == []
    table.stop()
    assert third.closed and len(table) == 0
