"""SimCluster: n nodes of the real Raft core over a simulated network and persister, in
virtual time, deterministic from a seed (DESIGN §6).

Everything random (timeouts, delays, drops, reordering) comes from one ``random.Random(seed)``,
so a failing run is replayed exactly by running it again with the same seed. Each node is the
real :class:`~raftpy.core.raft.Raft` driven through its Ready cycle by a tiny driver that
persists into a :class:`~raftpy.storage.memory.MemoryStorage`, sends through the simulated
network (every message is encoded and decoded, so the wire format is exercised), and applies
committed entries to the node's state machine.

A crash drops the node's core and state machine and keeps only its storage, which holds exactly
what the core asked to persist (the driver writes and "syncs" before sending anything that
depends on it, as the Ready contract says).

Checkers run inside, always: the apply checker (two nodes applying different entries at one
index, or a node applying out of order) and the safety invariants (one leader per term, log
matching, leader completeness, state machine safety, term and commit never going backwards,
also across restarts). A violation raises :class:`~raftpy.errors.InvariantViolation` at once,
with the seed in the message.
"""

from __future__ import annotations

import heapq
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import msgspec

from raftpy.core.config import RaftConfig
from raftpy.core.messages import (
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    InstallSnapshotResponse,
    PeerMessage,
    RequestVote,
    SnapshotMeta,
    TimeoutNow,
    decode_message,
    encode_message,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import Ready, Role
from raftpy.core.storage import HardState
from raftpy.errors import InvariantViolation, NotLeaderError, ProposalDropped
from raftpy.node.transfer import Completed, SnapshotReceiver, SnapshotSenders
from raftpy.statemachine import StateMachine
from raftpy.storage.base import LogStore
from raftpy.storage.errors import CorruptSnapshotError
from raftpy.storage.fs import CrashMode, FaultyFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.snapshots import SnapshotSink, SnapshotStore
from raftpy.storage.wal import FileStorage

__all__ = ["RecordingStateMachine", "SimCluster"]

_US = 1_000_000  # virtual time is kept in integer microseconds
_REQUESTS = (RequestVote, AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)

# Event kinds in the queue.
_TICK = 0
_DELIVER = 1


class RecordingStateMachine:
    """The default state machine of the simulator: it records every command it applies and
    answers a query with the number of commands applied so far (for tests)."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        self.commands.append(command)
        return len(self.commands).to_bytes(8, "big")

    def query(self, query: bytes) -> bytes:
        return len(self.commands).to_bytes(8, "big")

    def snapshot(self, out: BinaryIO) -> None:
        out.write(msgspec.msgpack.encode(self.commands))

    def restore(self, inp: BinaryIO) -> None:
        self.commands = msgspec.msgpack.decode(inp.read(), type=list[bytes])


_CRASH_MODES: tuple[CrashMode, ...] = ("drop", "torn", "partial", "keep")

_snapshot_envelope = msgspec.msgpack.Decoder(tuple[list[tuple[int, bytes]], bytes])


@dataclass
class _Node:
    """One simulated server: its durable storage, and (while up) its core and state machine.
    In file mode ``fs`` is the node's simulated disk, which outlives crashes."""

    id: int
    storage: LogStore
    snap_fs: FaultyFileSystem  # the disk holding the snapshot files (``fs`` in file mode)
    snaps: SnapshotStore
    fs: FaultyFileSystem | None = None
    raft: Raft | None = None
    sm: StateMachine | None = None
    incarnation: int = 0
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    last_applied: int = 0
    # Snapshot transfers while up: one sender per follower (leader), one receiver.
    senders: SnapshotSenders | None = None
    receiver: SnapshotReceiver[SnapshotSink] | None = None
    received: dict[tuple[int, int], SnapshotSink] = field(default_factory=dict)


class SimCluster:
    """A simulated Raft cluster of ``n`` nodes with ids ``0..n-1`` (DESIGN §6).

    Time only moves inside :meth:`run_for` (and the helpers that call it). Each node ticks every
    ``tick_seconds`` of virtual time. ``pre_vote`` and ``check_quorum`` are on by default, as in
    the core. ``storage="file"`` runs each node on the real write-ahead log
    (:class:`~raftpy.storage.wal.FileStorage`) over a fault-injecting in-memory disk
    (:class:`~raftpy.storage.fs.FaultyFileSystem`): a crash then loses or tears whatever was
    not synced, exactly as a power loss could, and a restart runs the real recovery code.

    ``snapshot_every=k``: each node snapshots its state machine (and the list :meth:`applied`
    returns) once it applied ``k`` entries past its last snapshot, and compacts its log to it.
    A follower that needs compacted entries gets the leader's snapshot, streamed in chunks of
    ``snapshot_chunk_bytes`` by the same code the real node uses
    (:mod:`raftpy.node.transfer`), over the simulated network with its faults. Snapshot
    files live in a :class:`~raftpy.storage.snapshots.SnapshotStore` on the node's simulated
    disk, so in file mode a crash can also cut a snapshot write short.

    Bound on persisted raft state with snapshots: right after a snapshot a node's log holds
    only entries it has not applied; it snapshots again once ``k`` more are applied. So when
    every node has applied everything, ``persisted_size(i) <= 24 + (k - 1) * (16 + B)`` in
    memory mode, for commands of at most ``B`` bytes (see
    :meth:`~raftpy.storage.memory.MemoryStorage.persisted_bytes`).
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        state_machine: Callable[[], StateMachine] | None = None,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        tick_seconds: float = 0.01,
        snapshot_every: int | None = None,
        *,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_inflight_msgs: int = 256,
        max_msg_bytes: int = 1 << 20,
        storage: Literal["memory", "file"] = "memory",
        segment_size: int = 64 << 10,
        snapshot_chunk_bytes: int = 1024,
    ) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got n={n}")
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1 or None, got {snapshot_every}")
        if snapshot_chunk_bytes < 1:
            raise ValueError(f"snapshot_chunk_bytes must be >= 1, got {snapshot_chunk_bytes}")
        self.snapshot_every = snapshot_every
        self._chunk_bytes = snapshot_chunk_bytes
        self._election_ticks = election_ticks
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        if tick_seconds <= 0:
            raise ValueError(f"tick_seconds must be > 0, got {tick_seconds}")
        self.n = n
        self.seed = seed
        self.rng = random.Random(seed)
        self._factory: Callable[[], StateMachine] = state_machine or RecordingStateMachine
        self._tick_us = max(1, round(tick_seconds * _US))
        self._configs = [
            RaftConfig(
                id=i,
                election_ticks=election_ticks,
                heartbeat_ticks=heartbeat_ticks,
                pre_vote=pre_vote,
                check_quorum=check_quorum,
                max_inflight_msgs=max_inflight_msgs,
                max_msg_bytes=max_msg_bytes,
            )
            for i in range(n)
        ]
        self.now_us = 0
        # Events: (time_us, seq, kind, dst, dst incarnation, src, payload); seq keeps it FIFO.
        self._queue: list[tuple[int, int, int, int, int, int, bytes]] = []
        self._seq = 0
        if storage not in ("memory", "file"):
            raise ValueError(f"storage must be 'memory' or 'file', got {storage!r}")
        self._storage_kind = storage
        self._segment_size = segment_size
        self._nodes = [self._new_node(i) for i in range(n)]
        # Network state.
        self._connected = [True] * n
        self._group = [0] * n
        self._unreliable = False
        self._long_reordering = False
        self._duplicate_rate = 0.0
        self._rpcs = 0
        self._messages = 0
        self._bytes = 0
        # Checker state.
        self._leaders: dict[int, int] = {}  # term -> leader id (one leader per term)
        self._stored: list[Entry | None] = [None]  # see _check_log_matching
        self._stored_other: dict[tuple[int, int], Entry] = {}
        # _committed[index]: the entry some node applied at index (None: not applied yet).
        self._committed: list[Entry | None] = [None]
        self._hard: list[tuple[int, int]] = [(0, 0)] * n  # last written (term, commit)
        self._synced: list[tuple[int, int]] = [(0, 0)] * n  # last synced (term, commit)
        for node in self._nodes:
            self._boot(node)

    # ------------------------------------------------------------------------------------------
    # Public API (DESIGN §6)
    # ------------------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the cluster was created."""
        return self.now_us / _US

    def connect(self, i: int) -> None:
        self._connected[i] = True

    def disconnect(self, i: int) -> None:
        self._connected[i] = False

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the network: nodes talk only within their group. Every node must appear in
        exactly one group; all nodes are connected afterwards."""
        seen = sorted(i for g in groups for i in g)
        if seen != list(range(self.n)):
            raise ValueError(f"partition must name each of 0..{self.n - 1} once, got {groups}")
        for g, members in enumerate(groups):
            for i in members:
                self._group[i] = g
                self._connected[i] = True

    def heal(self) -> None:
        """Reconnect everyone in one network (ends partitions and disconnects)."""
        self._group = [0] * self.n
        self._connected = [True] * self.n

    def set_unreliable(self, unreliable: bool) -> None:
        """Delay every message 0-26 ms and drop 10% of requests and 10% of replies."""
        self._unreliable = unreliable

    def set_long_reordering(self, on: bool) -> None:
        """Hold back some replies for 200 ms - 2.2 s, so they arrive long after newer ones."""
        self._long_reordering = on

    def set_duplication(self, rate: float) -> None:
        """Deliver each message a second time (at another delay) with probability ``rate``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self._duplicate_rate = rate

    def crash(self, i: int) -> None:
        """Stop node ``i``: its core, state machine and messages in flight to it are lost;
        its storage keeps exactly what was persisted."""
        node = self._nodes[i]
        node.raft = None
        node.sm = None
        node.incarnation += 1
        node.applied = []
        node.senders = None
        node.receiver = None
        node.received = {}
        if node.fs is not None:
            # Power loss: unsynced writes are dropped, torn or partly kept; then the data dir
            # is opened again by the real recovery code.
            node.fs.crash(self.rng.choice(_CRASH_MODES))
            node.storage = FileStorage(
                f"/node{i}", range(self.n), fs=node.fs, segment_size=self._segment_size
            )
        # Reopening the snapshot directory removes partial files, as a real restart would.
        node.snaps = SnapshotStore(f"/node{i}/snap", fs=node.snap_fs)

    def restart(self, i: int) -> None:
        """Start node ``i`` again from its storage (crashing it first if it is up)."""
        if self._nodes[i].raft is not None:
            self.crash(i)
        self._boot(self._nodes[i])

    def disk(self, i: int) -> FaultyFileSystem:
        """Node ``i``'s simulated disk (file mode only), to inject faults such as
        ``crash_on_next_sync``. When an injected crash fires, the sim raises
        :class:`~raftpy.storage.fs.SimulatedCrash` out of ``run_for``; call :meth:`crash` and
        :meth:`restart` for that node, then go on."""
        fs = self._nodes[i].fs
        if fs is None:
            raise ValueError('disk() needs storage="file"')
        return fs

    def is_up(self, i: int) -> bool:
        return self._nodes[i].raft is not None

    def start(self, i: int, command: bytes) -> tuple[int, int, bool]:
        """Propose ``command`` at node ``i``. Returns ``(index, term, is_leader)``; index is -1
        when nothing was appended (not the leader, refused, or the node is down)."""
        raft = self._nodes[i].raft
        if raft is None:
            return -1, 0, False
        try:
            index, term = raft.propose_batch([command])
        except NotLeaderError:
            return -1, raft.term, False
        except ProposalDropped:
            return -1, raft.term, True
        self._process(self._nodes[i])
        return index, term, True

    def start_batch(self, i: int, commands: Sequence[bytes]) -> int:
        """Propose several commands at once at node ``i``; returns the first index, or -1."""
        raft = self._nodes[i].raft
        if raft is None:
            return -1
        try:
            first, _ = raft.propose_batch(commands)
        except (NotLeaderError, ProposalDropped):
            return -1
        self._process(self._nodes[i])
        return first

    def state(self, i: int) -> tuple[int, bool]:
        """``(term, is_leader)`` of node ``i`` (``(0, False)`` while it is down)."""
        raft = self._nodes[i].raft
        if raft is None:
            return 0, False
        return raft.term, raft.role is Role.LEADER

    def raft(self, i: int) -> Raft:
        """Node ``i``'s core, for inspection in tests. Raises if the node is down."""
        raft = self._nodes[i].raft
        if raft is None:
            raise RuntimeError(f"node {i} is down")
        return raft

    def run_for(self, seconds: float) -> None:
        """Advance virtual time by ``seconds``, processing every event due."""
        self.run_until_us(self.now_us + round(seconds * _US))

    def run_until_us(self, deadline: int) -> None:
        queue = self._queue
        nodes = self._nodes
        while queue and queue[0][0] <= deadline:
            t, _, kind, dst, inc, src, payload = heapq.heappop(queue)
            self.now_us = t
            node = nodes[dst]
            if node.incarnation != inc or node.raft is None:
                continue  # the target crashed after this was scheduled
            if kind == _TICK:
                node.raft.tick()
                self._push(t + self._tick_us, _TICK, dst, inc)
                if node.senders:
                    for request, ok in node.senders.tick():
                        node.raft.report_snapshot(request, ok)
            else:
                if not self._reachable(src, dst):
                    continue  # the link failed while the message was in flight
                m = decode_message(payload)
                # Snapshot chunks and their answers are the transfers' business, not the core's.
                if isinstance(m, InstallSnapshot):
                    self._on_snapshot_chunk(node, m)
                elif isinstance(m, InstallSnapshotResponse):
                    self._on_snapshot_answer(node, m)
                else:
                    node.raft.step(m)
            self._process(node)
        self.now_us = max(self.now_us, deadline)

    def applied(self, i: int) -> list[tuple[int, bytes]]:
        """``[(index, command)]`` node ``i`` applied, in apply order: what it applied since it
        last started, after what its snapshot held (a snapshot keeps this list, so it
        survives a restart or an install; without snapshots a restart applies the log again
        from the start)."""
        return list(self._nodes[i].applied)

    def state_machine(self, i: int) -> StateMachine:
        sm = self._nodes[i].sm
        if sm is None:
            raise RuntimeError(f"node {i} is down")
        return sm

    def rpc_count(self) -> int:
        """RPCs sent by all nodes since creation: request messages (RequestVote,
        AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow); a response belongs to its RPC."""
        return self._rpcs

    def message_count(self) -> int:
        """Every message sent (requests and responses)."""
        return self._messages

    def bytes_sent(self) -> int:
        """Encoded bytes of every message sent by all nodes since creation."""
        return self._bytes

    def persisted_size(self, i: int) -> int:
        """Bytes of raft state node ``i`` has persisted (log + hard state, not the snapshot)."""
        return self._nodes[i].storage.persisted_bytes()

    def _up_leaders(self, connected_only: bool) -> list[tuple[int, int]]:
        """``(term, id)`` of every up node that believes it leads."""
        return [
            (node.raft.term, node.id)
            for node in self._nodes
            if node.raft is not None
            and node.raft.role is Role.LEADER
            and (self._connected[node.id] or not connected_only)
        ]

    def leader(self) -> int | None:
        """The up node that believes it leads with the highest term, if any."""
        leaders = self._up_leaders(connected_only=False)
        return max(leaders)[1] if leaders else None

    def check_one_leader(self, timeout: float = 5.0) -> int:
        """Wait (virtual time) until exactly one connected node leads its term; return it.
        Raises AssertionError when none appears or two lead the same term."""
        deadline = self.now + timeout
        while True:
            self.run_for(0.05)
            by_term: dict[int, list[int]] = {}
            for term, i in self._up_leaders(connected_only=True):
                by_term.setdefault(term, []).append(i)
            for term, ids in by_term.items():
                if len(ids) > 1:
                    raise AssertionError(self._tag(f"term {term} has {len(ids)} leaders: {ids}"))
            if by_term:
                return by_term[max(by_term)][0]
            if self.now >= deadline:
                raise AssertionError(self._tag(f"no leader after {timeout} s"))

    def check_no_leader(self) -> None:
        """Assert that no connected node believes it leads."""
        leaders = self._up_leaders(connected_only=True)
        if leaders:
            raise AssertionError(self._tag(f"nodes {leaders} lead but should not"))

    def check_terms(self) -> int:
        """Assert that every connected up node agrees on the term; return it."""
        terms = {
            node.raft.term
            for node in self._nodes
            if node.raft is not None and self._connected[node.id]
        }
        if len(terms) != 1:
            raise AssertionError(self._tag(f"servers disagree on term: {sorted(terms)}"))
        return terms.pop()

    def n_committed(self, index: int) -> tuple[int, bytes | None]:
        """How many up nodes have applied a command at ``index``, and which command."""
        count = 0
        cmd: bytes | None = None
        for node in self._nodes:
            if node.raft is None:
                continue
            for idx, c in reversed(node.applied):
                if idx == index:
                    count += 1
                    cmd = c
                    break
                if idx < index:
                    break
        return count, cmd

    def wait_committed(self, index: int, n: int, timeout: float = 10.0) -> bytes | None:
        """Run until at least ``n`` nodes applied ``index``; return the command (None on
        timeout)."""
        deadline = self.now + timeout
        while self.now < deadline:
            count, cmd = self.n_committed(index)
            if count >= n:
                return cmd
            self.run_for(0.01)
        return None

    def one(self, command: bytes, expected_servers: int | None = None, retry: bool = True) -> int:
        """Get ``command`` committed on at least ``expected_servers`` nodes (default: all);
        return its index. Tries every node as leader in turn for 10 s of virtual time (with
        ``retry``, resubmits when a leader fails before committing). Raises AssertionError."""
        expected = self.n if expected_servers is None else expected_servers
        deadline = self.now + 10.0
        start = 0
        while self.now < deadline:
            index = -1
            for k in range(self.n):
                i = (start + k) % self.n
                if self._nodes[i].raft is not None and self._connected[i]:
                    index, _, ok = self.start(i, command)
                    if ok and index >= 0:
                        start = i
                        break
            if index >= 0:
                t1 = self.now + 2.0
                while self.now < t1:
                    count, cmd = self.n_committed(index)
                    if count >= expected and cmd == command:
                        return index
                    self.run_for(0.02)
                if not retry:
                    raise AssertionError(self._tag(f"one({command!r}) failed to reach agreement"))
            else:
                self.run_for(0.05)
        raise AssertionError(self._tag(f"one({command!r}) failed to reach agreement in 10 s"))

    def check_invariants(self) -> None:
        """Check every up node's own invariants (also done after every event)."""
        for node in self._nodes:
            if node.raft is not None:
                node.raft.check_invariants()

    # ------------------------------------------------------------------------------------------
    # Internals: boot, network, driver
    # ------------------------------------------------------------------------------------------

    def _tag(self, text: str) -> str:
        return f"[seed={self.seed} t={self.now:.3f}s] {text}"

    def _check_not_backwards(
        self, node_id: int, hs: HardState, before: tuple[int, int], what: str
    ) -> None:
        """Term and commit index never go backwards, also across restarts (compared with
        what was synced before the crash)."""
        if hs.term < before[0] or hs.commit < before[1]:
            raise InvariantViolation(
                self._tag(
                    f"node {node_id} {what} term {hs.term} commit {hs.commit}, below term "
                    f"{before[0]} commit {before[1]}"
                )
            )

    def _new_node(self, i: int) -> _Node:
        if self._storage_kind == "memory":
            # Snapshot files go to a private in-memory disk that is never crashed: in memory
            # mode everything a node writes survives.
            snap_fs = FaultyFileSystem(self.rng.getrandbits(32))
            snaps = SnapshotStore(f"/node{i}/snap", fs=snap_fs)
            return _Node(i, MemoryStorage(range(self.n)), snap_fs, snaps)
        fs = FaultyFileSystem(self.rng.getrandbits(32))
        storage = FileStorage(f"/node{i}", range(self.n), fs=fs, segment_size=self._segment_size)
        return _Node(i, storage, fs, SnapshotStore(f"/node{i}/snap", fs=fs), fs)

    def _boot(self, node: _Node) -> None:
        node.incarnation += 1
        node.raft = Raft(
            self._configs[node.id], node.storage, random.Random(self.rng.getrandbits(64))
        )
        node.sm = self._factory()
        node.applied = []
        node.last_applied = node.storage.first_index() - 1
        node.receiver = SnapshotReceiver(node.snaps.begin_receive, lambda sink: sink.abort())
        node.senders = SnapshotSenders(
            node.id,
            lambda m: self._send(node.id, m),
            chunk_bytes=self._chunk_bytes,
            window_bytes=4 * self._chunk_bytes,
            retry_ticks=3,
            give_up_ticks=3 * self._election_ticks,
        )
        meta = node.storage.snapshot_meta()
        if meta.index > 0:
            # Start from the snapshot the log was compacted to, then the log after it.
            if not node.snaps.has(meta):
                raise InvariantViolation(
                    self._tag(f"node {node.id}: no snapshot file for index {meta.index}")
                )
            self._restore(node, meta)
        # A snapshot file newer than the log's (a crash between writing it and compacting)
        # is not used: drop it.
        node.snaps.retain([meta])
        hs = node.storage.hard_state
        self._check_not_backwards(node.id, hs, self._synced[node.id], "restarted with")
        # Writes that were not synced may be gone: monotonicity restarts from what survived.
        self._hard[node.id] = (hs.term, hs.commit)
        # Spread the nodes' tick phases so they do not tick in lockstep.
        phase = self.rng.randrange(self._tick_us)
        self._push(self.now_us + phase + 1, _TICK, node.id, node.incarnation)

    def _push(
        self, t: int, kind: int, dst: int, inc: int, src: int = -1, data: bytes = b""
    ) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, dst, inc, src, data))

    def _reachable(self, a: int, b: int) -> bool:
        return self._connected[a] and self._connected[b] and self._group[a] == self._group[b]

    def _send(self, src: int, m: PeerMessage) -> None:
        data = encode_message(m)
        self._messages += 1
        self._bytes += len(data)
        is_request = isinstance(m, _REQUESTS)
        if is_request:
            self._rpcs += 1
        dst = m.dst
        if not self._reachable(src, dst):
            return
        rng = self.rng
        if self._unreliable:
            if rng.random() < 0.1:
                return  # dropped (request or reply alike: 10% each)
            delay = rng.randrange(0, 26_000)
        else:
            delay = rng.randrange(100, 1_000)
        if self._long_reordering and not is_request and rng.random() < 0.3:
            delay += 200_000 + rng.randrange(0, 2_000_000)
        self._schedule_delivery(src, dst, data, delay)
        if self._duplicate_rate and rng.random() < self._duplicate_rate:
            self._schedule_delivery(src, dst, data, delay + rng.randrange(0, 30_000))

    def _schedule_delivery(self, src: int, dst: int, data: bytes, delay: int) -> None:
        self._push(self.now_us + delay, _DELIVER, dst, self._nodes[dst].incarnation, src, data)

    def _process(self, node: _Node) -> None:
        raft = node.raft
        assert raft is not None
        while raft.has_ready():
            rd = raft.ready()
            self._handle_ready(node, raft, rd)
            raft.advance(rd)
        every = self.snapshot_every
        if every is not None and node.last_applied - node.storage.first_index() + 1 >= every:
            self._take_snapshot(node, raft)
        raft.check_invariants()

    # -- snapshots ----------------------------------------------------------------------------

    def _take_snapshot(self, node: _Node, raft: Raft) -> None:
        """Snapshot the state machine at its applied index and compact the log to it. The file
        is durable before the log refers to it, so a crash in between leaves the old state."""
        index = node.last_applied
        term = raft.log.term(index)
        assert term is not None
        meta = SnapshotMeta(index, term, raft.conf_state())
        sm = node.sm
        assert sm is not None
        state = io.BytesIO()
        sm.snapshot(state)
        envelope = msgspec.msgpack.encode((node.applied, state.getvalue()))
        node.snaps.create(meta, lambda out: out.write(envelope))
        node.storage.create_snapshot(meta)
        node.snaps.retain([meta])
        self.snapshots_taken += 1

    def _restore(self, node: _Node, meta: SnapshotMeta) -> None:
        """Load node's state machine (and its applied list) from its stored snapshot."""
        with node.snaps.open_body(meta) as body:
            applied, state = _snapshot_envelope.decode(body.read())
        sm = self._factory()
        sm.restore(io.BytesIO(state))
        node.sm = sm
        # State machine safety through snapshots: what it holds is what was committed.
        committed = self._committed
        for index, command in applied:
            seen = committed[index] if index < len(committed) else None
            if seen is not None and seen.data != command:
                raise InvariantViolation(
                    self._tag(
                        f"node {node.id} restored a snapshot holding {command!r} at index {index},"
                        f" but {seen.data!r} was applied there (state machine safety)"
                    )
                )
        if applied and applied[-1][0] > meta.index:
            raise InvariantViolation(self._tag(f"snapshot {meta.index} holds later entries"))
        node.applied = [(index, command) for index, command in applied]
        node.last_applied = meta.index

    def _install(self, node: _Node, meta: SnapshotMeta) -> None:
        """The core took a snapshot from the leader: make it durable, then restore it."""
        sink = node.received.pop((meta.index, meta.term))
        node.snaps.install(sink)
        node.storage.apply_snapshot(meta)
        if meta.index < node.last_applied:
            raise InvariantViolation(
                self._tag(f"node {node.id} installs snapshot {meta.index} below applied")
            )
        self._restore(node, meta)
        node.snaps.retain([meta])
        self.snapshots_installed += 1

    def _on_snapshot_answer(self, node: _Node, m: InstallSnapshotResponse) -> None:
        if node.senders is not None:
            outcome = node.senders.on_answer(m)
            if outcome is not None:
                assert node.raft is not None
                request, ok = outcome
                node.raft.report_snapshot(request, ok)

    def _on_snapshot_chunk(self, node: _Node, m: InstallSnapshot) -> None:
        receiver = node.receiver
        assert receiver is not None and node.raft is not None
        answer, completed = receiver.on_chunk(m)
        if completed is not None:
            answer = self._complete(node, completed)
        if answer is not None:
            self._send(node.id, answer)

    def _complete(self, node: _Node, completed: Completed[SnapshotSink]) -> InstallSnapshotResponse:
        """A whole snapshot file arrived: verify it, then hand it to the core."""
        m = completed.message
        sink = completed.sink
        try:
            ok = sink.finish() == m.meta
        except CorruptSnapshotError:
            ok = False
        receiver = node.receiver
        assert receiver is not None and node.raft is not None
        answer = receiver.finished(completed, ok)
        if not ok:
            sink.abort()
            return answer
        if node.raft.install_snapshot(m.meta, m.src, m.term):
            node.received[(m.meta.index, m.meta.term)] = sink  # for _install (Ready.snapshot)
        else:
            sink.abort()  # stale, or the log already holds what it covers
        self._process(node)
        return answer

    def _handle_ready(self, node: _Node, raft: Raft, rd: Ready) -> None:
        if rd.soft_state is not None:
            if rd.soft_state.role is Role.LEADER:
                self._on_new_leader(node, raft)
            elif node.senders is not None:
                node.senders.stop()  # its transfers end with its leadership
        # Messages that do not depend on durability may leave first (Thesis §10.2.1), and
        # snapshot transfers may start.
        for m in rd.messages:
            self._send(node.id, m)
        for request in rd.snapshot_requests:
            assert node.senders is not None
            node.senders.start(request, node.snaps.open_source(request.meta))
        # Persist, then sync when the Ready says so: only synced writes survive a crash.
        storage = node.storage
        if rd.snapshot is not None:
            self._install(node, rd.snapshot)
        if rd.entries:
            self._check_log_matching(node.id, rd.entries)
            storage.append(rd.entries)
        if rd.hard_state is not None:
            hs = rd.hard_state
            self._check_not_backwards(node.id, hs, self._hard[node.id], "persisted")
            self._hard[node.id] = (hs.term, hs.commit)
            storage.set_hard_state(hs)
        if rd.must_sync or node.fs is None:
            storage.sync()
            self._synced[node.id] = self._hard[node.id]
        for m in rd.persisted_messages:
            self._send(node.id, m)
        if rd.committed_entries:
            self._apply(node, rd.committed_entries)
            raft.applied_to(rd.committed_entries[-1].index)

    def _apply(self, node: _Node, entries: Sequence[Entry]) -> None:
        # Apply checker: each node applies in order, and every node applies the same entry at
        # each index (state machine safety). Whole batches are compared at once (in C).
        lo = entries[0].index
        hi = lo + len(entries)
        if lo != node.last_applied + 1 or [e.index for e in entries] != list(range(lo, hi)):
            raise InvariantViolation(
                self._tag(
                    f"node {node.id} applied indexes {[e.index for e in entries][:10]}... after "
                    f"{node.last_applied} (out of order)"
                )
            )
        committed = self._committed
        known = committed[lo:hi]
        if known != entries[: len(known)]:
            for entry, seen in zip(entries, known, strict=False):
                if seen is not None and seen != entry:
                    raise InvariantViolation(
                        self._tag(
                            f"node {node.id} applied {entry} at index {entry.index}, but another "
                            f"node applied {seen} there (state machine safety)"
                        )
                    )
                if seen is None:
                    committed[entry.index] = entry
        if len(committed) < lo:
            committed.extend([None] * (lo - len(committed)))
        committed.extend(entries[len(committed) - lo :])
        node.last_applied = hi - 1
        sm = node.sm
        assert sm is not None
        command = EntryKind.COMMAND
        commands = [(e.index, e.data) for e in entries if e.kind is command]
        node.applied.extend(commands)
        sm_apply = sm.apply
        for _, data in commands:
            sm_apply(data)

    def _check_log_matching(self, node_id: int, entries: Sequence[Entry]) -> None:
        # Raft §5.3 Log Matching: two entries with the same index and term are identical.
        # _stored[index] is the first entry stored at index by any node; entries of other
        # terms at that index (rare: conflicting leaders) go to _stored_other.
        stored = self._stored
        lo = entries[0].index
        if stored[lo : lo + len(entries)] == list(entries):
            return
        for e in entries:
            index = e.index
            if index >= len(stored):
                stored.extend([None] * (index + 1 - len(stored)))
            first = stored[index]
            if first is None:
                stored[index] = e
                continue
            other = (
                first if first.term == e.term else self._stored_other.setdefault((index, e.term), e)
            )
            if other != e:
                raise InvariantViolation(
                    self._tag(
                        f"node {node_id} stored a different entry at index {index} term "
                        f"{e.term} (log matching)"
                    )
                )

    def _on_new_leader(self, node: _Node, raft: Raft) -> None:
        term = raft.term
        other = self._leaders.setdefault(term, node.id)
        if other != node.id:
            raise InvariantViolation(
                self._tag(f"nodes {other} and {node.id} both lead term {term} (election safety)")
            )
        # Raft §5.4 Leader Completeness: the new leader holds every committed entry.
        log = raft.log
        first = log.first_index()
        for index in range(first, len(self._committed)):
            entry = self._committed[index]
            if entry is not None and log.term(index) != entry.term:
                raise InvariantViolation(
                    self._tag(
                        f"leader {node.id} of term {term} lacks committed entry {index} "
                        f"(term {entry.term}); it has term {log.term(index)} (leader completeness)"
                    )
                )
