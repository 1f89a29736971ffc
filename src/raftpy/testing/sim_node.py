"""One simulated server of a :class:`~raftpy.testing.sim.SimCluster` and its driver: the Ready
loop, snapshot transfers, and boot from (and crash of) its simulated storage.

The driver runs the real :class:`~raftpy.core.raft.Raft` through its Ready cycle
(:mod:`raftpy.core.ready`): it persists into the node's :class:`~raftpy.storage.base.LogStore`
(in memory, or the real write-ahead log on a fault-injecting disk), sends through the
cluster's simulated network, applies committed entries to the node's state machine, and
records the reads the core confirms. Snapshot chunks and their answers go to the same transfer
code the real node uses (:mod:`raftpy.node.transfer`), never to the core. Every step feeds the
cluster-wide checks (:mod:`raftpy.testing.checkers`).

A crash drops the core and state machine and keeps only the storage, which holds exactly what
the core asked to persist: the driver writes and "syncs" before sending anything that depends
on it, as the Ready contract says.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from raftpy.core.config import RaftConfig
from raftpy.core.messages import (
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    PeerMessage,
    RequestVoteResponse,
    SnapshotMeta,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import ReadState, Ready, Role
from raftpy.errors import InvariantViolation, RejectedMessage
from raftpy.node.session_machine import SessionStateMachine
from raftpy.node.transfer import Completed, SnapshotReceiver, SnapshotSenders
from raftpy.statemachine import StateMachine
from raftpy.storage.base import LogStore
from raftpy.storage.errors import CorruptSnapshotError
from raftpy.storage.fs import CrashMode, FaultyFileSystem
from raftpy.storage.snapshots import SnapshotSink, SnapshotStore
from raftpy.storage.wal import FileStorage
from raftpy.testing.checkers import SafetyCheckers

__all__ = ["NodeEnv", "SimNode"]

# A snapshot file holds the node's applied list (so ``SimCluster.applied`` survives snapshots)
# and the state machine's own snapshot.
_snapshot_envelope = msgspec.msgpack.Decoder(tuple[list[tuple[int, bytes]], bytes])


@dataclass(frozen=True)
class NodeEnv:
    """What every node of one cluster shares: its settings, the network and the checks."""

    n: int
    factory: Callable[[], StateMachine]
    send: Callable[[int, PeerMessage], None]  # (src, message) into the simulated network
    checks: SafetyCheckers
    snapshot_every: int | None
    chunk_bytes: int
    election_ticks: int
    segment_size: int


@dataclass
class SimNode:
    """One simulated server: its durable storage, and (while up) its core and state machine.
    In file mode ``fs`` is the node's simulated disk, which outlives crashes."""

    id: int
    config: RaftConfig
    env: NodeEnv
    storage: LogStore
    snap_fs: FaultyFileSystem  # the disk holding the snapshot files (``fs`` in file mode)
    snaps: SnapshotStore
    fs: FaultyFileSystem | None = None
    # The voters a brand-new disk is bootstrapped with: the initial cluster, or none for a node
    # added later (or wiped), which learns the membership from the leader.
    bootstrap: tuple[int, ...] = ()
    # Which disk this is: bumped by ``wipe`` (peers compare it to the disk the node was added
    # with, as the real handshake compares data dir identities).
    disk: int = 0
    raft: Raft | None = None
    sm: StateMachine | None = None
    incarnation: int = 0
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    last_applied: int = 0
    # Snapshot transfers while up: one sender per follower (leader), one receiver.
    senders: SnapshotSenders | None = None
    receiver: SnapshotReceiver[SnapshotSink] | None = None
    received: dict[tuple[int, int], SnapshotSink] = field(default_factory=dict)
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    # Every read the core confirmed, and every read it dropped, since the cluster started.
    read_states: list[ReadState] = field(default_factory=list)
    dropped_reads: list[bytes] = field(default_factory=list)
    # A slow state machine: while ``hold_applies``, committed entries wait in ``held``.
    hold_applies: bool = False
    held: list[Entry] = field(default_factory=list)

    # -- life cycle ---------------------------------------------------------------------------

    def crash(self, mode: CrashMode | None) -> None:
        """Lose the core, the state machine and the transfers; keep the storage. In file
        mode, ``mode`` says what the power loss does to unsynced writes."""
        self.raft = None
        self.sm = None
        self.incarnation += 1
        self.applied = []
        self.held = []
        self.senders = None
        self.receiver = None
        self.received = {}
        self.env.checks.reads.on_crash(self.id)
        if self.fs is not None:
            assert mode is not None
            # Power loss: unsynced writes are dropped, torn or partly kept; then the data dir
            # is opened again by the real recovery code.
            self.fs.crash(mode)
            self.storage = FileStorage(
                f"/node{self.id}", self.bootstrap, fs=self.fs, segment_size=self.env.segment_size
            )
        # Reopen the snapshot directory; the simulated node always goes on to start, so it
        # deletes the leftovers of interrupted transfers as a real node does once it decided.
        self.snaps = SnapshotStore(f"/node{self.id}/snap", fs=self.snap_fs)
        self.snaps.remove_leftovers()

    def wipe(
        self,
        storage: LogStore,
        snap_fs: FaultyFileSystem,
        fs: FaultyFileSystem | None,
    ) -> None:
        """Crash (if up) and lose the disk: the node will boot from ``storage``, a brand-new
        disk bootstrapped with no voters."""
        if self.raft is not None:
            self.crash("drop" if self.fs is not None else None)
        self.storage = storage
        self.snap_fs = snap_fs
        self.fs = fs
        self.bootstrap = ()
        self.disk += 1
        self.snaps = SnapshotStore(f"/node{self.id}/snap", fs=snap_fs)
        self.env.checks.monotonic.on_wipe(self.id)
        self.env.checks.votes.on_wipe(self.id)

    def boot(self, rng: random.Random) -> None:
        """Start a new core (drawing from ``rng``) and state machine from the storage."""
        env = self.env
        self.incarnation += 1
        self.raft = Raft(self.config, self.storage, rng)
        self.sm = env.factory()
        self.applied = []
        self.last_applied = self.storage.first_index() - 1
        raft = self.raft
        self.receiver = SnapshotReceiver(
            self.snaps.begin_receive,
            lambda sink: sink.abort(),
            authority=lambda: (raft.term, raft.lead),
            clock=lambda: 0.0,  # the simulation's logs must not depend on the wall clock
        )
        self.senders = SnapshotSenders(
            self.id,
            lambda m: env.send(self.id, m),
            chunk_bytes=env.chunk_bytes,
            window_bytes=4 * env.chunk_bytes,
            retry_ticks=3,
            give_up_ticks=3 * env.election_ticks,
        )
        meta = self.storage.snapshot_meta()
        if meta.index > 0:
            # Start from the snapshot the log was compacted to, then the log after it.
            env.checks.snapshots.on_boot(self.id, meta, self.snaps.has(meta))
            self._restore(meta)
        # A snapshot file newer than the log's (a crash between writing it and compacting)
        # is not used: drop it.
        self.snaps.retain([meta])
        env.checks.monotonic.on_restart(self.id, self.storage.hard_state)

    # -- inputs -------------------------------------------------------------------------------

    def tick_transfers(self) -> None:
        """A tick for the snapshot senders: retry, or give up and tell the core."""
        if self.senders:
            assert self.raft is not None
            for request, ok in self.senders.tick():
                self.raft.report_snapshot(request, ok)

    def deliver(self, m: PeerMessage) -> None:
        """A message arrived. Snapshot chunks and their answers are the transfers' business,
        not the core's."""
        assert self.raft is not None
        if isinstance(m, InstallSnapshot):
            self._on_snapshot_chunk(m)
        elif isinstance(m, InstallSnapshotResponse):
            self._on_snapshot_answer(m)
        else:
            try:
                self.raft.step(m)
            except RejectedMessage as exc:
                raise self._rejection_is_a_bug(exc) from exc

    def _rejection_is_a_bug(self, exc: RejectedMessage) -> InvariantViolation:
        # Simulated peers run the real core and cannot forge: a message a correct core
        # rejects means a core sent it, which is a bug for the fuzz to report.
        return InvariantViolation(f"node {self.id} rejected a message a core sent: {exc}")

    def process(self) -> None:
        """Run the Ready loop until the core has nothing more to do, then snapshot if due."""
        raft = self.raft
        assert raft is not None
        while raft.has_ready():
            rd = raft.ready()
            self._handle_ready(raft, rd)
            raft.advance(rd)
        for context in raft.take_dropped_reads():
            self.env.checks.reads.on_dropped(self.id, context)
            self.dropped_reads.append(context)
        every = self.env.snapshot_every
        if every is not None and self.last_applied - self.storage.first_index() + 1 >= every:
            self._take_snapshot(raft)
        raft.check_invariants()

    # -- the Ready loop -----------------------------------------------------------------------

    def _handle_ready(self, raft: Raft, rd: Ready) -> None:
        checks = self.env.checks
        if rd.soft_state is not None:
            if rd.soft_state.role is Role.LEADER:
                checks.election.on_leader(self.id, raft.term)
                checks.leader_completeness.on_leader(self.id, raft.term, raft.log)
            elif self.senders is not None:
                self.senders.stop()  # its transfers end with its leadership
        # Messages that do not depend on durability may leave first (Thesis §10.2.1), and
        # snapshot transfers may start.
        self._send(rd.messages)
        for request in rd.snapshot_requests:
            assert self.senders is not None
            self.senders.start(request, self.snaps.open_source(request.meta))
        # Persist, then sync when the Ready says so: only synced writes survive a crash.
        storage = self.storage
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if rd.entries:
            checks.log_matching.on_stored(self.id, rd.entries)
            storage.append(rd.entries)
        if rd.hard_state is not None:
            hs = rd.hard_state
            checks.monotonic.on_persist(self.id, hs)
            checks.reads.on_commit(hs.commit)
            storage.set_hard_state(hs)
        if rd.must_sync or self.fs is None:
            storage.sync()
            checks.monotonic.on_sync(self.id)
        self._send(rd.persisted_messages)
        if rd.committed_entries:
            self.held.extend(rd.committed_entries)
            if not self.hold_applies:
                self.release_applies()
        # Thesis §6.4: each read may be served once its index is applied. The simulator
        # serves none; it records and checks the read points.
        for rs in rd.read_states:
            checks.reads.on_read_state(self.id, rs)
            self.read_states.append(rs)

    def _send(self, messages: Sequence[PeerMessage]) -> None:
        """Send a Ready's messages; every vote reply that leaves is checked, delivered or not
        (Raft §5.2: one vote per term)."""
        send = self.env.send
        votes = self.env.checks.votes
        for m in messages:
            if type(m) is RequestVoteResponse:
                votes.on_reply(m)
            send(self.id, m)

    def release_applies(self) -> None:
        """Apply the committed entries held back (a slow state machine catching up)."""
        raft = self.raft
        if not self.held or raft is None:
            return
        entries, self.held = self.held, []
        checks = self.env.checks
        self._apply(entries)
        raft.applied_to(entries[-1].index)
        checks.state_machine.on_core_applied(self.id, raft.log.applied, self.last_applied)
        checks.membership.on_applied(
            self.id, self.last_applied, raft.conf_state_at(self.last_applied)
        )

    def _apply(self, entries: Sequence[Entry]) -> None:
        self.env.checks.state_machine.on_apply(self.id, self.last_applied, entries)
        self.last_applied = entries[-1].index
        sm = self.sm
        assert sm is not None
        command = EntryKind.COMMAND
        session = EntryKind.SESSION
        commands = [(e.index, e.data) for e in entries if e.kind is command or e.kind is session]
        self.applied.extend(commands)
        if isinstance(sm, SessionStateMachine):
            # Sessions (raftpy.testing.sim_sessions): through the node's own session table.
            for e in entries:
                if e.kind is command or e.kind is session:
                    sm.apply_entry(e)
            return
        sm_apply = sm.apply
        for _, data in commands:
            sm_apply(data)

    # -- snapshots ----------------------------------------------------------------------------

    def _take_snapshot(self, raft: Raft) -> None:
        """Snapshot the state machine at its applied index and compact the log to it. The file
        is durable before the log refers to it, so a crash in between leaves the old state."""
        index = self.last_applied
        term = raft.log.term(index)
        assert term is not None
        meta = SnapshotMeta(index, term, raft.conf_state_at(index))
        sm = self.sm
        assert sm is not None
        state = io.BytesIO()
        sm.snapshot(state)
        envelope = msgspec.msgpack.encode((self.applied, state.getvalue()))
        self.snaps.create(meta, lambda out: out.write(envelope))
        self.storage.create_snapshot(meta)
        self.snaps.retain([meta])
        self.snapshots_taken += 1

    def _restore(self, meta: SnapshotMeta) -> None:
        """Load the state machine (and the applied list) from the stored snapshot ``meta``."""
        with self.snaps.open_body(meta) as body:
            applied, state = _snapshot_envelope.decode(body.read())
        sm = self.env.factory()
        sm.restore(io.BytesIO(state))
        self.sm = sm
        self.env.checks.snapshots.on_restore(self.id, meta, applied)
        self.env.checks.membership.on_applied(self.id, meta.index, meta.conf)
        self.applied = [(index, command) for index, command in applied]
        self.last_applied = meta.index

    def _install(self, meta: SnapshotMeta) -> None:
        """The core took a snapshot from the leader: make it durable, then restore it."""
        sink = self.received.pop((meta.index, meta.term))
        self.held = []  # the snapshot covers them: it is past every committed entry
        self.snaps.install(sink)
        self.storage.apply_snapshot(meta)
        self.env.checks.snapshots.on_install(self.id, meta, self.last_applied)
        self._restore(meta)
        self.snaps.retain([meta])
        self.snapshots_installed += 1

    def _on_snapshot_answer(self, m: InstallSnapshotResponse) -> None:
        if self.senders is not None:
            outcome = self.senders.on_answer(m)
            if outcome is not None:
                assert self.raft is not None
                request, ok = outcome
                self.raft.report_snapshot(request, ok)

    def _on_snapshot_chunk(self, m: InstallSnapshot) -> None:
        receiver = self.receiver
        assert receiver is not None and self.raft is not None
        answer, completed = receiver.on_chunk(m)
        if completed is not None:
            answer = self._complete(completed)
        if answer is not None:
            self.env.send(self.id, answer)

    def _complete(self, completed: Completed[SnapshotSink]) -> InstallSnapshotResponse:
        """A whole snapshot file arrived: verify it, then hand it to the core."""
        m = completed.message
        sink = completed.sink
        try:
            ok = sink.finish() == m.meta
        except CorruptSnapshotError:
            ok = False
        receiver = self.receiver
        assert receiver is not None and self.raft is not None
        answer = receiver.finished(completed, ok)
        if not ok:
            sink.abort()
            return answer
        try:
            taken = self.raft.install_snapshot(m.meta, m.src, m.term)
        except RejectedMessage as exc:
            raise self._rejection_is_a_bug(exc) from exc
        if taken:
            self.received[(m.meta.index, m.meta.term)] = sink  # for _install (Ready.snapshot)
        else:
            sink.abort()  # stale, or the log already holds what it covers
        self.process()
        return answer
