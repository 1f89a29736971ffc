"""Joiner on its own, against a scripted cluster: what it retries, what stops it, its deadline.

(Joining real in-process nodes is in test_node_members.py.)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

import pytest

from raftpy.core.messages import ConfState
from raftpy.errors import ClusterUnavailableError, ConfChangeError, ProposalDropped
from raftpy.node.join import Joiner, LocalProgress, MembersView

VIEW = MembersView((1, 2, 3), (), {i: f"127.0.0.1:700{i}" for i in (1, 2, 3)}, 1, 10)


class Scripted:
    """A JoinClient whose calls fail with the scripted errors first (for tests)."""

    def __init__(self, add_errors: list[Exception], promote_errors: list[Exception]) -> None:
        self.add_errors = add_errors
        self.promote_errors = promote_errors
        self.calls: list[str] = []
        self.closed = False

    async def members(self) -> MembersView:
        self.calls.append("members")
        if "promote" in self.calls:
            return MembersView((1, 2, 3, 4), (), VIEW.addresses, 1, 13)
        if "add" in self.calls:
            return MembersView((1, 2, 3), (4,), VIEW.addresses, 1, 12)
        return VIEW

    async def add_member(self, node_id: int, address: str, voter: bool = False) -> MembersView:
        self.calls.append("add")
        if self.add_errors:
            raise self.add_errors.pop(0)
        return MembersView((1, 2, 3), (node_id,), VIEW.addresses, 1, 12)

    async def promote(self, node_id: int) -> MembersView:
        self.calls.append("promote")
        if self.promote_errors:
            raise self.promote_errors.pop(0)
        return MembersView((1, 2, 3, node_id), (), VIEW.addresses, 1, 13)

    async def close(self) -> None:
        self.closed = True


def run_joiner(client: Scripted, conf: ConfState, timeout: float = 5.0) -> tuple[bool, list[str]]:
    learned: list[dict[int, str]] = []

    def learn(addresses: Mapping[int, str]) -> None:
        learned.append(dict(addresses))

    joiner = Joiner(
        4,
        "127.0.0.1:7004",
        client,
        promote=True,
        max_lag=5,
        timeout=timeout,
        learn=learn,
        progress=lambda: LocalProgress(conf, 12, 12),
        rng=random.Random(1),
    )
    done = asyncio.run(joiner.run())
    assert client.closed
    assert learned and learned[0] == VIEW.addresses
    return done, client.calls


def test_retries_what_may_pass_then_adds_and_promotes() -> None:
    client = Scripted(
        [ClusterUnavailableError("no leader"), ProposalDropped("another change pending")],
        [ProposalDropped("behind", retryable=False), ConfChangeError("node 4 is 9 behind")],
    )
    done, calls = run_joiner(client, ConfState((1, 2, 3), learners=(4,)))
    assert done
    assert calls == ["members", "add", "add", "add", "promote", "promote", "promote"]


@pytest.mark.parametrize(
    "refusal",
    [ConfChangeError("node 4 is changed twice"), ProposalDropped("invalid", retryable=False)],
)
def test_a_refused_add_stops_joining_at_once(
    refusal: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    client = Scripted([refusal], [])
    with caplog.at_level(logging.ERROR, logger="raftpy.node.join"):
        done, calls = run_joiner(client, ConfState(()))
    assert not done and calls == ["members", "add"]
    assert any("joining the cluster failed" in r.message for r in caplog.records)


def test_gives_up_at_its_deadline_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    client = Scripted([ClusterUnavailableError("no leader")] * 1000, [])
    with caplog.at_level(logging.ERROR, logger="raftpy.node.join"):
        done, _ = run_joiner(client, ConfState(()), timeout=0.5)
    assert not done
    assert any("could not join the cluster within" in r.message for r in caplog.records)


def test_a_rejoining_node_trusts_the_cluster_not_its_stale_log() -> None:
    """Reference: Thesis §4.2.1 (a new server is promoted once caught up). A node rejoining
    under its old id after losing its disk may restore a snapshot from before its removal that
    lists it as a voter; it is not one until the cluster says so, so it still asks to be
    promoted (found by the Jepsen member nemesis: such a node stayed a learner for good)."""
    client = Scripted([], [])
    stale = ConfState((1, 2, 3, 4))  # what its old snapshot says
    done, calls = run_joiner(client, stale)
    assert done
    assert calls[-1] == "promote"
