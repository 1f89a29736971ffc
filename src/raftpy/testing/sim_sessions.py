"""Client sessions in the simulator (Thesis §6.3): the node's own session table
(:mod:`raftpy.node.session_table`) applied by every simulated replica, and a small client
that builds the same SESSION records a :class:`~raftpy.node.RaftNode` leader builds.

Use :func:`session_machines` as the cluster's ``state_machine`` factory: each replica then
runs the user's state machine behind a :class:`~raftpy.node.session_machine.SessionStateMachine`
(so the table travels in snapshots and survives installs and restarts as in a real node), and
every SESSION entry it applies is recorded in a shared :class:`SessionLog`, which
:meth:`SessionLog.check` compares across replicas: at every index, every replica that applied
it expired the same sessions and gave the same answer. :class:`SimSessions` proposes records
at a node, stamped with that node's cluster clock, which starts from the node's table clock
whenever it starts a new term as leader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from raftpy.core.messages import Entry, EntryKind
from raftpy.core.ready import Role
from raftpy.errors import InvariantViolation, RemoteProtocolError
from raftpy.node.session_machine import SessionStateMachine
from raftpy.node.session_records import (
    CloseSession,
    KeepAlive,
    OpenSession,
    SessionCommand,
    SessionRecord,
    decode_record,
    encode_record,
)
from raftpy.node.session_table import Answer, ClusterClock, SessionTable
from raftpy.statemachine import StateMachine
from raftpy.testing.sim import SimCluster

__all__ = ["SessionLog", "SimSessions", "session_machines"]


@dataclass(frozen=True)
class Applied:
    """What one replica did at one SESSION entry (``kind``: the record's type name, or
    ``"malformed"``): the sessions it expired (or evicted) first, its answer (result, or the
    failure's type name and message), and whether the user's state machine applied it (a
    duplicate answered from the table did not)."""

    kind: str
    expired: tuple[int, ...]
    result: bytes
    failure: str | None
    applied: bool


@dataclass
class SessionLog:
    """Every SESSION entry each replica (each state machine instance) applied, by index."""

    replicas: list[dict[int, Applied]] = field(default_factory=list)

    def at(self, index: int) -> list[Applied]:
        """What every replica that applied ``index`` did there."""
        return [r[index] for r in self.replicas if index in r]

    def check(self) -> int:
        """Raise :class:`InvariantViolation` unless every replica that applied an index
        expired the same sessions and answered alike there; returns the indexes checked."""
        seen: dict[int, Applied] = {}
        for replica in self.replicas:
            for index, applied in replica.items():
                first = seen.setdefault(index, applied)
                if first != applied:
                    raise InvariantViolation(
                        f"replicas differ at session entry {index}: {first} vs {applied}"
                    )
        return len(seen)


class _Recorded(SessionStateMachine):
    def __init__(self, user: StateMachine, record: dict[int, Applied]) -> None:
        super().__init__(user, SessionTable())
        self._record = record
        self._expired: list[int] = []
        self.table.on_expire = lambda _index, sid: self._expired.append(sid)

    def apply_entry(self, entry: Entry) -> Answer:
        self._expired = []
        answer = super().apply_entry(entry)
        if entry.kind is EntryKind.SESSION:
            failure = answer.failure
            text = None if failure is None else f"{type(failure).__name__}: {failure}"
            self._record[entry.index] = Applied(
                _kind(entry.data), tuple(self._expired), answer.result, text, answer.applied
            )
        return answer


def _kind(data: bytes) -> str:
    try:
        return type(decode_record(data)).__name__
    except RemoteProtocolError:
        return "malformed"


def session_machines(
    user: Callable[[], StateMachine], log: SessionLog
) -> Callable[[], StateMachine]:
    """A ``state_machine`` factory for :class:`~raftpy.testing.sim.SimCluster`: ``user()``
    behind a session table, recording into ``log``."""

    def make() -> StateMachine:
        record: dict[int, Applied] = {}
        log.replicas.append(record)
        return _Recorded(user(), record)

    return make


class SimSessions:
    """Proposes session records at a node of ``cluster`` (built with :func:`session_machines`).
    The limits travel in each OpenSession, as a node's configuration would put them there."""

    def __init__(
        self,
        cluster: SimCluster,
        log: SessionLog,
        *,
        timeout_ms: int = 10_000,
        max_results: int = 100,
        max_sessions: int = 1000,
    ) -> None:
        self.cluster = cluster
        self.log = log
        self.timeout_ms = timeout_ms
        self.max_results = max_results
        self.max_sessions = max_sessions
        self._clocks: dict[int, tuple[int, int, ClusterClock]] = {}  # node -> (boot, term, clock)

    def table(self, i: int) -> SessionTable:
        sm = self.cluster.state_machine(i)
        assert isinstance(sm, SessionStateMachine)
        return sm.table

    def stamp(self, i: int) -> int:
        """Node ``i``'s cluster time now, as its leader would stamp it."""
        raft = self.cluster.raft(i)
        key = (id(raft), raft.term)
        known = self._clocks.get(i)
        if known is None or known[:2] != key:
            clock = ClusterClock()
            clock.start(self.table(i).clock_ms, self.cluster.now)
            known = (*key, clock)
            self._clocks[i] = known
        return known[2].stamp(self.cluster.now)

    def propose(self, i: int, make: Callable[[int], SessionRecord]) -> tuple[int, bytes]:
        """Propose the record ``make(time_ms)`` at node ``i``: its index (-1 when nothing was
        appended: not the leader, or down) and the entry's bytes."""
        if not self.cluster.is_up(i) or self.cluster.raft(i).role is not Role.LEADER:
            return -1, b""
        data = encode_record(make(self.stamp(i)))
        index, _, _ = self.cluster.start(i, data, EntryKind.SESSION)
        return index, data

    def run(
        self,
        make: Callable[[int], SessionRecord],
        expected: int | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, Applied]:
        """What a client with a session does: propose ``make(time_ms)`` at the leader, and
        resend it (a new attempt, the same record but for its stamp) at whichever node leads
        until one attempt is applied by ``expected`` nodes (default: a majority). Returns that
        entry's index and what was applied there; AssertionError after ``timeout`` (virtual)."""
        cluster = self.cluster
        need = cluster.n // 2 + 1 if expected is None else expected
        deadline = cluster.now + timeout
        while cluster.now < deadline:
            leader = cluster.leader()
            index, data = (-1, b"") if leader is None else self.propose(leader, make)
            if index < 0:
                cluster.run_for(0.05)
                continue
            settle = cluster.now + 1.0
            while cluster.now < settle:
                count, cmd = cluster.n_committed(index)
                if cmd is not None and cmd != data:
                    break  # another leader's entry took the index: this attempt is lost
                if count >= need:
                    return index, self.log.at(index)[0]
                cluster.run_for(0.02)
        raise AssertionError(f"[seed={cluster.seed}] no attempt was applied in {timeout} s")

    def open(self, timeout_ms: int | None = None) -> int:
        """Open a session (at whichever node leads), idle for at most ``timeout_ms`` (default
        :attr:`timeout_ms`); its id."""
        limit = self.timeout_ms if timeout_ms is None else timeout_ms
        _, applied = self.run(lambda t: OpenSession(t, limit, self.max_results, self.max_sessions))
        assert applied.failure is None, applied
        return int.from_bytes(applied.result, "big")

    def write(self, session: int, seq: int, ack: int, command: bytes) -> Applied:
        """Write ``command`` as ``seq`` of ``session`` until it is applied; its answer."""
        return self.run(lambda t: SessionCommand(t, session, seq, ack, command))[1]

    def keep_alive(self, session: int, ack: int) -> Applied:
        return self.run(lambda t: KeepAlive(t, session, ack))[1]

    def close(self, session: int) -> Applied:
        return self.run(lambda t: CloseSession(t, session))[1]
