"""Every exception raftpy raises, typed by who is at fault.

- :class:`RaftError` is the base of all of them.
- *Definite* failures (:class:`NotLeaderError`, :class:`ProposalDropped`,
  :class:`ClusterUnavailableError` and its :class:`HandshakeRefusedError`) mean the command was
  not appended: retrying elsewhere or later is safe.
- *Indeterminate* failures (:class:`IndeterminateError`) mean the command may or may not take
  effect: retrying may apply it twice unless the client uses sessions.
- :class:`LocalProtocolError` is misuse of the API by the calling code (a bug to fix, not to
  retry); :class:`RemoteProtocolError` is bad input from a peer (log it, drop it, carry on).
- :class:`InvariantViolation` is a broken safety property caught by a checker (a raftpy bug).
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every raftpy error."""


class NotLeaderError(RaftError):
    """Raised by ``propose``/``read_index`` on a node that is not the leader.

    Definite: nothing was appended. Retrying at ``leader_id`` (when known) can help.
    ``leader_address`` is filled in by the runtime, which knows peers' addresses; the core
    only knows ids and leaves it ``None``.
    """

    def __init__(
        self, leader_id: int | None, leader_address: str | None = None, message: str = ""
    ) -> None:
        self.leader_id = leader_id
        self.leader_address = leader_address
        hint = "unknown" if leader_id is None else str(leader_id)
        if leader_address is not None:
            hint += f" at {leader_address}"
        super().__init__(message or f"not the leader (leader: {hint})")


class ProposalDropped(RaftError):
    """Raised by the leader when it refuses a proposal before appending it.

    Definite: nothing was appended. Reasons: too many uncommitted bytes (back-pressure; retry
    after a short wait), a leadership transfer in progress (retry at the new leader), or an
    entry larger than the configured maximum (retrying cannot help). ``retryable`` says which.
    """

    def __init__(self, message: str = "", *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class IndeterminateError(RaftError):
    """The outcome of a command is unknown: it may have been appended and may still commit.

    Raised by the runtime, for example when a deadline passes after the command was sent or
    when leadership is lost after the command was appended. A blind retry may apply the
    command twice.
    """


class SessionExpiredError(RaftError):
    """Definite: this request was not applied because its client session is unknown to the
    cluster (expired after ``NodeConfig.session_timeout`` without requests, evicted when the
    session table was full, or closed), or because it repeats a write whose result the client
    had already acknowledged. Open a new session; README.md, "Sessions", says what a write
    resent from an earlier attempt may still have done."""


class ClusterUnavailableError(RaftError):
    """Raised by clients when no leader could be reached before the deadline and the command
    was never handed to a leader.

    Definite: the command did not happen. Retrying later can help.
    """


class HandshakeRefusedError(ClusterUnavailableError):
    """Raised by clients when the nodes a call could use refused its connection for a reason
    that asking again cannot change: another cluster id, a protocol version the node does not
    speak, a node certificate this client does not trust. The call ends at once instead of
    retrying until its deadline.

    Definite: nothing was sent. Fix the client's settings (address, cluster id, TLS files).
    A refusal that can pass (the node has no room for another connection) is retried as
    before."""


class LocalProtocolError(RaftError):
    """The calling code used the API wrongly (for example ``ready()`` twice without
    ``advance()``). A bug in the caller: retrying cannot help."""


class ConfChangeError(LocalProtocolError):
    """A membership change that cannot be applied to the configuration in force (see
    :mod:`raftpy.core.confchange`): more than one voter changed without joint consensus, a
    change while already joint, a configuration left without voters, the same node twice in one
    change. Raised before anything changed; the message says what is wrong."""


class ConfigError(RaftError, ValueError):
    """A setting this machine cannot honour: the operator's to fix (for example
    ``NodeConfig.metrics_address`` without the optional package it needs; the message says
    what to install). A ``ValueError`` too, like the other settings' errors."""


class RemoteProtocolError(RaftError):
    """A peer sent bytes or a message that break the protocol.

    Raised by decoders and the handshake; the runtime logs it, closes that connection and keeps
    serving. Never fatal to the node.
    """


class MessageDecodeError(RemoteProtocolError):
    """Raised by :func:`raftpy.core.messages.decode_message` for malformed input: bad
    msgpack, an unknown message tag, or fields of the wrong type or range."""


class StateMachineError(RaftError):
    """The user's state machine failed where the node cannot go on without it: ``restore``
    raised on a snapshot whose checksum was verified, so this replica's state is unknown. The
    node ends its process (README.md, "Failures"); exceptions from ``apply``, ``query`` and
    ``snapshot`` only fail the request or the snapshot attempt that called them."""


class RejectedMessage(RemoteProtocolError):
    """Raised by ``Raft.step`` (and ``Raft.install_snapshot``) for a well-formed message that
    no correct peer sends in this node's state: a second leader in one term, entries that
    contradict the committed log, an acknowledgement of entries the leader never had. The
    core raised it *before* changing anything, so its state is what it was before the call.

    ``peer_id`` is the sender, ``reason`` what is wrong. The runtime drops the message, closes
    that peer's connection, logs and counts it, and keeps serving; the simulator, whose peers
    cannot forge, treats it as a bug.
    """

    def __init__(self, peer_id: int, reason: str) -> None:
        super().__init__(f"rejected a message from node {peer_id}: {reason}")
        self.peer_id = peer_id
        self.reason = reason


class InvariantViolation(RaftError):
    """A Raft safety invariant was broken (one leader per term, log matching, leader
    completeness, state machine safety, monotonic commit). Raised by checkers such as the
    simulator's; always a bug in raftpy (or in a user's non-deterministic state machine)."""
