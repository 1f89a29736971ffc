"""A joining node's client (``--join``) draws its retry jitter from the node's seed, never
from the operating system: a simulation that replaces a member repeats exactly."""

from __future__ import annotations

import asyncio
import random

import pytest

import raftpy.node.node as node_module
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.join import ClientJoin
from tests.nodehelpers import FAST, KV, LocalNetwork


def test_the_join_client_draws_its_jitter_from_the_nodes_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[random.Random | None] = []

    class Recording(ClientJoin):
        def __init__(
            self, addresses: list[str], config: NodeConfig, rng: random.Random | None = None
        ) -> None:
            made.append(rng)
            super().__init__(addresses, config, rng)

    monkeypatch.setattr(node_module, "ClientJoin", Recording)

    async def start_and_stop(seed: int) -> None:
        net = LocalNetwork()
        node = RaftNode(
            4,
            "local:4",
            {4: "local:4"},
            KV(),
            None,
            FAST,
            transport_factory=net.factory(4),
            rng=random.Random(seed),
            join=("127.0.0.1:1",),  # refused at once; the node stops before it matters
        )
        async with node:
            await asyncio.sleep(0)

    for seed in (7, 7, 8):
        asyncio.run(start_and_stop(seed))
    assert len(made) == 3 and all(rng is not None for rng in made)
    draws = [[rng.random() for _ in range(3)] for rng in made if rng is not None]
    assert draws[0] == draws[1]  # the same seed, the same jitter
    assert draws[0] != draws[2]
