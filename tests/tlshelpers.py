"""Real certificates for the TLS tests, made by ``raftpy tls init`` (for tests).

:func:`make_tls_files` writes, under one directory: the cluster's CA and certificates for nodes
1-3 and client ``app`` (``cluster/``); a second, unrelated CA with its own node and client
certificates (``other/``); and, signed by the cluster CA, an expired node 2 certificate, a
not-yet-valid one, and a certificate with the server use that names no node id.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path

from raftpy.cli import main as raftpy_main
from raftpy.cli.tls import Issuer, cert_pem, issue, key_pem, load_or_make_ca, write_new
from raftpy.transport.tls import NODE_URI_PREFIX, TlsConfig


class TlsFiles:
    """Where the test certificates are, as :class:`TlsConfig` values (for tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster = root / "cluster"
        self.other = root / "other"

    def node(
        self, node_id: int, *, ca_dir: Path | None = None, client_ca: Path | None = None
    ) -> TlsConfig:
        """Node ``node_id``'s files (of the other CA with ``ca_dir=self.other``)."""
        d = ca_dir or self.cluster
        return TlsConfig(
            d / f"node-{node_id}.pem", d / f"node-{node_id}-key.pem", d / "ca.pem", client_ca
        )

    def client(self, name: str = "app", *, ca_dir: Path | None = None) -> TlsConfig:
        d = ca_dir or self.cluster
        return TlsConfig(d / f"client-{name}.pem", d / f"client-{name}-key.pem", d / "ca.pem")

    def extra(self, stem: str) -> TlsConfig:
        """One of the odd certificates (``expired-node-2``, ``future-node-2``,
        ``server-no-id``), signed by the cluster CA."""
        d = self.cluster
        return TlsConfig(d / f"{stem}.pem", d / f"{stem}-key.pem", d / "ca.pem")


def _init(directory: Path, *args: str) -> None:
    status = raftpy_main(["tls", "init", str(directory), *args])
    assert status == 0, f"raftpy tls init {directory} {args} exited {status}"


def _write(directory: Path, stem: str, issued: tuple[object, object]) -> None:
    cert, key = issued
    write_new(directory / f"{stem}.pem", cert_pem(cert), 0o644)  # type: ignore[arg-type]
    write_new(directory / f"{stem}-key.pem", key_pem(key), 0o600)  # type: ignore[arg-type]


def make_tls_files(root: Path) -> TlsFiles:
    files = TlsFiles(root)
    _init(files.cluster, "--nodes", "1,2,3", "--clients", "app")
    _init(files.other, "--nodes", "1,2,3", "--clients", "app")
    ca: Issuer = load_or_make_ca(files.cluster)[0]
    now = datetime.datetime.now(datetime.UTC)
    node2 = f"{NODE_URI_PREFIX}2"
    old = now - datetime.timedelta(days=10)
    expired = issue(ca, "x", node2, server=True, not_before=old, days=1)
    _write(files.cluster, "expired-node-2", expired)
    soon = now + datetime.timedelta(days=1)
    _write(files.cluster, "future-node-2", issue(ca, "x", node2, server=True, not_before=soon))
    _write(files.cluster, "server-no-id", issue(ca, "impostor", "raftpy://client/x", server=True))
    return files


def quiet_main(args: list[str]) -> tuple[int, str, str]:
    """``raftpy`` with captured output: (status, stdout, stderr)."""
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = raftpy_main(args)
    return status, out.getvalue(), err.getvalue()
