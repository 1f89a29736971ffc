"""NodeHealth: whether this node's disk lets it lead, and what it does when it does not
(docs/health.md).

A leader acknowledges nothing before its own fsync, so a slow disk on the leader slows every
write of the cluster, and a full disk stops them all. A node is *unhealthy* while

- its fsync p99 (nearest rank) over the last :data:`WINDOW` syncs exceeds
  ``NodeConfig.max_fsync_p99``, judged once at least :data:`MIN_SYNCS` syncs were made; or
- its disk is full (the last sync failed for lack of space).

It is healthy again with hysteresis, so that it does not flap around the bound: once the p99
of the last :data:`WINDOW` syncs is under half the bound, and the disk is writable again.

While unhealthy the node pauses its campaigns in the core (``Raft.pause_campaigns``: no
election on timeout, TimeoutNow ignored; it still votes and replicates) and, if it leads,
hands leadership (Thesis §3.10) to the most up-to-date active voter; when that voter does not
take over within an election timeout (it may be unhealthy too: it ignores TimeoutNow), the
next one is tried. With no voter to hand over to (a one-voter cluster, or no other voter
active), it stays leader and says so once. One liveness guard: a paused node that has heard
from no leader for :data:`LEADERLESS_ELECTIONS` election timeouts (randomized, as election
timeouts are) campaigns anyway: a slow leader beats none, e.g. when every member's disk is
slow.

Not a rule of the Raft paper: raftpy's own extension; etcd and hashicorp/raft alert on slow
fsyncs but leave the slow leader in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from raftpy.core.messages import Message
from raftpy.core.raft import Raft
from raftpy.core.ready import Role
from raftpy.node.last_error import LastError
from raftpy.transport.base import Transport

logger = logging.getLogger("raftpy.node")

WINDOW = 100
"""The syncs the fsync p99 is judged over: the most recent ones."""
MIN_SYNCS = 20
"""Fewer syncs than this say nothing: the node stays healthy (a slow start-up sync alone
never hands leadership away)."""
QUANTILE = 0.99
LEADERLESS_ELECTIONS = 3
"""Election timeouts without a leader after which a paused node campaigns anyway."""
RETRY_ELECTIONS = 10
"""After every voter was tried without success, election timeouts before another round."""


class RecentSyncs(Protocol):
    """The recent fsync durations (``raftpy.node.latency.RecentDurations``)."""

    def quantile(self, q: float, last: int | None = None) -> float | None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the node's disk lets it lead (``RaftNode.health``)."""

    healthy: bool = True
    reason: str | None = None
    """Why not, e.g. ``"disk full"`` or ``"fsync p99 1.52 s > max_fsync_p99 1.0 s"``."""


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


class NodeHealth:
    """One node's health and the hand-off it leads to (see the module docstring).

    The node feeds it: :meth:`on_sync` after each successful sync (the duration itself is in
    ``syncs``), :meth:`on_disk_full` while a sync fails for lack of space, and :meth:`tick`
    once per tick with the core. Nothing here reads a clock: time is counted in ticks, or
    given (``now``) by the caller.
    """

    def __init__(
        self,
        node_id: int,
        max_fsync_p99: float | None,
        syncs: RecentSyncs,
        election_ticks: int,
        tick_seconds: float,
        errors: LastError | None = None,
    ) -> None:
        self._id = node_id
        self._errors = errors  # the node's last error: becoming unhealthy is one
        self._bound = max_fsync_p99
        self._syncs = syncs
        self._election_ticks = election_ticks
        self._election_seconds = election_ticks * tick_seconds
        self._disk_full = False
        self._slow: str | None = None  # why the fsyncs count as slow; None: they do not
        self._fresh = False  # syncs were made since the last look
        self._health = Health()
        # The hand-off in progress: whom we asked last, whom we asked in this round.
        self._target: int | None = None
        self._tried: set[int] = set()
        self._idle_ticks = 0  # ticks spent leading with no one to hand over to, or waiting
        self._said_staying = False
        self._parked_since: float | None = None
        self._campaigning_anyway = False

    @property
    def health(self) -> Health:
        return self._health

    # ------------------------------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------------------------------

    def on_sync(self) -> None:
        """A sync succeeded (its duration is the newest in ``syncs``): the disk is writable."""
        self._fresh = True
        self._disk_full = False
        self._parked_since = None

    def judge(self) -> Health:
        """Look at the syncs made since the last look and the disk; log each change."""
        if self._fresh:
            self._fresh = False
            self._slow = self._judge_syncs()
        reason = "disk full" if self._disk_full else self._slow
        was = self._health
        if reason == was.reason:
            return was  # the usual tick: nothing changed
        self._health = Health(reason is None, reason)
        if was.healthy and reason is not None:
            logger.warning(
                "node %d is unhealthy: %s; it pauses its campaigns and hands leadership to a "
                "healthy voter if it leads (docs/health.md)",
                self._id,
                reason,
            )
            if self._errors is not None:
                self._errors.note(f"unhealthy: {reason}")
            self._restart_round()
        elif not was.healthy and reason is None:
            logger.warning("node %d is healthy again: campaigns resumed", self._id)
        return self._health

    def _judge_syncs(self) -> str | None:
        """The reason the fsyncs are too slow now, or ``None``; with hysteresis."""
        bound = self._bound
        if bound is None or len(self._syncs) < MIN_SYNCS:
            return None
        p99 = self._syncs.quantile(QUANTILE, WINDOW)
        if p99 is None:
            return None
        if self._slow is None:
            if p99 > bound:
                return f"fsync p99 {_seconds(p99)} > max_fsync_p99 {_seconds(bound)}"
            return None
        if p99 < bound / 2:
            return None
        return self._slow  # not slow enough to count as slow, not fast enough to be healthy

    # ------------------------------------------------------------------------------------------
    # Once per tick
    # ------------------------------------------------------------------------------------------

    def tick(self, raft: Raft) -> None:
        """Judge, pause or resume the core's campaigns, and drive a hand-off while leading."""
        health = self.judge()
        self._pause(raft, not health.healthy)
        if health.healthy or raft.role is not Role.LEADER:
            self._target = None
            return
        target = self._target
        if raft.lead_transferee is not None:
            return  # a transfer is under way (ours, or an operator's): let it end
        if target is not None:
            # Our transfer ended and we still lead: that voter did not take over.
            self._tried.add(target)
            self._target = None
        candidate = self._candidate(raft)
        if candidate is None:
            self._stay_leader(raft)
            return
        self._target = candidate
        self._idle_ticks = 0
        logger.warning(
            "node %d is unhealthy (%s): hands leadership to node %d",
            self._id,
            health.reason,
            candidate,
        )
        raft.transfer_leadership(candidate)

    def _pause(self, raft: Raft, unhealthy: bool) -> None:
        # The core's randomized timeout in the threshold keeps paused nodes from all
        # campaigning at the same tick and splitting the vote (Raft §5.2).
        wait = (LEADERLESS_ELECTIONS - 1) * self._election_ticks + raft.randomized_election_timeout
        leaderless = raft.role is not Role.LEADER and raft.election_elapsed >= wait
        if unhealthy and leaderless and not self._campaigning_anyway:
            logger.warning(
                "node %d is unhealthy but heard from no leader for %d election timeouts: it "
                "campaigns anyway",
                self._id,
                LEADERLESS_ELECTIONS,
            )
        self._campaigning_anyway = unhealthy and leaderless
        paused = unhealthy and not leaderless
        if raft.campaigns_paused != paused:
            raft.pause_campaigns(paused)

    def _candidate(self, raft: Raft, *, inactive_too: bool = False) -> int | None:
        """The most up-to-date active voter not tried in this round (highest match, then the
        lowest id), or ``None``. ``inactive_too``: the inactive ones follow the active ones
        (a parked leader's view of who is active is frozen)."""
        voters = raft.voters()
        ranked = [
            (not pr.recent_active, -pr.match, node)
            for node, pr in raft.prs.items()
            if node != self._id
            and node in voters
            and node not in self._tried
            and (inactive_too or pr.recent_active)
        ]
        return min(ranked)[2] if ranked else None

    def _stay_leader(self, raft: Raft) -> None:
        """No voter to hand over to now: wait, say so once, and try a new round later."""
        self._idle_ticks += 1
        others = raft.voters() - {self._id}
        if not others:
            why = "it is the only voter"
        elif self._tried:
            why = f"no voter took over (tried {sorted(self._tried)})"
            if self._idle_ticks >= RETRY_ELECTIONS * self._election_ticks:
                self._restart_round()
                return
        elif self._idle_ticks >= self._election_ticks:
            # Peers' activity is counted afresh each election timeout: wait one out first.
            why = "no other voter is active"
        else:
            return
        if not self._said_staying:
            self._said_staying = True
            logger.warning(
                "node %d is unhealthy (%s) but stays leader: %s",
                self._id,
                self._health.reason,
                why,
            )

    def _restart_round(self) -> None:
        self._tried.clear()
        self._target = None
        self._idle_ticks = 0
        self._said_staying = False

    # ------------------------------------------------------------------------------------------
    # A leader parked on a full disk
    # ------------------------------------------------------------------------------------------

    def on_disk_full(self, raft: Raft | None, transport: Transport | None, now: float) -> None:
        """A sync failed for lack of space (called on every retry, ``now`` in seconds). The
        node is parked mid-Ready: it sends no heartbeats (the others would elect a new leader
        only after an election timeout), cannot process the acknowledgements that would bring
        a voter up to date, nor tick. So a leader tells the most up-to-date active voter to
        take over at once, and the next one after each election timeout: it sends the
        heartbeats naming the transferee and TimeoutNow from here, and flushes them."""
        self._disk_full = True
        health = self.judge()
        if raft is None or transport is None:
            return
        self._pause(raft, not health.healthy)
        sent = self._parked_hand_off(raft, now)
        for m in sent:
            transport.send(m)
        if sent:
            transport.flush()

    def _parked_hand_off(self, raft: Raft, now: float) -> tuple[Message, ...]:
        if raft.role is not Role.LEADER:
            return ()
        since = self._parked_since
        if since is not None and now - since < self._election_seconds:
            return ()
        if self._target is not None:
            self._tried.add(self._target)
        candidate = self._candidate(raft, inactive_too=True)
        if candidate is None and self._tried:
            self._tried.clear()  # every voter was asked: ask again, from the best
            candidate = self._candidate(raft, inactive_too=True)
        self._parked_since = now
        if candidate is None:
            self._stay_leader(raft)
            return ()
        self._target = candidate
        logger.warning(
            "node %d: the disk is full; hands leadership to node %d", self._id, candidate
        )
        raft.transfer_leadership(candidate, at_once=True)
        return raft.take_messages()
