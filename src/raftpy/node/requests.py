"""Pending client requests on a node: proposals waiting for their entry to be applied, and
linearizable reads waiting for their read index to be confirmed and then applied.

:class:`PendingRequests` owns every future a caller of :meth:`RaftNode.submit` or
:meth:`RaftNode.submit_query` may be waiting on, from the moment the node accepts the request
until it resolves; the node's loop feeds it what the core says. How each way of ending reaches
a client is in :mod:`raftpy.outcomes` (README.md describes it for users).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raftpy.core.messages import Entry, EntryKind
from raftpy.core.raft import Raft
from raftpy.core.ready import ReadState, Role
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    NotLeaderError,
    ProposalDropped,
)
from raftpy.node.latency import Histogram
from raftpy.statemachine import StateMachine

logger = logging.getLogger("raftpy.node")

Answered = Callable[["asyncio.Future[bytes]"], None]
"""Called with a proposal's future as soon as the node resolves it (``RaftNode.submit``'s
``on_done``)."""


@dataclass(eq=False)
class _Proposal:
    command: bytes
    future: asyncio.Future[bytes]
    deadline: float
    arrived: float  # loop time
    index: int = 0  # 0 until appended
    term: int = 0
    on_done: Answered | None = None

    def fail(self, exc: BaseException) -> None:
        """End with ``exc`` (unless the caller cancelled the future) and tell ``on_done``."""
        if not self.future.done():
            self.future.set_exception(exc)
            self.notify()

    def notify(self) -> None:
        """Tell ``on_done`` at once that the future holds its outcome: a client's answer
        leaves from here, not one loop pass later through a done-callback."""
        if self.on_done is not None:
            try:
                self.on_done(self.future)
            except Exception:  # the caller's bug: it must not end the node's loop
                logger.exception("a proposal's on_done callback failed")


@dataclass(eq=False)
class _Read:
    query: bytes
    future: asyncio.Future[bytes]
    deadline: float
    lease: bool = False  # served under the leader's lease when it holds (Thesis §6.4.1)


@dataclass(eq=False)
class _ReadBatch:
    """Reads that share one ReadIndex round (Thesis §6.4: one heartbeat quorum confirms
    every read that arrived before it)."""

    reads: list[_Read]
    index: int = 0


class PendingRequests:
    """Every accepted proposal and read, until its future resolves.

    A proposal is *queued* until the loop appends it (:meth:`append_proposals`), then
    *pending* at its index until the entry there is applied (:meth:`on_applied`). A read is
    queued until the loop asks the core for a read index (:meth:`start_reads`), then waits in
    a batch for the core's :class:`~raftpy.core.ready.ReadState`, then for the state machine
    to apply that index (:meth:`serve_reads`).

    Guarantees:

    - Every request has a deadline (``request_timeout`` unless the caller gives one), checked
      on every tick by :meth:`expire`: nobody is left waiting, whatever the cluster does.
    - A definite failure (:class:`NotLeaderError`, :class:`ProposalDropped`) means the command
      was never appended: a retry cannot apply it twice.
    - A proposal whose entry was appended fails, if it fails, with
      :class:`IndeterminateError` (leadership lost, deadline passed, node stopped): the entry
      may still commit under the next leader.
    - A proposal resolves with the state machine's result (or the exception its ``apply``
      raised) only when its own entry, same index *and* term, is applied; another term's
      entry at that index means ours was overwritten and never will be applied (Raft §5.3):
      :class:`ProposalDropped`.
    - A read is answered from the state machine only once it has applied the read index the
      core confirmed with a heartbeat quorum (Thesis §6.4). One that cannot be confirmed
      fails with :class:`NotLeaderError` or :class:`ClusterUnavailableError`; a read changes
      nothing, so either is definite.
    - An exception raised by the state machine (``apply`` or ``query``) fails only the
      request it serves: its future holds that exception, and the loop goes on.
    """

    def __init__(
        self,
        state_machine: StateMachine,
        request_timeout: float,
        leader_error: Callable[[], NotLeaderError],
        latency: Histogram | None = None,
    ) -> None:
        """``leader_error`` builds the NotLeaderError naming the leader the node knows now;
        ``latency`` counts each applied proposal's time from arrival to answer (the end of
        its applied batch: :meth:`end_of_batch`)."""
        self._sm = state_machine
        self._latency = latency
        self._request_timeout = request_timeout
        self._leader_error = leader_error
        self.loop: asyncio.AbstractEventLoop | None = None
        """The node's loop, set when it starts: every request's future and deadline are made
        on it without asking asyncio each time (a getpid system call in Python 3.11)."""
        self._queued: list[_Proposal] = []
        self._pending: dict[int, _Proposal] = {}  # by index, once appended
        self._queued_reads: list[_Read] = []
        self._read_batches: dict[bytes, _ReadBatch] = {}  # by context, until a ReadState
        self._waiting_reads: list[tuple[int, bytes, _ReadBatch]] = []  # heap by read index
        self._read_seq = itertools.count(1)
        # Arrival times of the proposals answered in the batch being applied, and their loop.
        self._answered: list[float] = []
        self._answered_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------------------------------
    # Accepting requests
    # ------------------------------------------------------------------------------------------

    @property
    def pending_proposals(self) -> int:
        """Proposals waiting for their outcome: queued, or appended and not yet applied."""
        return len(self._queued) + len(self._pending)

    def _deadline(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> float:
        return loop.time() + (self._request_timeout if timeout is None else timeout)

    def propose(
        self, command: bytes, timeout: float | None, on_done: Answered | None = None
    ) -> asyncio.Future[bytes]:
        """Queue ``command`` for the next append; the future resolves as the class says, and
        ``on_done`` (if given) is called with it right then, before the loop goes on."""
        loop = self.loop or asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        now = loop.time()
        deadline = now + (self._request_timeout if timeout is None else timeout)
        self._queued.append(_Proposal(command, fut, deadline, now, on_done=on_done))
        return fut

    def read(
        self, query: bytes, timeout: float | None, *, lease: bool = False
    ) -> asyncio.Future[bytes]:
        """Queue a linearizable read for the next ReadIndex round (on a follower, forwarded
        to the leader), or with ``lease`` a lease read (the leader's lease, else ReadIndex)."""
        loop = self.loop or asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._queued_reads.append(_Read(query, fut, self._deadline(loop, timeout), lease))
        return fut

    def answer_now(self, query: bytes) -> asyncio.Future[bytes]:
        """A future already holding the answer from local state (a stale read), or the
        exception the state machine's ``query`` raised."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        _answer(self._sm, query, fut)
        return fut

    # ------------------------------------------------------------------------------------------
    # Into the core (once per loop pass)
    # ------------------------------------------------------------------------------------------

    def append_proposals(self, raft: Raft, max_batch: int) -> tuple[int, int]:
        """Append the queued proposals, ``max_batch`` commands per append (one fsync and one
        AppendEntries per follower for each). Returns (commands appended, appends)."""
        if not self._queued:
            return 0, 0  # most loop passes: nothing was proposed since the last one
        queued = [p for p in self._queued if not p.future.done()]
        self._queued = []
        appended = batches = 0
        for start in range(0, len(queued), max_batch):
            batch = queued[start : start + max_batch]
            try:
                # Every client write is a SESSION record (raftpy.node.sessions).
                first, term = raft.propose_batch([p.command for p in batch], EntryKind.SESSION)
            except (NotLeaderError, ProposalDropped) as exc:
                # Definite: the core appended none of them.
                if isinstance(exc, NotLeaderError):
                    exc = self._leader_error()
                for p in batch:
                    p.fail(exc)
                continue
            for k, p in enumerate(batch):
                p.index = first + k
                p.term = term
                self._pending[p.index] = p
            appended += len(batch)
            batches += 1
        return appended, batches

    def start_reads(self, raft: Raft, lease_ok: bool = False) -> None:
        """Ask the core for one read index covering every queued linearizable read, and one
        for the lease reads (answered at once while the lease holds). ``lease_ok``: the
        driver's tick counter is on time, so the core's lease may be trusted now."""
        if not self._queued_reads:
            return
        reads = [r for r in self._queued_reads if not r.future.done()]
        self._queued_reads = []
        if not reads:
            return
        plain = [r for r in reads if not r.lease]
        leased = [r for r in reads if r.lease]
        if plain:
            self._start_batch(plain, raft.read_index)
        if leased:
            # Thesis §6.4.1: only the leader holds a lease; elsewhere a lease read is refused.
            if raft.role is not Role.LEADER:
                self._fail_reads(leased, self._leader_error())
            else:
                self._start_batch(leased, raft.read_lease if lease_ok else raft.read_index)

    def _start_batch(self, reads: list[_Read], start: Callable[[bytes], object]) -> None:
        context = next(self._read_seq).to_bytes(8, "big")
        try:
            start(context)
        except NotLeaderError:
            self._fail_reads(reads, self._leader_error())
            return
        self._read_batches[context] = _ReadBatch(reads)

    # ------------------------------------------------------------------------------------------
    # Out of the core
    # ------------------------------------------------------------------------------------------

    def on_read_states(self, read_states: Iterable[ReadState]) -> None:
        """The core confirmed these read indexes: the reads wait for them to be applied."""
        for rs in read_states:
            batch = self._read_batches.pop(rs.context, None)
            if batch is not None:
                batch.index = rs.index
                # Ties broken by the round (its context counts up), not by address: runs repeat.
                heapq.heappush(self._waiting_reads, (rs.index, rs.context, batch))

    def on_dropped_reads(self, contexts: Iterable[bytes]) -> None:
        """The core dropped these ReadIndex rounds (leadership lost before confirming)."""
        for context in contexts:
            batch = self._read_batches.pop(context, None)
            if batch is not None:
                self._fail_reads(batch.reads, self._leader_error())

    def on_applied(self, entry: Entry, result: bytes, failure: Exception | None) -> None:
        """``entry`` was applied, giving ``result`` (or ``apply`` raised ``failure``). Its
        proposal's latency is counted at :meth:`end_of_batch`."""
        if not self._pending:
            return
        p = self._pending.pop(entry.index, None)
        if p is None or p.future.done():
            return
        if p.term != entry.term:
            # Another leader's entry took this index: ours was overwritten and can never
            # commit (Raft §5.3: an entry lives or dies at its index and term).
            p.fail(ProposalDropped("overwritten by a newer leader's entry; not applied"))
        else:
            if failure is not None:
                p.future.set_exception(failure)
            else:
                p.future.set_result(result)
            if p.on_done is not None:
                p.notify()
            if self._latency is not None:
                if not self._answered:
                    self._answered_loop = p.future.get_loop()
                self._answered.append(p.arrived)

    def end_of_batch(self) -> None:
        """The batch of entries being applied is done: count its proposals' latencies at one
        clock reading, not one per proposal (their proposers see the answers only once the
        loop runs again, after the whole batch)."""
        answered, loop = self._answered, self._answered_loop
        if not answered or loop is None or self._latency is None:
            return
        self._answered = []
        now = loop.time()
        observe = self._latency.observe
        for arrived in answered:
            observe(now - arrived)

    def serve_reads(self, applied: int) -> int:
        """Answer the reads whose read index is applied; returns how many were answered."""
        waiting = self._waiting_reads
        sm = self._sm
        served = 0
        while waiting and waiting[0][0] <= applied:
            _, _, batch = heapq.heappop(waiting)
            for r in batch.reads:
                if not r.future.done():
                    _answer(sm, r.query, r.future)
                    served += 1
        return served

    # ------------------------------------------------------------------------------------------
    # Failures
    # ------------------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Fail proposals and reads whose deadline passed (checked once per tick)."""
        if self._pending:
            expired = [i for i, p in self._pending.items() if p.deadline <= now]
            for i in expired:
                self._pending.pop(i).fail(
                    IndeterminateError("deadline passed after the command was appended")
                )
        for batch in list(self._read_batches.values()) + [b for _, _, b in self._waiting_reads]:
            for r in batch.reads:
                if r.deadline <= now and not r.future.done():
                    r.future.set_exception(
                        ClusterUnavailableError("read not confirmed before its deadline")
                    )

    def drop_queued(self, reason: str) -> None:
        """Refuse the proposals not appended yet (definite: ProposalDropped)."""
        for p in self._queued:
            p.fail(ProposalDropped(reason))
        self._queued = []

    def on_leadership_lost(self) -> None:
        """This node stopped leading: appended proposals may still commit under the next
        leader (indeterminate); queued proposals and reads were never started (not leader).
        Reads waiting for a read index end when the core drops them (:meth:`on_dropped_reads`).
        """
        err = IndeterminateError("leadership lost before the command committed")
        for p in self._pending.values():
            p.fail(err)
        self._pending.clear()
        not_leader = self._leader_error()
        for p in self._queued:
            p.fail(not_leader)
        self._queued = []
        self._fail_reads(self._queued_reads, not_leader)
        self._queued_reads = []

    def fail_all(self, reason: str) -> None:
        """The node stops or failed: fail everything, appended proposals as indeterminate."""
        indeterminate = IndeterminateError(f"{reason}; the command may still commit")
        for p in self._pending.values():
            p.fail(indeterminate)
        self._pending.clear()
        self.drop_queued(f"{reason}; the command was not appended")
        unavailable = ClusterUnavailableError(reason)
        self._fail_reads(self._queued_reads, unavailable)
        self._queued_reads = []
        for batch in self._read_batches.values():
            self._fail_reads(batch.reads, unavailable)
        self._read_batches.clear()
        for _, _, batch in self._waiting_reads:
            self._fail_reads(batch.reads, unavailable)
        self._waiting_reads = []

    @staticmethod
    def _fail_reads(reads: list[_Read], exc: BaseException) -> None:
        for r in reads:
            if not r.future.done():
                r.future.set_exception(exc)


def _answer(sm: StateMachine, query: bytes, future: asyncio.Future[bytes]) -> None:
    """Resolve ``future`` with ``sm.query(query)``, or with the exception it raised: a query
    the state machine cannot answer (malformed bytes, a bug in it) fails that read alone, never
    the node's loop (README.md, "Failures")."""
    try:
        result = sm.query(query)
    except Exception as exc:
        future.set_exception(exc)
        return
    future.set_result(result)
