"""A real-process 3-node hashmap cluster with mutual TLS (certificates from ``raftpy tls
init``): writes and reads through the example's command line with a client certificate, a
status query, and a client without a certificate refused. Every wait is bounded; every process
is killed at the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from raftpy.client import SyncClient
from tests.processhelpers import ProcessCluster, run_cli, wait_until
from tests.tlshelpers import TlsFiles


def tls_args(files: TlsFiles, stem: str) -> list[str]:
    d = files.cluster
    return [
        "--tls-cert",
        str(d / f"{stem}.pem"),
        "--tls-key",
        str(d / f"{stem}-key.pem"),
        "--tls-ca",
        str(d / "ca.pem"),
    ]


def test_a_tls_hashmap_cluster_serves_writes_and_status(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    client_tls = tls_args(tls_files, "client-app")
    with ProcessCluster(
        "hashmap", 3, tmp_path, node_args=lambda i: tls_args(tls_files, f"node-{i}")
    ) as c:
        c.start_all()
        for value in ("1", "2", "3"):
            # The write may meet an election on a loaded machine: retried until acknowledged.
            def put(value: str = value) -> bool:
                r = run_cli("hashmap", "put", "k", value, *client_tls, *c.addresses)
                return r.returncode == 0

            wait_until(put, 60, f"put k={value} acknowledged")
        got = run_cli("hashmap", "get", "k", "--timeout", "20", *client_tls, *c.addresses)
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == '"3"'

        with SyncClient(c.addresses, timeout=20, tls=tls_files.client()) as client:
            statuses = {i: client.status(c.address(i)) for i in (1, 2, 3)}
        assert all(st.id == i and st.members == (1, 2, 3) for i, st in statuses.items())
        assert max(st.commit for st in statuses.values()) >= 3

        # Without a certificate: refused at the TLS handshake, definitely not done.
        plain = run_cli("hashmap", "put", "k", "evil", "--timeout", "3", *c.addresses)
        assert plain.returncode == 1, (plain.stdout, plain.stderr)
        again = run_cli("hashmap", "get", "k", "--timeout", "20", *client_tls, *c.addresses)
        assert again.stdout.strip() == '"3"', again.stderr
        for i in (1, 2, 3):
            assert "(mutual TLS)" in c.logs[i].read_text()

        # The operators' command speaks TLS too, and gets nowhere without it.
        snap = raftpy_cli("snapshot", c.address(1), "--timeout", "20", *client_tls)
        assert snap.returncode == 0 and snap.stdout.startswith("snapshot at index"), snap.stderr
        refused = raftpy_cli("snapshot", c.address(1), "--timeout", "2")
        assert refused.returncode == 1, (refused.stdout, refused.stderr)


def raftpy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
