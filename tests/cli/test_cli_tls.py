"""``raftpy tls init``: the files it writes (modes, identities), reuse of an existing CA,
never overwriting, usage errors, and a clear message without ``cryptography``."""

from __future__ import annotations

import ssl
import stat
import sys
from pathlib import Path

import pytest

from raftpy.transport.tls import TlsConfig
from tests.tlshelpers import quiet_main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_ca_and_certificates_with_owner_only_keys(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    status, out, err = quiet_main(["tls", "init", str(d), "--nodes", "1,2", "--clients", "ops"])
    assert status == 0, err
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(
        [
            "ca.pem",
            "ca-key.pem",
            "node-1.pem",
            "node-1-key.pem",
            "node-2.pem",
            "node-2-key.pem",
            "client-ops.pem",
            "client-ops-key.pem",
        ]
    )
    assert mode(d) == 0o700
    for key in d.glob("*-key.pem"):
        assert mode(key) == 0o600, key
    assert "node-1.pem" in out
    # The node certificate names its id the way the transport reads it.
    decoded = ssl._ssl._test_decode_cert(str(d / "node-2.pem"))  # type: ignore[attr-defined]
    assert ("URI", "raftpy://node/2") in decoded["subjectAltName"]
    assert ("DNS", "localhost") in decoded["subjectAltName"]
    client = ssl._ssl._test_decode_cert(str(d / "client-ops.pem"))  # type: ignore[attr-defined]
    assert client["subjectAltName"] == (("URI", "raftpy://client/ops"),)
    TlsConfig(d / "node-1.pem", d / "node-1-key.pem", d / "ca.pem").load()


def test_init_reuses_the_ca_and_never_overwrites(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    assert quiet_main(["tls", "init", str(d), "--nodes", "1"])[0] == 0
    ca = (d / "ca.pem").read_bytes()
    node1 = (d / "node-1.pem").read_bytes()
    status, _, err = quiet_main(["tls", "init", str(d), "--nodes", "1,2"])
    assert status == 1 and "refusing to overwrite" in err and "node-1.pem" in err
    assert not (d / "node-2.pem").exists()  # nothing written when one file is in the way
    status, out, _ = quiet_main(["tls", "init", str(d), "--nodes", "2"])
    assert status == 0 and "using CA" in out
    assert (d / "ca.pem").read_bytes() == ca and (d / "node-1.pem").read_bytes() == node1
    # Node 2, added later, is of the same CA: node 1's files accept it.
    TlsConfig(d / "node-2.pem", d / "node-2-key.pem", d / "ca.pem").load()


@pytest.mark.parametrize(
    "args",
    [
        ["tls", "init", "DIR"],
        ["tls", "init", "DIR", "--nodes", "1,x"],
        ["tls", "init", "DIR", "--nodes", "1,1"],
        ["tls", "init", "DIR", "--nodes", "-1"],
        ["tls", "init", "DIR", "--clients", "a/b"],
        ["tls", "init", "DIR", "--nodes", "1", "--days", "0"],
        ["tls"],
    ],
)
def test_usage_errors_exit_2_and_write_nothing(tmp_path: Path, args: list[str]) -> None:
    d = tmp_path / "certs"
    status, _, err = quiet_main([str(d) if a == "DIR" else a for a in args])
    assert status == 2, err
    assert not d.exists()


def test_without_cryptography_the_message_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import fails
    status, _, err = quiet_main(["tls", "init", str(tmp_path / "c"), "--nodes", "1"])
    assert status == 1
    assert "pip install 'raftpy[tls]'" in err
    assert not (tmp_path / "c").exists()
