"""Histogram and RecentDurations, and the node timing its fsyncs, WAL writes and proposals."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time

import msgspec
import pytest

from raftpy.node import RaftNode
from raftpy.node.latency import DURATION_BOUNDS, Histogram, RecentDurations
from raftpy.node.status import decode_status
from raftpy.storage.fs import MemoryFileSystem
from raftpy.storage.wal import FileStorage
from tests.nodehelpers import FAST, KV, LocalNetwork, set_cmd, wait_for


def test_bounds_double_from_100_microseconds() -> None:
    assert DURATION_BOUNDS[0] == pytest.approx(0.0001)
    assert DURATION_BOUNDS[-1] == pytest.approx(6.5536)
    assert all(b == pytest.approx(2 * a) for a, b in itertools.pairwise(DURATION_BOUNDS))


def test_a_sample_lands_in_the_first_bucket_whose_bound_holds_it() -> None:
    h = Histogram()
    for seconds in (0.00005, 0.0001, 0.00011, 0.0004, 10.0):
        h.observe(seconds)
    assert h.counts[0] == 2  # 50 µs and exactly 100 µs (bounds are inclusive, as Prometheus')
    assert h.counts[1] == 1  # 110 µs <= 200 µs
    assert h.counts[2] == 1  # 400 µs <= 400 µs
    assert h.counts[-1] == 1  # 10 s: above every bound
    assert h.count == 5 and h.sum == pytest.approx(10.00066)


def test_histogram_quantile_is_the_upper_bound_of_its_bucket() -> None:
    h = Histogram()
    assert h.quantile(0.99) is None
    for _ in range(98):
        h.observe(0.00009)
    h.observe(0.003)  # 3.2 ms bucket
    h.observe(0.003)
    assert h.quantile(0.5) == pytest.approx(0.0001)
    assert h.quantile(0.98) == pytest.approx(0.0001)
    assert h.quantile(0.99) == pytest.approx(0.0032)
    h.observe(100.0)
    assert h.quantile(1.0) == DURATION_BOUNDS[-1]  # the overflow bucket reports the top bound


def test_a_histogram_copy_no_longer_moves_and_survives_msgpack() -> None:
    h = Histogram()
    h.observe(0.001)
    c = h.copy()
    h.observe(0.001)
    assert c.count == 1 and h.count == 2 and c.counts != h.counts
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(c), type=Histogram)
    assert back == c


def test_recent_durations_keeps_the_newest_and_gives_exact_nearest_rank_quantiles() -> None:
    r = RecentDurations(100)
    assert r.quantile(0.99) is None and len(r) == 0
    for i in range(1, 201):  # 1..200 ms: only 101..200 are kept
        r.observe(i / 1000)
    assert len(r) == 100
    assert r.quantile(0.5) == pytest.approx(0.150)
    assert r.quantile(0.99) == pytest.approx(0.199)
    assert r.quantile(1.0) == pytest.approx(0.200)
    assert r.quantile(0.5, last=10) == pytest.approx(0.195)  # of 191..200
    assert r.quantile(0.5, last=0) is None
    with pytest.raises(ValueError):
        RecentDurations(0)


def test_recent_quantile_is_the_nearest_rank_of_the_sorted_samples() -> None:
    # The quantile selects (a heap) rather than sorts: it must still give the sorted list's
    # nearest rank, with ties and unordered samples, for every q and window.
    rng = random.Random(7)
    for size in (1, 2, 7, 100):
        r = RecentDurations(size)
        for _ in range(3 * size):
            r.observe(rng.choice((rng.random(), 0.5)))
        kept = list(r._samples)
        for last in (None, 0, 1, 3, size, size + 5):
            window = kept if last is None else kept[len(kept) - min(last, len(kept)) :]
            for q in (0.01, 0.25, 0.5, 0.9, 0.99, 1.0):
                ordered = sorted(window)
                want = (
                    ordered[max(1, math.ceil(round(q * len(ordered), 9))) - 1] if ordered else None
                )
                assert r.quantile(q, last) == want, (size, last, q)


class _SlowSyncStorage(FileStorage):
    """A file storage whose every fsync takes at least 3 ms."""

    def sync(self) -> None:
        time.sleep(0.003)
        super().sync()


def test_the_node_times_its_fsyncs_writes_and_proposals() -> None:
    async def main() -> None:
        net = LocalNetwork()
        storage = _SlowSyncStorage("/d", [1], fs=MemoryFileSystem())
        node = RaftNode(
            1,
            "local:1",
            {1: "local:1"},
            KV(),
            None,
            FAST,
            storage=storage,
            transport_factory=net.factory(1),
        )
        assert node.status().fsync_p99 is None
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=2)
            for i in range(5):
                await node.propose(set_cmd(f"k{i}", "v"))
            st = decode_status(msgspec.msgpack.encode(node.status()))  # also on the wire
            stats = st.stats
            assert stats.fsync.count == stats.syncs >= 6
            assert stats.fsync.sum >= 0.003 * stats.syncs
            assert st.fsync_p99 is not None and st.fsync_p99 >= 0.003
            assert len(node.recent_fsync) == stats.syncs
            assert stats.wal_append.count >= 6  # each durable Ready's writes
            assert stats.proposal.count == 5  # the client writes, not the leader's no-op
            # Each proposal waited at least for its own fsync.
            assert stats.proposal.sum >= 5 * 0.003

    asyncio.run(main())
