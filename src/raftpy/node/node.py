"""RaftNode: the asyncio driver that runs the consensus core with storage, transport and the
user's state machine: its lifecycle and the Ready loop (docs/architecture.md, "The Ready loop").

No Raft rule lives here. The loop has a fixed order:

1. collect inputs: peer messages, proposals, reads, elapsed ticks;
2. feed them to the core (``step``, ``propose_batch``, ``read_index``, ``tick``);
3. for each Ready: send ``messages`` (the leader's appends may leave before its own write,
   Thesis §10.2.1), persist entries and hard state and fsync once (group commit), send
   ``persisted_messages``, apply committed entries, tell the core (``applied_to``) and resolve
   their proposals, serve reads whose index is applied, then ``advance()``.

Proposals arriving in one loop iteration become one append: one fsync and one AppendEntries per
follower for the whole batch. What a waiting proposer or reader is promised (deadlines, definite
vs indeterminate failures) is kept by :class:`~raftpy.node.requests.PendingRequests`; the client
protocol is served by :class:`~raftpy.node.service.ClientService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from raftpy.core.confchange import ConfChange, ConfChangeKind, ConfChangeSingle
from raftpy.core.messages import (
    ConfState,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PeerMessage,
    SnapshotMeta,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import Ready, Role
from raftpy.errors import (
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
    RejectedMessage,
    StateMachineError,
)
from raftpy.node.applier import EntryApplier
from raftpy.node.config import NodeConfig
from raftpy.node.disk_sync import DiskSync
from raftpy.node.health import Health, NodeHealth
from raftpy.node.join import ClientJoin, JoinClient
from raftpy.node.lag import AppendTimes, LastContact
from raftpy.node.last_error import LastError
from raftpy.node.latency import RecentDurations
from raftpy.node.leadership import LeadershipHistory
from raftpy.node.members import NodeMembers, describe
from raftpy.node.opening import open_log, open_snapshot_store, tcp_transport
from raftpy.node.peer_rtt import PeerRtt
from raftpy.node.rejections import PeerRejections
from raftpy.node.requests import Answered, PendingRequests
from raftpy.node.service import ClientService
from raftpy.node.sessions import NodeSessions, SessionGrant
from raftpy.node.snapshots import NodeSnapshots
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus
from raftpy.node.status_report import StatusReport
from raftpy.node.wakeup import Wakeup
from raftpy.statemachine import StateMachine
from raftpy.storage.base import LogStore
from raftpy.storage.errors import FatalStorageError
from raftpy.storage.fs import FileSystem
from raftpy.storage.peers import PeerIncarnations
from raftpy.transport.address import parse_address
from raftpy.transport.base import (
    ClientConnectionLike,
    CountingTransport,
    Transport,
    TransportFactory,
)
from raftpy.transport.protocol import (
    ClientRequest,
    Consistency,
)

if TYPE_CHECKING:
    from raftpy.node.metrics import NodeMetrics

logger = logging.getLogger("raftpy.node")

FATAL_EXIT_STATUS = 70
"""The exit status of a node process that ended itself (EX_SOFTWARE): a storage error it
cannot survive or an internal error; a supervisor should restart it (README.md, "Failures")."""


class RaftNode:
    """One member of a Raft cluster, serving peers and clients on ``address``.

    ``peers`` maps every member's id to its address, this node included: it bootstraps a new
    cluster; once the data dir holds a membership, that one is used (README.md, "Changing
    members"). ``data_dir`` holds the durable log (``None``: in memory only, for tests; a
    restart then forgets everything). ``join``: addresses of a running cluster's members; a node
    with no log yet then asks to be added as a learner, and with ``promote`` to be promoted
    once caught up (``peers`` then holds only this node). ``storage``, ``transport_factory``
    and ``join_client`` replace the defaults (tests pass fakes); ``fs`` is the file layer the
    data dir lives on and ``clock`` times fsyncs for the health check (a simulator passes its
    fault-injecting file system and its virtual clock: :mod:`raftpy.testing.stack_sim`).

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
        join: Sequence[str] = (),
        promote: bool = True,
        join_client: JoinClient | None = None,
        fs: FileSystem | None = None,
        clock: Callable[[], float] = time.perf_counter,
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
        self._fs = fs
        self._clock = clock
        self._transport_factory = transport_factory
        self._storage: LogStore | None = None
        self._transport: Transport | None = None
        self._incarnations = PeerIncarnations()  # replaced at start: pins beside the log
        self._raft: Raft | None = None
        self._snaps: NodeSnapshots | None = None
        self._applier: EntryApplier | None = None  # made at start, with the core
        self._held: list[Entry] = []  # committed, held back while a snapshot reads the state
        self._task: asyncio.Task[None] | None = None
        self._wake = Wakeup()
        self._inbox: list[PeerMessage] = []
        self.stats = NodeStats()
        """Every counter of this node, live (see :class:`~raftpy.node.stats.NodeStats`)."""
        self.recent_fsync = RecentDurations(1000)
        """The last 1,000 fsyncs' durations (seconds), for the fsync p99 of a status."""
        self._requests = PendingRequests(
            state_machine, self.config.request_timeout, self._leader_error, self.stats.proposal
        )
        # The state machine the node runs: the user's, with the session table beside it.
        self._sessions = NodeSessions(state_machine, self.config)
        self._service = ClientService(self)
        self._stopping = False
        self._failed: str | None = None
        self._role = Role.FOLLOWER
        self._leader: int | None = None
        self._rejections = PeerRejections(node_id, self.stats)
        # For operators (NodeStatus): role history, append times, peers' last contact.
        self._leadership = LeadershipHistory(self.stats)
        self._appends = AppendTimes()
        self._contact = LastContact()
        self.last_error = LastError()
        """The latest warning-or-worse event (:mod:`raftpy.node.last_error`)."""
        self._health = NodeHealth(
            node_id,
            self.config.max_fsync_p99,
            self.recent_fsync,
            self.config.raft.election_ticks,
            self.config.tick_seconds,
            self.last_error,
        )
        self._disk = DiskSync(
            node_id,
            self.stats,
            self._health,
            self.recent_fsync,
            self._requests,
            self.last_error,
            clock,
        )
        for a in join:
            parse_address(a)  # a bad join address fails here, not later in the background
        self._join = list(join)
        self._promote = promote
        self._join_client = join_client
        self._members = NodeMembers(node_id, address, peers, self._leader_error, self.config)
        self._report = StatusReport(
            node_id,
            address,
            members=self._members,
            sessions=self._sessions,
            health=self._health,
            last_error=self.last_error,
            recent_fsync=self.recent_fsync,
            leadership=self._leadership,
            appends=self._appends,
            contact=self._contact,
        )
        self._metrics: NodeMetrics | None = None
        self._rtt: PeerRtt | None = None  # measured only while metrics are served

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
        # A joining node starts with no voters: it never campaigns, and learns the membership
        # from the leader (a data dir that already holds a log ignores this).
        voters = [] if self._join else sorted(self.peers)
        self._storage = self._given_storage
        if self._storage is None:
            self._storage = open_log(
                self.node_id, self.data_dir, voters, self.peers, self.config, self._fs
            )
        store = open_snapshot_store(self.data_dir, self._fs)
        self._snaps = NodeSnapshots(
            self.node_id,
            store,
            self._storage,
            self._sessions.machine,
            self.config,
            self._send_peer,
            self._wake.set,
            self.stats.snapshots,
            lambda exc: self._fatal("fatal storage error", str(exc)),
            authority=self._authority,
            errors=self.last_error,
        )
        try:
            applied = await self._snaps.recover()
            self._incarnations = PeerIncarnations.beside(self._storage)
        except BaseException:
            self._close_storage()
            raise
        self._raft = Raft(
            self._sessions.core_config(self.node_id),
            self._storage,
            random.Random(self._rng.getrandbits(64)),
            applied,
        )
        self.stats.elections = self._raft.campaigns  # the core counts them; read here
        self._leadership.observe(Role.FOLLOWER.value, None, self._raft.term, "start")
        self._join = self._members.check_stored(self._storage, self._join)
        factory = self._transport_factory or self._default_transport
        self._transport = factory(self._on_message, self._service.handle)
        if isinstance(self._transport, CountingTransport):
            self.stats.transport = self._transport.counters  # the transport's, read here
        try:
            await self._transport.start()
        except BaseException:
            self._close_storage()
            raise
        self._members.attach(self._raft, self._transport)
        self._applier = EntryApplier(
            self.node_id,
            self._raft,
            self._sessions.machine,
            self._requests,
            self._members,
            self._incarnations,
            self._snaps,
            self.stats,
            self.last_error,
        )
        if self._raft.voters() == {self.node_id}:
            self._raft.campaign()  # a one-member cluster need not wait for a timeout
        loop = self._requests.loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="raftpy-node")
        conf = self._raft.conf_state()
        logger.info("node %d serving on %s (%s)", self.node_id, self.address, describe(conf))
        if self._join:
            seed = self._rng.getrandbits(64)
            rng = random.Random(seed)
            # The join's client draws its jitter from the node's seed too, never from the OS.
            client = self._join_client or ClientJoin(
                self._join, self.config, random.Random(seed + 1)
            )
            self._members.start_join(self._raft, client, self._promote, self.config, rng)
        if self.config.metrics_address is not None:
            from raftpy.node.metrics import NodeMetrics  # prometheus-client: an optional extra

            try:
                self._metrics = NodeMetrics(self, self.config.metrics_address)
                self._rtt = self._metrics.rtt
                await self._metrics.start()
            except BaseException:
                await self.stop()
                raise

    @property
    def metrics_address(self) -> str | None:
        """Where the node serves its metrics (``host:port``, the real port when the config
        asked for 0); ``None`` when it serves none or is not started."""
        return None if self._metrics is None else self._metrics.address

    def _default_transport(
        self,
        on_message: Callable[[PeerMessage], None],
        on_client: Callable[[ClientConnectionLike, ClientRequest], None],
    ) -> Transport:
        conf = self._raft.conf_state() if self._raft else ConfState(())
        return tcp_transport(
            self.node_id,
            self.address,
            self._members.peer_map(conf),
            self.config,
            self._incarnations,
            random.Random(self._rng.getrandbits(64)),
            on_message,
            on_client,
        )

    async def stop(self) -> None:
        """Stop serving. Waiting proposers get IndeterminateError (appended) or NotLeaderError
        (not appended); the data dir is left consistent (everything acknowledged is synced)."""
        if self._stopping:
            return
        self._stopping = True
        await self._members.stop_join()
        if self._metrics is not None:
            await self._metrics.close()
        if self._task is not None:
            self._task.cancel()
            # A loop that crashed already logged why; stopping must still release everything.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._requests.fail_all("node stopped")
        self._members.fail_all("node stopped")
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
        return NotLeaderError(leader, self._members.address_of(leader))

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise ProposalDropped(f"node {self.node_id} has failed: {self._failed}")
        if self._raft is None or self._stopping:
            raise LocalProtocolError("node is not running")

    def submit(
        self,
        command: bytes,
        timeout: float | None = None,
        *,
        session: int = 0,
        seq: int = 0,
        ack: int = 0,
        on_done: Answered | None = None,
    ) -> asyncio.Future[bytes]:
        """Queue ``command`` for the next append; the future resolves with the state
        machine's result or a typed error. Raises at once when this node is not the leader.
        ``session`` (:meth:`open_session`), ``seq`` (>= 1), ``ack``: README.md, "Sessions".
        ``on_done(future)`` is called on the node's loop the moment the node resolves the
        future (before the loop goes on, unlike a done-callback: a server answers its client
        from there); it must not block, and what it raises is logged. A future the caller
        cancels does not call it."""
        now = self._accepting()
        record = self._sessions.command(command, session, seq, ack, now)
        return self._submit(record, timeout, on_done)

    def _accepting(self) -> float:
        """Check that this node takes writes now; the time to stamp their records with."""
        self._check_usable()
        if self._role is not Role.LEADER:
            raise self._leader_error()
        if self._disk.full:
            raise ProposalDropped("the disk is full; retry when space is free")
        # The loop the node serves on, kept at start (asyncio.get_running_loop() makes a getpid
        # system call on every call in Python 3.11, and this runs once per write).
        return (self._requests.loop or asyncio.get_running_loop()).time()

    def _submit(
        self, record: bytes, timeout: float | None, on_done: Answered | None = None
    ) -> asyncio.Future[bytes]:
        fut = self._requests.propose(record, timeout, on_done)
        self._wake.set()
        return fut

    async def propose(
        self,
        command: bytes,
        timeout: float | None = None,
        *,
        session: int = 0,
        seq: int = 0,
        ack: int = 0,
    ) -> bytes:
        """Replicate ``command``; return ``StateMachine.apply``'s result once applied here.
        Raises NotLeaderError / ProposalDropped / SessionExpiredError (definite) or
        IndeterminateError (appended, fate unknown). Sessions: see :meth:`submit`."""
        fut = self.submit(command, timeout, session=session, seq=seq, ack=ack)
        return await asyncio.shield(fut)

    async def open_session(self, timeout: float | None = None) -> SessionGrant:
        """Register a client session through the log (leader only); returns once applied.
        It expires after ``NodeConfig.session_timeout`` s of cluster time without requests."""
        fut = self._submit(self._sessions.open(self._accepting()), timeout)
        return self._sessions.grant(await asyncio.shield(fut))

    async def keep_alive(self, session: int, ack: int, timeout: float | None = None) -> None:
        """Keep an idle ``session`` alive; every seq below ``ack`` is acknowledged.
        SessionExpiredError when the session is gone."""
        fut = self._submit(self._sessions.keep_alive(session, ack, self._accepting()), timeout)
        await asyncio.shield(fut)

    async def close_session(self, session: int, timeout: float | None = None) -> None:
        """End ``session`` and forget its results. SessionExpiredError when it was gone."""
        fut = self._submit(self._sessions.close(session, self._accepting()), timeout)
        await asyncio.shield(fut)

    def submit_query(
        self, query: bytes, consistency: str | Consistency, timeout: float | None = None
    ) -> asyncio.Future[bytes]:
        """Queue a read; see :meth:`query`."""
        self._check_usable()
        level = Consistency(consistency)
        if level is Consistency.STALE:
            return self._requests.answer_now(query)
        leads = self._role is Role.LEADER
        # Thesis §6.4: a follower that knows its leader serves linearizable reads through it
        # (ReadIndex); only the leader holds a lease (§6.4.1).
        follows = self._role is Role.FOLLOWER and self._leader is not None
        if not leads and (level is Consistency.LEASE or not follows):
            raise self._leader_error()
        if leads and self.config.unsafe_stale_reads:
            # TEST ONLY (see NodeConfig): skip ReadIndex, the bug fault harnesses must catch.
            return self._requests.answer_now(query)
        fut = self._requests.read(query, timeout, lease=level is Consistency.LEASE)
        self._wake.set()
        return fut

    async def query(
        self,
        query: bytes,
        consistency: str | Consistency = "linearizable",
        timeout: float | None = None,
    ) -> bytes:
        """Answer ``query`` from the state machine. ``linearizable`` (default) confirms
        leadership with a heartbeat quorum first (ReadIndex, Thesis §6.4), on any node that
        knows a leader (a follower asks the leader for its read index, then answers from its
        own state machine); ``lease`` answers on the leader at once while its lease holds
        (Thesis §6.4.1: safe while clocks drift less than ``NodeConfig.max_clock_drift``),
        NotLeaderError elsewhere; ``stale`` answers from local state at once on any node."""
        return await asyncio.shield(self.submit_query(query, consistency, timeout))

    def members(self) -> ConfState:
        """The membership in force on this node (the latest in its log, Thesis §4.1)."""
        raft = self._raft
        if raft is None:  # not started: what it would bootstrap with
            return ConfState(() if self._join else tuple(sorted(self.peers)))
        return raft.conf_state()

    def membership_index(self) -> int:
        """The log index of the membership :meth:`members` returns (0 before start, or for a new
        cluster's bootstrap membership)."""
        raft = self._raft
        return 0 if raft is None else raft.conf_index()

    async def add_member(
        self,
        node_id: int,
        address: str,
        voter: bool = False,
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> ConfState:
        """Add ``node_id`` listening on ``address``: a learner (it receives the log but never
        votes or counts; promote it once caught up), or with ``voter`` a voter at once. Returns
        the membership after the change once committed and applied here. Raises NotLeaderError
        (with the leader's hint), ConfChangeError (invalid; or unwise, unless ``force``: see
        README.md, "Changing members") or ProposalDropped (another change pending: retry) when
        nothing was appended; IndeterminateError when appended with an unknown outcome."""
        return await self._change(NodeMembers.adding(node_id, address, voter), force, timeout)

    async def promote(
        self, node_id: int, *, force: bool = False, timeout: float | None = None
    ) -> ConfState:
        """Make learner ``node_id`` a voter; refused (ConfChangeError) while it lags more than
        ``RaftConfig.max_learner_lag`` entries, unless ``force``. Errors as :meth:`add_member`;
        promoting a voter changes nothing."""
        single = ConfChangeSingle(ConfChangeKind.ADD_VOTER, node_id)
        return await self._change(single, force, timeout, node_id)

    async def remove_member(
        self, node_id: int, *, force: bool = False, timeout: float | None = None
    ) -> ConfState:
        """Remove ``node_id`` (this node too: a removed leader steps down once the change
        commits). Errors as :meth:`add_member`; removing a non-member changes nothing."""
        single = ConfChangeSingle(ConfChangeKind.REMOVE_NODE, node_id)
        return await self._change(single, force, timeout)

    async def _change(
        self, single: ConfChangeSingle, force: bool, timeout: float | None, promote: int = -1
    ) -> ConfState:
        self._check_usable()
        if self._role is not Role.LEADER:
            raise self._leader_error()
        fut = self._members.change(ConfChange((single,)), force, timeout, promote)
        self._wake.set()
        return await asyncio.shield(fut)

    async def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> None:
        """Hand leadership to voter ``node_id`` (Thesis §3.10); returns once it leads. Raises
        NotLeaderError on a follower, LocalProtocolError for a non-voter, ProposalDropped when
        the transfer was aborted (``node_id`` did not take over within an election timeout),
        IndeterminateError when the deadline passed first (it may still take over)."""
        self._check_usable()
        if self._role is not Role.LEADER:
            raise self._leader_error()
        fut = self._members.transfer(node_id, timeout)
        self._wake.set()
        await asyncio.shield(fut)

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
            self._serve_reads()
        return await asyncio.shield(snaps.start(raft, self._applied))

    def _authority(self) -> tuple[int, int | None]:
        """Our term and the leader we know in it: whose snapshot chunks we take."""
        raft = self._raft
        return (0, None) if raft is None else (raft.term, raft.lead)

    def _send_peer(self, message: PeerMessage) -> None:
        if self._transport is not None:
            self._transport.send(message)

    def status(self) -> NodeStatus:
        """Role, term, leader, commit and applied indexes, per-peer replication, the newest
        snapshot and every counter (each field is described on
        :class:`~raftpy.node.status.NodeStatus`)."""
        return self._report.build(
            self._raft,
            self._snaps,
            self._transport,
            self.stats.copy(),
            running=self._task is not None and not self._stopping,
            disk_full=self._disk.full,
            failed=self._failed,
        )

    @property
    def _applied(self) -> int:
        """The state machine's applied index: the core's, which the loop moves
        (``Raft.applied_to``) once entries are really applied."""
        raft = self._raft
        return 0 if raft is None else raft.log.applied

    @property
    def role(self) -> Role:
        return self._role

    @property
    def health(self) -> Health:
        """Whether this node's disk lets it lead (``healthy``, and ``reason`` when not): an
        unhealthy node hands leadership over and does not campaign (docs/health.md)."""
        return self._health.health

    @property
    def leader_id(self) -> int | None:
        return self._leader

    @property
    def failed(self) -> str | None:
        """Why the node's fatal path ended its loop (``status().failed``, without building
        a whole status), or ``None`` while it serves."""
        return self._failed

    # ------------------------------------------------------------------------------------------
    # Inbound peer messages (from the transport; client requests go to ClientService)
    # ------------------------------------------------------------------------------------------

    def _on_message(self, message: PeerMessage) -> None:
        self._inbox.append(message)
        self._wake.set()

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
                await self._wake.wait(loop)
                self._wake.clear()
                if self._inbox:
                    self._step_inbox(raft)
                self._append_proposals(raft)
                self._members.start(raft)
                now = loop.time()
                # The lease is counted in ticks: trust it only while the next tick is not
                # overdue (raftpy.core.lease).
                self._requests.start_reads(raft, lease_ok=now < next_tick)
                if tick_due:
                    tick_due = False
                    raft.tick()
                    self._health.tick(raft)  # may pause campaigns or hand leadership over
                    snaps.tick()
                    self._requests.expire(now)
                    self._members.tick(raft, now)
                    next_tick += interval
                    if next_tick < now:  # the loop was blocked for long: do not burst ticks
                        next_tick = now + interval
                        raft.lose_lease()  # ticks were skipped: the lease count fell behind
                    timer = loop.call_at(next_tick, fire)
                snaps.feed_core(raft, self._on_rejected)
                await self._drain_ready(raft)
                if self._held and not snaps.hold_applies:
                    held, self._held = self._held, []
                    self._apply_entries(held)
                    self._serve_reads()
                if not self._held and snaps.due(now):
                    snaps.start_automatic(raft, self._applied, loop.time())
        except asyncio.CancelledError:
            raise
        except FatalStorageError as exc:
            self._fatal("fatal storage error", str(exc))
        except StateMachineError as exc:
            self._fatal("state machine error", str(exc))
        except Exception as exc:
            # A broken invariant (a raftpy bug, or a state the node cannot serve from): the
            # traceback goes to the log, and the process ends rather than live on refusing
            # every request (the state machine's own exceptions never get here: they fail
            # the request they serve).
            logger.critical("node %d: internal error in its loop", self.node_id, exc_info=exc)
            self._fatal("internal error", f"{type(exc).__name__}: {exc}")
        finally:
            timer.cancel()

    def _step_inbox(self, raft: Raft) -> None:
        inbox, self._inbox = self._inbox, []
        if self._rtt is not None:
            self._rtt.on_received(inbox, asyncio.get_running_loop().time())
        snaps = self._snaps
        assert snaps is not None
        heard, now = self._contact.heard, self._contact.now()
        for message in inbox:
            heard[message.src] = now
            # Snapshot chunks and their answers are the transfers' business: the core sees only
            # whole, verified snapshots and how transfers ended (NodeSnapshots.feed_core).
            if isinstance(message, InstallSnapshot):
                snaps.on_chunk(message)
            elif isinstance(message, InstallSnapshotResponse):
                snaps.on_answer(message)
            else:
                try:
                    raft.step(message)
                except RejectedMessage as exc:
                    self._on_rejected(exc)  # the core changed nothing; serve on

    def _on_rejected(self, exc: RejectedMessage) -> None:
        """A peer's message the core rejected costs that peer its connection, never the node
        (:mod:`raftpy.node.rejections`)."""
        assert self._transport is not None
        self._rejections.on_rejected(exc, self._transport)
        self.last_error.note(f"rejected a message from node {exc.peer_id}: {exc.reason}")

    def _append_proposals(self, raft: Raft) -> None:
        appended, batches = self._requests.append_proposals(raft, self.config.max_batch)
        self.stats.proposals += appended
        self.stats.batches += batches

    async def _drain_ready(self, raft: Raft) -> None:
        while raft.has_ready():
            rd = raft.ready()
            self._members.after_ready(raft)  # the transport must know new members first
            await self._handle_ready(raft, rd)
            raft.advance(rd)
            if rd.committed_entries and raft.has_ready():
                # A long catch-up (a restart replaying its log, at most max_apply_bytes of
                # entries a Ready): between batches the loop answers requests and reads sockets.
                await asyncio.sleep(0)
        self._requests.on_dropped_reads(raft.take_dropped_reads())

    async def _handle_ready(self, raft: Raft, rd: Ready) -> None:
        transport = self._transport
        storage = self._storage
        assert transport is not None and storage is not None
        snaps = self._snaps
        assert snaps is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.role, rd.soft_state.leader_id)
        if self._rtt is not None:
            self._rtt.on_sent(rd.messages, asyncio.get_running_loop().time())
        for m in rd.messages:
            transport.send(m)  # Thesis §10.2.1: replicate while we persist our own copy
        for request in rd.snapshot_requests:
            snaps.on_request(request)  # streams the file in chunks, also while we persist
        if rd.must_sync and (rd.messages or rd.snapshot_requests):
            # Let the appends travel now, before we encode and fsync our own copy: the
            # followers' fsyncs, not ours, are the longest part of a commit.
            transport.flush()
        if rd.snapshot is not None:
            await snaps.install(rd.snapshot)
            # The snapshot holds everything up to its index, held-back entries included.
            self._held = [e for e in self._held if e.index > rd.snapshot.index]
            raft.applied_to(rd.snapshot.index)  # the state machine was restored from it
        if rd.entries or rd.hard_state is not None:
            began = self._clock()
            if rd.entries:
                storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            self.stats.wal_append.observe(self._clock() - began)
            if rd.entries and self._role is Role.LEADER:
                self._appends.appended(rd.entries[-1].index)
        if rd.must_sync:
            await self._disk.sync(storage, self._raft, self._transport)
        self._send_persisted(transport, rd.persisted_messages, bool(rd.committed_entries))
        if rd.committed_entries:
            if snaps.hold_applies or self._held:
                self._held.extend(rd.committed_entries)
            else:
                self._apply_entries(rd.committed_entries)
        self._requests.on_read_states(rd.read_states)
        self._serve_reads()

    @staticmethod
    def _send_persisted(
        transport: Transport, persisted: tuple[Message, ...], applying: bool
    ) -> None:
        """Send what may leave only once the Ready's writes are durable (they are now), before
        its committed entries are applied (``applying``)."""
        for m in persisted:
            transport.send(m)
        if persisted and applying:
            # The acknowledgement the leader commits on (Raft §5.3) leaves now, not after the
            # applies that follow: a follower often gets new entries and the commit of earlier
            # ones in one AppendEntries, hence in one Ready.
            transport.flush()

    def _apply_entries(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        applier = self._applier
        assert applier is not None
        applier.apply(entries)

    def _serve_reads(self) -> None:
        self.stats.reads += self._requests.serve_reads(self._applied)

    def _on_soft_state(self, role: Role, leader: int | None) -> None:
        was_leader = self._role is Role.LEADER
        if role is Role.LEADER and not was_leader:
            self._sessions.on_leader(asyncio.get_running_loop().time())
            self._appends.reset()
        self._role = role
        self._leader = leader
        if self._raft is not None:
            raft = self._raft
            self._leadership.observe(role.value, leader, raft.term, raft.role_reason)
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
            self._requests.on_leadership_lost()
            if self._raft is not None:
                self._members.on_leadership_lost(self._raft)

    def _fatal(self, kind: str, reason: str) -> None:
        """The node cannot go on (``kind``: a storage error it cannot survive, or an internal
        error): say so at CRITICAL, fail every waiting request, and end the process with
        :data:`FATAL_EXIT_STATUS` so a supervisor restarts it from what is on disk (README.md,
        "Failures"). With ``exit_on_fatal`` off (tests), its loop ends and the node stays up
        refusing requests.
        """
        if self._failed is not None:
            return
        self._failed = f"{kind}: {reason}"
        self.last_error.note(self._failed)
        exiting = self.config.exit_on_fatal
        logger.critical(
            "node %d: %s: %s%s",
            self.node_id,
            kind,
            reason,
            f"; exiting with status {FATAL_EXIT_STATUS}" if exiting else "",
        )
        self._requests.fail_all(self._failed)
        self._members.fail_all(self._failed)
        if exiting:
            # After a failed fsync the kernel may have dropped dirty pages, so retrying could
            # report success for data that is gone; after a broken invariant nothing the loop
            # holds can be trusted. Either way the safe move is a restart that recovers from
            # the disk, which a live process refusing everything would never get.
            logging.shutdown()
            os._exit(FATAL_EXIT_STATUS)
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # met off the loop (a snapshot's worker thread): the loop ends too
