"""Raft: the consensus rules of the paper as a deterministic, sans-I/O state machine.

Inputs: :meth:`Raft.tick`, :meth:`Raft.step`, :meth:`Raft.propose`, :meth:`Raft.read_index`,
:meth:`Raft.transfer_leadership`, :meth:`Raft.campaign`, and for snapshots the driver moved
(Raft §7) :meth:`Raft.install_snapshot` and :meth:`Raft.report_snapshot`. Output:
:meth:`Raft.ready`, which the driver carries out and acknowledges with :meth:`Raft.advance`,
reporting what it applied with :meth:`Raft.applied_to` (see :mod:`raftpy.core.ready`).

``step`` works in two phases (etcd raft's design): first it settles terms (Raft §5.1: a higher
term makes us a follower, a lower one is ignored or answered), then it hands the message to the
current role's step function. Only the ``_become_*`` methods swap that function. Before either
phase, a message no correct peer could send in our state (a second leader in one term, entries
that contradict our committed log, ...) raises :class:`~raftpy.errors.RejectedMessage` and
changes nothing: a forged or buggy peer costs its connection, never the node.

The core never reads a clock or a global random generator: time is ``tick()``, randomness a
``random.Random`` passed in. The same inputs in the same order give the same outputs.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import assert_never

from raftpy.core import confchange
from raftpy.core.admission import check_message, check_snapshot
from raftpy.core.confchange import ConfChange
from raftpy.core.config import RaftConfig
from raftpy.core.forwarded_reads import ForwardedReads, read_key, split_key
from raftpy.core.lease import LeaderLease
from raftpy.core.log import RaftLog
from raftpy.core.messages import (
    MAX_READ_CONTEXT,
    MAX_TERM,
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
    encode_conf_state,
    entries_size,
)
from raftpy.core.progress import Progress, ProgressState
from raftpy.core.quorum import VoteResult
from raftpy.core.read_only import ReadOnly
from raftpy.core.ready import Appended, ReadState, Ready, Role, SnapshotRequest, SoftState
from raftpy.core.safe_change import check_caught_up, check_reachable
from raftpy.core.status import PeerStatus as PeerStatus  # re-exported (lived here before)
from raftpy.core.status import Status as Status  # re-exported (lived here before)
from raftpy.core.storage import HardState, LogStorage
from raftpy.core.tracker import ProgressTracker
from raftpy.errors import (
    InvariantViolation,
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
)

logger = logging.getLogger("raftpy.core")

# Messages a leader sends that do not promise anything about the sender's own durable state
# beyond its term, which was persisted before it could win (Thesis §10.2.1), and the forwarded
# reads and their answers, which promise nothing durable either. Snapshot requests
# (Ready.snapshot_requests) do not wait for persistence either.
_SEND_NOW = (AppendEntries, Heartbeat, TimeoutNow, ReadIndexRequest, ReadIndexResponse)
# Messages only the leader of their term sends (Raft §5.2, Thesis §3.10).


class Raft:
    """One node's consensus state machine.

    ``storage`` is read for the persisted state at start and for stable entries afterwards;
    the driver writes to it. ``applied`` is the index the state machine already reflects
    (defaults to the snapshot index: entries after it are applied again).
    """

    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        rng: random.Random,
        applied: int | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self._rng = rng
        self.log = RaftLog(storage, applied)
        hard_state, _ = storage.initial_state()
        self.term = hard_state.term
        self.vote: int | None = hard_state.vote
        self.lead: int | None = None
        self.role = Role.FOLLOWER
        # Membership, progress and votes; the progress is rebuilt by _become_follower below.
        # Thesis §4.1: the membership in force is the latest in the log, committed or not.
        self.tracker = ProgressTracker(
            self.id,
            self.log.confs.latest(),
            self.log.last_index(),
            config.max_inflight_msgs,
            config.max_inflight_bytes,
        )
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.lead_transferee: int | None = None
        # On a follower: the voter our leader said (in its heartbeats) it hands leadership to;
        # only that voter's transfer election may bypass the leader lease (Thesis §3.10).
        self._leader_transferee: int | None = None
        # raftpy's own extension (docs/health.md): a node whose disk is slow or full does not
        # campaign, so that it does not take back the leadership it handed over.
        self._campaigns_paused = False
        # Voters that answered us during the last complete CheckQuorum period: with those
        # answering in the current one, whom a membership change may count on (safe_change).
        self._lately_active: frozenset[int] = frozenset()
        self._uncommitted: deque[tuple[int, int]] = deque()
        self._uncommitted_bytes = 0
        self._read_only = ReadOnly()
        self._forwarded = ForwardedReads()  # our reads forwarded to the leader (as a follower)
        self._lease = LeaderLease(config.lease_ticks, config.check_quorum)
        # Thesis §6.4.1: a leader's lease counts on our refusing votes for an election timeout
        # after we heard from it. A restart forgets whom we heard from and when, so with lease
        # reads on, a node that was part of a cluster refuses votes for its first election
        # timeout as if it had just heard from a leader.
        self._quiet_after_boot = config.lease_ticks > 0 and hard_state.term > 0
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._snapshot_requests: list[SnapshotRequest] = []
        self._read_states: list[ReadState] = []
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft = SoftState(self.role, self.lead)
        self._outstanding: Ready | None = None
        # For operators only (Status; raftpy.node.leadership), never read by the rules: why the
        # role last changed, and the campaigns started, by reason.
        self.role_reason = "start"
        self.campaigns: dict[str, int] = {}
        self._become_follower(self.term, None)

    # ------------------------------------------------------------------------------------------
    # Membership helpers
    # ------------------------------------------------------------------------------------------

    def voters(self) -> frozenset[int]:
        return self.tracker.voters()

    @property
    def prs(self) -> Mapping[int, Progress]:
        """Every member's progress, by id: a read-only view of the tracker's map (members
        change only through :meth:`ProgressTracker.set_config`)."""
        return self.tracker.progress

    def _promotable(self) -> bool:
        """Whether we may campaign: a voter of the membership in force, or of the membership
        at the commit index while a change leaving us out is not committed yet (Thesis
        §4.2.2: such a server "might still be needed until the C_new entry is committed"; it
        does not count its own vote). Learners and removed servers never campaign."""
        if self.tracker.is_voter(self.id):
            return True
        log = self.log
        if not log.confs.pending(log.committed):
            return False
        committed = log.confs.at(log.committed)
        return self.id in committed.voters or self.id in committed.voters_outgoing

    # ------------------------------------------------------------------------------------------
    # Role transitions: the only places that assign the step and tick functions
    # ------------------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
            self._quiet_after_boot = False  # a new term: elections moved on without us
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = None
        self._leader_transferee = None
        self.tracker.reset_votes()
        self._forwarded.drop_all()  # the leader they went to is no longer ours
        self._lease.reset()
        # Thesis §10.2.1: our own entries count only once durable.
        self.tracker.reset_progress(self.log.last_index(), self.log.stable_last_index())
        self._uncommitted.clear()
        self._uncommitted_bytes = 0
        self._read_only.reset()

    def _reset_randomized_election_timeout(self) -> None:
        # Raft §5.2: randomized timeouts in [T, 2T) make split votes rare.
        et = self.config.election_ticks
        self.randomized_election_timeout = self._rng.randrange(et, 2 * et)

    def _become_follower(self, term: int, lead: int | None) -> None:
        self._step = self._step_follower
        self._tick = self._tick_election
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        logger.debug("%d became follower at term %d (leader %s)", self.id, term, lead)

    def _become_pre_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantViolation("a leader cannot become a pre-candidate")
        # Thesis §9.6: a pre-candidate changes neither its term nor its vote.
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.tracker.reset_votes()
        self._forwarded.drop_all()
        self.lead = None
        self.role = Role.PRE_CANDIDATE
        logger.debug("%d became pre-candidate at term %d", self.id, self.term)

    def _become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantViolation("a leader cannot become a candidate")
        self._step = self._step_candidate
        self._tick = self._tick_election
        # Raft §5.2: increment currentTerm, vote for self.
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        logger.debug("%d became candidate at term %d", self.id, self.term)

    def _become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise InvariantViolation("a follower cannot become leader without an election")
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        own = self.prs.get(self.id)  # None when elected while leaving (Thesis §4.2.2)
        if own is not None:
            own.become_replicate()
        # Raft §8 / Thesis §6.4: a new leader commits a no-op entry of its own term, which
        # commits every earlier entry and lets it serve reads.
        index = self.log.last_index() + 1
        if index == 1:
            # The first leader of a new cluster records the membership it was started with as
            # its first entry, so the log describes its own membership from the start: a
            # server that joins later and copies the log learns it there (Thesis §4).
            conf = encode_conf_state(self.tracker.conf_state())
            self.log.append([Entry(self.term, index, EntryKind.CONFIG, conf)])
        else:
            self.log.append([Entry(self.term, index, EntryKind.NOOP, b"")])
        logger.info("%d became leader at term %d", self.id, self.term)

    # ------------------------------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self._quiet_after_boot = False
        if self._campaigns_paused:
            # election_elapsed keeps growing: a leader we stopped hearing from no longer holds
            # our vote back (Thesis §4.2.3), so the healthy voters can elect one without us.
            return
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        self._lease.tick()
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                # Thesis §6.2: a leader that cannot reach a majority for an election timeout
                # steps down, so clients look for the real leader elsewhere.
                logger.info("%d steps down at term %d: quorum not active", self.id, self.term)
                self.role_reason = "check quorum"
                self._become_follower(self.term, None)
                return
            if self.lead_transferee is not None:
                # Thesis §3.10: abort a transfer that did not finish within an election timeout.
                self.lead_transferee = None
                self._lease.end_transfer()
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            for _, pr in self.tracker.visit_peers():
                pr.resume_on_heartbeat = True
            self._bcast_heartbeat(self._read_only.last_context())

    def pause_campaigns(self, paused: bool) -> None:
        """While ``paused``, start no election or pre-election when the election timeout
        passes and ignore TimeoutNow; vote, replicate and lead as usual otherwise.

        Not a rule of the paper: raftpy's own extension (docs/health.md). The driver pauses a
        node whose disk is too slow or full after it handed its leadership over (Thesis
        §3.10), so that it does not win it back while its disk would hold every write up; a
        transfer to it times out and its leader may pick another voter. :meth:`campaign`
        (operators, tests) still starts an election."""
        self._campaigns_paused = paused

    @property
    def campaigns_paused(self) -> bool:
        return self._campaigns_paused

    def campaign(self) -> None:
        """Start an election now (tests and operators); ignored on the leader or a learner."""
        if self.role is not Role.LEADER:
            self._campaign(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append a command to the leader's log; return its index.

        Raises :class:`NotLeaderError` on a non-leader and :class:`ProposalDropped` when the
        leader refuses (back-pressure, transfer in progress, entry too large). Either way
        nothing was appended.
        """
        return self.propose_batch([data]).first_index

    def propose_batch(
        self, commands: Sequence[bytes], kind: EntryKind = EntryKind.COMMAND
    ) -> Appended:
        """Append several commands at once (one AppendEntries per follower); return the index
        of the first and the term they were appended in (their indexes are consecutive). All
        or none are appended; raises as :meth:`propose` does. ``kind`` is
        :attr:`~EntryKind.COMMAND` or :attr:`~EntryKind.SESSION` (the node's session records;
        the core treats both alike)."""
        if kind is not EntryKind.COMMAND and kind is not EntryKind.SESSION:
            raise ValueError(f"propose_batch takes COMMAND or SESSION entries, not {kind!r}")
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lead_transferee is not None:
            raise ProposalDropped(
                f"leadership transfer to {self.lead_transferee} in progress; retry there"
            )
        size = 0
        for data in commands:
            if len(data) > self.config.max_entry_bytes:
                raise ProposalDropped(
                    f"command of {len(data)} bytes exceeds max_entry_bytes "
                    f"({self.config.max_entry_bytes})",
                    retryable=False,
                )
            size += len(data)
        limit = self.config.max_uncommitted_bytes
        # Always admit a batch when nothing is pending, so one large batch cannot wedge us.
        if limit is not None and self._uncommitted_bytes and self._uncommitted_bytes + size > limit:
            raise ProposalDropped(
                f"too many uncommitted bytes ({self._uncommitted_bytes} + {size} > {limit}); "
                "retry after a short wait"
            )
        first = self.log.last_index() + 1
        term = self.term
        entries = [Entry(term, first + k, kind, data) for k, data in enumerate(commands)]
        if not entries:
            return Appended(first, term)
        self.log.append(entries)
        self._uncommitted.append((entries[-1].index, size))
        self._uncommitted_bytes += size
        self._bcast_append()
        return Appended(first, term)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point (Thesis §6.4); the answer comes as a
        :class:`ReadState` with the same ``context`` in a later Ready. ``context`` must be
        unique among pending reads.

        On the leader, it confirms its leadership with a heartbeat quorum. A follower that
        knows its leader forwards the read to it (at most ``MAX_READ_CONTEXT`` bytes of
        context) and the leader's answer becomes the ReadState. Raises
        :class:`NotLeaderError` on a node that knows no leader (or is a candidate).

        If leadership (or, on a follower, the term or the leader) changes before the answer,
        the read is dropped: see :meth:`take_dropped_reads`.
        """
        if self.role is Role.LEADER:
            self._leader_read(read_key(self.id, context))
            return
        lead = self.lead
        if self.role is not Role.FOLLOWER or lead is None:
            raise NotLeaderError(lead)
        if len(context) > MAX_READ_CONTEXT:
            raise LocalProtocolError(
                f"a forwarded read context holds at most {MAX_READ_CONTEXT} bytes"
            )
        self._forwarded.add(context, lead)
        self._send(ReadIndexRequest(self.term, self.id, lead, context))

    def read_lease(self, context: bytes) -> bool:
        """A read served under the leader's lease (Thesis §6.4.1): while the lease holds (see
        :mod:`raftpy.core.lease`), the ReadState at the commit index is ready at once (returns
        True); otherwise the read goes the ReadIndex way (returns False). Raises
        :class:`NotLeaderError` on a non-leader."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lease_valid():
            self._read_states.append(ReadState(self.log.committed, context))
            return True
        self.read_index(context)
        return False

    def lease_valid(self) -> bool:
        """Whether this leader may serve lease reads now: its lease holds and it committed
        an entry of its term (its commit index is current only then, Thesis §6.4)."""
        return (
            self.role is Role.LEADER and self._lease.valid() and self._committed_in_current_term()
        )

    def lose_lease(self) -> None:
        """The driver skipped ticks (its loop stalled): the tick counter fell behind real
        time, so the lease it measures may have run out already. Reads use ReadIndex until a
        round sent from now on is acknowledged."""
        self._lease.lose()

    def _leader_read(self, key: bytes) -> None:
        if not self._committed_in_current_term():
            # Thesis §6.4 step 1: the leader's commit index is only known to be current once
            # an entry of its own term has committed; hold the read until then.
            self._read_only.wait_for_commit(key)
            return
        self._start_read(key)

    def _start_read(self, key: bytes) -> None:
        if self.tracker.voters() == {self.id}:
            self._read_confirmed(ReadState(self.log.committed, key))
            return
        self._read_only.add_request(self.log.committed, key, self.id)
        self._bcast_heartbeat(key)

    def _read_confirmed(self, rs: ReadState) -> None:
        """A read (ours or a follower's, by its key) is confirmed at ``rs.index``."""
        node, context = split_key(rs.context)
        if node == self.id:
            self._read_states.append(ReadState(rs.index, context))
        else:
            self._send(ReadIndexResponse(self.term, self.id, node, context, rs.index))

    def take_dropped_reads(self) -> list[bytes]:
        """Contexts of reads dropped because leadership was lost before they were confirmed,
        or (forwarded by a follower) because its term or leader changed before the answer;
        the driver fails them (the caller may retry)."""
        ours = self._read_only.take_dropped()
        forwarded = self._forwarded.take_dropped()
        if not ours:
            return forwarded  # the common case: nothing was dropped (the driver asks each pass)
        dropped = [context for node, context in map(split_key, ours) if node == self.id]
        dropped.extend(forwarded)
        return dropped

    def transfer_leadership(self, to: int, *, at_once: bool = False) -> None:
        """Hand leadership to voter ``to`` (Thesis §3.10): stop taking proposals, bring ``to``
        up to date, then tell it to campaign at once.

        ``at_once``: send TimeoutNow now, whatever ``to`` is known to hold. For a leader that
        cannot persist (a full disk) and so cannot process acknowledgements to bring ``to`` up
        to date; safe, since ``to`` wins only with a log at least as up to date as a
        majority's (Raft §5.4.1), and at worst the transfer times out."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if to == self.id:
            return
        if not self.tracker.is_voter(to):
            raise LocalProtocolError(f"cannot transfer leadership to non-voter {to}")
        if self.lead_transferee == to and not at_once:
            return
        self.lead_transferee = to
        self._lease.start_transfer()  # the transferee may soon be elected past the lease
        # The transfer must finish within one election timeout or it is aborted.
        self.election_elapsed = 0
        if at_once or self.prs[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._maybe_send_append(to)

    # ------------------------------------------------------------------------------------------
    # Membership changes (Thesis §4)
    # ------------------------------------------------------------------------------------------

    def propose_conf_change(self, cc: ConfChange, *, force: bool = False) -> int:
        """Append a membership change to the leader's log; return its index.

        The change takes effect on each server as soon as it appends the entry, committed or
        not (Thesis §4.1). Raises :class:`NotLeaderError` on a non-leader;
        :class:`ProposalDropped` (retryable) during a leadership transfer, before this leader
        committed an entry of its own term, or while the previous change is not committed; and
        :class:`~raftpy.errors.ConfChangeError` for a change that is invalid
        (:mod:`raftpy.core.confchange`) or, unless ``force``, unwise
        (:mod:`raftpy.core.safe_change`). Nothing was appended then.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lead_transferee is not None:
            raise ProposalDropped(
                f"leadership transfer to {self.lead_transferee} in progress; retry there"
            )
        if not self._committed_in_current_term():
            # The fix to single-server changes (Ongaro, raft-dev, 2015): a leader changes the
            # membership only after committing an entry of its term. Otherwise a change of a
            # deposed leader, not yet overwritten, and one of its successor could each take
            # effect on majorities that do not overlap, and elect two leaders in one term.
            raise ProposalDropped(
                "this leader has not yet committed an entry of its term; retry shortly"
            )
        if self.log.confs.pending(self.log.committed):
            # Thesis §4.1: one change at a time; the next starts once the previous committed.
            raise ProposalDropped(
                f"the membership change at index {self.log.confs.latest_index()} is not "
                "committed yet; retry once it is"
            )
        old = self.tracker.conf_state()
        new = confchange.apply(old, cc)
        if not force:
            check_caught_up(old, new, self.prs, self.log.last_index(), self.config.max_learner_lag)
            check_reachable(new, self._reachable())
        index = self._append_conf(new)
        self._bcast_append()
        return index

    def _reachable(self) -> set[int]:
        """Ourselves and the peers we heard from in this or the last CheckQuorum period."""
        reachable = {self.id, *self._lately_active}
        reachable.update(node for node, pr in self.tracker.visit_peers() if pr.recent_active)
        return reachable

    def _append_conf(self, conf: ConfState) -> int:
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, EntryKind.CONFIG, encode_conf_state(conf))])
        self._sync_conf()
        return index

    def _sync_conf(self) -> None:
        """Adopt the membership the log now ends with, if it changed: forward on appending a
        configuration entry, back when one was truncated (Thesis §4.1)."""
        conf = self.log.confs.latest()
        if conf is self.tracker.conf_state():
            return
        self.tracker.set_config(conf, self.log.last_index())
        # The lease was counted on the voters of the old membership; new voters promised
        # nothing (Thesis §6.4.1). Changes are rare: start again from the next round.
        self._lease.lose()
        logger.info(
            "%d membership: voters %s%s, learners %s",
            self.id,
            list(conf.voters),
            f" and outgoing {list(conf.voters_outgoing)}" if conf.voters_outgoing else "",
            list(conf.learners + conf.learners_next),
        )
        if self.lead_transferee is not None and not self.tracker.is_voter(self.lead_transferee):
            self.lead_transferee = None  # Thesis §3.10: only a voter can take over
            self._lease.end_transfer()

    def _finish_conf_change(self) -> None:
        """The commit index moved on the leader: do what a committed change asks of it."""
        if self.log.confs.pending(self.log.committed):
            return
        conf = self.tracker.conf_state()
        if not self.tracker.is_voter(self.id):
            self._step_down_removed()
        elif conf.auto_leave and confchange.is_joint(conf):
            # Thesis §4.3: once C_old,new has committed, the leader moves on to C_new itself.
            self._append_conf(confchange.leave_joint(conf))

    def _step_down_removed(self) -> None:
        """Thesis §4.2.2: a leader no longer a voter led the cluster without counting itself
        until the change committed; now it steps down. It hands over to an up-to-date voter
        (Thesis §3.10) rather than leave the cluster without a leader for an election timeout."""
        last = self.log.last_index()
        ready = [
            node
            for node, pr in self.tracker.visit_peers()
            if self.tracker.is_voter(node) and pr.match == last
        ]
        logger.info(
            "%d steps down at term %d: no longer a voter%s",
            self.id,
            self.term,
            f"; hands over to {ready[0]}" if ready else "",
        )
        self.role_reason = "removed"
        if ready:
            self.lead_transferee = ready[0]
            self._send_timeout_now(ready[0])
        self._become_follower(self.term, None)

    def install_snapshot(self, meta: SnapshotMeta, leader: int, term: int) -> bool:
        """A snapshot ``leader`` sent in ``term`` arrived whole and verified (Raft §7).

        The driver streams the file (:mod:`raftpy.node.transfer`) and calls this once it is
        complete and its checksum checked, so snapshot bytes never pass through the core. Returns
        whether the core took it: then it comes back as ``Ready.snapshot``, for the driver to
        persist and restore. ``False``: the term is stale, or we already hold what it covers;
        the driver drops the file. The acknowledgement to ``leader`` is a persisted message.
        """
        if term < self.term:
            return False  # Raft §5.1: from a deposed leader; dropped
        # Checked before anything changes, so a rejected snapshot leaves no trace.
        check_snapshot(meta, leader, term, self.term, self.lead, self.log)
        if term > self.term:
            # Raft §5.1: a higher term makes us a follower of that term, under its sender.
            self.role_reason = "higher term"
            self._become_follower(term, leader)
        if self.role is not Role.FOLLOWER:
            # Raft §5.2: a leader of our term exists; concede.
            self._become_follower(term, leader)
        self.election_elapsed = 0
        self.lead = leader
        return self._handle_install_snapshot(meta, leader)

    def report_snapshot(self, request: SnapshotRequest, ok: bool) -> None:
        """The driver finished carrying out ``request`` (etcd raft's ReportSnapshot): the
        follower holds the snapshot (``ok``) or the transfer failed.

        Both end the follower's snapshot state the same way: it is probed from after the
        snapshot, but only once it answers (done) or after the next heartbeat response
        (failed), so there is no tight retry loop. A report about an earlier term's transfer,
        or about another snapshot than the one the follower waits for, changes nothing.
        """
        if request.term != self.term or self.role is not Role.LEADER:
            return  # a past leadership's transfer: its progress is gone
        pr = self.prs.get(request.to)
        if pr is None:
            return
        pr.recent_active = True
        if pr.state is ProgressState.SNAPSHOT and request.meta.index == pr.pending_snapshot:
            pr.become_probe()
            pr.probe_sent = True

    # ------------------------------------------------------------------------------------------
    # step: phase 1, settle terms
    # ------------------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if m.dst != self.id:
            logger.warning("%d dropped %s addressed to %d", self.id, type(m).__name__, m.dst)
            return
        if m.term >= self.term:
            # Raises RejectedMessage for what no correct peer sends; nothing has changed yet.
            check_message(m, self.term, self.lead, self.role is Role.LEADER, self.log)
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    (self.config.check_quorum or m.pre_vote)
                    and (self.lead is not None or self._quiet_after_boot)
                    and self.election_elapsed < self.config.election_ticks
                )
                if in_lease and not (m.transfer and self._transfer_sanctioned(m.src)):
                    # Thesis §4.2.3: while we hear from a live leader, ignore votes from a
                    # server that may have been removed or partitioned, and do not adopt its
                    # term. A pre-vote is refused the same way even without CheckQuorum
                    # (Thesis §9.6): otherwise a half-partitioned server could still win one
                    # and depose a healthy leader. Only the transfer the live leader itself
                    # started may pass (Thesis §3.10): otherwise any server could claim one.
                    return
                if m.pre_vote:
                    # Thesis §9.6: a pre-vote never changes our term.
                    self._handle_request_vote(m)
                    return
            if isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                # A granted pre-vote carries the term we would campaign at; not a newer term.
                pass
            else:
                # Raft §5.1: a higher term makes us a follower of that term.
                lead = m.src if isinstance(m, AppendEntries | Heartbeat) else None
                self.role_reason = "higher term"
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            self._answer_stale(m)
            return
        if isinstance(m, RequestVote):
            self._handle_request_vote(m)
            return
        self._step(m)

    def _transfer_sanctioned(self, candidate: int) -> bool:
        """Whether the leader we know is handing leadership to ``candidate`` (Thesis §3.10):
        we are that leader and chose it, or our leader named it in its heartbeats. etcd raft
        trusts the candidate's word for it; then any server could depose a healthy leader."""
        if self.role is Role.LEADER:
            return self.lead_transferee == candidate
        return self._leader_transferee == candidate

    def _answer_stale(self, m: Message) -> None:
        """Raft §5.1: a stale-term request is rejected; answering lets a deposed leader or a
        pre-candidate learn the current term (Thesis §9.6 needs this when PreVote or
        CheckQuorum hold terms back)."""
        cfg = self.config
        if (cfg.check_quorum or cfg.pre_vote) and isinstance(m, AppendEntries | Heartbeat):
            self._send(AppendEntriesResponse(self.term, self.id, m.src, False, 0))
        elif isinstance(m, RequestVote) and m.pre_vote:
            self._send(RequestVoteResponse(self.term, self.id, m.src, False, True))
        # Anything else from an older term is dropped.

    def _handle_request_vote(self, m: RequestVote) -> None:
        # Raft §5.2: at most one vote per term (first come, first served); never while we
        # know a leader of this term. A pre-vote for a later term is hypothetical.
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.lead is None)
            or (m.pre_vote and m.term > self.term)
        )
        # Raft §5.4.1: only for a candidate whose log is at least as up to date as ours.
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._send(RequestVoteResponse(m.term, self.id, m.src, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(RequestVoteResponse(self.term, self.id, m.src, False, m.pre_vote))

    # ------------------------------------------------------------------------------------------
    # step: phase 2, one function per role
    # ------------------------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append_entries(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_heartbeat(m)
        elif isinstance(m, TimeoutNow):
            if self._campaigns_paused:
                # Unanswered, the transfer times out and the leader may choose another voter.
                logger.info("%d ignores TimeoutNow from %d: campaigns paused", self.id, m.src)
                return
            # Thesis §3.10: the leader asks us to take over; skip PreVote, it knows.
            logger.info("%d campaigns on TimeoutNow from %d", self.id, m.src)
            self._campaign(transfer=True)
        elif isinstance(m, ReadIndexResponse) and self._forwarded.answer(m.context, m.src):
            self._read_states.append(ReadState(m.index, m.context))
        # Responses and stray messages of this term are ignored.

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat):
            # Raft §5.2: a leader of our term exists; concede.
            self.role_reason = "leader found"
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif isinstance(m, RequestVoteResponse):
            self._handle_vote_response(m)
        # TimeoutNow and responses to a past role are ignored.

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendEntriesResponse):
            self._handle_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            self._handle_heartbeat_response(m)
        elif isinstance(m, ReadIndexRequest):
            self._handle_read_index_request(m)
        # A second leader's messages were rejected before this (admission.check_message).

    # -- candidate ----------------------------------------------------------------------------

    def _campaign(self, transfer: bool) -> None:
        if not self._promotable():
            return
        if self.term >= MAX_TERM:
            # Peers refuse terms past MAX_TERM (raftpy.core.messages), so an election there
            # could never be won; only a forged term can have brought us here.
            logger.error("%d cannot campaign: term %d is the largest allowed", self.id, self.term)
            return
        reason = "leader transfer" if transfer else "election timeout"
        self.role_reason = reason
        self.campaigns[reason] = self.campaigns.get(reason, 0) + 1
        if self.config.pre_vote and not transfer:
            # Thesis §9.6: first ask whether we could win, without disturbing anyone's term.
            self._become_pre_candidate()
            self._reset_randomized_election_timeout()
            self._request_votes(self.term + 1, pre_vote=True, transfer=False)
        else:
            self._become_candidate()
            self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, pre_vote: bool, transfer: bool) -> None:
        if self._poll(self.id, True) is VoteResult.WON:
            self._on_election_won()  # a single-voter cluster wins at once
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for peer in self.tracker.voter_peers():
            self._send(RequestVote(term, self.id, peer, last_index, last_term, pre_vote, transfer))

    def _poll(self, node: int, granted: bool) -> VoteResult:
        self.tracker.record_vote(node, granted)
        return self.tracker.vote_result()

    def _handle_vote_response(self, m: RequestVoteResponse) -> None:
        if m.pre_vote != (self.role is Role.PRE_CANDIDATE):
            return  # an answer to an earlier phase of this election
        if m.pre_vote and m.granted and m.term != self.term + 1:
            return  # a grant from an earlier pre-vote round (it asked for another term)
        result = self._poll(m.src, m.granted)
        if result is VoteResult.WON:
            self._on_election_won()
        elif result is VoteResult.LOST:
            # Raft §5.2: a lost election returns to follower (at our current term).
            self.role_reason = "election lost"
            self._become_follower(self.term, None)

    def _on_election_won(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._become_candidate()
            self._request_votes(self.term, pre_vote=False, transfer=False)
        else:
            self._become_leader()
            self._bcast_append()

    # -- follower -----------------------------------------------------------------------------

    def _handle_append_entries(self, m: AppendEntries) -> None:
        if m.prev_index < self.log.committed:
            # Already committed here: a delayed or duplicated message. Tell the leader what we
            # hold so it moves on.
            self._send(AppendEntriesResponse(self.term, self.id, m.src, True, self.log.committed))
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._sync_conf()  # Thesis §4.1: a configuration entry takes effect on append
            self._send(AppendEntriesResponse(self.term, self.id, m.src, True, last_new))
            return
        # Raft §5.3: reject, with a hint so the leader can skip a whole term.
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.prev_index, self.log.last_index()), m.prev_term
        )
        self._send(
            AppendEntriesResponse(
                self.term, self.id, m.src, False, m.prev_index, hint_index, hint_term
            )
        )

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        # The leader sends commit = min(our match, its commit), never past our log.
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._leader_transferee = m.transferee
        self._send(HeartbeatResponse(self.term, self.id, m.src, m.context, m.round))

    def _handle_install_snapshot(self, meta: SnapshotMeta, leader: int) -> bool:
        """Take a whole, verified snapshot from the leader, or not (Raft §7, Figure 13);
        returns whether we restore it."""
        if meta.index <= self.log.committed:
            # Stale or duplicate: we hold everything it covers. Say how far we are so the
            # leader moves on from there.
            self._send(AppendEntriesResponse(self.term, self.id, leader, True, self.log.committed))
            return False
        if self.log.match_term(meta.index, meta.term):
            # Raft §7: "if an existing entry has the same index and term as the snapshot's last
            # included entry, retain the entries following it". Those entries are committed
            # now; they are applied from the log, and the snapshot is not needed.
            self.log.commit_to(meta.index)
            self._send(AppendEntriesResponse(self.term, self.id, leader, True, self.log.committed))
            return False
        # Raft §7: otherwise discard the whole log and take the snapshot's state, membership
        # included (Thesis §4: the configuration lives in the snapshot too).
        logger.info(
            "%d restores snapshot at index %d term %d from %d",
            self.id,
            meta.index,
            meta.term,
            leader,
        )
        self.log.restore(meta)
        self.tracker.set_config(meta.conf, self.log.last_index())
        # Sent only once the snapshot is durable: it promises we hold the log up to its index.
        self._send(AppendEntriesResponse(self.term, self.id, leader, True, meta.index))
        return True

    # -- leader -------------------------------------------------------------------------------

    def _handle_append_response(self, m: AppendEntriesResponse) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if not m.success:
            self._handle_append_rejection(m, pr)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            # The follower installed the snapshot (or was already past it): the log has what
            # it needs next, so replicate from there.
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            if self.role is not Role.LEADER:
                return  # the change just committed removed us: stepped down
            # Followers with entries to receive get the new commit index with them; the others
            # learn it from the next heartbeat (at most one heartbeat interval later) instead
            # of costing each of them a message and a wakeup per commit now.
            self._bcast_append(send_if_empty=False)
            if m.src not in self.prs:
                return  # the commit let us leave a joint configuration without the sender
        elif was_paused:
            self._maybe_send_append(m.src)
        # Stream whatever else the follower lacks, up to the inflight window.
        while self._maybe_send_append(m.src, send_if_empty=False):
            pass
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.src)

    def _handle_append_rejection(self, m: AppendEntriesResponse, pr: Progress) -> None:
        """Raft §5.3: the follower lacks ``prev_index``; back off, skipping a whole
        conflicting term per rejection when the hint allows."""
        match_hint = m.index
        if m.hint_index is not None:
            match_hint = m.hint_index
            if m.hint_term:
                match_hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
        lost = pr.lost_entries
        if pr.maybe_decr_to(m.index, match_hint):
            if pr.lost_entries != lost:
                logger.warning(
                    "%d: %d refused index %d it had acknowledged: it lost part of its log "
                    "(a wiped or restored disk?); replicating again from %d",
                    self.id,
                    m.src,
                    m.index,
                    pr.next,
                )
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self._maybe_send_append(m.src)

    def _handle_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if pr.resume_on_heartbeat:
            # Resume a paused flow at most once per heartbeat interval. ReadIndex heartbeats
            # can arrive by the thousand per second: letting each of them resend a probe (up
            # to max_msg_bytes) to a lagging follower would bury the leader in work.
            pr.resume_on_heartbeat = False
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                # The follower is alive but acknowledged none of a full window: those appends
                # were probably lost. Free a slot so an append goes out; if the follower lacks
                # what it precedes, it rejects and we fall back to probing.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self._maybe_send_append(m.src)
        if m.round:
            self._lease.on_ack(m.src, m.round, self.id, self.tracker.has_quorum)
        if m.context is not None:
            for rs in self._read_only.recv_ack(m.src, m.context, self.tracker.has_quorum):
                self._read_confirmed(rs)

    def _handle_read_index_request(self, m: ReadIndexRequest) -> None:
        """Thesis §6.4: a member's follower read, confirmed like our own (keyed by its
        sender, so contexts of different nodes never collide)."""
        if m.src not in self.prs:
            return  # not a member: it has no business reading through us
        key = read_key(m.src, m.context)
        if not self._read_only.is_open(key):  # else a duplicate of an open read
            self._leader_read(key)

    def _quorum_active(self) -> bool:
        """Thesis §6.2: whether a quorum answered during the election timeout just ended; the
        next one starts from nothing."""
        active = self.tracker.quorum_active()
        self._lately_active = frozenset(
            node for node, pr in self.tracker.visit_peers() if pr.recent_active
        )
        self.tracker.reset_recent_active()
        return active

    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _maybe_commit(self) -> bool:
        index = self.tracker.committed()
        # Raft §5.4.2: only current-term entries commit by counting replicas.
        if not self.log.maybe_commit(index, self.term):
            return False
        committed = self.log.committed
        while self._uncommitted and self._uncommitted[0][0] <= committed:
            self._uncommitted_bytes -= self._uncommitted.popleft()[1]
        if self._read_only.has_waiting() and self._committed_in_current_term():
            for key in self._read_only.take_waiting():
                self._start_read(key)
        self._finish_conf_change()
        return True

    # -- sending ------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if isinstance(m, _SEND_NOW):
            self._msgs.append(m)
        else:
            # Votes and acknowledgements promise durable state: they wait for the sync.
            self._msgs_after_persist.append(m)

    def _maybe_send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send ``to`` the entries it lacks (or an empty probe). Returns whether a message
        was sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        last = self.log.last_index()
        if prev_term is None:
            # Raft §7: the entries the follower needs were compacted into a snapshot.
            return self._send_snapshot(to, pr)
        entries = self.log.entries(pr.next, last + 1, self.config.max_msg_bytes)
        if not entries and not send_if_empty:
            return False
        self._send(
            AppendEntries(
                self.term, self.id, to, prev_index, prev_term, tuple(entries), self.log.committed
            )
        )
        # Byte accounting costs a pass over the entries: only pay for it when a byte window
        # is configured.
        size = entries_size(entries) if entries and self.config.max_inflight_bytes else 0
        pr.sent_entries(len(entries), size)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        """Ask the driver to stream our latest snapshot to ``to`` (Raft §7): a
        :class:`SnapshotRequest` in ``Ready.snapshot_requests``. The driver sends the file in
        chunks and reports the outcome with :meth:`report_snapshot`."""
        if not pr.recent_active:
            # A snapshot is costly: only for a follower we heard from lately (etcd raft does the
            # same); the next heartbeat response makes it active and gets here again.
            return False
        meta = self.log.storage.snapshot_meta()
        pr.become_snapshot(meta.index)
        logger.info(
            "%d sends snapshot at index %d term %d to %d (it needs %d)",
            self.id,
            meta.index,
            meta.term,
            to,
            pr.next,
        )
        self._snapshot_requests.append(SnapshotRequest(to, self.term, meta))
        return True

    def _bcast_append(self, send_if_empty: bool = True) -> None:
        for peer in self.tracker.peers():
            self._maybe_send_append(peer, send_if_empty)

    def _bcast_heartbeat(self, context: bytes | None) -> None:
        committed = self.log.committed
        transferee = self.lead_transferee
        round_ = self._lease.next_round()  # Thesis §6.4.1: the lease counts from this send
        for peer, pr in self.tracker.visit_peers():
            # Never tell a follower to commit past what it is known to hold.
            self._send(
                Heartbeat(
                    self.term,
                    self.id,
                    peer,
                    min(pr.match, committed),
                    context,
                    transferee,
                    round_,
                )
            )

    def _send_timeout_now(self, to: int) -> None:
        # Thesis §3.10: first tell every follower whom we hand over to (in a heartbeat), so
        # they let that candidate's election bypass the lease (Thesis §4.2.3), then tell it to
        # campaign. Its RequestVotes leave only after it persisted its new term, which gives
        # the heartbeats a head start; if one loses the race, the transfer times out.
        self._bcast_heartbeat(self._read_only.last_context())
        self._lease.hand_over()  # it may be elected at once: no lease reads in this term
        self._send(TimeoutNow(self.term, self.id, to))

    # ------------------------------------------------------------------------------------------
    # Ready / advance
    # ------------------------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def take_messages(self) -> tuple[Message, ...]:
        """Take the messages that may leave before anything is persisted (what the next
        :meth:`ready` would list in ``messages``), also while a Ready is outstanding: for a
        driver parked on a full disk mid-Ready that must still send a leadership hand-off."""
        taken, self._msgs = tuple(self._msgs), []
        return taken

    def has_ready(self) -> bool:
        """Whether :meth:`ready` would return anything."""
        hard = self._prev_hard
        soft = self._prev_soft
        return bool(
            self._msgs
            or self._msgs_after_persist
            or self._snapshot_requests
            or self._read_states
            or self.log.has_unstable()
            or self.log.has_next_committed_entries()
            or self.term != hard.term
            or self.vote != hard.vote
            or self.log.committed != hard.commit
            or self.role is not soft.role
            or self.lead != soft.leader_id
        )

    def ready(self) -> Ready:
        """Collect what the driver must do now. Call :meth:`advance` with it before calling
        ``ready()`` again."""
        if self._outstanding is not None:
            raise LocalProtocolError("ready() called again before advance()")
        log = self.log
        entries = tuple(log.unstable_entries())
        committed = tuple(log.next_committed_entries(self.config.max_apply_bytes))
        # Compared field by field: most Readys change neither, and then build neither.
        prev = self._prev_hard
        changed_hard: HardState | None = None
        must_sync = bool(entries)
        if self.term != prev.term or self.vote != prev.vote:
            changed_hard = self._prev_hard = self._hard_state()
            must_sync = True  # Raft Figure 2: term and vote persist before any reply
        elif log.committed != prev.commit:
            changed_hard = self._prev_hard = self._hard_state()
        changed_soft: SoftState | None = None
        if self.role is not self._prev_soft.role or self.lead != self._prev_soft.leader_id:
            changed_soft = self._prev_soft = SoftState(self.role, self.lead)
        rd = Ready(
            soft_state=changed_soft,
            hard_state=changed_hard,
            snapshot=log.unstable_snapshot(),
            entries=entries,
            must_sync=must_sync,
            messages=tuple(self._msgs),
            snapshot_requests=tuple(self._snapshot_requests),
            persisted_messages=tuple(self._msgs_after_persist),
            committed_entries=committed,
            read_states=tuple(self._read_states),
        )
        self._msgs = []
        self._msgs_after_persist = []
        self._snapshot_requests = []
        self._read_states = []
        if committed:
            log.applying_to(committed[-1].index)
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted and sent everything in ``rd`` (and restored its snapshot). Its
        committed entries count as applied only once the driver says so (:meth:`applied_to`)."""
        if rd is not self._outstanding:
            raise LocalProtocolError("advance() must be given the Ready returned by ready()")
        self._outstanding = None
        if rd.snapshot is not None:
            # The driver made the snapshot durable and restored the state machine from it.
            self.log.stable_snapshot_to(rd.snapshot.index)
            self.log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            stored = self.log.storage.last_index()
            if stored < last.index:
                # Marking entries stable that storage does not hold would lose them silently.
                raise LocalProtocolError(
                    f"advance() before the Ready's entries were persisted: storage ends at "
                    f"{stored}, the entries at {last.index}"
                )
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                # Thesis §10.2.1: the leader's own copy counts once it is durable.
                own = self.prs.get(self.id)  # None once a change removed us
                if (
                    own is not None
                    and own.maybe_update(self.log.stable_last_index())
                    and self._maybe_commit()
                    and self.role is Role.LEADER
                ):
                    self._bcast_append(send_if_empty=False)

    def applied_to(self, index: int) -> None:
        """The driver's state machine now reflects every entry up to ``index`` (Raft Figure 2,
        lastApplied). Only the driver knows when an apply really happened (it may hold applies
        back while a snapshot reads the state), so the core's applied index moves only here
        (and when a snapshot from the leader is restored). Raises :class:`LocalProtocolError`
        if ``index`` moves backwards or passes the entries handed out in ``committed_entries``.
        """
        log = self.log
        if index < log.applied:
            raise LocalProtocolError(f"applied_to({index}) moves back from {log.applied}")
        if index > log.applying:
            raise LocalProtocolError(
                f"applied_to({index}) is past the entries handed out for applying ({log.applying})"
            )
        log.applied_to(index)

    # ------------------------------------------------------------------------------------------
    # Inspection
    # ------------------------------------------------------------------------------------------

    def status(self) -> Status:
        conf = self.tracker.conf_state()
        peers: dict[int, PeerStatus] = {}
        if self.role is Role.LEADER:
            peers = {node: PeerStatus.of(pr) for node, pr in self.prs.items()}
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader_id=self.lead,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            voters=tuple(sorted(self.tracker.voters())),
            peers=peers,
            learners=tuple(sorted(conf.learners + conf.learners_next)),
            voters_outgoing=conf.voters_outgoing,
            role_reason=self.role_reason,
            campaigns=dict(self.campaigns),
        )

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` if this node's own state is inconsistent."""
        log = self.log
        if not log.applied <= log.applying <= log.committed <= log.last_index():
            raise InvariantViolation(
                f"node {self.id}: applied {log.applied} <= applying {log.applying} <= commit "
                f"{log.committed} <= last {log.last_index()} does not hold"
            )
        match self.role:
            case Role.LEADER:
                if self.lead != self.id:
                    raise InvariantViolation(f"leader {self.id} names {self.lead} as leader")
                self.tracker.check_invariants(log.last_index())
            case Role.CANDIDATE:
                if self.vote != self.id:
                    raise InvariantViolation(f"candidate {self.id} voted for {self.vote}")
            case Role.FOLLOWER | Role.PRE_CANDIDATE:
                pass
            case _:
                assert_never(self.role)

    def conf_state(self) -> ConfState:
        """The membership in force: the latest in the log (Thesis §4.1)."""
        return self.tracker.conf_state()

    def conf_index(self) -> int:
        """The log index of the membership in force (its configuration entry, or the snapshot
        holding it; 0 for a new cluster's bootstrap membership)."""
        return self.log.confs.index()

    def conf_state_at(self, index: int) -> ConfState:
        """The membership in force at ``index`` (at or past the applied index): what a snapshot
        taken there must record (Raft §7)."""
        return self.log.confs.at(index)
