"""A snapshot transfer between real RaftNodes survives a dropped connection and resumes from
the last acknowledged offset instead of starting over (issue: resumable InstallSnapshot).

The in-process network drops every snapshot chunk and answer for a quarter of a second once
the transfer is a third of the way through, as a broken TCP connection would (everything in
flight is lost). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from raftpy.core.messages import (
    ConfState,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    PeerMessage,
    SnapshotMeta,
)
from raftpy.core.ready import SnapshotRequest
from raftpy.node import RaftNode
from raftpy.node.snapshots import NodeSnapshots
from raftpy.node.transfer import SnapshotSender
from raftpy.storage.base import LogStore
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage
from tests.corehelpers import new_raft, new_storage
from tests.nodehelpers import FAST, KV, LocalNetwork, running, set_cmd, wait_for, wait_leader

CHUNK = 16 << 10
WINDOW = 4 * CHUNK


class DroppingNetwork(LocalNetwork):
    """Drops all snapshot traffic for ``outage`` seconds once a chunk past ``at`` bytes
    appears: what a dropped connection does to a transfer."""

    def __init__(self, at: int, outage: float) -> None:
        super().__init__()
        self.at = at
        self.outage = outage
        self.cut_until: float | None = None
        self.dropped = 0

    def deliver(self, src: int, message: PeerMessage) -> None:
        if isinstance(message, InstallSnapshot | InstallSnapshotResponse):
            now = time.monotonic()
            if (
                self.cut_until is None
                and isinstance(message, InstallSnapshot)
                and message.offset >= self.at
            ):
                self.cut_until = now + self.outage
            if self.cut_until is not None and now < self.cut_until:
                self.dropped += 1
                return
        super().deliver(src, message)


def test_transfer_resumes_after_a_dropped_connection(tmp_path: Path) -> None:
    value = "v" * 20_000
    keys = 100
    size_estimate = keys * (len(value) + 10)
    net = DroppingNetwork(at=size_estimate // 3, outage=0.25)
    config = dataclasses.replace(
        FAST,
        snapshot_entries=None,
        snapshot_bytes=None,
        snapshot_chunk_bytes=CHUNK,
        snapshot_window_bytes=WINDOW,
    )
    peers = {i: f"local:{i}" for i in (1, 2, 3)}
    nodes = [
        RaftNode(
            i, peers[i], peers, KV(), tmp_path / f"n{i}", config, transport_factory=net.factory(i)
        )
        for i in peers
    ]

    async def main() -> None:
        async with running(nodes):
            leader = await wait_leader(nodes)
            lagger = next(n for n in nodes if n is not leader)
            net.isolated.add(lagger.node_id)
            for k in range(keys):
                await leader.propose(set_cmd(f"k{k}", value))
            await leader.snapshot()
            await leader.propose(set_cmd("after", "1"))
            meta = await leader.snapshot()  # compacts the log to the first snapshot
            assert leader.status().first_index > 2
            net.isolated.clear()
            await wait_for(lambda: lagger.state_machine.data == leader.state_machine.data, 20)
            assert net.dropped > 0, "the outage never happened: the test tested nothing"
            sent = leader.status().snapshot.bytes_sent
            snaps = lagger._snaps
            assert snaps is not None
            file_size = snaps.store.size(snaps.store.latest() or meta)
            st = lagger.status().snapshot
            print(f"file {file_size} B, sent {sent} B, dropped {net.dropped} messages")
            assert st.installed == 1, st
            # Resumed, not restarted: what was resent is about the lost window, never the file.
            assert file_size < sent <= file_size + 3 * WINDOW, (sent, file_size)
            await leader.propose(set_cmd("later", "2"))
            await wait_for(lambda: lagger.state_machine.data.get("later") == "2", 5)

    asyncio.run(main())


META = SnapshotMeta(7, 2, ConfState((1, 2, 3)))


async def receive_whole(state: bytes, storage: LogStore, sm: KV) -> NodeSnapshots:
    """A follower's NodeSnapshots that received (and verified) the leader's snapshot META
    holding ``state``; the file waits to be handed to the core."""
    leader_store = SnapshotStore("/leader", fs=FaultyFileSystem(1))
    leader_store.create(META, lambda out: out.write(state))
    sent: list[PeerMessage] = []
    snaps = NodeSnapshots(
        2,
        SnapshotStore("/follower", fs=FaultyFileSystem(2)),
        storage,
        sm,
        FAST,
        sent.append,
        lambda: None,
        authority=lambda: (2, 1),  # term 2, leader 1: the sender below
    )
    request = SnapshotRequest(2, 2, META)
    with leader_store.open_source(META) as source:
        sender = SnapshotSender(1, request, source, chunk_bytes=64, window_bytes=256)
        chunks = sender.start()
        while chunks:
            for chunk in chunks:
                snaps.on_chunk(chunk)
            answers = [m for m in sent if isinstance(m, InstallSnapshotResponse)]
            sent.clear()
            chunks = [c for a in answers for c in sender.on_response(a)]
    await wait_for(lambda: bool(snaps._verified), 5)  # verified, waiting for the core
    return snaps


PEERS = (1, 2, 3)


def test_a_snapshot_verified_during_the_ready_loop_waits_for_the_core() -> None:
    """Regression: a received snapshot whose verification finishes while the node's Ready loop
    is busy waits for the core; only a file the core was given and did not take is dropped,
    and one it took waits for ``Ready.snapshot``."""

    async def main() -> None:
        snaps = await receive_whole(b"{}", MemoryStorage(list(PEERS)), KV())
        [completed] = snaps._verified
        # A core whose log already committed past the snapshot does not take it: it goes.
        holds_it = new_raft(2, PEERS, storage=new_storage(PEERS, [1] * 5 + [2] * 3, commit=8))
        snaps.feed_core(holds_it)
        assert not snaps._verified and not snaps._taken
        assert completed.sink._done, "the file the core did not take must be deleted"
        assert holds_it.log.unstable_snapshot() is None
        await snaps.close()

        snaps = await receive_whole(b"{}", MemoryStorage(list(PEERS)), KV())
        # A core that lacks it takes it: the file waits for the install.
        lacks_it = new_raft(2, PEERS)
        snaps.feed_core(lacks_it)
        assert not snaps._verified and list(snaps._taken) == [(META.index, META.term)]
        assert lacks_it.log.unstable_snapshot() == META
        await snaps.close()

    asyncio.run(main())


def test_install_waits_for_disk_space_instead_of_crashing_the_node() -> None:
    """A full disk while recording an installed snapshot parks the install until space is
    free (nothing is acknowledged meanwhile), as the node does for any write."""

    async def main() -> None:
        wal_fs = FaultyFileSystem(3)
        storage = FileStorage("/wal", [1, 2, 3], fs=wal_fs, segment_size=4096)
        # Fill the segment (4,083 of 4,096 bytes), so recording the snapshot needs a new one.
        storage.append([Entry(1, 1, EntryKind.COMMAND, b"x" * 3990)])
        storage.sync()
        sm = KV()
        snaps = await receive_whole(b'{"k": "v"}', storage, sm)
        snaps.feed_core(new_raft(2, PEERS))  # the core takes it
        wal_fs.set_capacity(wal_fs.used_bytes())  # the disk is full now
        install = asyncio.ensure_future(snaps.install(META))
        await asyncio.sleep(0.5)
        assert not install.done(), "the install went on without a durable record"
        wal_fs.set_capacity(None)
        await asyncio.wait_for(install, 5)
        assert storage.snapshot_meta() == META and storage.first_index() == 8
        assert sm.data == {"k": "v"}
        await snaps.close()
        storage.close()

    asyncio.run(main())
