"""The leader lease (Thesis §6.4.1): when a leader may answer a read from its own state
without a heartbeat round first.

A leader that a quorum of voters acknowledged at some moment knows that no other leader can
be elected before those voters stop refusing votes: each of them refuses votes while it heard
from its leader within an election timeout (Thesis §4.2.3, ``Raft.step``'s in-lease check, on
with CheckQuorum). So the lease runs from when the heartbeat round a quorum acknowledged was
*sent* (an acknowledgement says the voter heard the leader at some instant after the send, no
earlier), for :attr:`~raftpy.core.config.RaftConfig.lease_ticks` of the leader's ticks.

Every heartbeat broadcast is a numbered *round*: the heartbeat carries the round, the answer
echoes it, and :class:`LeaderLease` keeps the tick each recent round was sent in. The newest
round acknowledged by a quorum (of both halves in a joint configuration: the tracker's
``has_quorum``) sets the lease's end.

How long ``lease_ticks`` may be (the driver derives it: ``raftpy.node.config`` for the
node). Let T be the tick period and E ``election_ticks``. A round sent while the leader's tick
counter reads s left at a real time in [s, s+1) T (counted from the leader's first tick,
when ticks fire on schedule). A follower receives it no earlier, resets its election timer,
and refuses votes until it has ticked E times: its first tick may come at once, so that is at
least (E-1) of its own tick periods after the send. While the counter reads c < s + L, the
real time is below (c+1) T <= (s+L) T. So L T <= (E-1) T_f is enough, where T_f is the
follower's tick period as the leader's clock measures it; a follower clock that runs ahead
by at most ``drift`` seconds over an election timeout gives (E-1) T_f >= (E-1) T - drift, hence
``L = E - 1 - ceil(drift / T)`` (0: no lease). The driver must keep its tick counter honest:
a leader whose ticks were skipped (a stalled loop) must call :meth:`LeaderLease.lose` (through
``Raft.lose_lease``), and a lease read must not be served when the next tick is overdue.

A leader holds no lease before a round of its own term is acknowledged (rounds restart with
each term) nor before it committed an entry of its term (``Raft.read_lease`` checks that:
the commit index is only known to be current then, Thesis §6.4 step 1). It gives the lease
up while handing leadership over (Thesis §3.10): the followers it names let that candidate's
election through the in-lease check; once it sent TimeoutNow the lease is gone for the term.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection


class LeaderLease:
    """One leader's lease: the owner of the facts (round numbers, when each was sent, which
    voter acknowledged which, when the lease ends). ``Raft`` feeds it ticks, broadcasts and
    acknowledgements and asks :meth:`valid`."""

    def __init__(self, lease_ticks: int, enabled: bool) -> None:
        self.lease_ticks = lease_ticks
        self.enabled = enabled and lease_ticks > 0
        self._now = 0
        self._round = 0
        self._sent: deque[tuple[int, int]] = deque()  # (round, tick sent), oldest first
        self._acked: dict[int, int] = {}  # voter -> newest round it acknowledged
        self._quorum_round = 0  # newest round a quorum acknowledged
        self._expiry = 0  # the lease holds while the tick counter is below this
        self._transfer = False  # a leadership transfer is in progress
        self._handed_over = False  # TimeoutNow sent in this term: no lease until the next

    def reset(self) -> None:
        """A new term (or leadership lost): no lease, rounds start again."""
        self._now = 0
        self._round = 0
        self._sent.clear()
        self._acked.clear()
        self._quorum_round = 0
        self._expiry = 0
        self._transfer = False
        self._handed_over = False

    def tick(self) -> None:
        self._now += 1
        # Rounds sent lease_ticks ago or earlier can no longer give a lease: forget them, so
        # a leader cut off from its quorum keeps a bounded record.
        horizon = self._now - self.lease_ticks
        sent = self._sent
        while sent and sent[0][1] <= horizon:
            sent.popleft()

    def next_round(self) -> int:
        """A heartbeat round is being sent now: its number (0 when the lease is off)."""
        if not self.enabled:
            return 0
        self._round += 1
        self._sent.append((self._round, self._now))
        return self._round

    def on_ack(
        self, node: int, round_: int, self_id: int, has_quorum: Callable[[Collection[int]], bool]
    ) -> None:
        """``node`` acknowledged heartbeat round ``round_`` of this term."""
        if not self.enabled or round_ <= self._quorum_round or round_ > self._round:
            return
        if self._acked.get(node, 0) >= round_:
            return
        self._acked[node] = round_
        # The newest round such that the voters that acknowledged it (or a later one), and
        # we ourselves, form a quorum.
        acked = sorted(self._acked.items(), key=lambda item: item[1], reverse=True)
        ids = {self_id}
        best = 0
        for voter, r in acked:
            ids.add(voter)
            if has_quorum(ids):
                best = r if r > self._quorum_round else 0
                break
        if not best:
            return
        self._quorum_round = best
        sent = self._sent
        while sent and sent[0][0] < best:
            sent.popleft()
        if sent and sent[0][0] == best:
            # Thesis §6.4.1: from when the round was SENT, not when the quorum answered.
            self._expiry = max(self._expiry, sent[0][1] + self.lease_ticks)

    def valid(self) -> bool:
        """Whether the lease holds now (the caller checks the commit of its own term)."""
        return (
            self.enabled
            and not self._transfer
            and not self._handed_over
            and self._now < self._expiry
        )

    def remaining_ticks(self) -> int:
        """Ticks left on the lease (0: none)."""
        return max(0, self._expiry - self._now) if self.valid() else 0

    def start_transfer(self) -> None:
        """A leadership transfer started: no lease reads while it runs."""
        self._transfer = True

    def end_transfer(self) -> None:
        """The transfer was aborted before TimeoutNow went out: the lease may serve again."""
        self._transfer = False

    def hand_over(self) -> None:
        """TimeoutNow was sent: the transferee may be elected at once, whatever the lease."""
        self._handed_over = True
        self._expiry = 0

    def lose(self) -> None:
        """The driver lost track of time (ticks skipped): end the current lease; a round sent
        from now on may give a new one."""
        self._expiry = 0
        self._sent.clear()
        self._quorum_round = self._round
