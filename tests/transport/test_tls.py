"""Mutual TLS on the TCP transport, with real certificates from ``raftpy tls init``
(the session's ``tls_files``): who may handshake as what, and what is refused before a single
raftpy frame is read. Every test runs on asyncio and, when installed, on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from raftpy.core.messages import PROTOCOL_VERSION, Heartbeat, PeerMessage, encode_message
from raftpy.transport.address import parse_address
from raftpy.transport.codec import encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    HelloReply,
    ResponseStatus,
    client_decoder,
    encode_frame_payload,
    hello_decoder,
)
from raftpy.transport.tcp import ClientConnection, TcpTransport, check_plaintext_bind
from raftpy.transport.tls import PeerIdentity, TlsConfig, identity_of, is_loopback
from tests.tlshelpers import TlsFiles

CLUSTER = "tls-cluster"
T = TypeVar("T")

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
try:
    import uvloop

    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is optional
    pass
_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    global _loop_factory
    _loop_factory = LOOP_FACTORIES[request.param]
    yield request.param
    _loop_factory = None


def run(coro: Coroutine[Any, Any, T], seconds: float = 15.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(seconds):
            return await coro

    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(bounded())


async def until(cond: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


class Node:
    """A TLS transport plus what it received (answers STATUS at once)."""

    def __init__(
        self, node_id: int, peers: dict[int, str], tls: TlsConfig | None, **kw: Any
    ) -> None:
        self.inbox: list[PeerMessage] = []
        self.t = TcpTransport(
            node_id,
            "127.0.0.1:0",
            peers,
            cluster_id=CLUSTER,
            on_message=self.inbox.append,
            on_client_request=self._on_request,
            tls=tls,
            backoff_max=0.2,
            **kw,
        )

    def _on_request(self, conn: ClientConnection, req: ClientRequest) -> None:
        if req.op is ClientOp.STATUS:
            conn.respond(ClientResponse(req.id, ResponseStatus.OK, result=b"fine"))

    def stat(self, name: str) -> int:
        return self.t.stats()[name]


@asynccontextmanager
async def nodes(tls: dict[int, TlsConfig | None]) -> AsyncIterator[dict[int, Node]]:
    """Started transports (ids = the keys of ``tls``) that know each other's addresses."""
    placeholder = {i: "127.0.0.1:1" for i in tls}
    started = {i: Node(i, placeholder, cfg) for i, cfg in tls.items()}
    try:
        for node in started.values():
            await node.t.start()
        real = {i: node.t.bound_address for i, node in started.items()}
        for node in started.values():
            node.t.update_peers(real)
        yield started
    finally:
        for node in started.values():
            await node.t.close()


def hb(src: int, dst: int) -> Heartbeat:
    return Heartbeat(term=1, src=src, dst=dst, commit=0)


def frame(obj: Hello | ClientRequest) -> bytes:
    return encode_frame(encode_frame_payload(obj))


def peer_hello(node_id: int) -> Hello:
    return Hello(PROTOCOL_VERSION, ConnectionRole.PEER, CLUSTER, node_id=node_id)


CLIENT_HELLO = Hello(PROTOCOL_VERSION, ConnectionRole.CLIENT, CLUSTER)


async def dial(
    address: str, tls: TlsConfig | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_address(address)
    ctx = tls.load().client if tls is not None else None
    return await asyncio.open_connection(host, port, ssl=ctx)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    return await reader.readexactly(size)


async def read_reply(reader: asyncio.StreamReader) -> HelloReply:
    reply = hello_decoder.decode(await read_frame(reader))
    assert isinstance(reply, HelloReply)
    return reply


async def status_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
    writer.write(frame(ClientRequest(1, ClientOp.STATUS)))
    resp = client_decoder.decode(await read_frame(reader))
    assert isinstance(resp, ClientResponse)
    return resp.result


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


async def refused_at_tls(address: str, tls: TlsConfig | None) -> bool:
    """True when the TLS handshake (or the first read after it) fails: the server closed a
    connection whose certificate it does not accept, before any raftpy frame."""
    try:
        reader, writer = await dial(address, tls)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        # TLS 1.3: the server checks the client's certificate after the client finished, so
        # the refusal shows on the first exchange.
        writer.write(frame(CLIENT_HELLO))
        await read_frame(reader)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return True
    finally:
        await close(writer)
    return False


# -- accepted ----------------------------------------------------------------------------------


def test_peers_and_clients_with_cluster_certificates_are_served(
    tls_files: TlsFiles, loop_kind: str
) -> None:
    async def body() -> None:
        async with nodes({i: tls_files.node(i) for i in (1, 2, 3)}) as ns:
            for src in ns:
                for dst in ns:
                    if src != dst:
                        ns[src].t.send(hb(src, dst))
            await until(lambda: all(len(n.inbox) == 2 for n in ns.values()), "every heartbeat")
            assert all(n.stat("handshakes_refused") == 0 for n in ns.values())
            # A client certificate, and a node certificate used as a client, are clients.
            for cfg in (tls_files.client(), tls_files.node(3)):
                reader, writer = await dial(ns[1].t.bound_address, cfg)
                writer.write(frame(CLIENT_HELLO))
                assert (await read_reply(reader)).ok
                assert await status_over(reader, writer) == b"fine"
                await close(writer)

    run(body())


def test_a_separate_client_ca_issues_clients_never_peers(
    tls_files: TlsFiles, loop_kind: str
) -> None:
    """With ``client_ca``, the other CA's client certificate is a client, but its node 2
    certificate (which names node 2) cannot handshake as node 2: node certificates must come
    from the cluster CA."""

    async def body() -> None:
        server = tls_files.node(1, client_ca=tls_files.other / "ca.pem")
        async with nodes({1: server, 2: tls_files.node(2)}) as ns:
            address = ns[1].t.bound_address
            foreign_client = TlsConfig(
                tls_files.other / "client-app.pem",
                tls_files.other / "client-app-key.pem",
                tls_files.cluster / "ca.pem",
            )
            reader, writer = await dial(address, foreign_client)
            writer.write(frame(CLIENT_HELLO))
            assert (await read_reply(reader)).ok
            assert await status_over(reader, writer) == b"fine"
            await close(writer)
            foreign_node = TlsConfig(
                tls_files.other / "node-2.pem",
                tls_files.other / "node-2-key.pem",
                tls_files.cluster / "ca.pem",
            )
            reader, writer = await dial(address, foreign_node)
            writer.write(frame(peer_hello(2)))
            reply = await read_reply(reader)
            assert not reply.ok and reply.reason == "the certificate does not name node 2"
            await close(writer)

    run(body())


# -- refused: the certificate ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["other-ca-node", "other-ca-client", "expired", "not-yet-valid"])
def test_a_certificate_the_cluster_ca_did_not_issue_or_out_of_date_is_refused(
    tls_files: TlsFiles, which: str, loop_kind: str
) -> None:
    cfg = {
        "other-ca-node": TlsConfig(
            tls_files.other / "node-2.pem",
            tls_files.other / "node-2-key.pem",
            tls_files.cluster / "ca.pem",
        ),
        "other-ca-client": TlsConfig(
            tls_files.other / "client-app.pem",
            tls_files.other / "client-app-key.pem",
            tls_files.cluster / "ca.pem",
        ),
        "expired": tls_files.extra("expired-node-2"),
        "not-yet-valid": tls_files.extra("future-node-2"),
    }[which]

    async def body() -> None:
        async with nodes({1: tls_files.node(1), 2: tls_files.node(2)}) as ns:
            assert await refused_at_tls(ns[1].t.bound_address, cfg)
            assert ns[1].stat("client_connections") == 0
            assert ns[1].stat("peer_connections") == 0

    run(body())


def test_a_tls_client_without_a_certificate_is_refused(tls_files: TlsFiles, loop_kind: str) -> None:
    """Verification is required, not optional: a TLS client that trusts the cluster CA but
    shows no certificate of its own gets no status and no handshake."""

    async def body() -> None:
        async with nodes({1: tls_files.node(1)}) as ns:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(tls_files.cluster / "ca.pem")
            host, port = parse_address(ns[1].t.bound_address)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
                try:
                    writer.write(frame(CLIENT_HELLO))
                    await read_frame(reader)
                finally:
                    await close(writer)
            assert ns[1].stat("client_connections") == 0

    run(body())


def test_a_stalled_tls_handshake_is_closed_in_time(tls_files: TlsFiles, loop_kind: str) -> None:
    """A connection that never completes the TLS handshake costs its socket for the
    handshake timeout only."""

    async def body() -> None:
        node = Node(1, {}, tls_files.node(1), handshake_timeout=0.3)
        await node.t.start()
        try:
            reader, writer = await dial(node.t.bound_address, None)
            started = time.monotonic()
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""  # closed by the node, never answered
            assert time.monotonic() - started < 5
            await close(writer)
        finally:
            await node.t.close()

    run(body())


def test_tls_older_than_1_3_is_refused(tls_files: TlsFiles, loop_kind: str) -> None:
    async def body() -> None:
        async with nodes({1: tls_files.node(1)}) as ns:
            ctx = tls_files.client().load().client
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            host, port = parse_address(ns[1].t.bound_address)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection(host, port, ssl=ctx)
            assert ns[1].stat("client_connections") == 0

    run(body())


def test_a_peer_with_a_certificate_of_another_ca_never_delivers(
    tls_files: TlsFiles, loop_kind: str
) -> None:
    """Node 2 holds a certificate (naming node 2) of another CA: neither side gets a message
    through, both keep dialing and failing."""

    async def body() -> None:
        rogue = TlsConfig(
            tls_files.other / "node-2.pem",
            tls_files.other / "node-2-key.pem",
            tls_files.other / "ca.pem",
        )
        async with nodes({1: tls_files.node(1), 2: rogue}) as ns:
            for _ in range(3):
                ns[1].t.send(hb(1, 2))
                ns[2].t.send(hb(2, 1))
            await until(
                lambda: ns[1].stat("dial_failures") >= 2 and ns[2].stat("dial_failures") >= 2,
                "both sides failing to dial",
            )
            assert ns[1].inbox == [] and ns[2].inbox == []
            assert ns[1].stat("peer_connections") == ns[2].stat("peer_connections") == 0

    run(body())


def test_a_plain_client_is_refused_by_a_tls_node_and_a_tls_client_by_a_plain_node(
    tls_files: TlsFiles, loop_kind: str
) -> None:
    async def body() -> None:
        async with nodes({1: tls_files.node(1), 2: None}) as ns:
            reader, writer = await dial(ns[1].t.bound_address, None)
            writer.write(frame(CLIENT_HELLO))
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await read_frame(reader)  # no HelloReply: the TLS handshake failed
            await close(writer)
            assert ns[1].stat("client_connections") == 0
            # The plain node cannot speak TLS: a TLS client gets nowhere either.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await dial(ns[2].t.bound_address, tls_files.client())

    run(body())


# -- refused: the identity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holder", "claims"),
    [("client", 2), ("node-3", 2), ("server-no-id", 2)],
    ids=["client-cert-as-peer", "node3-claims-node2", "cert-without-node-id"],
)
def test_a_peer_hello_needs_the_certificate_of_that_very_node(
    tls_files: TlsFiles, holder: str, claims: int, loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = {
        "client": tls_files.client(),
        "node-3": tls_files.node(3),
        "server-no-id": tls_files.extra("server-no-id"),
    }[holder]

    async def body() -> None:
        async with nodes({1: tls_files.node(1), 2: tls_files.node(2), 3: tls_files.node(3)}) as ns:
            reader, writer = await dial(ns[1].t.bound_address, cfg)
            writer.write(frame(peer_hello(claims)))
            reply = await read_reply(reader)
            assert not reply.ok
            assert reply.reason == f"the certificate does not name node {claims}"
            # Nothing it sends after the refusal reaches the node.
            writer.write(encode_frame(encode_message(hb(claims, 1))))
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await read_frame(reader)
            await close(writer)
            assert ns[1].inbox == []
            assert ns[1].stat("handshakes_refused") == 1
            assert ns[1].stat("peer_connections") == 0

    with caplog.at_level(logging.WARNING, logger="raftpy.transport"):
        run(body())
    assert f"claimed to be node {claims} with the certificate of" in caplog.text


def test_a_dialer_refuses_an_acceptor_whose_certificate_names_another_node(
    tls_files: TlsFiles, loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Node 2's address is served by a transport holding node 3's certificate (a member that
    took over another's address): node 1 never sends its Hello there."""

    async def body() -> None:
        async with nodes({1: tls_files.node(1), 2: tls_files.node(3)}) as ns:
            ns[1].t.send(hb(1, 2))
            await until(lambda: ns[1].stat("dial_failures") >= 2, "node 1 failing to dial")
            assert ns[2].inbox == []
            # The impostor saw TLS connections but never a Hello.
            assert ns[2].stat("handshakes_refused") == 0
            assert ns[2].stat("peer_connections") == 0

    with caplog.at_level(logging.WARNING, logger="raftpy.transport"):
        run(body())
    assert "its certificate names node 3, not node 2" in caplog.text


# -- rotation ----------------------------------------------------------------------------------


def test_a_ca_bundle_lets_old_and_new_certificates_work_together(
    tls_files: TlsFiles, tmp_path: Path, loop_kind: str
) -> None:
    """The CA rotation of README.md, Security: with a bundle of the old and the new CA, a
    member still on its old certificate and one already on its new certificate exchange
    messages both ways, and a client of either CA is served; a member that trusts only the
    old CA cannot reach the one on the new certificate."""
    old, new = tls_files.cluster, tls_files.other
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((old / "ca.pem").read_bytes() + (new / "ca.pem").read_bytes())

    def member(d: Path, node_id: int, ca: Path) -> TlsConfig:
        return TlsConfig(d / f"node-{node_id}.pem", d / f"node-{node_id}-key.pem", ca)

    async def body() -> None:
        configs = {
            1: member(old, 1, bundle),
            2: member(new, 2, bundle),
            3: member(old, 3, old / "ca.pem"),
        }
        async with nodes(configs) as ns:
            ns[1].t.send(hb(1, 2))
            ns[2].t.send(hb(2, 1))
            ns[3].t.send(hb(3, 2))
            await until(lambda: len(ns[1].inbox) == 1 and len(ns[2].inbox) == 1, "1 <-> 2")
            await until(lambda: ns[3].stat("dial_failures") >= 2, "3 failing to reach 2")
            assert [m.src for m in ns[2].inbox] == [1]
            for d in (old, new):
                client = TlsConfig(d / "client-app.pem", d / "client-app-key.pem", bundle)
                reader, writer = await dial(ns[2].t.bound_address, client)
                writer.write(frame(CLIENT_HELLO))
                assert (await read_reply(reader)).ok
                await close(writer)

    run(body())


# -- configuration -----------------------------------------------------------------------------


def test_identity_rules_on_certificate_fields() -> None:
    issuer = ((("commonName", "ca"),),)
    cert = {
        "subject": ((("commonName", "raftpy-node-2"),),),
        "issuer": issuer,
        "subjectAltName": (("URI", "raftpy://node/2"), ("DNS", "localhost")),
    }
    assert identity_of(cert, frozenset({issuer})) == PeerIdentity(2, "raftpy-node-2")
    # Another issuer (a client CA), two node names, or a malformed id: not a node.
    assert identity_of(cert, frozenset()).node_id is None
    two = dict(cert, subjectAltName=(("URI", "raftpy://node/2"), ("URI", "raftpy://node/3")))
    assert identity_of(two, frozenset({issuer})).node_id is None
    for bad in ("raftpy://node/-1", "raftpy://node/2x", "raftpy://node/", "raftpy://node/٣"):
        odd = dict(cert, subjectAltName=(("URI", bad),))
        assert identity_of(odd, frozenset({issuer})).node_id is None, bad


def test_tls_config_errors_name_the_file(tls_files: TlsFiles, tmp_path: Any) -> None:
    good = tls_files.node(1)
    with pytest.raises(ValueError, match=r"missing\.pem"):
        TlsConfig(tmp_path / "missing.pem", good.key, good.ca).load()
    with pytest.raises(ValueError, match=r"ca 'nope\.pem'"):
        TlsConfig(good.cert, good.key, "nope.pem").load()
    with pytest.raises(ValueError, match="cannot load certificate"):
        TlsConfig(good.cert, tls_files.node(2).key, good.ca).load()  # key of another cert
    with pytest.raises(ValueError, match="same subject"):
        TlsConfig(good.cert, good.key, good.ca, client_ca=good.ca).load()


def test_plain_tcp_off_loopback_needs_insecure(caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("db.example.com")
    with pytest.raises(ValueError, match="insecure"):
        check_plaintext_bind("0.0.0.0", tls=None, insecure=False)
    check_plaintext_bind("0.0.0.0", tls=None, insecure=True)
    with pytest.raises(ValueError, match="insecure"):
        TcpTransport(
            1, "0.0.0.0:0", {}, cluster_id=CLUSTER, on_message=print, on_client_request=print
        )

    async def body() -> None:
        t = TcpTransport(
            1,
            "0.0.0.0:0",
            {},
            cluster_id=CLUSTER,
            on_message=print,
            on_client_request=print,
            insecure=True,
        )
        await t.start()
        await t.close()

    with caplog.at_level(logging.INFO, logger="raftpy.transport"):
        run(body())
    warned = [r for r in caplog.records if "WITHOUT TLS" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING
