"""NodeHealth: exact thresholds, hysteresis, the campaign pause and the choice of the voter a
leader hands over to (docs/health.md). The cores are real (tests/corehelpers.py); the fsync
durations come from a stand-in with the interface of ``raftpy.node.latency.RecentDurations``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import replace

import pytest

from raftpy.core.messages import Heartbeat, Message, TimeoutNow
from raftpy.core.ready import Role
from raftpy.errors import IndeterminateError, NotLeaderError, ProposalDropped
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.health import MIN_SYNCS, RETRY_ELECTIONS, WINDOW, Health, NodeHealth
from raftpy.node.last_error import LastError
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage
from tests.corehelpers import Network
from tests.nodehelpers import (
    FAST,
    LocalNetwork,
    make_cluster,
    running,
    set_cmd,
    wait_for,
    wait_leader,
)

BOUND = 1.0
ELECTION = 10


class Syncs:
    """The last 1,000 sync durations, with nearest-rank quantiles (a stand-in for
    ``RecentDurations``)."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=1000)

    def quantile(self, q: float, last: int | None = None) -> float | None:
        samples = sorted(list(self.samples)[-last:] if last else self.samples)
        if not samples:
            return None
        return samples[max(1, math.ceil(round(q * len(samples), 9))) - 1]

    def __len__(self) -> int:
        return len(self.samples)


class Sent:
    """A transport that records what is sent and how often it is flushed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.flushes = 0

    def send(self, message: Message) -> None:
        self.messages.append(message)

    def flush(self) -> None:
        self.flushes += 1

    def timeout_nows(self) -> list[TimeoutNow]:
        return [m for m in self.messages if isinstance(m, TimeoutNow)]


def feed(health: NodeHealth, syncs: Syncs, *durations: float) -> Health:
    for d in durations:
        syncs.samples.append(d)
        health.on_sync()
    return health.judge()


def new_health(node_id: int = 1, bound: float | None = BOUND) -> tuple[NodeHealth, Syncs]:
    syncs = Syncs()
    return NodeHealth(node_id, bound, syncs, ELECTION, 0.01), syncs


# ----------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------


def test_needs_min_syncs_before_judging() -> None:
    """Fewer than MIN_SYNCS (20) syncs say nothing, however slow; the 20th is judged."""
    health, syncs = new_health()
    assert feed(health, syncs, *[5.0] * (MIN_SYNCS - 1)) == Health(True, None)
    assert feed(health, syncs, 5.0) == Health(False, "fsync p99 5 s > max_fsync_p99 1 s")


def test_p99_over_the_last_window_must_exceed_the_bound() -> None:
    """Over a full window of 100, p99 (nearest rank) is the 2nd slowest: one slow sync is
    tolerated, two are not; a p99 exactly at the bound is not over it."""
    health, syncs = new_health()
    assert feed(health, syncs, *[0.01] * 99, 3.0).healthy
    assert feed(health, syncs, 1.0).healthy  # 2nd slowest is exactly the bound
    assert feed(health, syncs, 1.5) == Health(False, "fsync p99 1.5 s > max_fsync_p99 1 s")


def test_only_the_last_window_counts() -> None:
    """Slow syncs older than the last WINDOW syncs are forgotten."""
    health, syncs = new_health()
    feed(health, syncs, *[2.0] * 50)
    assert not health.health.healthy
    assert feed(health, syncs, *[0.01] * WINDOW).healthy


def test_none_turns_the_fsync_check_off_but_a_full_disk_still_counts() -> None:
    health, syncs = new_health(bound=None)
    assert feed(health, syncs, *[60.0] * 200).healthy
    net = Network.of((1, 2, 3))
    net.elect(1)
    health.on_disk_full(net[1], Sent(), now=0.0)
    assert health.health == Health(False, "disk full")


# ----------------------------------------------------------------------------------------------
# Hysteresis
# ----------------------------------------------------------------------------------------------


def test_healthy_again_only_under_half_the_bound() -> None:
    """Once unhealthy, a p99 back under the bound is not enough: it must fall under half the
    bound (0.5 s here) over the last 100 syncs."""
    health, syncs = new_health()
    feed(health, syncs, *[1.2] * 30)
    assert not health.health.healthy
    assert not feed(health, syncs, *[0.6] * WINDOW).healthy  # under the bound, over half
    assert not feed(health, syncs, *[0.5] * WINDOW).healthy  # exactly half: not under it
    # p99 over 100 syncs is the 2nd slowest: with two 0.5 s syncs left it is still 0.5 s.
    assert not feed(health, syncs, *[0.49] * (WINDOW - 2)).healthy
    assert feed(health, syncs, 0.49) == Health(True, None)
    # And healthy, a p99 between half and the bound stays healthy.
    assert feed(health, syncs, *[0.9] * WINDOW).healthy


def test_full_disk_is_unhealthy_until_a_sync_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    health, syncs = new_health()
    net = Network.of((1, 2, 3))
    net.elect(1)
    net[2].pause_campaigns(False)
    with caplog.at_level(logging.WARNING, logger="raftpy.node"):
        health.on_disk_full(net[2], Sent(), now=0.0)
        assert health.health == Health(False, "disk full")
        assert net[2].campaigns_paused
        feed(health, syncs, 0.01)
        assert health.health == Health(True, None)
    text = caplog.text
    assert "node 1 is unhealthy: disk full" in text
    assert "node 1 is healthy again" in text


def test_slow_warning_names_the_reason_and_p99(caplog: pytest.LogCaptureFixture) -> None:
    health, syncs = new_health()
    with caplog.at_level(logging.WARNING, logger="raftpy.node"):
        feed(health, syncs, *[1.234] * 20)
    assert "node 1 is unhealthy: fsync p99 1.23 s > max_fsync_p99 1 s" in caplog.text


def test_becoming_unhealthy_is_the_nodes_last_error() -> None:
    errors = LastError(clock=lambda: 1_800_000_000.0)
    syncs = Syncs()
    health = NodeHealth(1, BOUND, syncs, ELECTION, 0.01, errors)
    feed(health, syncs, *[0.001] * 20)
    assert errors.message is None
    feed(health, syncs, *[1.234] * 20)
    assert errors.message == "unhealthy: fsync p99 1.23 s > max_fsync_p99 1 s"
    assert errors.time == 1_800_000_000.0


def test_max_fsync_p99_is_validated() -> None:
    assert NodeConfig().max_fsync_p99 == 1.0
    NodeConfig(max_fsync_p99=None).validate()
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="max_fsync_p99"):
            NodeConfig(max_fsync_p99=bad).validate()


# ----------------------------------------------------------------------------------------------
# Pause and hand-off, on real cores
# ----------------------------------------------------------------------------------------------


def slow(health: NodeHealth, syncs: Syncs) -> None:
    feed(health, syncs, *[3.0] * MIN_SYNCS)


def test_unhealthy_leader_pauses_and_hands_over_to_the_most_up_to_date_active_voter() -> None:
    """Node 3 lags (it missed an entry): the leader picks node 2, whose match is highest."""
    net = Network.of((1, 2, 3))
    leader = net.elect(1)
    net.cut(1, 3)
    net.propose(1, b"x")
    net.heal()
    health, syncs = new_health()
    slow(health, syncs)
    health.tick(leader)
    assert leader.campaigns_paused and leader.lead_transferee == 2
    net.stabilize()
    assert (net[2].role, leader.role) == (Role.LEADER, Role.FOLLOWER)
    health.tick(leader)
    assert leader.campaigns_paused  # a follower now, still paused
    feed(health, syncs, *[0.01] * WINDOW)
    health.tick(leader)
    assert not leader.campaigns_paused


def test_hand_off_skips_inactive_voters() -> None:
    """A voter the leader has not heard from in this election timeout is never chosen, even
    with the highest match."""
    net = Network.of((1, 2, 3))
    leader = net.elect(1)
    net.propose(1, b"x")
    net.isolate(2)
    net.tick(1, ELECTION)  # a CheckQuorum period passes: only node 3 answered
    net.tick(1, 1)
    assert not leader.prs[2].recent_active and leader.prs[3].recent_active
    health, syncs = new_health()
    slow(health, syncs)
    health.tick(leader)
    assert leader.lead_transferee == 3


def test_tries_the_next_voter_when_the_transfer_times_out() -> None:
    """Node 2 is unhealthy too (paused: it ignores TimeoutNow): after an election timeout the
    core aborts the transfer and the leader hands over to node 3 instead."""
    net = Network.of((1, 2, 3))
    leader = net.elect(1)
    net[2].pause_campaigns(True)
    health, syncs = new_health()
    slow(health, syncs)
    health.tick(leader)
    assert leader.lead_transferee == 2
    for _ in range(ELECTION + 1):
        net.tick(1)
        health.tick(leader)
        if leader.role is not Role.LEADER:
            break
    net.stabilize()
    assert (net[3].role, leader.role, net[2].role) == (Role.LEADER, Role.FOLLOWER, Role.FOLLOWER)
    sent = [(m.dst, m.term) for m in net.delivered if isinstance(m, TimeoutNow)]
    assert sent == [(2, 1), (3, 1)]


def test_single_voter_stays_leader_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    net = Network.of((1,))
    leader = net.elect(1)
    health, syncs = new_health()
    slow(health, syncs)
    with caplog.at_level(logging.WARNING, logger="raftpy.node"):
        for _ in range(3 * ELECTION):
            net.tick(1)
            health.tick(leader)
    assert leader.role is Role.LEADER and leader.lead_transferee is None
    assert caplog.text.count("stays leader: it is the only voter") == 1


def test_no_voter_takes_over_stays_leader_says_so_once_and_retries_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both other voters are unhealthy too (they ignore TimeoutNow): each is asked once, the
    leader then stays and says so once, and asks again RETRY_ELECTIONS election timeouts
    later."""
    net = Network.of((1, 2, 3))
    leader = net.elect(1)
    net[2].pause_campaigns(True)
    net[3].pause_campaigns(True)
    health, syncs = new_health()
    slow(health, syncs)
    with caplog.at_level(logging.WARNING, logger="raftpy.node"):
        for _ in range((RETRY_ELECTIONS + 3) * ELECTION):
            health.tick(leader)
            net.tick(1)
    assert leader.role is Role.LEADER
    sent = [m.dst for m in net.delivered if isinstance(m, TimeoutNow)]
    assert sent == [2, 3, 2]
    assert caplog.text.count("stays leader: no voter took over (tried [2, 3])") == 1


def test_paused_node_campaigns_anyway_after_long_without_a_leader() -> None:
    """Every voter unhealthy: nobody would ever lead. A paused node that has heard from no
    leader for three election timeouts campaigns anyway, and is paused again once it knows a
    leader."""
    net = Network.of((1, 2, 3))
    healths = {}
    for i in (1, 2, 3):
        healths[i], syncs = new_health(i)
        slow(healths[i], syncs)
        healths[i].tick(net[i])
    for _ in range(8 * ELECTION):
        net.tick_all()
        for i in (1, 2, 3):
            healths[i].tick(net[i])
        if net.leaders():
            break
    assert len(net.leaders()) == 1
    assert all(net[i].election_elapsed < 3 * ELECTION for i in (1, 2, 3))
    net.tick_all()
    for i in (1, 2, 3):
        healths[i].tick(net[i])
    follower = next(i for i in (1, 2, 3) if i not in net.leaders())
    assert net[follower].campaigns_paused


def test_parked_leader_hands_over_at_once_and_rotates_each_election_timeout() -> None:
    """A leader parked on a full disk mid-Ready: the first retry sends the heartbeats naming
    the transferee and TimeoutNow at once (to the best voter, known up to date or not); the
    next one only an election timeout (0.1 s here) later, then to the next voter."""
    net = Network.of((1, 2, 3))
    leader = net.elect(1)
    leader.propose(b"x")
    rd = leader.ready()  # outstanding: the sync failed for lack of space
    health, _ = new_health()
    sent = Sent()
    health.on_disk_full(leader, sent, now=10.0)
    assert [(type(m), m.dst) for m in sent.messages] == [
        (Heartbeat, 2),
        (Heartbeat, 3),
        (TimeoutNow, 2),
    ]
    assert sent.flushes == 1
    health.on_disk_full(leader, sent, now=10.05)
    assert (len(sent.messages), sent.flushes) == (3, 1)
    health.on_disk_full(leader, sent, now=10.11)
    health.on_disk_full(leader, sent, now=10.22)  # every voter was asked: start again
    assert sent.timeout_nows() == [TimeoutNow(1, 1, 2), TimeoutNow(1, 1, 3), TimeoutNow(1, 1, 2)]
    assert sent.flushes == 3
    assert leader.campaigns_paused and health.health == Health(False, "disk full")
    assert rd is not None


# ----------------------------------------------------------------------------------------------
# In-process clusters (real RaftNodes over a LocalNetwork)
# ----------------------------------------------------------------------------------------------

SLOW_BOUND = 0.02
"""max_fsync_p99 in the cluster tests: a slow sync sleeps 0.03 s. The nodes share one event
loop, so a sleeping sync stalls them all: the bound is kept small to keep the stalls short."""


class SlowStorage(MemoryStorage):
    """A storage whose sync() takes ``delay`` seconds (0: fast)."""

    def __init__(self, voters: list[int], addresses: dict[int, str]) -> None:
        super().__init__(voters, addresses=addresses)
        self.delay = 0.0

    def sync(self) -> None:
        if self.delay:
            time.sleep(self.delay)


def slow_cluster(net: LocalNetwork) -> tuple[list[RaftNode], dict[int, SlowStorage]]:
    peers = {i: f"local:{i}" for i in (1, 2, 3)}
    config = replace(FAST, max_fsync_p99=SLOW_BOUND)
    storages = {i: SlowStorage(sorted(peers), peers) for i in peers}
    return make_cluster(net, 3, config, storage=storages.__getitem__), storages


async def writes(node: RaftNode, count: int, key: str = "k") -> None:
    for k in range(count):
        await node.propose(set_cmd(key, str(k)), timeout=2)


def test_slow_leader_hands_over_stays_out_while_slow_and_takes_part_again_when_fast() -> None:
    async def main() -> None:
        net = LocalNetwork()
        nodes, storages = slow_cluster(net)
        async with running(nodes):
            old = await wait_leader(nodes)
            others = [n for n in nodes if n is not old]
            storages[old.node_id].delay = 0.03
            # MIN_SYNCS slow syncs make the leader unhealthy; it hands over at its next tick.
            with contextlib.suppress(NotLeaderError, ProposalDropped):
                await writes(old, MIN_SYNCS + 5)
            await wait_for(lambda: not old.health.healthy, timeout=5)
            assert old.health.reason is not None and old.health.reason.startswith("fsync p99")
            new = await wait_leader(others, timeout=5)
            await wait_for(lambda: old.role is Role.FOLLOWER and old.leader_id == new.node_id)
            status = old.status()
            assert (status.healthy, status.unhealthy_reason) == (False, old.health.reason)
            await writes(new, 3)
            # While slow, it never leads again: a transfer to it times out (it ignores
            # TimeoutNow) ...
            with pytest.raises(ProposalDropped, match="did not take over"):
                await new.transfer_leadership(old.node_id, timeout=5)
            assert (new.role, old.role) == (Role.LEADER, Role.FOLLOWER)
            # ... and when the new leader goes away, the third node takes over.
            net.isolated.add(new.node_id)
            third = next(n for n in others if n is not new)
            await wait_for(lambda: third.role is Role.LEADER, timeout=5)
            assert old.role is Role.FOLLOWER
            net.isolated.clear()
            await wait_leader(nodes, timeout=5)
            leader = next(n for n in nodes if n.role is Role.LEADER)
            assert leader is not old
            # Fast again: WINDOW fast syncs (as a follower) make it healthy, and it leads when
            # asked to.
            storages[old.node_id].delay = 0
            await writes(leader, WINDOW + 5)
            await wait_for(lambda: old.health.healthy, timeout=5)
            assert old.status().healthy and old.status().unhealthy_reason is None
            await leader.transfer_leadership(old.node_id, timeout=5)
            assert old.role is Role.LEADER

    asyncio.run(main())


def test_full_disk_leader_hands_over_at_once_and_the_cluster_keeps_taking_writes() -> None:
    """The leader's disk fills up: parked in its sync retry loop, it tells the best voter to
    take over at once (well before an election timeout of silence would elect one), the
    cluster keeps taking writes, and the old leader does not campaign until space is free."""

    async def main() -> None:
        net = LocalNetwork()
        fss = {i: FaultyFileSystem(seed=i) for i in (1, 2, 3)}
        config = replace(FAST, raft=replace(FAST.raft, election_ticks=100))  # 1-2 s
        nodes = make_cluster(
            net,
            3,
            config,
            storage=lambda i: FileStorage(f"/d{i}", [1, 2, 3], fs=fss[i], segment_size=1 << 16),
        )
        async with running(nodes):
            old = await wait_leader(nodes, timeout=10)
            await old.propose(set_cmd("a", "1"), timeout=2)
            fs = fss[old.node_id]
            fs.set_capacity(fs.used_bytes())  # the disk is now full
            began = asyncio.get_running_loop().time()
            stuck = asyncio.ensure_future(old.propose(set_cmd("b", "x" * 100_000), timeout=1))
            others = [n for n in nodes if n is not old]
            new = await wait_leader(others, timeout=5)
            took = asyncio.get_running_loop().time() - began
            # An election after silence needs at least one election timeout (1 s); the
            # hand-off needs a few message delays.
            assert took < 0.5, took
            assert await new.propose(set_cmd("c", "3"), timeout=2) == b""
            await writes(new, 10)
            with contextlib.suppress(IndeterminateError, ProposalDropped, NotLeaderError):
                await asyncio.wait_for(stuck, 5)
            assert old.health == Health(False, "disk full")
            assert old.status().unhealthy_reason == "disk full"
            fs.set_capacity(None)  # space is free again
            await wait_for(lambda: old.state_machine.data.get("c") == "3", timeout=5)  # type: ignore[attr-defined]
            await wait_for(lambda: old.health.healthy, timeout=5)
            assert old.role is Role.FOLLOWER

    asyncio.run(main())
