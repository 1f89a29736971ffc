"""What happened to a client's request, and how each layer reports it: one table.

A command sent to the cluster ends in one of three ways, and every layer must keep them apart:

- **done**: the command was applied (a proposal) or answered (a query);
- **definitely not done**: the command was never appended to any log (no leader was reached,
  the node was not the leader, the leader refused it before appending). Retrying, elsewhere or
  later, cannot apply it twice;
- **outcome unknown** (*indeterminate*): the command reached a leader that may have appended
  it, and then the answer was lost (leadership changed, a deadline passed, a connection broke).
  It may have been applied, and may still be applied later: a blind retry could apply it twice.

The same fact crosses three boundaries. The node turns the typed error of a failed request into
a :class:`~raftpy.transport.protocol.ResponseStatus` on the wire (:func:`response_for_error`);
the client turns a status back into the typed error it raises (:func:`error_for_status`); the
command-line examples turn that error into their exit status (:func:`exit_status_for`). Each
row of :data:`OUTCOMES` is one status with its error and its exit status, so the three
translations cannot drift apart. README.md and docs/architecture.md describe the client's
guarantees in prose.

Two statuses need care:

- ``TIMEOUT`` answers queries (and status requests) only: a read that could not be confirmed
  in time changed nothing. A node never answers a proposal with it; a client that gets it for a
  proposal assumes the worst and reports the outcome as unknown.
- ``ERROR`` is a failed node or a malformed request; it does not say whether an earlier attempt
  of the command was appended, so its exit status is "unknown".
- ``SESSION_EXPIRED`` is definite for the attempt it answers only: an earlier attempt of the
  same write, sent before the session expired, may have been applied. The client
  (:mod:`raftpy.client.call`) reports such a write as unknown, and the definite error only
  when no earlier attempt may have been appended.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    RemoteProtocolError,
    SessionExpiredError,
)
from raftpy.transport.protocol import ClientResponse, ResponseStatus

__all__ = [
    "OUTCOMES",
    "ExitStatus",
    "Outcome",
    "error_for_status",
    "exit_status_for",
    "outcome_of_error",
    "outcome_of_status",
    "response_for_error",
]


class ExitStatus(enum.IntEnum):
    """The exit status of a command-line client (the examples' ``put``, ``get``, ...)."""

    DONE = 0
    """The command was applied, or the query answered."""
    NOT_DONE = 1
    """Definitely not done: the command was never appended. Safe to retry."""
    USAGE = 2
    """Wrong command-line arguments: nothing was sent."""
    UNKNOWN = 3
    """The command was sent and its fate is unknown: it may have been applied."""


@dataclass(frozen=True)
class Outcome:
    """One way a request can end: its status on the wire, the error that stands for it (on
    the node before it answers, in the client after), and the exit status it leads to."""

    status: ResponseStatus
    error: type[RaftError] | None
    """``None`` for ``OK``: a request that succeeded raises nothing."""
    exit_status: ExitStatus

    @property
    def definite(self) -> bool:
        """True when the command certainly did not happen (or, for ``OK``, certainly did)."""
        return self.exit_status is not ExitStatus.UNKNOWN


OUTCOMES: tuple[Outcome, ...] = (
    Outcome(ResponseStatus.OK, None, ExitStatus.DONE),
    Outcome(ResponseStatus.NOT_LEADER, NotLeaderError, ExitStatus.NOT_DONE),
    Outcome(ResponseStatus.DROPPED, ProposalDropped, ExitStatus.NOT_DONE),
    Outcome(ResponseStatus.TIMEOUT, ClusterUnavailableError, ExitStatus.NOT_DONE),
    Outcome(ResponseStatus.SESSION_EXPIRED, SessionExpiredError, ExitStatus.NOT_DONE),
    Outcome(ResponseStatus.INDETERMINATE, IndeterminateError, ExitStatus.UNKNOWN),
    # Last: the catch-all for an error no row above names (see outcome_of_error).
    Outcome(ResponseStatus.ERROR, RemoteProtocolError, ExitStatus.UNKNOWN),
)
"""Every :class:`ResponseStatus`, once each, with its error and exit status."""

_BY_STATUS: dict[ResponseStatus, Outcome] = {o.status: o for o in OUTCOMES}
_FAILED = _BY_STATUS[ResponseStatus.ERROR]


def outcome_of_status(status: ResponseStatus) -> Outcome:
    """The row of ``status``."""
    return _BY_STATUS[status]


def outcome_of_error(exc: BaseException) -> Outcome:
    """The row of the error ``exc``; an error no row names (a bug, a failed node, a request
    the node cannot serve) counts as ``ERROR``."""
    for outcome in OUTCOMES:
        if outcome.error is not None and isinstance(exc, outcome.error):
            return outcome
    return _FAILED


def response_for_error(request_id: int, exc: BaseException) -> ClientResponse:
    """The node's answer to request ``request_id`` that failed with ``exc``: the status of its
    row, with the leader hint of a ``NOT_LEADER`` and whether a ``DROPPED`` may be retried."""
    outcome = outcome_of_error(exc)
    if isinstance(exc, NotLeaderError):
        return ClientResponse(
            request_id,
            outcome.status,
            leader_id=exc.leader_id,
            leader_address=exc.leader_address,
            message=str(exc),
        )
    if isinstance(exc, ProposalDropped):
        return ClientResponse(request_id, outcome.status, message=str(exc), retryable=exc.retryable)
    if outcome is _FAILED:
        # The type says what went wrong when the message alone would not.
        return ClientResponse(request_id, outcome.status, message=f"{type(exc).__name__}: {exc}")
    return ClientResponse(request_id, outcome.status, message=str(exc))


def error_for_status(status: ResponseStatus, message: str) -> RaftError:
    """The typed error a client raises when ``status`` ends a request, with ``message``
    (which says what the client knows: the node, the attempt, the node's own message).
    ``OK`` is not an error: ValueError."""
    error = outcome_of_status(status).error
    if error is None:
        raise ValueError(f"{status.value!r} is not a failure")
    if error is NotLeaderError:
        return NotLeaderError(None, message=message)  # the hint travels in the response
    return error(message)


def exit_status_for(exc: BaseException) -> ExitStatus:
    """The exit status of a command-line client whose command ended with ``exc``. A
    ``TimeoutError`` is the client giving up on the whole call: the command may have been
    sent, so its outcome is unknown."""
    if isinstance(exc, TimeoutError):
        return ExitStatus.UNKNOWN
    return outcome_of_error(exc).exit_status
