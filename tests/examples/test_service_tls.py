"""The examples' TLS options: ``--tls-cert/--tls-key/--tls-ca[/--tls-client-ca]`` and
``--insecure`` on servers, the same certificate options on client commands. An incomplete set,
an unreadable file, TLS with ``--insecure``, or plain TCP on a reachable address without
``--insecure`` is a usage error (exit 2) before anything starts."""

from __future__ import annotations

import pytest

from raftpy.examples import service
from raftpy.examples.hashmap import COMMANDS, HashMapStateMachine
from raftpy.examples.service import UsageError, parse_client_args, parse_server_args
from tests.tlshelpers import TlsFiles

MEMBERS = ["1", "127.0.0.1:7001", "2", "127.0.0.1:7002"]


def files(tls_files: TlsFiles, stem: str) -> dict[str, str]:
    d = tls_files.cluster
    return {
        "--tls-cert": str(d / f"{stem}.pem"),
        "--tls-key": str(d / f"{stem}-key.pem"),
        "--tls-ca": str(d / "ca.pem"),
    }


def flat(options: dict[str, str]) -> list[str]:
    return [part for item in options.items() for part in item]


def test_server_tls_options_make_the_node_config(tls_files: TlsFiles) -> None:
    opts = flat(files(tls_files, "node-1"))
    _, _, parsed = parse_server_args("hashmap", ["1", *MEMBERS, *opts])
    config = service.server_config(parsed)
    assert config.tls is not None and str(config.tls.cert).endswith("node-1.pem")
    assert config.insecure is False
    _, _, plain = parse_server_args("hashmap", ["1", *MEMBERS])
    assert service.server_config(plain).tls is None


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        ("--tls-key", [], "missing --tls-key"),
        ("--tls-cert", [], "missing --tls-cert"),
        ("--tls-ca", [], "missing --tls-ca"),
        (None, ["--insecure"], "exclude each other"),
        (None, ["--tls-client-ca", "/nonexistent/ca.pem"], "client_ca"),
    ],
)
def test_server_usage_errors(
    tls_files: TlsFiles, drop: str | None, extra: list[str], message: str
) -> None:
    options = files(tls_files, "node-1")
    if drop is not None:
        del options[drop]
    with pytest.raises(UsageError, match=message):
        parse_server_args("hashmap", ["1", *MEMBERS, *flat(options), *extra])


def test_plain_tcp_on_a_reachable_address_needs_insecure() -> None:
    members = ["1", "0.0.0.0:7001", "2", "127.0.0.1:7002"]
    with pytest.raises(UsageError, match="--insecure"):
        parse_server_args("hashmap", ["1", *members])
    _, _, opts = parse_server_args("hashmap", ["1", *members, "--insecure"])
    assert service.server_config(opts).insecure is True
    with pytest.raises(UsageError, match="--tls-client-ca needs"):
        parse_server_args("hashmap", ["1", *MEMBERS, "--tls-client-ca", "x.pem"])


def test_client_tls_options(tls_files: TlsFiles) -> None:
    options, positional = parse_client_args(
        ["k", *flat(files(tls_files, "client-app")), "127.0.0.1:7001", "--timeout", "3"]
    )
    assert positional == ["k", "127.0.0.1:7001"] and options.timeout == 3.0
    assert options.tls is not None and str(options.tls.key).endswith("client-app-key.pem")
    without_key = files(tls_files, "client-app")
    del without_key["--tls-key"]
    with pytest.raises(UsageError, match="missing --tls-key"):
        parse_client_args(["k", *flat(without_key), "127.0.0.1:7001"])
    with pytest.raises(UsageError, match="needs a value"):
        parse_client_args(["k", "127.0.0.1:7001", "--tls-ca"])


@pytest.mark.parametrize("command", ["server", "get"])
def test_a_wrong_combination_prints_usage_and_exits_2(
    tls_files: TlsFiles, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tls_files.cluster
    args = (
        ["server", "1", *MEMBERS, "--tls-cert", str(d / "node-1.pem")]
        if command == "server"
        else ["get", "k", "127.0.0.1:7001", "--tls-cert", str(d / "client-app.pem")]
    )
    with pytest.raises(SystemExit) as info:
        service.main("hashmap", "hashmap", args, HashMapStateMachine, COMMANDS)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "missing --tls-key, --tls-ca" in err and "usage:" in err and "--tls-cert F" in err
