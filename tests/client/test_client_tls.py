"""The client over mutual TLS, against an in-process 3-node cluster of real RaftNodes on
127.0.0.1 with certificates from ``raftpy tls init``: writes, reads and status with a client
certificate; everything refused without one, with another CA's, or from a server whose
certificate is not the node it says it is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from raftpy import Client, SyncClient, TlsConfig
from raftpy.errors import ClusterUnavailableError, HandshakeRefusedError
from raftpy.node import RaftNode
from raftpy.transport.address import free_ports
from tests.nodehelpers import FAST, KV, set_cmd
from tests.tlshelpers import TlsFiles


@asynccontextmanager
async def tls_cluster(
    tls_files: TlsFiles, certs: dict[int, TlsConfig] | None = None
) -> AsyncIterator[dict[int, str]]:
    """Three started TLS nodes; yields their addresses. ``certs`` overrides a node's files."""
    ports = free_ports(3)
    peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
    chosen = {i: tls_files.node(i) for i in peers} | (certs or {})
    nodes = [RaftNode(i, peers[i], peers, KV(), None, replace(FAST, tls=chosen[i])) for i in peers]
    for node in nodes:
        await node.start()
    try:
        yield peers
    finally:
        for node in nodes:
            await node.stop()


def test_a_tls_cluster_serves_writes_reads_and_status(tls_files: TlsFiles) -> None:
    async def main() -> None:
        async with tls_cluster(tls_files) as peers:
            addresses = list(peers.values())
            async with Client(addresses, timeout=10, tls=tls_files.client()) as client:
                for k in range(20):
                    await client.propose(set_cmd(f"k{k}", str(k)))
                assert await client.query(b"k7") == b"7"
                status = await client.status()
                assert status.role == "leader" and status.commit >= 20
                # Every node is reachable, and says who it is.
                for node_id, address in peers.items():
                    assert (await client.status(address)).id == node_id

    asyncio.run(main())


def test_the_blocking_client_speaks_tls_too(tls_files: TlsFiles) -> None:
    async def main() -> None:
        async with tls_cluster(tls_files) as peers:
            addresses = list(peers.values())

            def use() -> bytes:
                with SyncClient(addresses, timeout=10, tls=tls_files.client()) as client:
                    client.propose(set_cmd("a", "1"))
                    return client.query(b"a")

            assert await asyncio.to_thread(use) == b"1"

    asyncio.run(main())


@pytest.mark.parametrize("who", ["plain", "other-ca"])
def test_status_and_writes_need_a_certificate_of_the_cluster(tls_files: TlsFiles, who: str) -> None:
    """The status of a node (term, members, addresses) is behind the same authentication as
    everything else."""
    tls = (
        None
        if who == "plain"
        else TlsConfig(
            tls_files.other / "client-app.pem",
            tls_files.other / "client-app-key.pem",
            tls_files.cluster / "ca.pem",
        )
    )

    async def main() -> None:
        async with tls_cluster(tls_files) as peers:
            address = peers[1]
            async with Client([address], timeout=1.5, connect_timeout=0.5, tls=tls) as client:
                with pytest.raises(ClusterUnavailableError):
                    await client.status(address)
                with pytest.raises(ClusterUnavailableError):
                    await client.propose(set_cmd("x", "1"))

    asyncio.run(main())


@pytest.mark.parametrize("fake", ["server-no-id", "node-3-as-2"])
def test_a_client_refuses_a_server_that_is_not_the_node_it_answers_as(
    tls_files: TlsFiles, fake: str
) -> None:
    """Node 2 serves with a certificate of the cluster CA that is not node 2's: one with the
    server use but no node id, or node 3's. The client never accepts node 2's answers."""
    cert = tls_files.extra("server-no-id") if fake == "server-no-id" else tls_files.node(3)

    async def main() -> None:
        async with tls_cluster(tls_files, {2: cert}) as peers:
            async with Client(
                [peers[2]], timeout=1.5, connect_timeout=0.5, tls=tls_files.client()
            ) as client:
                with pytest.raises(ClusterUnavailableError) as info:
                    await client.status(peers[2])
            text = str(info.value)
            assert "not a node certificate" in text or "certificate of node 3" in text, text

    asyncio.run(main())


def test_a_bad_certificate_path_fails_at_construction(tls_files: TlsFiles) -> None:
    good = tls_files.client()
    with pytest.raises(ValueError, match="nope"):
        Client(["127.0.0.1:1"], tls=TlsConfig(good.cert, "nope", good.ca))


def test_a_node_certificate_the_client_does_not_trust_ends_the_call_at_once(
    tls_files: TlsFiles,
) -> None:
    """The client trusts another CA than the cluster's: asking again cannot change that, so
    the call ends at once (HandshakeRefusedError) instead of at its deadline."""
    tls = TlsConfig(
        tls_files.other / "client-app.pem",
        tls_files.other / "client-app-key.pem",
        tls_files.other / "ca.pem",
    )

    async def main() -> None:
        async with tls_cluster(tls_files) as peers:
            address = peers[1]
            async with Client([address], timeout=10, tls=tls) as client:
                started = time.monotonic()
                with pytest.raises(HandshakeRefusedError) as info:
                    await client.status(address)
                assert time.monotonic() - started < 5
            assert str(info.value).startswith(
                f"{address} the node's certificate is not trusted: "
            ), info.value

    asyncio.run(main())
