"""Refusals that asking again cannot change end a call at once (HandshakeRefusedError), instead
of being retried until the deadline; a refusal that can pass (no room for another connection)
is still retried. Against the scripted nodes of tests/client/test_client.py."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from raftpy.client import Client
from raftpy.errors import ClusterUnavailableError, HandshakeRefusedError
from tests.client.test_client import STEADY, NoJitter, nodes, run

SUFFIX = "(asking again cannot change that: check the address, the cluster id and the TLS settings)"


def test_a_refusal_for_good_ends_the_call_at_once() -> None:
    async def scenario() -> None:
        async with nodes(1, refuse="cluster id does not match") as (a,):
            client = Client([a.address], cluster_id="blue", timeout=10, rng=NoJitter(), **STEADY)
            async with client:
                start = time.monotonic()
                with pytest.raises(HandshakeRefusedError) as refused:
                    await client.propose(b"x")
                assert time.monotonic() - start < 2.0  # not the 10 s deadline
            assert str(refused.value) == (
                f"{a.address} handshake refused: cluster id does not match {SUFFIX}"
            )
            assert isinstance(refused.value, ClusterUnavailableError)  # definite, exit 1
            assert a.connections == 1 and a.requests == []

    run(scenario())


def test_status_and_snapshot_of_a_refusing_node_end_at_once() -> None:
    async def scenario() -> None:
        async with nodes(1, refuse="protocol version 9 is not supported") as (a,):
            async with Client([a.address], timeout=10, rng=NoJitter(), **STEADY) as client:
                start = time.monotonic()
                with pytest.raises(HandshakeRefusedError, match="protocol version 9"):
                    await client.status(a.address)
                with pytest.raises(HandshakeRefusedError) as refused:
                    await client.snapshot(a.address)
                with pytest.raises(HandshakeRefusedError):
                    await client.query(b"k")
                assert time.monotonic() - start < 3.0
            assert str(refused.value) == (
                f"{a.address} handshake refused: protocol version 9 is not supported {SUFFIX}"
            )
            assert a.connections == 3

    run(scenario())


def test_the_other_nodes_still_serve_when_one_refuses_for_good() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.refuse = "cluster id does not match"
            async with Client([a.address, b.address], rng=random.Random(1), **STEADY) as client:
                assert await client.propose(b"x") == b"applied:x"
                assert await client.query(b"k") == b"value:k"
            assert b.requests and a.requests == []

    run(scenario())


def test_every_address_refusing_for_good_names_each() -> None:
    async def scenario() -> None:
        async with nodes(2, refuse="cluster id does not match") as (a, b):
            client = Client([a.address, b.address], timeout=10, rng=NoJitter(), **STEADY)
            async with client:
                start = time.monotonic()
                with pytest.raises(HandshakeRefusedError) as refused:
                    await client.query(b"k")
                assert time.monotonic() - start < 2.0
            assert str(refused.value) == (
                f"{a.address} handshake refused: cluster id does not match; "
                f"{b.address} handshake refused: cluster id does not match {SUFFIX}"
            )
            assert (a.connections, b.connections) == (1, 1)

    run(scenario())


def test_no_room_for_a_connection_is_retried_until_the_deadline() -> None:
    async def scenario() -> None:
        async with nodes(1, refuse="too many client connections (at most 2)") as (a,):
            client = Client([a.address], timeout=0.3, rng=NoJitter(), **STEADY)
            async with client:
                start = time.monotonic()
                with pytest.raises(ClusterUnavailableError, match="too many client") as failed:
                    await client.query(b"k")
                assert 0.28 <= time.monotonic() - start < 1.0
            assert not isinstance(failed.value, HandshakeRefusedError)
            assert a.connections >= 3  # asked again: the node may have room later

    run(scenario())


def test_escapes_what_the_node_sent() -> None:
    async def scenario() -> None:
        async with nodes(1, refuse="no\nFORGED\x1b[2J") as (a,):
            async with Client([a.address], timeout=10, rng=NoJitter(), **STEADY) as client:
                with pytest.raises(HandshakeRefusedError) as refused:
                    await client.status(a.address)
            assert "no\\nFORGED\\x1b[2J" in str(refused.value)
            assert "\n" not in str(refused.value)

    run(scenario())


def test_a_snapshot_cut_short_while_connecting_keeps_the_earlier_refusal_in_front() -> None:
    """A node nobody answers for: the connection is refused, and the attempt the deadline cuts
    short is only the last of several, so the error still says why (as a call does)."""
    from raftpy.client.call import RetryPolicy, take_snapshot
    from raftpy.client.connection import ConnectFailed

    class Pool:
        closed = False

        def __init__(self, outcomes: list[BaseException]) -> None:
            self.outcomes = outcomes

        async def connection(self, address: str, deadline: float) -> object:
            raise self.outcomes.pop(0)

        async def pause(self, delay: float) -> None:
            pass

    policy = RetryPolicy(0.001, 0.001, 1.0, random.Random(0))

    async def ask(outcomes: list[BaseException]) -> str:
        with pytest.raises(ClusterUnavailableError) as failed:
            await take_snapshot(Pool(outcomes), policy, "127.0.0.1:9", 10.0)  # type: ignore[arg-type]
        return str(failed.value)

    refused = ConnectFailed("127.0.0.1:9", "cannot connect: [Errno 111] Connection refused")
    message = asyncio.run(ask([refused, TimeoutError()]))
    assert message == (
        "no snapshot from 127.0.0.1:9 within 10.0s (last: 127.0.0.1:9: cannot connect: "
        "[Errno 111] Connection refused; then still connecting to 127.0.0.1:9 at the deadline)"
    )
    # With no earlier failure, the cut-short attempt is the whole story.
    assert asyncio.run(ask([TimeoutError()])).endswith(
        "(last: still connecting to 127.0.0.1:9 at the deadline)"
    )
