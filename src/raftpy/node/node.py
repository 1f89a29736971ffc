"""RaftNode: the asyncio driver that runs the consensus core with storage, transport and the
user's state machine.

No Raft rule lives here. The loop has a fixed order (STYLE: thin glue):

1. collect inputs: peer messages, proposals, reads, elapsed ticks;
2. feed them to the core (``step``, ``propose_batch``, ``read_index``, ``tick``);
3. for each Ready: send ``messages`` (the leader's appends may leave before its own write,
   Thesis §10.2.1), persist entries and hard state and fsync once (group commit), send
   ``persisted_messages``, apply committed entries and resolve their proposals, serve reads
   whose index is applied, then ``advance()``.

Proposals arriving in one loop iteration become one append: one fsync and one AppendEntries per
follower for the whole batch.

Errors follow DESIGN §4: :class:`~raftpy.errors.NotLeaderError` and
:class:`~raftpy.errors.ProposalDropped` are definite (nothing was appended);
:class:`~raftpy.errors.IndeterminateError` means the command was appended and may still commit.
A proposer is never left waiting: every proposal has a deadline, checked on every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from raftpy.core.messages import (
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    PeerMessage,
    SnapshotMeta,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import Ready, Role
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
)
from raftpy.node.config import NodeConfig
from raftpy.node.snapshots import NodeSnapshots
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus, PeerReplication, SnapshotStatus
from raftpy.outcomes import response_for_error
from raftpy.statemachine import StateMachine
from raftpy.storage.base import LogStore
from raftpy.storage.errors import FatalStorageError, StorageFullError
from raftpy.storage.fs import MemoryFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage
from raftpy.transport.base import (
    ClientConnectionLike,
    CountingTransport,
    Transport,
    TransportFactory,
)
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    ResponseStatus,
)

logger = logging.getLogger("raftpy.node")


@dataclass(eq=False)
class _Proposal:
    command: bytes
    future: asyncio.Future[bytes]
    deadline: float
    index: int = 0  # 0 until appended
    term: int = 0


@dataclass(eq=False)
class _Read:
    query: bytes
    future: asyncio.Future[bytes]
    deadline: float


@dataclass(eq=False)
class _ReadBatch:
    """Reads that share one ReadIndex round (Thesis §6.4: one heartbeat quorum confirms
    every read that arrived before it)."""

    reads: list[_Read]
    index: int = 0


class RaftNode:
    """One member of a Raft cluster, serving peers and clients on ``address``.

    ``peers`` maps every member's id to its address, this node included. ``data_dir`` holds the
    durable log (``None``: in memory only, for tests; a restart then forgets everything).
    ``storage`` and ``transport_factory`` replace the defaults (tests pass fakes).

    Use as ``async with RaftNode(...) as node:`` or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        node_id: int,
        address: str,
        peers: Mapping[int, str],
        state_machine: StateMachine,
        data_dir: str | os.PathLike[str] | None,
        config: NodeConfig | None = None,
        *,
        storage: LogStore | None = None,
        transport_factory: TransportFactory | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or NodeConfig()
        self.config.validate()
        if node_id not in peers:
            raise ValueError(f"node id {node_id} is not among the members {sorted(peers)}")
        if peers[node_id] != address:
            raise ValueError(
                f"node {node_id} listens on {address} but the member list says {peers[node_id]}"
            )
        self.node_id = node_id
        self.address = address
        self.peers = dict(peers)
        self.state_machine = state_machine
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self._rng = rng or random.Random()
        self._given_storage = storage
        self._transport_factory = transport_factory
        self._storage: LogStore | None = None
        self._transport: Transport | None = None
        self._raft: Raft | None = None
        self._snaps: NodeSnapshots | None = None
        self._applied = 0  # the state machine's applied index (it may trail the core's)
        self._held: list[Entry] = []  # committed, held back while a snapshot reads the state
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._inbox: list[PeerMessage] = []
        self._queued: list[_Proposal] = []
        self._pending: dict[int, _Proposal] = {}
        self._queued_reads: list[_Read] = []
        self._read_batches: dict[bytes, _ReadBatch] = {}
        self._waiting_reads: list[tuple[int, int, _ReadBatch]] = []  # heap by index
        self._read_seq = itertools.count(1)
        self._stopping = False
        self._failed: str | None = None
        self._disk_full = False
        self._role = Role.FOLLOWER
        self._leader: int | None = None
        self.stats = NodeStats()
        """Every counter of this node, live (see :class:`~raftpy.node.stats.NodeStats`)."""

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> RaftNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open storage (recovering it), start listening, and run the node."""
        if self._task is not None:
            raise LocalProtocolError("node already started")
        voters = sorted(self.peers)
        if self._given_storage is not None:
            self._storage = self._given_storage
        elif self.data_dir is None:
            self._storage = MemoryStorage(voters)
        else:
            self._storage = FileStorage(
                self.data_dir, voters, segment_size=self.config.segment_size
            )
        if self.data_dir is not None:
            store = SnapshotStore(os.path.join(self.data_dir, "snapshots"))
        else:
            # No data dir: snapshot files live on an in-memory file system, like the log.
            store = SnapshotStore("/snapshots", fs=MemoryFileSystem())
        self._snaps = NodeSnapshots(
            self.node_id,
            store,
            self._storage,
            self.state_machine,
            self.config,
            self._send_peer,
            self._wake.set,
            self.stats.snapshots,
        )
        try:
            applied = await self._snaps.recover()
        except BaseException:
            self._close_storage()
            raise
        self._raft = Raft(
            self.config.raft_config(self.node_id),
            self._storage,
            random.Random(self._rng.getrandbits(64)),
            applied,
        )
        self._applied = self._raft.log.applied
        factory = self._transport_factory or self._default_transport
        self._transport = factory(self._on_message, self._on_client_request)
        if isinstance(self._transport, CountingTransport):
            self.stats.transport = self._transport.counters  # the transport's, read here
        try:
            await self._transport.start()
        except BaseException:
            self._close_storage()
            raise
        if self._raft.voters() == {self.node_id}:
            self._raft.campaign()  # a one-member cluster need not wait for a timeout
        self._task = asyncio.get_running_loop().create_task(self._run(), name="raftpy-node")
        logger.info("node %d serving on %s (members %s)", self.node_id, self.address, voters)

    def _default_transport(
        self,
        on_message: Callable[[PeerMessage], None],
        on_client: Callable[[ClientConnectionLike, ClientRequest], None],
    ) -> Transport:
        from raftpy.transport.tcp import TcpTransport

        return TcpTransport(
            self.node_id,
            self.address,
            {i: a for i, a in self.peers.items() if i != self.node_id},
            cluster_id=self.config.cluster_id,
            on_message=on_message,
            on_client_request=on_client,
            max_frame_bytes=self.config.max_frame_bytes,
            peer_queue_bytes=self.config.peer_queue_bytes,
            rng=random.Random(self._rng.getrandbits(64)),
        )

    async def stop(self) -> None:
        """Stop serving. Waiting proposers get IndeterminateError (appended) or NotLeaderError
        (not appended); the data dir is left consistent (everything acknowledged is synced)."""
        if self._stopping:
            return
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # A loop that crashed already logged why; stopping must still release everything.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._fail_all("node stopped")
        if self._snaps is not None:
            await self._snaps.close()
        if self._transport is not None:
            await self._transport.close()
        self._close_storage()
        logger.info("node %d stopped", self.node_id)

    def _close_storage(self) -> None:
        if self._storage is not None and self._given_storage is None:
            self._storage.close()

    # ------------------------------------------------------------------------------------------
    # Public operations
    # ------------------------------------------------------------------------------------------

    def _leader_error(self) -> NotLeaderError:
        leader = self._leader
        return NotLeaderError(leader, None if leader is None else self.peers.get(leader))

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise ProposalDropped(f"node {self.node_id} has failed: {self._failed}")
        if self._raft is None or self._stopping:
            raise LocalProtocolError("node is not running")

    def submit(self, command: bytes, timeout: float | None = None) -> asyncio.Future[bytes]:
        """Queue ``command`` for the next append; the future resolves with the state
        machine's result or a typed error. Raises at once when this node is not the leader."""
        self._check_usable()
        if self._role is not Role.LEADER:
            raise self._leader_error()
        if self._disk_full:
            raise ProposalDropped("the disk is full; retry when space is free")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        wait = self.config.request_timeout if timeout is None else timeout
        self._queued.append(_Proposal(command, fut, loop.time() + wait))
        self._wake.set()
        return fut

    async def propose(self, command: bytes, timeout: float | None = None) -> bytes:
        """Replicate ``command``; return ``StateMachine.apply``'s result once committed and
        applied here. Raises NotLeaderError / ProposalDropped (definite) or IndeterminateError
        (appended, fate unknown: leadership lost or the deadline passed)."""
        fut = self.submit(command, timeout)
        return await asyncio.shield(fut)

    def submit_query(
        self, query: bytes, consistency: str | Consistency, timeout: float | None = None
    ) -> asyncio.Future[bytes]:
        """Queue a read; see :meth:`query`."""
        self._check_usable()
        level = Consistency(consistency)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        if level is Consistency.STALE:
            fut.set_result(self.state_machine.query(query))
            return fut
        if self._role is not Role.LEADER:
            raise self._leader_error()
        if self.config.unsafe_stale_reads:
            # TEST ONLY (see NodeConfig): skip ReadIndex, the bug fault harnesses must catch.
            fut.set_result(self.state_machine.query(query))
            return fut
        wait = self.config.request_timeout if timeout is None else timeout
        self._queued_reads.append(_Read(query, fut, loop.time() + wait))
        self._wake.set()
        return fut

    async def query(
        self,
        query: bytes,
        consistency: str | Consistency = "linearizable",
        timeout: float | None = None,
    ) -> bytes:
        """Answer ``query`` from the state machine. ``linearizable`` (default) confirms
        leadership with a heartbeat quorum first (ReadIndex, Thesis §6.4); ``lease`` is served
        the same way for now; ``stale`` answers from local state at once on any node."""
        return await asyncio.shield(self.submit_query(query, consistency, timeout))

    async def snapshot(self) -> SnapshotMeta:
        """Take a snapshot now, at the current applied index, and compact the log as the
        automatic snapshots do (operators: ``raftpy snapshot ADDRESS``). Returns its metadata;
        when nothing was applied since the last snapshot, returns that one."""
        self._check_usable()
        snaps = self._snaps
        raft = self._raft
        assert snaps is not None and raft is not None
        await snaps.wait_quiet()
        if self._held:
            held, self._held = self._held, []
            self._apply_entries(held)
            self._serve_reads(self._applied)
        return await asyncio.shield(snaps.start(raft, self._applied))

    def _send_peer(self, message: PeerMessage) -> None:
        if self._transport is not None:
            self._transport.send(message)

    def status(self) -> NodeStatus:
        """Role, term, leader, commit and applied indexes, per-peer replication, the newest
        snapshot and every counter (each field is described on
        :class:`~raftpy.node.status.NodeStatus`)."""
        raft = self._raft
        stats = self.stats.copy()
        if raft is None:
            return NodeStatus(
                id=self.node_id,
                address=self.address,
                running=False,
                role=None,
                term=None,
                leader=None,
                leader_address=None,
                commit=None,
                applied=None,
                last_index=None,
                first_index=None,
                snapshot=None,
                members=None,
                peers=None,
                disk_full=self._disk_full,
                failed=self._failed,
                stats=stats,
            )
        st = raft.status()
        last = st.last_index
        peers = {
            node: PeerReplication(
                address=self.peers.get(node),
                match=p.match,
                next=p.next,
                state=p.state,
                lag=last - p.match,
                active=p.recent_active,
            )
            for node, p in st.peers.items()
        }
        return NodeStatus(
            id=self.node_id,
            address=self.address,
            running=self._task is not None and not self._stopping,
            role=st.role.value,
            term=st.term,
            leader=st.leader_id,
            leader_address=None if st.leader_id is None else self.peers.get(st.leader_id),
            commit=st.commit,
            applied=self._applied,
            last_index=last,
            first_index=raft.log.first_index(),
            snapshot=self._snapshot_status(stats),
            members=st.voters,
            peers=peers,
            disk_full=self._disk_full,
            failed=self._failed,
            stats=stats,
        )

    def _snapshot_status(self, stats: NodeStats) -> SnapshotStatus | None:
        snaps = self._snaps
        if snaps is None or snaps.latest is None:
            return None
        counts = stats.snapshots
        return SnapshotStatus(
            index=snaps.latest.index,
            term=snaps.latest.term,
            taken=counts.taken,
            installed=counts.installed,
            sent=counts.sent,
            bytes_sent=counts.bytes_sent,
            bytes_received=counts.bytes_received,
        )

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader_id(self) -> int | None:
        return self._leader

    # ------------------------------------------------------------------------------------------
    # Inbound callbacks (from the transport)
    # ------------------------------------------------------------------------------------------

    def _on_message(self, message: PeerMessage) -> None:
        self._inbox.append(message)
        self._wake.set()

    def _on_client_request(self, conn: ClientConnectionLike, req: ClientRequest) -> None:
        try:
            if req.op is ClientOp.STATUS:
                data = msgspec.msgpack.encode(self.status())
                conn.respond(ClientResponse(req.id, ResponseStatus.OK, data))
                return
            if req.op is ClientOp.SNAPSHOT:
                self._check_usable()
                task = asyncio.get_running_loop().create_task(self.snapshot())
                task.add_done_callback(lambda t: conn.respond(_snapshot_response(req.id, t)))
                return
            if req.op is ClientOp.PROPOSE:
                fut = self.submit(req.data, req.timeout)
            else:
                fut = self.submit_query(req.data, req.consistency, req.timeout)
        except RaftError as exc:
            conn.respond(_error_response(req.id, exc))
            return
        fut.add_done_callback(lambda f: conn.respond(_future_response(req.id, f)))

    # ------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        raft = self._raft
        snaps = self._snaps
        assert raft is not None and snaps is not None
        loop = asyncio.get_running_loop()
        interval = self.config.tick_seconds
        next_tick = loop.time() + interval
        tick_due = False

        def fire() -> None:
            nonlocal tick_due
            tick_due = True
            self._wake.set()

        # One timer per tick, not one per loop pass: passes outnumber ticks by far under load.
        timer = loop.call_at(next_tick, fire)
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._step_inbox(raft)
                self._append_proposals(raft)
                self._start_reads(raft)
                if tick_due:
                    tick_due = False
                    now = loop.time()
                    raft.tick()
                    snaps.tick()
                    self._expire(now)
                    next_tick += interval
                    if next_tick < now:  # the loop was blocked for long: do not burst ticks
                        next_tick = now + interval
                    timer = loop.call_at(next_tick, fire)
                snaps.feed_core(raft)
                await self._drain_ready(raft)
                if self._held and not snaps.hold_applies:
                    held, self._held = self._held, []
                    self._apply_entries(held)
                    self._serve_reads(self._applied)
                if snaps.due(loop.time()) and not self._held:
                    snaps.start_automatic(raft, self._applied, loop.time())
        except asyncio.CancelledError:
            raise
        except FatalStorageError as exc:
            self._fatal(str(exc))
        except Exception as exc:  # a bug: fail loudly, never hang proposers
            logger.exception("node %d loop crashed", self.node_id)
            self._failed = f"internal error: {exc!r}"
            self._fail_all(self._failed)
            raise
        finally:
            timer.cancel()

    def _step_inbox(self, raft: Raft) -> None:
        inbox, self._inbox = self._inbox, []
        snaps = self._snaps
        assert snaps is not None
        for message in inbox:
            # Snapshot chunks and their answers are the transfers' business: the core sees only
            # whole, verified snapshots and how transfers ended (NodeSnapshots.feed_core).
            if isinstance(message, InstallSnapshot):
                snaps.on_chunk(message)
            elif isinstance(message, InstallSnapshotResponse):
                snaps.on_answer(message)
            else:
                raft.step(message)

    def _append_proposals(self, raft: Raft) -> None:
        queued = [p for p in self._queued if not p.future.done()]
        self._queued = []
        limit = self.config.max_batch
        for start in range(0, len(queued), limit):
            batch = queued[start : start + limit]
            try:
                first = raft.propose_batch([p.command for p in batch])
            except (NotLeaderError, ProposalDropped) as exc:
                if isinstance(exc, NotLeaderError):
                    exc = self._leader_error()
                for p in batch:
                    p.future.set_exception(exc)
                continue
            term = raft.term
            for k, p in enumerate(batch):
                p.index = first + k
                p.term = term
                self._pending[p.index] = p
            self.stats.proposals += len(batch)
            self.stats.batches += 1

    def _start_reads(self, raft: Raft) -> None:
        reads = [r for r in self._queued_reads if not r.future.done()]
        self._queued_reads = []
        if not reads:
            return
        context = next(self._read_seq).to_bytes(8, "big")
        try:
            raft.read_index(context)
        except NotLeaderError:
            err = self._leader_error()
            for r in reads:
                r.future.set_exception(err)
            return
        self._read_batches[context] = _ReadBatch(reads)

    async def _drain_ready(self, raft: Raft) -> None:
        while raft.has_ready():
            rd = raft.ready()
            await self._handle_ready(raft, rd)
            raft.advance(rd)
        for context in raft.take_dropped_reads():
            batch = self._read_batches.pop(context, None)
            if batch is not None:
                self._fail_reads(batch.reads, self._leader_error())

    async def _handle_ready(self, raft: Raft, rd: Ready) -> None:
        transport = self._transport
        storage = self._storage
        assert transport is not None and storage is not None
        snaps = self._snaps
        assert snaps is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.role, rd.soft_state.leader_id)
        for m in rd.messages:
            transport.send(m)  # Thesis §10.2.1: replicate while we persist our own copy
        for request in rd.snapshot_requests:
            snaps.on_request(request)  # streams the file in chunks, also while we persist
        if rd.snapshot is not None:
            await snaps.install(rd.snapshot)
            # The snapshot holds everything up to its index, held-back entries included.
            self._held = [e for e in self._held if e.index > rd.snapshot.index]
            self._applied = max(self._applied, rd.snapshot.index)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        if rd.must_sync:
            if rd.messages or rd.snapshot_requests:
                transport.flush()  # let the appends travel while we fsync our own copy
            await self._sync(storage)
        for m in rd.persisted_messages:
            transport.send(m)
        if rd.committed_entries:
            if snaps.hold_applies or self._held:
                self._held.extend(rd.committed_entries)
            else:
                self._apply_entries(rd.committed_entries)
        for rs in rd.read_states:
            batch = self._read_batches.get(rs.context)
            if batch is not None:
                batch.index = rs.index
                del self._read_batches[rs.context]
                heapq.heappush(self._waiting_reads, (rs.index, id(batch), batch))
        self._serve_reads(self._applied)

    async def _sync(self, storage: LogStore) -> None:
        while True:
            try:
                storage.sync()
                self.stats.syncs += 1
                if self._disk_full:
                    logger.warning("node %d: disk space is available again", self.node_id)
                    self._disk_full = False
                return
            except StorageFullError as exc:
                # Nothing is corrupted and the buffer is kept: stop taking proposals and retry.
                # A leader stuck here sends no heartbeats, so the others elect a new one.
                if not self._disk_full:
                    logger.error("node %d: %s; waiting for free space", self.node_id, exc)
                self._disk_full = True
                for p in self._queued:
                    if not p.future.done():
                        p.future.set_exception(ProposalDropped("the disk is full"))
                self._queued = []
                await asyncio.sleep(0.2)
                # The loop is parked here: keep deadlines honest so no proposer waits forever.
                self._expire(asyncio.get_running_loop().time())

    def _apply_entries(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        sm = self.state_machine
        pending = self._pending
        for entry in entries:
            result = b""
            failure: Exception | None = None
            if entry.kind is EntryKind.COMMAND:
                try:
                    result = sm.apply(entry.data)
                except Exception as exc:
                    # A deterministic state machine fails the same way on every node, so the
                    # replicas stay equal; the proposer gets the error.
                    logger.exception("node %d: apply of entry %d raised", self.node_id, entry.index)
                    failure = exc
            p = pending.pop(entry.index, None) if pending else None
            if p is not None and not p.future.done():
                if p.term == entry.term and failure is not None:
                    p.future.set_exception(failure)
                elif p.term == entry.term:
                    p.future.set_result(result)
                else:
                    # Another leader's entry took this index: ours was overwritten and can
                    # never commit (Raft §5.3: an entry lives or dies at its index and term).
                    p.future.set_exception(
                        ProposalDropped("overwritten by a newer leader's entry; not applied")
                    )
        self.stats.applied += len(entries)
        self._applied = entries[-1].index
        snaps = self._snaps
        if snaps is not None:
            snaps.note_applied(entries)

    def _serve_reads(self, applied: int) -> None:
        waiting = self._waiting_reads
        sm = self.state_machine
        while waiting and waiting[0][0] <= applied:
            _, _, batch = heapq.heappop(waiting)
            for r in batch.reads:
                if not r.future.done():
                    r.future.set_result(sm.query(r.query))
                    self.stats.reads += 1

    def _on_soft_state(self, role: Role, leader: int | None) -> None:
        was_leader = self._role is Role.LEADER
        self._role = role
        self._leader = leader
        logger.info(
            "node %d is %s (leader %s, term %s)",
            self.node_id,
            role.value,
            leader,
            self._raft.term if self._raft else "?",
        )
        if was_leader and role is not Role.LEADER and self._snaps is not None:
            self._snaps.stop_sending()
        if was_leader and role is not Role.LEADER:
            # Appended entries may still commit under the next leader: their fate is unknown.
            err = IndeterminateError("leadership lost before the command committed")
            for p in self._pending.values():
                if not p.future.done():
                    p.future.set_exception(err)
            self._pending.clear()
            not_leader = self._leader_error()
            for p in self._queued:
                if not p.future.done():
                    p.future.set_exception(not_leader)
            self._queued = []
            for r in self._queued_reads:
                if not r.future.done():
                    r.future.set_exception(not_leader)
            self._queued_reads = []

    def _expire(self, now: float) -> None:
        """Fail proposals and reads whose deadline passed (checked once per tick)."""
        if self._pending:
            expired = [i for i, p in self._pending.items() if p.deadline <= now]
            for i in expired:
                p = self._pending.pop(i)
                if not p.future.done():
                    p.future.set_exception(
                        IndeterminateError("deadline passed after the command was appended")
                    )
        for batch in list(self._read_batches.values()) + [b for _, _, b in self._waiting_reads]:
            for r in batch.reads:
                if r.deadline <= now and not r.future.done():
                    r.future.set_exception(
                        ClusterUnavailableError("read not confirmed before its deadline")
                    )

    def _fail_reads(self, reads: list[_Read], exc: BaseException) -> None:
        for r in reads:
            if not r.future.done():
                r.future.set_exception(exc)

    def _fail_all(self, reason: str) -> None:
        indeterminate = IndeterminateError(f"{reason}; the command may still commit")
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(indeterminate)
        self._pending.clear()
        dropped = ProposalDropped(f"{reason}; the command was not appended")
        for p in self._queued:
            if not p.future.done():
                p.future.set_exception(dropped)
        self._queued = []
        unavailable = ClusterUnavailableError(reason)
        self._fail_reads(self._queued_reads, unavailable)
        self._queued_reads = []
        for batch in self._read_batches.values():
            self._fail_reads(batch.reads, unavailable)
        self._read_batches.clear()
        for _, _, batch in self._waiting_reads:
            self._fail_reads(batch.reads, unavailable)
        self._waiting_reads = []

    def _fatal(self, reason: str) -> None:
        logger.critical("node %d: fatal storage error: %s", self.node_id, reason)
        self._failed = reason
        self._fail_all(f"fatal storage error: {reason}")
        if self.config.exit_on_fatal:
            # The kernel may have dropped dirty pages: retrying an fsync could report success
            # for data that is gone. The only safe move is to stop the process and recover
            # from what is on disk.
            logging.shutdown()
            os._exit(70)


def _error_response(request_id: int, exc: BaseException) -> ClientResponse:
    # The status of each error is in raftpy.outcomes, which the client reads back.
    return response_for_error(request_id, exc)


def _snapshot_response(request_id: int, task: asyncio.Task[SnapshotMeta]) -> ClientResponse:
    if task.cancelled():
        return ClientResponse(request_id, ResponseStatus.ERROR, message="snapshot cancelled")
    exc = task.exception()
    if exc is not None:
        return _error_response(request_id, exc)
    meta = task.result()
    data = msgspec.msgpack.encode({"index": meta.index, "term": meta.term})
    return ClientResponse(request_id, ResponseStatus.OK, data)


def _future_response(request_id: int, fut: asyncio.Future[bytes]) -> ClientResponse:
    if fut.cancelled():
        # A cancelled proposal may have been appended already.
        return _error_response(request_id, IndeterminateError("cancelled"))
    exc = fut.exception()
    if exc is not None:
        return _error_response(request_id, exc)
    return ClientResponse(request_id, ResponseStatus.OK, fut.result())
