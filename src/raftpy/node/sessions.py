"""Client sessions on a node (Thesis §6.3; README.md, "Sessions"): the records a leader
builds for each client request, stamped with the cluster clock, and what their answers mean.

Every client write becomes a SESSION entry (:mod:`raftpy.node.session_records`), with or
without a session, so every entry carries the leader's clock. The table itself is replicated
state, applied in log order by :class:`~raftpy.node.session_machine.SessionStateMachine`
(:mod:`raftpy.node.session_table`); this module only turns the node's API calls into records
and an OpenSession's answer into a :class:`SessionGrant`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from raftpy.core.config import RaftConfig
from raftpy.errors import LocalProtocolError, ProposalDropped
from raftpy.node.config import NodeConfig
from raftpy.node.session_machine import SessionStateMachine, with_sessions
from raftpy.node.session_records import (
    RECORD_OVERHEAD,
    CloseSession,
    KeepAlive,
    OpenSession,
    command_fields_problem,
    encode_command,
    encode_record,
)
from raftpy.node.session_table import ClusterClock
from raftpy.statemachine import StateMachine

__all__ = ["NodeSessions", "SessionGrant"]


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """A session the cluster opened: its ``id`` (the log index of its OpenSession entry) and
    ``timeout``, the seconds of cluster time without any request or keep-alive after which it
    expires."""

    id: int
    timeout: float


class NodeSessions:
    """The node's side of sessions: the state machine it runs (the user's, with the table
    beside it) and the leader's cluster clock that stamps every record."""

    def __init__(self, user: StateMachine, config: NodeConfig) -> None:
        self.machine: SessionStateMachine = with_sessions(user)
        self._config = config
        self._clock = ClusterClock()

    def core_config(self, node_id: int) -> RaftConfig:
        """The core's settings: ``max_entry_bytes`` grows by the record around a command, so
        a command of up to ``max_entry_bytes`` still fits once wrapped."""
        raft = self._config.raft_config(node_id)
        return replace(raft, max_entry_bytes=raft.max_entry_bytes + RECORD_OVERHEAD)

    def on_leader(self, now: float) -> None:
        """This node just became leader: cluster time goes on from the newest it knows."""
        self._clock.start(self.machine.table.clock_ms, now)

    def __len__(self) -> int:
        return len(self.machine.table)

    def command(self, command: bytes, session: int, seq: int, ack: int, now: float) -> bytes:
        """The SESSION entry of a client write (``session`` 0: no session)."""
        limit = self._config.raft.max_entry_bytes
        if len(command) > limit:
            raise ProposalDropped(
                f"command of {len(command)} bytes exceeds max_entry_bytes ({limit})",
                retryable=False,
            )
        # The rules of SessionCommand, checked here so that the hot path encodes the record
        # from a tuple without building (and validating) the Struct first; the bytes are the
        # same (test_sessions_table: test_command_bytes_are_those_of_the_record).
        problem = command_fields_problem(session, seq, ack)
        if problem is not None:
            raise LocalProtocolError(problem)
        return encode_command(self._clock.stamp(now), session, seq, ack, command)

    def open(self, now: float) -> bytes:
        cfg = self._config
        return encode_record(
            OpenSession(
                self._clock.stamp(now),
                _ms(cfg.session_timeout),
                cfg.max_session_results,
                cfg.max_sessions,
            )
        )

    def keep_alive(self, session: int, ack: int, now: float) -> bytes:
        _check_session(session, ack)
        return encode_record(KeepAlive(self._clock.stamp(now), session, ack))

    def close(self, session: int, now: float) -> bytes:
        _check_session(session, 0)
        return encode_record(CloseSession(self._clock.stamp(now), session))

    def grant(self, result: bytes) -> SessionGrant:
        """The grant an applied OpenSession answered with ``result`` (the id, 8 bytes)."""
        return SessionGrant(int.from_bytes(result, "big"), self._config.session_timeout)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _check_session(session: int, ack: int) -> None:
    if session < 1 or ack < 0:
        raise LocalProtocolError(f"need a session id >= 1 and ack >= 0, got {session}, {ack}")
