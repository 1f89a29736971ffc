"""The client against a real one-member node over TCP on 127.0.0.1: a request larger than the
frame limit the node announced is refused before it is sent, with a definite error, and a
connection the node would soon close for idleness is retired first. Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from raftpy.client import Client
from raftpy.errors import ProposalDropped
from raftpy.node import RaftNode
from raftpy.outcomes import ExitStatus, exit_status_for, outcome_of_error
from raftpy.transport.address import free_port
from tests.nodehelpers import FAST, KV, set_cmd, wait_for

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def one_node(**config: object) -> AsyncIterator[tuple[RaftNode, str]]:
    address = f"127.0.0.1:{free_port()}"
    node = RaftNode(1, address, {1: address}, KV(), None, replace(FAST, **config))
    async with node:
        await wait_for(lambda: node.role.value == "leader", timeout=5)
        yield node, address


def test_a_70_mb_value_is_refused_before_sending_with_a_definite_error() -> None:
    async def main() -> None:
        async with one_node() as (node, address), Client([address], timeout=10) as client:
            assert await client.propose(set_cmd("small", "1")) == b""
            received = node.stats.transport.client_requests  # type: ignore[union-attr]
            with pytest.raises(ProposalDropped) as caught:
                await client.propose(set_cmd("big", "x" * 70_000_000))
            exc = caught.value
            assert not exc.retryable and "exceeds the node's limit" in str(exc)
            assert outcome_of_error(exc).definite
            assert exit_status_for(exc) is ExitStatus.NOT_DONE
            # It never left the client: the node saw no request and the connection is fine.
            assert node.stats.transport.client_requests == received  # type: ignore[union-attr]
            assert node.stats.transport.malformed_frames == 0  # type: ignore[union-attr]
            with pytest.raises(ProposalDropped):
                await client.query(b"k" * 70_000_000)
            assert await client.propose(set_cmd("small", "2")) == b"1"
            assert node.stats.transport.client_connections == 1  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_value_just_over_the_largest_command_is_definite_too() -> None:
    """17 MB: over the client frame limit (the largest command plus 64 KiB) by default."""

    async def main() -> None:
        async with one_node() as (_, address), Client([address], timeout=10) as client:
            with pytest.raises(ProposalDropped):
                await client.propose(json.dumps(["set", "k", "v" * 17_000_000]).encode())

    asyncio.run(main())


def test_a_connection_idle_for_half_the_announced_timeout_is_replaced() -> None:
    """The node closes a client connection idle for ``client_idle_timeout``; the client stops
    using it at half that, so its next request goes out on a fresh connection instead of one
    the node may be closing (which would leave a proposal's outcome unknown)."""

    async def main() -> None:
        async with one_node(client_idle_timeout=0.6) as (node, address):
            stats = node.stats.transport
            assert stats is not None
            async with Client([address], timeout=10) as client:
                await client.propose(set_cmd("a", "1"))
                await asyncio.sleep(0.1)
                await client.propose(set_cmd("a", "2"))  # well within: same connection
                assert stats.client_connections == 1
                await asyncio.sleep(0.4)  # past half the timeout, not the whole
                await client.propose(set_cmd("a", "3"))
                assert stats.client_connections == 2
                assert stats.client_idle_closed == 0
                await wait_for(lambda: stats.client_idle_closed == 1, timeout=5)

    asyncio.run(main())


def test_a_client_timeout_over_a_day_still_reaches_the_node() -> None:
    """The node refuses a request frame whose timeout exceeds a day (a deadline must be
    finite); a client asked to wait longer sends the longest the node takes, so it is served
    instead of every request being refused as malformed."""

    async def main() -> None:
        async with one_node() as (node, address), Client([address], timeout=3 * 86_400) as client:
            assert await client.propose(set_cmd("k", "1")) == b""
            assert node.stats.transport.malformed_frames == 0  # type: ignore[union-attr]

    asyncio.run(main())
