"""Snapshots end to end: three hashmap servers as real processes on 127.0.0.1.

A follower is killed, 20,000 keys are written through the other two, and the leader must keep
its write-ahead log small by snapshotting and compacting (whole 256 KiB segments deleted). The
follower then restarts behind the leader's compacted log, so it can only catch up through a
snapshot streamed from the leader, and must end with exactly the leader's data.

Every wait is bounded; every process is killed when the test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from raftpy.client import Client, SyncClient
from raftpy.errors import IndeterminateError, RaftError
from raftpy.examples.hashmap import AsyncHashMapClient
from raftpy.node.status import NodeStatus
from tests.examples.test_examples_process import leader_of
from tests.processhelpers import ProcessCluster, wait_until

pytestmark = pytest.mark.timeout(120)

KEYS = 20_000
SNAPSHOT_ENTRIES = 1_000
SEGMENT = 256 << 10
# Values of about 520 bytes: the 20,000 entries (about 11 MB) are far more than the leader's
# per-follower window of unacknowledged appends (``max_inflight_bytes``, 2 MiB). The appends it
# queued for the dead follower before the window filled reach it after the restart; everything
# past them is long compacted away, so the rest must come from a snapshot.
PAD = "x" * 500


def value(i: int) -> str:
    return f"v{i}-{PAD}"


def key(i: int) -> str:
    return f"k{i:05d}"


def wal_bytes(data_dir: Path) -> int:
    """Bytes of the write-ahead log segments in ``data_dir`` (not ``snapshots/``)."""
    total = 0
    for name in os.listdir(data_dir):
        if name.endswith(".wal"):
            # A segment may be deleted by compaction between listdir and stat.
            with contextlib.suppress(FileNotFoundError):
                total += (data_dir / name).stat().st_size
    return total


class WalSampler:
    """Samples a data dir's WAL size every few milliseconds in a thread; remembers the peak."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, wal_bytes(self.data_dir))
            self.samples += 1
            self._stop.wait(0.005)

    def __enter__(self) -> WalSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def write_keys(addresses: list[str], keys: range) -> None:
    """Put ``keys`` through ``addresses``, 256 writes in flight at a time. A put whose
    outcome is unknown (a leader change on a loaded machine) is sent again: putting the same
    value twice is harmless."""
    async with AsyncHashMapClient(addresses, timeout=30) as client:
        todo = iter(keys)

        async def worker() -> None:
            for i in todo:
                for _ in range(5):
                    try:
                        previous = await client.put(key(i), value(i))
                    except IndeterminateError:
                        continue
                    assert previous in (None, value(i)), previous
                    break
                else:
                    raise AssertionError(f"put {key(i)}: outcome unknown five times")

        async with asyncio.timeout(60):
            await asyncio.gather(*(worker() for _ in range(256)))


async def read_all_stale(address: str) -> dict[str, str | None]:
    """Every key (and one never written) as the node at ``address`` alone holds it."""
    names = [key(i) for i in range(KEYS + 1)]
    out: dict[str, str | None] = {}
    async with Client([address], timeout=20) as client:
        todo = iter(names)

        async def worker() -> None:
            for k in todo:
                out[k] = json.loads(await client.query(k.encode(), consistency="stale"))

        async with asyncio.timeout(30):
            await asyncio.gather(*(worker() for _ in range(128)))
    return out


def taken(address: str) -> int:
    """How many snapshots the node at ``address`` has taken (0 when it does not answer)."""
    st = status(address)
    return st.snapshot.taken if st is not None and st.snapshot is not None else 0


def status(address: str) -> NodeStatus | None:
    """The status of the node at ``address``; None when it does not answer in 2 s."""
    try:
        with SyncClient([address], timeout=2.0) as client:
            return client.status(address)
    except RaftError:
        return None


def test_compaction_and_catch_up_by_snapshot(tmp_path: Path) -> None:
    extra = ["--snapshot-entries", str(SNAPSHOT_ENTRIES), "--segment-size", str(SEGMENT)]
    extra += ["--election-ticks", "50"]  # 1 s: no spurious elections on a loaded machine
    # One snapshot per interval, however large the map grows (the pacing by snapshot size
    # would space the later ones out; tests/node/test_node_snapshots.py covers it).
    extra += ["--snapshot-ratio", "0"]
    with ProcessCluster("hashmap", 3, tmp_path, extra=extra).start_all() as c:
        leader = leader_of(c)
        follower = next(i for i in range(1, 4) if i != leader)
        c.kill(follower)
        live = [c.address(i) for i in range(1, 4) if i != follower]
        leader_dir = tmp_path / f"data{leader}"

        started = time.monotonic()
        with WalSampler(leader_dir) as sampler:
            # One snapshot interval at a time, each followed by the snapshot it makes due: on
            # a busy machine a slow snapshot would otherwise cover several intervals at once,
            # and how many snapshots there are would depend on the machine's speed.
            for r in range(KEYS // SNAPSHOT_ENTRIES):
                asyncio.run(
                    write_keys(live, range(r * SNAPSHOT_ENTRIES, (r + 1) * SNAPSHOT_ENTRIES))
                )
                wait_until(
                    lambda r=r: taken(c.address(leader)) >= r + 1,
                    30,
                    f"node {leader}'s snapshot {r + 1}",
                )
        write_seconds = time.monotonic() - started

        # Wait for the leader's last automatic snapshot: fewer than SNAPSHOT_ENTRIES applied
        # since it, so no other is due. The status shows a snapshot only together with the
        # compaction that goes with it (both happen in one step of the node's event loop).
        answers: list[NodeStatus] = []

        def settled() -> bool:
            st = status(c.address(leader))
            if st is None:
                return False
            answers.append(st)
            snap = st.snapshot
            return (
                snap is not None
                and st.applied is not None
                and st.applied >= KEYS + 1
                and st.applied - snap.index < SNAPSHOT_ENTRIES
            )

        wait_until(settled, 10, "the leader's last automatic snapshot")
        last = answers[-1]
        after = wal_bytes(leader_dir)
        assert last.snapshot is not None and last.first_index is not None
        assert last.snapshot.taken >= KEYS // SNAPSHOT_ENTRIES - 1, last
        # Compacted to the previous snapshot: the log starts one interval before the newest.
        assert 1 < last.first_index <= last.snapshot.index + 1, last
        assert sampler.samples > 10
        assert sampler.peak > after, (sampler.peak, after)
        # Far less than the 11 MB written: the segments below the compaction point are gone.
        assert after < 8 * SEGMENT, after
        segments = sorted(p.name for p in leader_dir.glob("*.wal"))
        assert int(segments[0].removesuffix(".wal"), 16) > 1, segments  # segment 1 deleted
        snaps = sorted((leader_dir / "snapshots").glob("*.snap"))
        assert snaps, "no snapshot file in the leader's data dir"
        assert f"{last.snapshot.index:020d}-" in snaps[-1].name, snaps

        # The follower comes back behind the leader's compacted log.
        restarted = time.monotonic()
        c.start(follower)
        address = c.address(follower)

        def caught_up() -> bool:
            st = status(address)
            snap = None if st is None else st.snapshot
            return (
                st is not None
                and snap is not None
                and snap.installed >= 1
                and (st.applied or 0) >= KEYS + 1
            )

        wait_until(caught_up, 30, f"node {follower} to catch up by a snapshot")
        catch_up_seconds = time.monotonic() - restarted
        # Some leader streamed it (the first one, unless leadership moved meanwhile).
        sent = [(st.snapshot.sent if st and st.snapshot else 0) for st in map(status, live)]
        assert sum(sent) >= 1, sent

        # Its own state, read from it alone (stale reads are answered locally).
        read = asyncio.run(read_all_stale(address))
        missing = [k for k in (key(i) for i in range(KEYS)) if read[k] is None]
        assert not missing, f"{len(missing)} keys missing, e.g. {missing[:5]}"
        wrong = [i for i in range(KEYS) if read[key(i)] != value(i)]
        assert not wrong, f"{len(wrong)} wrong values, e.g. {wrong[:5]}"
        assert read[key(KEYS)] is None  # never written
        print(
            f"writes {write_seconds:.1f}s, WAL peak {sampler.peak} B -> {after} B, "
            f"catch-up {catch_up_seconds:.1f}s"
        )
