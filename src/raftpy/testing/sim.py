"""SimCluster: n nodes of the real Raft core over a simulated network and persister, in
virtual time, deterministic from a seed (README.md, "Using the simulator to test your own
state machine").

Everything random (timeouts, delays, drops, reordering, crash damage) comes from one
``random.Random(seed)``, so a failing run is replayed exactly by running it again with the
same seed. This module is the cluster: the public API tests script, the event queue and the
simulated network (every message is encoded and decoded, so the wire format is exercised).
Each node is the real :class:`~raftpy.core.raft.Raft` driven through its Ready cycle by a tiny
driver (:mod:`raftpy.testing.sim_node`) that persists into a
:class:`~raftpy.storage.memory.MemoryStorage` (or the real write-ahead log on a simulated
disk), sends through this network, and applies committed entries to the node's state machine.

Checkers run inside, always (:mod:`raftpy.testing.checkers`): election safety, one vote per term,
log matching, leader completeness, state machine safety and in-order apply, term and commit never
going backwards (also across restarts), snapshot restores, and linearizable reads. A violation
raises :class:`~raftpy.errors.InvariantViolation` at once, with the seed in it.

Membership changes (Thesis §4): :meth:`SimCluster.add_node` creates a node with an empty disk,
:meth:`~SimCluster.add_member`, :meth:`~SimCluster.promote`, :meth:`~SimCluster.remove_member`
and :meth:`~SimCluster.change` drive a change through the leader
(:mod:`raftpy.testing.sim_members`), and :meth:`~SimCluster.wipe` loses a node's disk.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable, Sequence
from typing import BinaryIO, Literal

import msgspec

from raftpy.core.confchange import ConfChange
from raftpy.core.config import RaftConfig
from raftpy.core.messages import (
    AppendEntries,
    ConfState,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    PeerMessage,
    RequestVote,
    TimeoutNow,
    decode_message,
    encode_message,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import ReadState, Role
from raftpy.errors import NotLeaderError, ProposalDropped
from raftpy.statemachine import StateMachine
from raftpy.storage.fs import CrashMode, FaultyFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage
from raftpy.testing.checkers import SafetyCheckers
from raftpy.testing.sim_members import DiskIdentities, MembershipDriver
from raftpy.testing.sim_node import NodeEnv, SimNode

__all__ = ["RecordingStateMachine", "SimCluster"]

_US = 1_000_000  # virtual time is kept in integer microseconds
_REQUESTS = (RequestVote, AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)

# Event kinds in the queue.
_TICK = 0
_DELIVER = 1

_CRASH_MODES: tuple[CrashMode, ...] = ("drop", "torn", "partial", "keep")


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


class SimCluster:
    """A simulated Raft cluster of ``n`` nodes with ids ``0..n-1`` (README.md, "Using the
    simulator to test your own state machine").

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
        lease_ticks: int = 0,
    ) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got n={n}")
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1 or None, got {snapshot_every}")
        if snapshot_chunk_bytes < 1:
            raise ValueError(f"snapshot_chunk_bytes must be >= 1, got {snapshot_chunk_bytes}")
        self.snapshot_every = snapshot_every
        if tick_seconds <= 0:
            raise ValueError(f"tick_seconds must be > 0, got {tick_seconds}")
        self.n = n
        self.seed = seed
        self.rng = random.Random(seed)
        self._factory: Callable[[], StateMachine] = state_machine or RecordingStateMachine
        self._tick_us = max(1, round(tick_seconds * _US))
        self._config = RaftConfig(
            id=0,
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight_msgs=max_inflight_msgs,
            max_msg_bytes=max_msg_bytes,
            lease_ticks=lease_ticks,
        )
        self._clock_rates: dict[int, float] = {}  # node -> clock speed (1.0 when absent)
        self.now_us = 0
        # Events: (time_us, seq, kind, dst, dst incarnation, src, payload); seq keeps it FIFO.
        self._queue: list[tuple[int, int, int, int, int, int, bytes]] = []
        self._seq = 0
        if storage not in ("memory", "file"):
            raise ValueError(f"storage must be 'memory' or 'file', got {storage!r}")
        self._storage_kind = storage
        self._checks = SafetyCheckers(n, self._tag)
        self._env = NodeEnv(
            n=n,
            factory=self._factory,
            send=self._send,
            checks=self._checks,
            snapshot_every=snapshot_every,
            chunk_bytes=snapshot_chunk_bytes,
            election_ticks=election_ticks,
            segment_size=segment_size,
        )
        self._nodes = [self._new_node(i, tuple(range(n))) for i in range(n)]
        # Network state.
        self._connected = [True] * n
        self._group = [0] * n
        # Whose disk each node expects each member to have; consulted once a disk was wiped.
        self._identities = DiskIdentities(self._checks.state_machine.committed)
        self._wiped = False
        self._last_conf = ConfState(voters=tuple(range(n)))  # for members() while all are down
        self._background: list[Callable[[], None]] = []
        self._membership = MembershipDriver(
            self,
            self._current_leader,
            lambda i: self._nodes[i].process(),
            self._tag,
            lambda i, index, term: self._identities.record_add(i, index, term, self._nodes[i].disk),
        )
        self._unreliable = False
        self._long_reordering = False
        self._jitter_us = 0
        self._duplicate_rate = 0.0
        # (src, dst) -> (kinds held, none meaning all; the held messages), see hold().
        self._held: dict[tuple[int, int], tuple[tuple[type[PeerMessage], ...], list[bytes]]] = {}
        self._rpcs = 0
        self._messages = 0
        self._bytes = 0
        self._reads = 0  # read contexts handed out (they must be unique among open reads)
        for node in self._nodes:
            self._boot(node)

    # ------------------------------------------------------------------------------------------
    # Public API
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

    def set_jitter(self, max_seconds: float) -> None:
        """Delay every message by 0 to ``max_seconds`` (uniformly, no loss; 0: off), so a
        request may arrive after the answer to a later message; unreliable overrides it."""
        if not 0.0 <= max_seconds <= 1.0:
            raise ValueError(f"max_seconds must be in [0, 1], got {max_seconds}")
        self._jitter_us = round(max_seconds * _US)

    def set_long_reordering(self, on: bool) -> None:
        """Hold back some replies for 200 ms - 2.2 s, so they arrive long after newer ones."""
        self._long_reordering = on

    def set_duplication(self, rate: float) -> None:
        """Deliver each message a second time (at another delay) with probability ``rate``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self._duplicate_rate = rate

    def set_clock_rate(self, i: int, rate: float) -> None:
        """Make node ``i``'s clock run at ``rate`` times the speed of virtual time (clock
        skew): it ticks every ``tick_seconds / rate``. A slow leader (``rate < 1``) keeps its
        lease too long in real time, a fast follower stops refusing votes too early (Thesis
        §6.4.1: lease reads assume bounded drift). Takes effect from the node's next tick."""
        if not 0.01 <= rate <= 100:
            raise ValueError(f"rate must be in [0.01, 100], got {rate}")
        self._clock_rates[i] = rate

    def campaign(self, *nodes: int) -> None:
        """Fire the election timers of ``nodes`` in one instant, as for followers that heard
        the same last heartbeat and drew the same timeout (Raft §5.2): a split vote."""
        rafts = [(i, r) for i in nodes if (r := self._nodes[i].raft) is not None]
        for _, raft in rafts:
            raft.campaign()
        for i, _ in rafts:
            self._nodes[i].process()

    def hold(self, src: int, dst: int, *kinds: type[PeerMessage]) -> None:
        """Hold back what ``src`` sends to ``dst`` (of ``kinds``, say ``RequestVote``; all
        without) until :meth:`release`: a stalled sender queue, so it arrives after what
        others send later. A crash of ``src`` loses what is held, one of ``dst`` does not."""
        self._held[(src, dst)] = (kinds, [])

    def release(self, src: int, dst: int) -> None:
        """Stop holding ``src`` -> ``dst`` and send what was held, in order, a moment apart
        (after anything already on its way), if the link is up."""
        _, held = self._held.pop((src, dst), ((), []))
        for k, data in enumerate(held):
            if self._reachable(src, dst):
                self._schedule_delivery(src, dst, data, 100 * (k + 1))

    def crash(self, i: int, mode: CrashMode | None = None) -> None:
        """Stop node ``i``: its core, state machine and messages in flight to it are lost;
        its storage keeps exactly what was persisted. In file mode the power loss does
        ``mode`` to unsynced writes (by default one of the modes at random)."""
        node = self._nodes[i]
        if node.fs is not None and mode is None:
            mode = self.rng.choice(_CRASH_MODES)
        node.crash(mode if node.fs is not None else None)
        for (src, _), (_, held) in self._held.items():
            if src == i:
                held.clear()  # its send queue was in its memory

    def restart(
        self, i: int, *, keep_in_flight: bool = False, mode: CrashMode | None = None
    ) -> None:
        """Start node ``i`` again from its storage (crashing it first if it is up, with
        ``mode`` as in :meth:`crash`). Messages on their way to it are lost, unless
        ``keep_in_flight``: a fast reboot behind senders that queue and deliver again once
        it is back, so requests sent before it went down still reach it, now answered from
        what it persisted."""
        node = self._nodes[i]
        if node.raft is not None:
            self.crash(i, mode)
        self._boot(node)
        if keep_in_flight:
            # Only the incarnation field changes: (time, seq) still order the heap.
            inc = node.incarnation
            self._queue = [
                (t, seq, kind, dst, inc, src, data)
                if kind == _DELIVER and dst == i and old < inc
                else (t, seq, kind, dst, old, src, data)
                for t, seq, kind, dst, old, src, data in self._queue
            ]

    def disk(self, i: int) -> FaultyFileSystem:
        """Node ``i``'s simulated disk (file mode only), to inject faults such as
        ``crash_on_next_sync``. When an injected crash fires, the sim raises
        :class:`~raftpy.storage.fs.SimulatedCrash` out of ``run_for``; call :meth:`crash` and
        :meth:`restart` for that node, then go on."""
        fs = self._nodes[i].fs
        if fs is None:
            raise ValueError('disk() needs storage="file"')
        return fs

    def hold_applies(self, i: int, hold: bool) -> None:
        """Make node ``i``'s state machine slow (``hold``): committed entries wait unapplied
        until ``hold_applies(i, False)``, which applies them (the core's applied index lags its
        commit index meanwhile, as behind a slow state machine). A crash drops what waits."""
        node = self._nodes[i]
        node.hold_applies = hold
        if not hold and node.raft is not None:
            node.release_applies()
            node.process()

    def is_up(self, i: int) -> bool:
        return self._nodes[i].raft is not None

    def start(
        self, i: int, command: bytes, kind: EntryKind = EntryKind.COMMAND
    ) -> tuple[int, int, bool]:
        """Propose ``command`` at node ``i`` (``kind`` SESSION: a session record, see
        :mod:`raftpy.testing.sim_sessions`). Returns ``(index, term, is_leader)``; index is -1
        when nothing was appended (not the leader, refused, or the node is down)."""
        raft = self._nodes[i].raft
        if raft is None:
            return -1, 0, False
        try:
            index, term = raft.propose_batch([command], kind)
        except NotLeaderError:
            return -1, raft.term, False
        except ProposalDropped:
            return -1, raft.term, True
        self._nodes[i].process()
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
        self._nodes[i].process()
        return first

    def read_lease(self, i: int) -> bytes | None:
        """Ask node ``i`` for a lease read (Thesis §6.4.1): as :meth:`read_index`, but a
        leader whose lease holds answers at once; None when node ``i`` is not the leader."""
        return self._read(i, lease=True)

    def read_index(self, i: int) -> bytes | None:
        """Ask node ``i`` for a linearizable read (Thesis §6.4, ReadIndex). Returns the read's
        context (unique in the cluster), or None when node ``i`` is down or knows no leader
        (a follower forwards the read to its leader).

        The core confirms its leadership with a heartbeat round first (after committing an
        entry of its term); the answer is a :class:`~raftpy.core.ready.ReadState` in
        :meth:`read_states`, or the context in :meth:`dropped_reads` if leadership is lost
        first. A stale answer (below a commit index reached anywhere before the read was
        issued) raises :class:`~raftpy.errors.InvariantViolation`."""
        return self._read(i, lease=False)

    def _read(self, i: int, lease: bool) -> bytes | None:
        node = self._nodes[i]
        raft = node.raft
        if raft is None:
            return None
        self._reads += 1
        context = b"read-%d" % self._reads
        try:
            if lease:
                raft.read_lease(context)
            else:
                raft.read_index(context)
        except NotLeaderError:
            return None
        self._checks.reads.on_issue(i, context)
        node.process()
        return context

    def read_states(self, i: int) -> list[ReadState]:
        """Every read point node ``i``'s core confirmed (its Ready's ``read_states``), oldest
        first, since the cluster was created: the read ``context`` may be served once the
        node has applied ``index``."""
        return list(self._nodes[i].read_states)

    def dropped_reads(self, i: int) -> list[bytes]:
        """Contexts of the reads node ``i`` dropped because it lost leadership first."""
        return list(self._nodes[i].dropped_reads)

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
        """Advance virtual time by ``seconds``, processing every event due (after calling the
        :meth:`add_background` functions once)."""
        for fn in self._background:
            fn()
        self.run_until_us(self.now_us + round(seconds * _US))

    def add_background(self, fn: Callable[[], None] | None) -> None:
        """Call ``fn`` at the start of every :meth:`run_for` (every helper that waits, such as
        :meth:`add_member` or :meth:`one`, runs time in slices of 10-50 ms through it): a
        client that keeps writing while a test does something else. ``None`` removes all."""
        if fn is None:
            self._background.clear()
        else:
            self._background.append(fn)

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
                rate = self._clock_rates.get(dst)
                period = self._tick_us if rate is None else max(1, round(self._tick_us / rate))
                self._push(t + period, _TICK, dst, inc)
                node.tick_transfers()
            else:
                if not self._reachable(src, dst):
                    continue  # the link failed while the message was in flight
                m = decode_message(payload)
                if self._wiped and not isinstance(m, _REQUESTS) and self._refuses(dst, src):
                    continue  # an answer from a disk dst does not know as that member
                node.deliver(m)
            node.process()
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

    @property
    def snapshots_taken(self) -> int:
        """Snapshots the nodes took of their own state machines since creation."""
        return sum(node.snapshots_taken for node in self._nodes)

    @property
    def snapshots_installed(self) -> int:
        """Snapshots the nodes installed from a leader since creation."""
        return sum(node.snapshots_installed for node in self._nodes)

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
            members = self._latest_conf().members() if by_term else frozenset()
            for term in sorted(by_term, reverse=True):
                if by_term[term][0] in members:  # a removed leader stepping down does not count
                    return by_term[term][0]
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
        """Get ``command`` committed on at least ``expected_servers`` nodes (default: every
        member, see :meth:`members`); return its index. Tries every node as leader in turn for
        10 s of virtual time (with ``retry``, resubmits when a leader fails before committing).
        Raises AssertionError."""
        expected = (
            len(self._latest_conf().members()) if expected_servers is None else expected_servers
        )
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

    # ------------------------------------------------------------------------------------------
    # Membership (Thesis §4; the driving is in raftpy.testing.sim_members)
    # ------------------------------------------------------------------------------------------

    def add_node(self) -> int:
        """Create and start a new node with an empty disk bootstrapped with no voters (as a
        server started to join an existing cluster); return its id, ``n`` before the call.
        It is not a member until :meth:`add_member`: it never campaigns, and it learns the
        membership from the leader's log or snapshot. It starts connected, in the first
        group of a partition."""
        i = self.n
        self.n += 1
        self._connected.append(True)
        self._group.append(0)
        node = self._new_node(i, ())
        self._nodes.append(node)
        self._boot(node)
        return i

    def wipe(self, i: int) -> None:
        """Crash node ``i`` and lose its disk (log, hard state, snapshots): it stays down;
        :meth:`restart` starts it with an empty disk bootstrapped with no voters.

        A node that lost its disk lost its votes and its acknowledged entries, so it must never
        count as the member it was (Raft §5.2, §5.4). The simulator models the real node's data
        dir identity check (:class:`~raftpy.testing.sim_members.DiskIdentities`): a server
        refuses a member that answers with another disk than the one the configuration entry
        adding it recorded, and does not count its answers (votes, acknowledgements: they
        are dropped). So node ``i`` is refused until it is added again (:meth:`add_member`,
        which refuses a node that still is a member), and then still by any server whose log
        lacks that entry (a removed server that never learned it). The fix is the operator's,
        as on a real cluster: ``remove_member(i)``, then ``add_member(i)`` (a new learner,
        which catches up) and ``promote(i)``."""
        node = self._nodes[i]
        if self._storage_kind == "memory":
            snap_fs = FaultyFileSystem(self.rng.getrandbits(32))
            node.wipe(MemoryStorage([]), snap_fs, None)
        else:
            fs = FaultyFileSystem(self.rng.getrandbits(32))
            storage = FileStorage(f"/node{i}", [], fs=fs, segment_size=self._env.segment_size)
            node.wipe(storage, fs, fs)
        self._wiped = True

    def add_member(self, i: int, voter: bool = False, *, timeout: float = 10.0) -> ConfState:
        """Add node ``i`` (address ``sim://i``) as a learner, or a voter with ``voter``, through
        the leader; return the leader's membership once the change is committed and applied
        there. Raises :class:`~raftpy.errors.ConfChangeError` if ``i`` is a member already or
        the core refuses the change, :class:`~raftpy.errors.IndeterminateError` if it is not
        done within ``timeout`` virtual seconds (it may still commit)."""
        return self._membership.add_member(i, voter, timeout)

    def promote(self, i: int, *, force: bool = False, timeout: float = 10.0) -> ConfState:
        """Make learner ``i`` a voter once it has caught up (within ``max_learner_lag``
        entries of the leader; ``force`` does not wait); as :meth:`add_member`."""
        return self._membership.promote(i, force, timeout)

    def remove_member(self, i: int, *, force: bool = False, timeout: float = 10.0) -> ConfState:
        """Remove node ``i`` (a voter, the leader included, or a learner); as
        :meth:`add_member`. ``force`` skips the check that a quorum of voters stays reachable.
        The removed node keeps running until crashed: it cannot disrupt the cluster."""
        return self._membership.remove_member(i, force, timeout)

    def change(self, cc: ConfChange, *, force: bool = False, timeout: float = 10.0) -> ConfState:
        """Make any change (``AUTO`` or ``JOINT_IMPLICIT``: several voters at once go through
        joint consensus, Thesis §4.3, left automatically); as :meth:`add_member`."""
        return self._membership.change(cc, force, timeout)

    def members(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(voters, learners)`` in force, sorted, as the leader sees them (the voters of both
        halves while joint). Without a leader: as the up node with the most recent log sees
        them (with every node down: as last seen)."""
        conf = self._latest_conf()
        voters = tuple(sorted({*conf.voters, *conf.voters_outgoing}))
        return voters, tuple(sorted(conf.learners))

    def _latest_conf(self) -> ConfState:
        lead = self._current_leader()
        if lead is not None:
            self._last_conf = self.raft(lead).conf_state()
            return self._last_conf
        up = [node.raft for node in self._nodes if node.raft is not None]
        if up:  # else: every node is down; the last membership seen is still the best guess
            latest = max(up, key=lambda r: (r.log.last_term(), r.log.last_index(), r.term))
            self._last_conf = latest.conf_state()
        return self._last_conf

    def _current_leader(self) -> int | None:
        """The connected up node leading the highest term, if any."""
        leaders = self._up_leaders(connected_only=True)
        return max(leaders)[1] if leaders else None

    def check_invariants(self) -> None:
        """Check every up node's own invariants (also done after every event)."""
        for node in self._nodes:
            if node.raft is not None:
                node.raft.check_invariants()

    # ------------------------------------------------------------------------------------------
    # Internals: boot, network
    # ------------------------------------------------------------------------------------------

    def _tag(self, text: str) -> str:
        return f"[seed={self.seed} t={self.now:.3f}s] {text}"

    def _new_node(self, i: int, bootstrap: tuple[int, ...]) -> SimNode:
        config = dataclasses.replace(self._config, id=i)
        env = self._env
        if self._storage_kind == "memory":
            # Snapshot files go to a private in-memory disk that is never crashed: in memory
            # mode everything a node writes survives.
            snap_fs = FaultyFileSystem(self.rng.getrandbits(32))
            snaps = SnapshotStore(f"/node{i}/snap", fs=snap_fs)
            storage = MemoryStorage(bootstrap)
            return SimNode(i, config, env, storage, snap_fs, snaps, bootstrap=bootstrap)
        fs = FaultyFileSystem(self.rng.getrandbits(32))
        file_storage = FileStorage(f"/node{i}", bootstrap, fs=fs, segment_size=env.segment_size)
        snaps = SnapshotStore(f"/node{i}/snap", fs=fs)
        return SimNode(i, config, env, file_storage, fs, snaps, fs, bootstrap=bootstrap)

    def _boot(self, node: SimNode) -> None:
        node.boot(random.Random(self.rng.getrandbits(64)))
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

    def _refuses(self, dst: int, src: int) -> bool:
        """Whether ``dst`` refuses to count ``src``'s answers (votes, acknowledgements): the
        data dir identity check (:class:`DiskIdentities`). Requests still pass: following a
        leader or answering a candidate is safe whatever its disk; only counting a member
        that lost its disk as the member it was is not."""
        disk = self._nodes[src].disk
        if disk == 0:
            return False  # never wiped: every record of it is its first disk
        return not self._identities.accepts(self._nodes[dst].raft, src, disk)

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
        held = self._held.get((src, dst)) if self._held else None
        if held is not None and (not held[0] or isinstance(m, held[0])):
            held[1].append(data)
            return
        rng = self.rng
        if self._unreliable:
            if rng.random() < 0.1:
                return  # dropped (request or reply alike: 10% each)
            delay = rng.randrange(0, 26_000)
        elif self._jitter_us:
            delay = rng.randrange(0, self._jitter_us + 1)
        else:
            delay = rng.randrange(100, 1_000)
        if self._long_reordering and not is_request and rng.random() < 0.3:
            delay += 200_000 + rng.randrange(0, 2_000_000)
        self._schedule_delivery(src, dst, data, delay)
        if self._duplicate_rate and rng.random() < self._duplicate_rate:
            self._schedule_delivery(src, dst, data, delay + rng.randrange(0, 30_000))

    def _schedule_delivery(self, src: int, dst: int, data: bytes, delay: int) -> None:
        self._push(self.now_us + delay, _DELIVER, dst, self._nodes[dst].incarnation, src, data)
