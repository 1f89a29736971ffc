"""The example commands' ``--version`` and values read from stdin (``-``), in-process with a
command that echoes what it was given."""

from __future__ import annotations

import io
import json
import sys
from importlib import metadata
from types import ModuleType

import pytest

from raftpy.examples import hashmap, register, service
from raftpy.examples.hashmap import HashMapStateMachine
from raftpy.examples.service import ClientCommand, ClientOptions, UsageError, read_stdin_values

VERSION_LINE = f"raftpy {metadata.version('raftpy')}\n"


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() installs a stderr handler on the root logger; keep this process's logging as is.
    monkeypatch.setattr(service, "configure_logging", lambda **_: None)


async def _echo(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    return json.dumps(args)


ECHO = ClientCommand("put", ("key", "expected-value", "new-value"), "echo", _echo)


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _run(*args: str) -> int:
    return service.main("test", "test", [*args, "127.0.0.1:7001"], HashMapStateMachine, [ECHO])


@pytest.mark.parametrize("example", [hashmap, register], ids=["hashmap", "register"])
def test_version(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert example.main(["--version"]) == 0
    assert capsys.readouterr() == (VERSION_LINE, "")


@pytest.mark.parametrize("example", [hashmap, register], ids=["hashmap", "register"])
def test_help_documents_stdin_and_version(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "A <...-value> given as - is read from stdin: every byte up to the end, exactly" in out
    assert "--version\n" in out
    assert "Give every member's address to a client command" in out


def test_value_from_stdin_is_bytes_exact(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    value = "line one\r\nline two \u00e9\u4e2d\n\n" + "x" * 300_000 + "\n"  # > one argument
    _stdin(monkeypatch, value.encode())
    assert _run("put", "k", "old", "-") == 0
    assert json.loads(capsys.readouterr().out) == ["k", "old", value]


def test_any_value_argument_may_come_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, b"")
    assert _run("put", "k", "-", "new") == 0  # an empty stdin is an empty value
    assert json.loads(capsys.readouterr().out) == ["k", "", "new"]


def test_a_key_of_dash_is_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, b"unread")
    assert _run("put", "-", "a", "b") == 0
    assert json.loads(capsys.readouterr().out) == ["-", "a", "b"]


def test_two_values_from_stdin_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, b"v")
    with pytest.raises(SystemExit) as exit_:
        _run("put", "k", "-", "-")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: only one value can be read from stdin ('-')\nusage:")


def test_stdin_that_is_not_utf8_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, b"ok\xff")
    with pytest.raises(SystemExit) as exit_:
        _run("put", "k", "a", "-")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: the value on stdin is not UTF-8 (invalid start byte at byte 2)\nusage:"
    )


def test_read_stdin_values_leaves_other_arguments_alone() -> None:
    stdin = io.BytesIO(b"never read")
    assert read_stdin_values(ECHO, ["k", "a", "b"], stdin) == ["k", "a", "b"]
    assert stdin.tell() == 0
    with pytest.raises(UsageError):
        read_stdin_values(ECHO, ["k", "-", "-"], io.BytesIO(b""))
