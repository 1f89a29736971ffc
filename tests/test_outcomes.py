"""The outcome table: every status has one error and back, every error one exit status, and
the node's answers carry what the client needs (leader hints, whether a drop is retryable)."""

from __future__ import annotations

import inspect

import pytest

from raftpy import errors
from raftpy.errors import (
    ClusterUnavailableError,
    ConfChangeError,
    ConfigError,
    HandshakeRefusedError,
    IndeterminateError,
    InvariantViolation,
    LocalProtocolError,
    MessageDecodeError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    RejectedMessage,
    RemoteProtocolError,
    SessionExpiredError,
    StateMachineError,
)
from raftpy.outcomes import (
    OUTCOMES,
    ExitStatus,
    error_for_status,
    exit_status_for,
    outcome_of_error,
    outcome_of_status,
    response_for_error,
)
from raftpy.transport.protocol import ResponseStatus

FAILURES = [s for s in ResponseStatus if s is not ResponseStatus.OK]

# Written out, not derived from the table: a change to the table must show up here.
EXPECTED_EXIT: dict[type[BaseException], int] = {
    NotLeaderError: 1,
    ProposalDropped: 1,
    ClusterUnavailableError: 1,
    HandshakeRefusedError: 1,
    SessionExpiredError: 1,
    IndeterminateError: 3,
    RemoteProtocolError: 3,
    MessageDecodeError: 3,
    RejectedMessage: 3,
    LocalProtocolError: 3,
    ConfChangeError: 3,
    ConfigError: 3,  # a node's setting: never the outcome of a client's command
    InvariantViolation: 3,
    StateMachineError: 3,
    RaftError: 3,
    TimeoutError: 3,
}

EXPECTED_STATUS: dict[ResponseStatus, type[RaftError]] = {
    ResponseStatus.NOT_LEADER: NotLeaderError,
    ResponseStatus.DROPPED: ProposalDropped,
    ResponseStatus.TIMEOUT: ClusterUnavailableError,
    ResponseStatus.INDETERMINATE: IndeterminateError,
    ResponseStatus.ERROR: RemoteProtocolError,
    ResponseStatus.SESSION_EXPIRED: SessionExpiredError,
}


def _instance(error: type[BaseException]) -> BaseException:
    if error is NotLeaderError:
        return NotLeaderError(2, "127.0.0.1:7002")
    if error is RejectedMessage:
        return RejectedMessage(2, "why")
    return error("why")


def test_every_status_has_exactly_one_row() -> None:
    statuses = [o.status for o in OUTCOMES]
    assert sorted(s.value for s in statuses) == sorted(s.value for s in ResponseStatus)
    assert len(set(statuses)) == len(statuses)


def test_the_exit_statuses_are_the_documented_numbers() -> None:
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3]
    assert (ExitStatus.DONE, ExitStatus.NOT_DONE) == (0, 1)
    assert (ExitStatus.USAGE, ExitStatus.UNKNOWN) == (2, 3)


def test_ok_is_done_and_raises_nothing() -> None:
    ok = outcome_of_status(ResponseStatus.OK)
    assert (ok.error, ok.exit_status, ok.definite) == (None, ExitStatus.DONE, True)
    with pytest.raises(ValueError, match="not a failure"):
        error_for_status(ResponseStatus.OK, "fine")


@pytest.mark.parametrize("status", FAILURES, ids=lambda s: s.value)
def test_each_failure_status_maps_to_its_error_and_back(status: ResponseStatus) -> None:
    assert outcome_of_status(status).error is EXPECTED_STATUS[status]
    error = error_for_status(status, "the client's words")
    assert type(error) is EXPECTED_STATUS[status]
    assert str(error) == "the client's words"
    # Back: the node answers that error with the same status.
    assert outcome_of_error(error).status is status
    assert response_for_error(9, error).status is status


@pytest.mark.parametrize("error", list(EXPECTED_EXIT), ids=lambda e: e.__name__)
def test_every_error_has_its_exit_status(error: type[BaseException]) -> None:
    assert exit_status_for(_instance(error)) == EXPECTED_EXIT[error]


def test_every_raftpy_error_is_in_the_exit_table() -> None:
    """A new error type must be placed in the table on purpose (here), not fall through."""
    defined = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, RaftError) and cls.__module__ == errors.__name__
    }
    assert defined <= set(EXPECTED_EXIT), defined - set(EXPECTED_EXIT)


@pytest.mark.parametrize("status", FAILURES, ids=lambda s: s.value)
def test_definite_statuses_are_the_not_done_exit_status(status: ResponseStatus) -> None:
    outcome = outcome_of_status(status)
    assert outcome.definite is (outcome.exit_status is ExitStatus.NOT_DONE)
    definite = {
        ResponseStatus.NOT_LEADER,
        ResponseStatus.DROPPED,
        ResponseStatus.TIMEOUT,
        ResponseStatus.SESSION_EXPIRED,
    }
    assert outcome.definite is (status in definite)


def test_not_leader_answer_carries_the_hint() -> None:
    resp = response_for_error(4, NotLeaderError(2, "127.0.0.1:7002"))
    assert (resp.id, resp.status) == (4, ResponseStatus.NOT_LEADER)
    assert (resp.leader_id, resp.leader_address) == (2, "127.0.0.1:7002")
    assert resp.message == "not the leader (leader: 2 at 127.0.0.1:7002)"


@pytest.mark.parametrize("retryable", [True, False])
def test_dropped_answer_says_whether_a_retry_can_help(retryable: bool) -> None:
    resp = response_for_error(5, ProposalDropped("too big", retryable=retryable))
    assert (resp.status, resp.message, resp.retryable) == (
        ResponseStatus.DROPPED,
        "too big",
        retryable,
    )


def test_indeterminate_and_unavailable_answers_keep_the_message() -> None:
    resp = response_for_error(6, IndeterminateError("leadership lost"))
    assert (resp.status, resp.message, resp.retryable) == (
        ResponseStatus.INDETERMINATE,
        "leadership lost",
        True,
    )
    resp = response_for_error(7, ClusterUnavailableError("read not confirmed"))
    assert (resp.status, resp.message) == (ResponseStatus.TIMEOUT, "read not confirmed")


@pytest.mark.parametrize(
    "exc", [ValueError("boom"), LocalProtocolError("boom"), RemoteProtocolError("boom")]
)
def test_any_other_error_is_error_with_its_type_named(exc: BaseException) -> None:
    resp = response_for_error(8, exc)
    assert (resp.status, resp.message) == (ResponseStatus.ERROR, f"{type(exc).__name__}: boom")
    assert outcome_of_error(exc).exit_status is ExitStatus.UNKNOWN
