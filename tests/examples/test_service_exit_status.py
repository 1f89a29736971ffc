"""How an example's client command reports its end: the exit status and the line on stderr for
each error a client raises (in-process, with a command that raises it)."""

from __future__ import annotations

import pytest

from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
    RemoteProtocolError,
)
from raftpy.examples import hashmap, service
from raftpy.examples.hashmap import HashMapStateMachine
from raftpy.examples.service import ClientCommand, ClientOptions


def _main(exc: BaseException | None) -> int:
    async def action(args: list[str], addresses: list[str], options: ClientOptions) -> str:
        if exc is not None:
            raise exc
        return "fine"

    command = ClientCommand("act", (), "raise the error under test", action)
    return service.main("test", "test", ["act", "127.0.0.1:7001"], HashMapStateMachine, [command])


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() installs a stderr handler on the root logger; keep this process's logging as is.
    monkeypatch.setattr(service, "configure_logging", lambda **_: None)


CASES = [
    (None, 0, ""),
    (ClusterUnavailableError("no leader"), 1, "error: not done: no leader\n"),
    (NotLeaderError(2), 1, "error: not done: not the leader (leader: 2)\n"),
    (ProposalDropped("too big"), 1, "error: not done: too big\n"),
    (IndeterminateError("lost"), 3, "error: outcome unknown: lost\n"),
    (TimeoutError(), 3, "error: outcome unknown: \n"),
    (RemoteProtocolError("bad"), 3, "error: bad\n"),
    (LocalProtocolError("closed"), 3, "error: closed\n"),
]


@pytest.mark.parametrize(
    ("exc", "code", "line"), CASES, ids=[type(exc).__name__ for exc, _, _ in CASES]
)
def test_each_error_has_its_exit_status_and_message(
    exc: BaseException | None, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(exc) == code
    out, err = capsys.readouterr()
    assert err == line
    assert out == ("fine\n" if exc is None else "")


def test_exit_constants_are_the_documented_numbers() -> None:
    assert (service.EXIT_OK, service.EXIT_NOT_DONE, service.EXIT_USAGE, service.EXIT_UNKNOWN) == (
        0,
        1,
        2,
        3,
    )


def test_an_argument_that_is_not_utf8_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes the terminal could not decode reach argv as lone surrogates: a usage error naming
    the argument (exit 2), never a traceback, and nothing is sent."""
    with pytest.raises(SystemExit) as exit_info:
        hashmap.main(["get", "caf\udce9", "127.0.0.1:1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is not UTF-8" in err and "usage:" in err
