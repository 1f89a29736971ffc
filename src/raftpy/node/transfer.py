"""Streaming a snapshot to a follower: chunked, flow-controlled and resumable (Raft §7).

The paper's InstallSnapshot RPC is split between the consensus core and its driver, so
snapshot data never goes through the core and the leader never holds a whole snapshot in
memory:

- the **core** decides *that* a follower needs a snapshot: it marks the follower's progress
  SNAPSHOT and asks its driver with a :class:`~raftpy.core.ready.SnapshotRequest` in
  ``Ready.snapshot_requests``; and it decides whether a received snapshot is taken
  (``Raft.install_snapshot``);
- the **drivers** (the node, the simulator) move the bytes with the classes here, as
  :class:`InstallSnapshot` chunks and :class:`InstallSnapshotResponse` answers on the wire
  (:data:`~raftpy.core.messages.PeerMessage`; the core's ``step`` never sees them), then hand
  the core the outcome: the leader's driver calls ``Raft.report_snapshot(request, ok)`` (etcd
  raft's ReportSnapshot) when a transfer ends, the follower's calls
  ``Raft.install_snapshot(meta, leader, term)`` once the whole file arrived and verified.

The classes:

- :class:`SnapshotSender` (leader side, one per follower) reads the snapshot file in chunks
  (``chunk_bytes``, 1 MiB by default) and keeps at most ``window_bytes`` unacknowledged;
  :class:`SnapshotSenders` is a leader's table of them;
- :class:`SnapshotReceiver` (follower side) appends chunks that start exactly where its copy
  ends, holds a bounded number of chunks that arrived early aside until the gap before them
  fills, and answers each chunk with how many bytes it holds.

Wire protocol:

- ``InstallSnapshot(term, src, dst, meta, offset, data, done, size, transfer)``: bytes
  ``[offset, offset + len(data))`` of the snapshot *file* (header, body and trailer, see
  :mod:`raftpy.storage.snapshots`); ``done`` marks the last chunk; ``size`` is the file's whole
  length, the same in every chunk of a transfer; ``transfer`` is the sender's id for this
  transfer (a leader numbers its transfers 1, 2, ...). A transfer starts with an empty probe
  (offset 0, no data) that asks how much the receiver already holds.
- ``InstallSnapshotResponse(term, src, dst, index, offset, done, rejected, transfer, ahead)``:
  ``offset`` is the length of the contiguous prefix the receiver holds; ``done``: it holds the
  whole file, verified its checksum and handed it to its core; ``rejected``: it will not take
  this snapshot (bad checksum, storage failure); ``transfer`` echoes the answered chunk's;
  ``ahead`` is the answered chunk's offset when it started past ``offset`` (a gap: the receiver
  lacks ``[offset, ahead)``), else 0.

``transfer`` and ``ahead`` came later, as trailing fields with a default of 0 (older peers
neither send nor read them, so the protocol version is unchanged): a sender takes answers
without an id as before, and does without the early resend below.

Loss and reordering (in the spirit of TCP): a chunk that starts past the receiver's offset is
held aside in memory (at most ``held_chunks`` chunks and ``held_bytes`` bytes, else dropped)
and answered with the gap; once the chunk at the offset arrives, the held ones that follow it
are appended too, so a window that arrives out of order costs nothing. A chunk before the
offset (a duplicate) is answered with the offset, nothing else. The sender resends the chunk
at the acknowledged offset as soon as two answers report a gap there (fast retransmit); when
it sees no progress for ``retry_ticks`` ticks it goes back to the acknowledged offset and
sends the window again (go-back-N). Answers to another transfer (another id) are ignored: a
late answer to an earlier transfer of the same snapshot describes a partial file the receiver
may have lost since, and taking its offset would skip bytes the receiver lacks. A receiver
that answers retry after retry only with less than it acknowledged lost its copy: the sender
ends the transfer, and the core starts a new one.

A chunk past offset 0 of a transfer the receiver does not hold at all (it restarted and lost
its partial file, or moved on to a newer leader's transfer) is answered with ``rejected``: the
sender ends, and the core starts a new transfer later. A dropped connection therefore costs
the unacknowledged window, never the transfer: the receiver keeps its partial file, and a
sender (even a new one for the same snapshot, after a leader restarted the transfer) resumes
from the offset the receiver reports. A receiver that stays silent for ``give_up_ticks`` ends
the transfer as failed; the driver reports that to the core, which asks again later.

Partial transfers are keyed by (leader, leader term, snapshot index, snapshot term): two
leaders' files for the same index may differ byte for byte (state machines need not serialize
deterministically), so bytes from one are never continued with bytes from another.

What a receiver takes (checked before anything touches the disk):

- chunks from the node's current leader in the node's current term only (Raft §5.1: a
  stale term's message is refused). A chunk of a newer term is dropped too, unwritten: the new
  leader's heartbeat teaches the node its term and leader, and the sender's retry resumes the
  transfer. A chunk of an older term, or from a node that is not the leader, is dropped. So a
  deposed leader, or anyone who is not the leader, writes nothing at all;
- bytes up to the announced ``size`` only: a chunk that would end past it, a chunk announcing
  another size than the transfer's first, or a last chunk that leaves the file shorter, ends
  the transfer (its partial file is deleted; the answer is ``rejected``). Chunks held aside are
  checked the same way before they are held, and written only at the file's end.

Refused chunks are counted (:attr:`SnapshotReceiver.refused`) and logged once per transfer, at
most one line a second.

Nothing here does I/O itself: the sender reads through a :class:`SnapshotSource`, the receiver
writes through a :class:`SnapshotSink`, both passed in (the simulator passes in-memory ones).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import msgspec

from raftpy.core.messages import INT64_MAX, InstallSnapshot, InstallSnapshotResponse, SnapshotMeta
from raftpy.core.ready import SnapshotRequest

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_WINDOW_BYTES",
    "Outcome",
    "Receiving",
    "SnapshotReceiver",
    "SnapshotSender",
    "SnapshotSenders",
    "SnapshotSink",
    "SnapshotSource",
]

logger = logging.getLogger("raftpy.snapshot")

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_WINDOW_BYTES = 4 << 20
DEFAULT_HELD_CHUNKS = 64
"""How many chunks past its offset a receiver holds aside (in memory) by default."""
_DUP_ANSWERS = 2  # answers repeating the acknowledged offset before the hole is resent


class SnapshotSource(Protocol):
    """A stored snapshot file, read by position (never loaded whole)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, n: int) -> bytes: ...


class ClosableSource(SnapshotSource, Protocol):
    """A source the transfer table closes when its transfer ends."""

    def close(self) -> None: ...


class SnapshotSink(Protocol):
    """A snapshot file being received: bytes are appended at :attr:`size`."""

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None: ...


SinkT = TypeVar("SinkT", bound=SnapshotSink)

Outcome = tuple[SnapshotRequest, bool]
"""How a transfer ended: the core's request and whether the follower holds the snapshot. The
leader's driver passes both to ``Raft.report_snapshot``."""


class SnapshotSender:
    """Streams one snapshot file to one follower (see the module docstring).

    ``leader`` is our own node id, ``request`` the core's ask. Call :meth:`start`, then
    :meth:`on_response` for each answer and :meth:`tick` once per tick; each returns the chunks
    to send. When :attr:`finished`, hand :meth:`report` to ``Raft.report_snapshot`` (etcd
    raft's ReportSnapshot): it ends the follower's SNAPSHOT state.
    """

    def __init__(
        self,
        leader: int,
        request: SnapshotRequest,
        source: SnapshotSource,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        retry_ticks: int = 4,
        give_up_ticks: int = 100,
        transfer: int = 1,
    ) -> None:
        if chunk_bytes < 1 or window_bytes < chunk_bytes:
            raise ValueError(
                f"need 1 <= chunk_bytes <= window_bytes, got {chunk_bytes} and {window_bytes}"
            )
        if retry_ticks < 1 or give_up_ticks <= retry_ticks:
            raise ValueError(
                f"need 1 <= retry_ticks < give_up_ticks, got {retry_ticks} and {give_up_ticks}"
            )
        if not 1 <= transfer <= INT64_MAX:
            raise ValueError(f"need 1 <= transfer <= {INT64_MAX}, got {transfer}")
        self.leader = leader
        self.transfer = transfer
        """This transfer's id: its chunks carry it and the receiver echoes it, so a late answer
        to an earlier transfer of the same snapshot is never taken for an answer to this one."""
        self.request = request
        self.meta: SnapshotMeta = request.meta
        self.dst = request.to
        self.size = source.size
        self._source = source
        self._chunk = chunk_bytes
        self._window = window_bytes
        self._retry_ticks = retry_ticks
        self._give_up_ticks = give_up_ticks
        self.acked = 0  # the receiver holds [0, acked)
        self.next = 0  # the next byte to send
        self._probing = True
        self._stalled = 0  # ticks without progress (acked unchanged)
        self._silent = 0  # ticks without any answer
        self._best_answer = -1  # the highest offset answered since the last retry
        self._lost_rounds = 0  # retries answered only with less than was acknowledged
        self._dups = 0  # answers repeating ``acked`` since it last moved (a hole at acked)
        self._resent = False  # the chunk at ``acked`` was resent early since acked last moved
        self.done = False
        self.failed = False
        self.chunks_sent = 0
        self.bytes_sent = 0
        self.started = time.time()
        """When the transfer started, in unix seconds (for operators)."""

    @property
    def finished(self) -> bool:
        return self.done or self.failed

    def _probe(self) -> InstallSnapshot:
        return InstallSnapshot(
            self.request.term,
            self.leader,
            self.dst,
            self.meta,
            0,
            b"",
            False,
            self.size,
            self.transfer,
        )

    def start(self) -> list[InstallSnapshot]:
        """The first message: a probe asking how much the receiver already holds."""
        return [self._probe()]

    def on_response(self, m: InstallSnapshotResponse) -> list[InstallSnapshot]:
        """Take an answer from the receiver; return the chunks that may go now."""
        if (
            self.finished
            or m.src != self.dst
            or m.index != self.meta.index
            or m.term != self.request.term
            or (m.transfer and m.transfer != self.transfer)
        ):
            # Another transfer's answer: a late one from an earlier term, or from an earlier
            # transfer of this snapshot, describes a partial file the receiver may have lost
            # or replaced since (taking its offset would skip bytes the receiver lacks, and
            # the transfer would never finish). An answer without an id (0) comes from a
            # receiver that predates ids: taken, as before.
            return []
        self._silent = 0
        if m.rejected:
            logger.warning("follower %d rejected snapshot %d", self.dst, self.meta.index)
            self.failed = True
            return []
        if m.done:
            self.acked = self.next = self.size
            self.done = True
            return []
        if m.offset > self.size:
            # It claims bytes this file does not have: not our transfer. Give up; the core
            # will start a fresh one later.
            self.failed = True
            return []
        self._best_answer = max(self._best_answer, m.offset)
        out: list[InstallSnapshot] = []
        if m.offset > self.acked:
            self.acked = m.offset
            self._stalled = 0
            self._dups = 0
            self._resent = False
        elif m.transfer and m.offset == self.acked < m.ahead:
            # The receiver still lacks the chunk at ``acked`` while later ones arrive (it holds
            # a few of them aside). The second such answer means that chunk is lost rather
            # than overtaken: resend it now, once, instead of after ``retry_ticks`` (TCP's
            # fast retransmit, RFC 5681 §3.2). Answers to duplicates (a chunk before
            # ``acked``) report no gap and resend nothing.
            self._dups += 1
            if self._dups >= _DUP_ANSWERS and not self._resent:
                self._resent = True
                out.append(self._chunk_at(self.acked))
        if self._probing:
            self._probing = False
            self.next = self.acked  # resume where the receiver's copy ends
        elif m.offset > self.next:
            self.next = m.offset
        return out + self._fill()

    def tick(self) -> list[InstallSnapshot]:
        """One tick passed: resend from the last acknowledged offset after ``retry_ticks``
        without progress; fail after ``give_up_ticks`` without any answer."""
        if self.finished:
            return []
        self._silent += 1
        self._stalled += 1
        if self._silent >= self._give_up_ticks:
            logger.warning(
                "snapshot %d to %d: no answer for %d ticks; giving up at byte %d of %d",
                self.meta.index,
                self.dst,
                self._silent,
                self.acked,
                self.size,
            )
            self.failed = True
            return []
        if self._stalled < self._retry_ticks:
            return []
        self._stalled = 0
        if self._probing:
            return [self._probe()]
        # A receiver that answers retry after retry, for about half of give_up_ticks, only
        # with less than it acknowledged lost its copy (it restarted, and a late duplicate of
        # the first chunk began a new one; or it restarted while verifying): late answers
        # cannot last that long. End the transfer, or it would answer forever (each answer is
        # a sign of life) and never finish; the core starts a new one, whose probe resumes
        # from what the receiver really holds.
        if 0 <= self._best_answer < self.acked:
            self._lost_rounds += 1
            if self._lost_rounds >= max(2, self._give_up_ticks // (2 * self._retry_ticks)):
                logger.warning(
                    "follower %d lost snapshot %d after acknowledging %d of %d bytes; giving up",
                    self.dst,
                    self.meta.index,
                    self.acked,
                    self.size,
                )
                self.failed = True
                return []
        elif self._best_answer >= self.acked:
            self._lost_rounds = 0
        self._best_answer = -1
        # Go-back-N: whatever followed the acknowledged prefix was lost or is stuck.
        self.next = self.acked
        self._dups = 0
        self._resent = False
        chunks = self._fill()
        if chunks:
            return chunks
        # Every byte is acknowledged but the final answer (done or rejected) was lost: a probe
        # asks again (the receiver answers done for a transfer it completed).
        return [self._probe()]

    def _fill(self) -> list[InstallSnapshot]:
        out: list[InstallSnapshot] = []
        while self.next < self.size:
            n = min(self._chunk, self.size - self.next)
            if self.next + n - self.acked > self._window:
                break  # never more than window_bytes unacknowledged
            out.append(self._chunk_at(self.next))
            self.next += n
        return out

    def _chunk_at(self, offset: int) -> InstallSnapshot:
        """The chunk that starts at ``offset`` (counted as sent)."""
        n = min(self._chunk, self.size - offset)
        data = self._source.read(offset, n)
        if len(data) != n:
            raise OSError(
                f"snapshot {self.meta.index}: short read at byte {offset} "
                f"({len(data)} of {n} bytes)"
            )
        self.chunks_sent += 1
        self.bytes_sent += n
        end = offset + n
        return InstallSnapshot(
            self.request.term,
            self.leader,
            self.dst,
            self.meta,
            offset,
            data,
            end == self.size,
            self.size,
            self.transfer,
        )

    def report(self) -> Outcome:
        """What to pass to the leader's ``Raft.report_snapshot`` once :attr:`finished`: the
        request and whether the follower holds the snapshot."""
        return self.request, self.done


class SnapshotSenders:
    """A leader's transfers, one per follower: starts them, routes answers and ticks to them,
    closes their sources, and hands back how each finished transfer ended, for the core.

    ``leader`` is our own node id; ``send`` puts a chunk on the wire; ``settings`` go to every
    :class:`SnapshotSender`. A source that fails to read ends its transfer as failed (the core
    asks again later).
    """

    def __init__(
        self, leader: int, send: Callable[[InstallSnapshot], None], **settings: int
    ) -> None:
        self._leader = leader
        self._send = send
        self._settings = settings
        # Ids tell this leader's transfers apart (answers also carry the leader's term).
        self._ids = itertools.count(1)
        self._active: dict[int, tuple[SnapshotSender, ClosableSource]] = {}

    def __len__(self) -> int:
        return len(self._active)

    def senders(self) -> list[SnapshotSender]:
        """The transfers in progress (for operators: read, never change them)."""
        return [sender for sender, _ in self._active.values()]

    def start(self, request: SnapshotRequest, source: ClosableSource) -> None:
        """Stream ``source`` to ``request.to``; an older transfer to it ends unreported (the
        core asked again, so it no longer waits for that one)."""
        self.end(request.to)
        sender = SnapshotSender(
            self._leader, request, source, transfer=next(self._ids), **self._settings
        )
        self._active[request.to] = (sender, source)
        self._send_all(sender.start())

    def on_answer(self, m: InstallSnapshotResponse) -> Outcome | None:
        """Route an answer; returns the outcome to report to the core if it ended a transfer."""
        entry = self._active.get(m.src)
        if entry is None:
            return None  # a transfer that ended already
        return self._advance(m.src, entry[0], lambda s: s.on_response(m))

    def tick(self) -> list[Outcome]:
        """One tick for every transfer; returns the outcomes of those that ended."""
        reports = []
        for dst, (sender, _) in list(self._active.items()):
            report = self._advance(dst, sender, SnapshotSender.tick)
            if report is not None:
                reports.append(report)
        return reports

    def stop(self) -> None:
        """Leadership ended: every transfer ends with it, unreported."""
        for dst in list(self._active):
            self.end(dst)

    def _advance(
        self,
        dst: int,
        sender: SnapshotSender,
        step: Callable[[SnapshotSender], list[InstallSnapshot]],
    ) -> Outcome | None:
        try:
            self._send_all(step(sender))
        except OSError as exc:
            logger.error("reading snapshot %d for %d failed: %s", sender.meta.index, dst, exc)
            sender.failed = True
        if not sender.finished:
            return None
        self.end(dst)
        logger.info(
            "snapshot %d to %d %s after %d bytes",
            sender.meta.index,
            dst,
            "done" if sender.done else "failed",
            sender.bytes_sent,
        )
        return sender.report()  # etcd raft's ReportSnapshot

    def end(self, dst: int) -> None:
        """End the transfer to ``dst`` (if any), unreported, and close its source."""
        entry = self._active.pop(dst, None)
        if entry is not None:
            entry[1].close()

    def _send_all(self, messages: list[InstallSnapshot]) -> None:
        for m in messages:
            self._send(m)


@dataclass(frozen=True, slots=True)
class _Key:
    leader: int
    leader_term: int
    index: int
    term: int


class _Partial(Generic[SinkT]):
    __slots__ = ("finishing", "held", "held_bytes", "key", "sink", "size", "started")

    def __init__(self, key: _Key, sink: SinkT, size: int) -> None:
        self.key = key
        self.sink = sink
        self.size = size  # announced by the transfer's first chunk
        self.finishing = False
        self.started = time.time()  # unix seconds, for operators
        # Chunks that arrived ahead of the sink's end, by offset, until the gap fills.
        self.held: dict[int, InstallSnapshot] = {}
        self.held_bytes = 0


@dataclass(frozen=True, slots=True)
class Receiving:
    """The transfer a receiver is taking in (for operators)."""

    leader: int
    index: int
    bytes_done: int
    size: int
    started: float


@dataclass(frozen=True, slots=True)
class Completed(Generic[SinkT]):
    """The receiver holds a whole snapshot file: the driver verifies it (off the event loop),
    calls :meth:`SnapshotReceiver.finished`, and hands a good one to its core with
    ``Raft.install_snapshot(message.meta, message.src, message.term)``."""

    message: InstallSnapshot
    sink: SinkT


class SnapshotReceiver(Generic[SinkT]):
    """Takes snapshot chunks from leaders into a sink (see the module docstring).

    ``begin(tag)`` opens a new sink; ``abort(sink)`` discards one. ``authority()`` returns the
    node's current term and the leader it knows in that term (``None``: none yet); only that
    leader's chunks of that term are taken. One transfer is received at a time; a newer
    leader's transfer replaces an older one's, a stale leader's is ignored.
    """

    def __init__(
        self,
        begin: Callable[[str], SinkT],
        abort: Callable[[SinkT], None],
        *,
        authority: Callable[[], tuple[int, int | None]],
        clock: Callable[[], float] = time.monotonic,
        held_bytes: int = DEFAULT_WINDOW_BYTES,
        held_chunks: int = DEFAULT_HELD_CHUNKS,
    ) -> None:
        if held_bytes < 0 or held_chunks < 0:
            raise ValueError(f"need held_bytes, held_chunks >= 0, got {held_bytes}, {held_chunks}")
        self._held_bytes = held_bytes
        self._held_chunks = held_chunks
        self._begin = begin
        self._abort = abort
        self._authority = authority
        self._clock = clock
        self._current: _Partial[SinkT] | None = None
        self._completed: deque[_Key] = deque(maxlen=8)
        self.refused = 0
        """Chunks (and probes) refused unwritten: see the module docstring."""
        self._logged_key: _Key | None = None
        self._logged_at = -math.inf

    @property
    def receiving(self) -> bool:
        return self._current is not None

    def progress(self) -> Receiving | None:
        """The transfer in progress, if any: whose, how far, since when."""
        cur = self._current
        if cur is None:
            return None
        return Receiving(cur.key.leader, cur.key.index, cur.sink.size, cur.size, cur.started)

    def on_chunk(
        self, m: InstallSnapshot
    ) -> tuple[InstallSnapshotResponse | None, Completed[SinkT] | None]:
        """Take one chunk (or probe). Returns the answer to send (``None``: ignore it) and, when
        this chunk completed the file, what the driver must verify and hand to its core."""
        key = _Key(m.src, m.term, m.meta.index, m.meta.term)
        term, leader = self._authority()
        if m.term != term or m.src != leader:
            if m.term > term:
                why = f"its term {m.term} is ahead of ours ({term}): waiting for its heartbeat"
            elif m.term < term:
                why = f"its term {m.term} is stale (ours is {term})"
            else:
                why = f"node {m.src} is not our leader in term {term} (leader: {leader})"
            self._refuse(key, why)
            return None, None
        end = m.offset + len(m.data)
        if end > m.size:
            return self._oversize(m, key, f"bytes up to {end} of a {m.size}-byte snapshot")
        if key in self._completed:
            return self._answer(m, 0, done=True), None
        cur = self._current
        if cur is None or cur.key != key:
            if cur is not None and (cur.finishing or key.leader_term < cur.key.leader_term):
                return None, None  # busy verifying, or a stale leader's transfer
            if m.offset != 0:
                # We hold nothing of this transfer (we restarted, or took a newer leader's):
                # refuse it, so the sender ends and the core starts a new transfer.
                return self._answer(m, 0, rejected=True), None
            if cur is not None:
                self._abort(cur.sink)
            tag = f"recv-{key.leader}-{key.leader_term}-{key.index}-{key.term}"
            cur = self._current = _Partial(key, self._begin(tag), m.size)
        sink = cur.sink
        if m.size != cur.size:
            return self._oversize(
                m, key, f"it announces {m.size} bytes, the transfer began with {cur.size}"
            )
        if cur.finishing:
            return self._answer(m, sink.size), None
        if m.done and end != cur.size:
            return self._oversize(m, key, f"it ends at byte {end} of {cur.size}")
        if m.offset != sink.size:
            if m.offset > sink.size:
                self._hold(cur, m)
            # Behind the end: a duplicate, answered with the offset and nothing else.
            return self._answer(m, sink.size), None
        return self._append(cur, m)

    def _append(
        self, cur: _Partial[SinkT], m: InstallSnapshot
    ) -> tuple[InstallSnapshotResponse, Completed[SinkT] | None]:
        """Write ``m`` (it starts at the sink's end), then any chunks held aside that now
        follow on; the answer says how much the sink holds."""
        sink = cur.sink
        last = m
        while True:
            if last.data:
                sink.write(last.data)
            if last.done:
                cur.finishing = True
                cur.held.clear()
                cur.held_bytes = 0
                if last is not m:
                    # The final answer goes to the transfer that sent ``m``.
                    last = msgspec.structs.replace(last, transfer=m.transfer)
                return self._answer(m, sink.size), Completed(last, sink)
            # The gap before a chunk held aside may just have closed.
            nxt = cur.held.pop(sink.size, None)
            if nxt is None:
                return self._answer(m, sink.size), None
            cur.held_bytes -= len(nxt.data)
            last = nxt

    def _hold(self, cur: _Partial[SinkT], m: InstallSnapshot) -> None:
        """Keep a chunk that arrived ahead of the sink's end (the network reordered it) in
        memory until the gap before it fills, so one overtaken chunk does not cost its whole
        window. Bounded by ``held_chunks`` and ``held_bytes``; a chunk over the bound is
        dropped (the sender resends it). Chunks are never written anywhere but at the end."""
        if m.offset in cur.held or not m.data:
            return
        if len(cur.held) >= self._held_chunks or cur.held_bytes + len(m.data) > self._held_bytes:
            return
        # Chunks the sink's end passed (a sender with another chunk grid) are useless now.
        for offset in [o for o in cur.held if o < cur.sink.size]:
            cur.held_bytes -= len(cur.held.pop(offset).data)
        cur.held[m.offset] = m
        cur.held_bytes += len(m.data)

    def _oversize(
        self, m: InstallSnapshot, key: _Key, why: str
    ) -> tuple[InstallSnapshotResponse, None]:
        """A chunk that breaks the announced size: that transfer ends, its partial file goes
        (a sender that breaks its own announcement is not to be trusted with more bytes)."""
        self._refuse(key, f"past the snapshot's announced size: {why}")
        cur = self._current
        if cur is not None and cur.key == key and not cur.finishing:
            self._abort(cur.sink)
            self._current = None
        return self._answer(m, 0, rejected=True), None

    def _refuse(self, key: _Key, why: str) -> None:
        self.refused += 1
        now = self._clock()
        if key == self._logged_key or now - self._logged_at < 1.0:
            return  # once per transfer, and at most one line a second
        self._logged_key = key
        self._logged_at = now
        logger.warning(
            "snapshot chunk from node %d (term %d, snapshot %d term %d) refused, unwritten: %s"
            "; further refusals of this transfer are counted, not logged",
            key.leader,
            key.leader_term,
            key.index,
            key.term,
            why,
        )

    def finished(self, completed: Completed[SinkT], ok: bool) -> InstallSnapshotResponse:
        """The driver verified (``ok``) or refused the completed file; returns the final answer
        for the sender. The sink now belongs to the driver (install it or abort it)."""
        m = completed.message
        key = _Key(m.src, m.term, m.meta.index, m.meta.term)
        if self._current is not None and self._current.key == key:
            self._current = None
        if ok:
            self._completed.append(key)
        return self._answer(m, completed.sink.size, done=ok, rejected=not ok)

    def reset(self) -> None:
        """Drop the transfer in progress (the node stops or restarts)."""
        if self._current is not None and not self._current.finishing:
            self._abort(self._current.sink)
        self._current = None

    @staticmethod
    def rejection(m: InstallSnapshot) -> InstallSnapshotResponse:
        """The answer that ends ``m``'s transfer (for a driver whose storage failed)."""
        return SnapshotReceiver._answer(m, 0, rejected=True)

    @staticmethod
    def _answer(
        m: InstallSnapshot, offset: int, *, done: bool = False, rejected: bool = False
    ) -> InstallSnapshotResponse:
        return InstallSnapshotResponse(
            m.term,
            m.dst,
            m.src,
            m.meta.index,
            offset,
            done,
            rejected,
            m.transfer,
            # A gap: the receiver lacks [offset, m.offset) (it holds m aside, or drops it).
            m.offset if m.offset > offset and not (done or rejected) else 0,
        )
