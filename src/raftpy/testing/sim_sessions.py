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
from raftpy.errors import InvariantViolation
from raftpy.node.session_machine import SessionStateMachine
from raftpy.node.session_records import (
    CloseSession,
    KeepAlive,
    OpenSession,
    SessionCommand,
    SessionRecord,
    encode_record,
)
from raftpy.node.session_table import Answer, ClusterClock, SessionTable
from raftpy.statemachine import StateMachine
from raftpy.testing.sim import SimCluster

__all__ = ["SessionLog", "SimSessions", "session_machines"]


@dataclass(frozen=True)
class Applied:
    """What one replica did at one SESSION entry: the sessions it expired (or evicted) first,
    and its answer (result, or the failure's type name and message)."""

    expired: tuple[int, ...]
    result: bytes
    failure: str | None


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
            self._record[entry.index] = Applied(tuple(self._expired), answer.result, text)
        return answer


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
        *,
        timeout_ms: int = 10_000,
        max_results: int = 100,
        max_sessions: int = 1000,
    ) -> None:
        self.cluster = cluster
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

    def propose(self, i: int, make: Callable[[int], SessionRecord]) -> int:
        """Propose the record ``make(time_ms)`` at node ``i``; its index, or -1 when nothing
        was appended (not the leader, or down)."""
        if not self.cluster.is_up(i) or self.cluster.raft(i).role is not Role.LEADER:
            return -1
        data = encode_record(make(self.stamp(i)))
        index, _, _ = self.cluster.start(i, data, EntryKind.SESSION)
        return index

    def open(self, i: int) -> int:
        """Open a session at node ``i``: its id once committed (the entry's index), or -1."""
        return self.propose(
            i, lambda t: OpenSession(t, self.timeout_ms, self.max_results, self.max_sessions)
        )

    def write(self, i: int, session: int, seq: int, ack: int, command: bytes) -> int:
        return self.propose(i, lambda t: SessionCommand(t, session, seq, ack, command))

    def keep_alive(self, i: int, session: int, ack: int) -> int:
        return self.propose(i, lambda t: KeepAlive(t, session, ack))

    def close(self, i: int, session: int) -> int:
        return self.propose(i, lambda t: CloseSession(t, session))
