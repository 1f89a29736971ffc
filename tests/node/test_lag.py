"""Replication lag in seconds (raftpy.node.lag) and how a leader reports its members.

AppendTimes is driven with a fake clock: each rule (caught up is 0, the first missing entry
dates the lag, merging only overestimates, trimming forgets only what nobody needs) is pinned
by exact numbers. A live in-process cluster then checks what a leader's status says: itself
active with no lag, a cut-off follower's lag growing in entries and seconds, and back to 0
once it caught up.
"""

from __future__ import annotations

import asyncio

import pytest

from raftpy.node.lag import AppendTimes, LastContact
from tests.nodehelpers import LocalNetwork, make_cluster, running, set_cmd, wait_for, wait_leader


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_caught_up_follower_has_no_lag() -> None:
    clock = Clock()
    times = AppendTimes(clock=clock)
    times.appended(5)
    clock.now += 30
    assert times.lag_seconds(5, 5) == 0.0
    assert times.lag_seconds(7, 5) == 0.0


def test_the_first_missing_entry_dates_the_lag() -> None:
    clock = Clock(100.0)
    times = AppendTimes(clock=clock)
    times.appended(3)  # entries 1..3 at 100
    clock.now = 110.0
    times.appended(8)  # 4..8 at 110
    clock.now = 115.0
    times.appended(9)  # 9 at 115
    clock.now = 120.0
    assert times.lag_seconds(0, 9) == 20.0
    assert times.lag_seconds(2, 9) == 20.0
    assert times.lag_seconds(3, 9) == 10.0
    assert times.lag_seconds(7, 9) == 10.0
    assert times.lag_seconds(8, 9) == 5.0
    assert times.lag_seconds(9, 9) == 0.0


def test_entries_from_before_the_leadership_date_from_its_start() -> None:
    clock = Clock(50.0)
    times = AppendTimes(clock=clock)
    clock.now = 60.0
    times.reset()  # became leader at 60, holding entries 1..10 from an earlier leader
    clock.now = 61.0
    times.appended(11)  # its no-op
    clock.now = 64.0
    assert times.lag_seconds(4, 11) == 3.0  # entry 5 existed at least since 61 (no-op batch)
    times.trim(11)
    assert len(times) == 0
    assert times.lag_seconds(4, 11) == 4.0  # unsampled: dated from the leadership's start


def test_a_repeated_or_older_index_adds_no_sample() -> None:
    times = AppendTimes(clock=Clock())
    times.appended(4)
    times.appended(4)
    times.appended(2)
    assert len(times) == 1


def test_trim_forgets_only_what_every_follower_holds() -> None:
    clock = Clock(0.0)
    times = AppendTimes(clock=clock)
    for i in range(1, 6):
        clock.now = float(i)
        times.appended(i * 10)
    times.trim(25)
    assert len(times) == 3  # samples 30, 40, 50 stay: a follower at 25 lacks 26 (batch 30)
    clock.now = 10.0
    assert times.lag_seconds(25, 50) == 7.0


def test_memory_is_bounded_and_merging_never_hides_a_lag() -> None:
    clock = Clock(0.0)
    times = AppendTimes(max_samples=8, clock=clock)
    for i in range(1, 1001):
        clock.now = float(i)
        times.appended(i)
    assert len(times) <= 8
    clock.now = 1000.0
    # A follower that stopped at entry 0 lacks entry 1, appended at 1.0: exactly 999 s.
    assert times.lag_seconds(0, 1000) == 999.0
    for match in (1, 10, 500, 900, 998):
        exact = 1000.0 - (match + 1)
        assert times.lag_seconds(match, 1000) >= exact  # never shorter than the truth


def test_max_samples_is_checked() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        AppendTimes(max_samples=1)


def test_last_contact() -> None:
    clock = Clock(10.0)
    contact = LastContact(clock=clock)
    assert contact.seconds_since(2) is None
    contact.heard[2] = contact.now()
    clock.now = 12.5
    assert contact.seconds_since(2) == 2.5


def test_a_leader_reports_itself_active_and_a_cut_off_followers_lag() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            leader = await wait_leader(nodes)
            await leader.propose(set_cmd("a", "1"))
            own = (leader.status().peers or {})[leader.node_id]
            assert own.active and own.lag == 0 and own.lag_seconds == 0.0
            assert own.inflight == 0 and own.last_contact == 0.0
            follower = next(n for n in nodes if n is not leader)
            fid = follower.node_id
            await wait_for(lambda: (leader.status().peers or {})[fid].lag == 0)
            caught_up = (leader.status().peers or {})[fid]
            assert caught_up.lag_seconds == 0.0
            assert caught_up.last_contact is not None and caught_up.last_contact < 1.0
            net.isolated.add(fid)
            await leader.propose(set_cmd("b", "2"))
            await asyncio.sleep(0.3)
            cut = (leader.status().peers or {})[fid]
            assert cut.lag == 1
            assert cut.lag_seconds is not None and 0.25 <= cut.lag_seconds < 5.0
            assert cut.last_contact is not None and cut.last_contact >= 0.25
            net.isolated.discard(fid)
            await wait_for(lambda: (leader.status().peers or {})[fid].lag == 0)
            back = (leader.status().peers or {})[fid]
            assert back.lag_seconds == 0.0  # caught up: reset, not the old lag
            assert back.last_contact is not None and back.last_contact < 0.25

    asyncio.run(main())
