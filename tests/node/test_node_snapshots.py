"""Snapshots in a running RaftNode (Raft §7) over an in-process network, with real data dirs:
automatic snapshots and compaction, InstallSnapshot to a lagging follower, restart from a
snapshot plus the log tail, snapshots taken off the loop (with and without
``prepare_snapshot``), the operator's snapshot, the start-up rules of
``NodeSnapshots.recover`` and a received snapshot that fails verification.

Every wait is bounded (``wait_for``, ``asyncio.timeout``, ``threading.Event.wait(timeout)``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import msgspec
import pytest

from raftpy.core.messages import SnapshotMeta
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.session_machine import with_sessions
from raftpy.node.status import NodeStatus, SnapshotStatus
from raftpy.statemachine import ConcurrentSnapshot, StateMachine
from raftpy.storage.errors import CorruptSnapshotError, StorageError
from raftpy.storage.snapshots import SnapshotSink, SnapshotStore, snapshot_file_name
from raftpy.transport.protocol import ClientOp, ClientRequest, ClientResponse
from tests.nodehelpers import FAST, KV, LocalNetwork, running, set_cmd, wait_for, wait_leader

SNAP = dataclasses.replace(
    FAST,
    snapshot_entries=50,
    snapshot_bytes=None,
    segment_size=8192,
    snapshot_chunk_bytes=512,
    snapshot_window_bytes=2048,
)
"""Small settings: a snapshot every 50 applied entries, many small segments and chunks."""

MANUAL = dataclasses.replace(SNAP, snapshot_entries=None, snapshot_bytes=None)
"""No automatic snapshots: only the operator's (``node.snapshot()``)."""

PEERS3 = {i: f"local:{i}" for i in (1, 2, 3)}
PEERS1 = {1: "local:1"}


def kv(node: RaftNode) -> dict[str, str]:
    sm = node.state_machine
    assert isinstance(sm, KV)
    return sm.data


def snap_dir(data_dir: Path) -> Path:
    return data_dir / "snapshots"


def snap_files(data_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(snap_dir(data_dir)) if n.endswith(".snap"))


def node_at(
    net: LocalNetwork,
    base: Path,
    node_id: int,
    peers: dict[int, str],
    config: NodeConfig = SNAP,
    sm: StateMachine | None = None,
) -> RaftNode:
    return RaftNode(
        node_id,
        peers[node_id],
        peers,
        KV() if sm is None else sm,
        base / f"n{node_id}",
        config,
        transport_factory=net.factory(node_id),
    )


def cluster(
    net: LocalNetwork,
    base: Path,
    config: NodeConfig = SNAP,
    make_sm: Callable[[], StateMachine] = KV,
) -> list[RaftNode]:
    return [node_at(net, base, i, PEERS3, config, make_sm()) for i in PEERS3]


class CountingKV(KV):
    """A KV that also counts its applies in its state (key ``#n``): unlike ``set``, applying
    an entry twice shows (for tests)."""

    def apply(self, command: bytes) -> bytes:
        result = super().apply(command)
        self.data["#n"] = str(int(self.data.get("#n", "0")) + 1)
        return result


def counted(keys: range) -> dict[str, str]:
    """The state of a CountingKV after ``set k<i> = i`` for each i, each applied once."""
    return {**expected(keys), "#n": str(len(keys))} if len(keys) else {}


def snapshot_status(node: RaftNode) -> SnapshotStatus:
    st = node.status().snapshot
    assert st is not None, f"node {node.node_id} has no snapshot: {node.status()}"
    return st


def snapshotting(node: RaftNode) -> bool:
    """A snapshot of ``node`` is being written (private state: tests only)."""
    snaps = node._snaps
    return snaps is not None and snaps.busy


def store_of(node: RaftNode) -> SnapshotStore:
    snaps = node._snaps
    assert snaps is not None
    return snaps.store


def snap_index(node: RaftNode) -> int:
    st = node.status().snapshot
    return 0 if st is None else int(st.index)


async def write(leader: RaftNode, keys: range, batch: int = 10, prefix: str = "k") -> None:
    """Propose ``set prefix<i> = i`` for each i, ``batch`` at a time; every one must succeed."""
    items = list(keys)
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        results = await asyncio.gather(
            *(leader.propose(set_cmd(f"{prefix}{i}", str(i)), timeout=5) for i in chunk)
        )
        assert results == [b""] * len(chunk)


def expected(keys: range, prefix: str = "k") -> dict[str, str]:
    return {f"{prefix}{i}": str(i) for i in keys}


def restore_kv(store: SnapshotStore, meta: SnapshotMeta) -> dict[str, str]:
    """The state a fresh KV gets from the stored snapshot ``meta`` (the node's session table
    comes first in the body: a node restores it beside the user's state)."""
    fresh = KV()
    with store.open_body(meta) as body:
        with_sessions(fresh).restore(body)
    return fresh.data


async def cut_off_past_compaction(
    net: LocalNetwork, nodes: list[RaftNode]
) -> tuple[RaftNode, RaftNode, int]:
    """Cut a follower off until the leader compacted past everything it holds (only a
    snapshot can then catch it up); returns ``(leader, follower, the follower's last index)``,
    the follower still cut off."""
    leader = await wait_leader(nodes)
    await write(leader, range(10))
    lagger = next(n for n in nodes if n is not leader)
    await wait_for(lambda: len(kv(lagger)) == 10)
    lagger_last = lagger.status().last_index
    net.isolated.add(lagger.node_id)
    await write(leader, range(10, 300))
    await wait_for(lambda: leader.status().first_index > lagger_last + 1, timeout=5)
    return leader, lagger, lagger_last


async def single_leader(node: RaftNode) -> None:
    await wait_for(lambda: node.role.value == "leader", timeout=3)


async def populate_single(
    base: Path, n: int = 150, config: NodeConfig = SNAP
) -> tuple[NodeStatus, dict[str, str]]:
    """Run a one-member node with a data dir, write ``n`` keys, stop it. Returns its last
    status and its state."""
    net = LocalNetwork()
    node = node_at(net, base, 1, PEERS1, config)
    async with node:
        await single_leader(node)
        await write(node, range(n))
        # Let the snapshot that the last writes may have started finish (compaction included).
        await wait_for(lambda: not snapshotting(node), timeout=5)
        status = node.status()
        state = dict(kv(node))
    return status, state


# ----------------------------------------------------------------------------------------------
# Automatic snapshots, compaction, InstallSnapshot, restart
# ----------------------------------------------------------------------------------------------


def test_automatic_snapshots_compact_the_log_to_the_previous_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path)) as nodes:
            leader = await wait_leader(nodes)
            await write(leader, range(300))
            await wait_for(lambda: snap_index(leader) >= 250, timeout=5)
            await wait_for(lambda: not snapshotting(leader), timeout=5)
            st = leader.status()
            snap = snapshot_status(leader)
            assert snap.taken >= 5, snap
            # Compacted, but to the previous snapshot: one interval of entries stays behind
            # the newest one for followers that lag a little.
            assert st.first_index > 1
            assert st.first_index <= snap.index, (st.first_index, snap)
            assert st.first_index >= 100, st.first_index
            files = snap_files(tmp_path / f"n{leader.node_id}")
            assert 1 <= len(files) <= 2, files
            store = store_of(leader)
            newest = store.latest()
            assert newest is not None and (newest.index, newest.term) == (
                snap.index,
                snap.term,
            )
            assert snapshot_file_name(newest) in files
            # The other file kept is the one the log is compacted to, an interval behind.
            wal_index = st.first_index - 1
            assert [f for f in files if int(f[:20]) == wal_index], (wal_index, files)
            assert newest.index - wal_index >= 50
            # The newest file holds exactly the state at its index: a prefix of the writes
            # (the keys are written in order, so it is k0..k(m-1) for some m).
            state = restore_kv(store, newest)
            m = len(state)
            assert 200 <= m <= 300 and state == expected(range(m))
            # Every node snapshots and compacts on its own.
            for n in nodes:
                await wait_for(lambda n=n: snap_index(n) >= 200, timeout=5)  # type: ignore[misc]
                await wait_for(lambda n=n: kv(n) == expected(range(300)), timeout=5)  # type: ignore[misc]
                assert n.status().first_index > 1
                # A new file is named before the old ones are deleted (crash safety): count
                # once the snapshot task, retention included, is done.
                await wait_for(
                    lambda n=n: (  # type: ignore[misc]
                        not snapshotting(n) and len(snap_files(tmp_path / f"n{n.node_id}")) <= 2
                    ),
                    timeout=5,
                )

    asyncio.run(main())


def test_cut_off_follower_catches_up_by_installing_a_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path)) as nodes:
            leader, lagger, lagger_last = await cut_off_past_compaction(net, nodes)
            assert snap_index(lagger) == 0
            net.isolated.clear()
            await wait_for(lambda: kv(lagger) == expected(range(300)), timeout=10)
            st = snapshot_status(lagger)
            assert st.installed >= 1, st
            assert snapshot_status(leader).sent >= 1
            assert st.index > lagger_last
            # The installed file is stored and is the only one the follower keeps.
            lag_dir = tmp_path / f"n{lagger.node_id}"
            assert snap_files(lag_dir), "the installed snapshot has no file"
            assert not [n for n in os.listdir(snap_dir(lag_dir)) if n.endswith(".partial")]
            # Writes keep working and reach every node, the caught-up one included.
            leader = await wait_leader(nodes)
            await write(leader, range(300, 320))
            await wait_for(lambda: all(kv(n) == expected(range(320)) for n in nodes), timeout=5)
            assert kv(lagger) == kv(leader)

    asyncio.run(main())


def test_restart_of_all_nodes_from_snapshot_and_log_tail(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        before: dict[int, int] = {}
        async with running(cluster(net, tmp_path, make_sm=CountingKV)) as nodes:
            leader = await wait_leader(nodes)
            await write(leader, range(230))  # every one acknowledged
            for n in nodes:
                await wait_for(lambda n=n: snap_index(n) >= 150, timeout=5)  # type: ignore[misc]
                await wait_for(lambda n=n: not snapshotting(n), timeout=5)  # type: ignore[misc]
                before[n.node_id] = snap_index(n)
                assert n.status().first_index > 1
        # Start all again from disk, with empty state machines.
        net = LocalNetwork()
        nodes = cluster(net, tmp_path, make_sm=CountingKV)
        try:
            for n in nodes:
                await n.start()
                st = n.status()
                # The state machine starts from the newest snapshot, not from the WAL's
                # (older) one, and the core starts applying after it.
                assert st.snapshot is not None and st.snapshot.index == before[n.node_id]
                assert st.applied >= before[n.node_id]
                assert st.first_index > 1
                data = kv(n)
                m = int(data["#n"])
                assert m >= before[n.node_id] - 10  # a few no-op entries at most
                assert data == counted(range(m))
            leader = await wait_leader(nodes)
            # No acknowledged write is lost and none is applied twice: the tail of the log
            # is applied on top of the snapshot, once.
            await wait_for(lambda: all(kv(n) == counted(range(230)) for n in nodes), timeout=5)
            await write(leader, range(230, 240))
            await wait_for(lambda: all(kv(n) == counted(range(240)) for n in nodes), timeout=5)
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())


def test_restart_from_a_snapshot_the_log_still_covers_applies_only_the_rest(
    tmp_path: Path,
) -> None:
    """A first snapshot compacts nothing: on restart the log still holds the entries the
    snapshot covers, and they must not be applied again on top of it."""

    async def main() -> None:
        sm = CountingKV()
        node = node_at(LocalNetwork(), tmp_path, 1, PEERS1, MANUAL, sm)
        async with node:
            await single_leader(node)
            await write(node, range(40))
            meta = await asyncio.wait_for(node.snapshot(), 5)
            await write(node, range(40, 50))
            assert node.status().first_index == 1
        sm = CountingKV()
        node = node_at(LocalNetwork(), tmp_path, 1, PEERS1, MANUAL, sm)
        async with node:
            st = node.status()
            assert st.snapshot.index == meta.index
            assert st.applied >= meta.index and st.first_index == 1
            assert sm.data == counted(range(40))  # restored, nothing replayed yet
            await single_leader(node)
            await wait_for(lambda: len(sm.data) == 51, timeout=5)
            assert await node.propose(set_cmd("last", "x"), timeout=5) == b""
            assert sm.data == {**counted(range(50)), "last": "x", "#n": "51"}

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# Taking snapshots off the loop: held applies vs prepare_snapshot
# ----------------------------------------------------------------------------------------------


class SlowKV(KV):
    """A KV without prepare_snapshot whose snapshot() takes a while in the worker thread (at
    least ``delay`` seconds, and until ``release`` is set, bounded) and reads the state only at
    its end; apply() records if it ran meanwhile (for tests)."""

    def __init__(self, delay: float = 0.3) -> None:
        super().__init__()
        self.delay = delay
        self.in_snapshot = threading.Event()
        self.release = threading.Event()
        self.applied_during_snapshot: list[bytes] = []
        self.order: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        if self.in_snapshot.is_set():
            self.applied_during_snapshot.append(command)
        self.order.append(command)
        return super().apply(command)

    def snapshot(self, out: BinaryIO) -> None:
        assert threading.current_thread() is not threading.main_thread()
        self.in_snapshot.set()
        try:
            time.sleep(self.delay)
            if not self.release.wait(timeout=10):
                raise TimeoutError("the test never released the snapshot")
            out.write(json.dumps(self.data).encode())  # the state as it is now
        finally:
            self.in_snapshot.clear()


class CopyKV(KV):
    """A KV with prepare_snapshot: copies its dict on the loop; the writer blocks until
    ``release`` is set (bounded), then writes the copy (for tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.writer_started = threading.Event()
        self.release = threading.Event()
        self.writer_done = threading.Event()
        self.prepared = 0

    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        assert threading.current_thread() is threading.main_thread()
        self.prepared += 1
        copy = dict(self.data)

        def write(out: BinaryIO) -> None:
            self.writer_started.set()
            try:
                if not self.release.wait(timeout=10):
                    raise TimeoutError("the test never released the snapshot writer")
                out.write(json.dumps(copy).encode())
            finally:
                self.writer_done.set()

        return write

    def snapshot(self, out: BinaryIO) -> None:
        raise AssertionError("a ConcurrentSnapshot state machine is snapshotted via prepare")


def test_slow_snapshot_without_prepare_holds_applies_and_keeps_proposals_in_order(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        net = LocalNetwork()
        sm = SlowKV(delay=0.3)
        node = node_at(net, tmp_path, 1, PEERS1, MANUAL, sm)
        assert not isinstance(sm, ConcurrentSnapshot)
        try:
            async with node:
                await single_leader(node)
                for i in range(20):
                    await node.propose(set_cmd("c", str(i)), timeout=5)
                await write(node, range(30))
                # The leader records its address in the membership once (one CONFIG entry):
                # wait for it, so no entry but the test's own is applied from here on.
                await wait_for(lambda: bool(node.members().addresses), timeout=3)
                applied_before = node.status().applied
                state_before = dict(sm.data)
                snap = asyncio.ensure_future(node.snapshot())
                await wait_for(sm.in_snapshot.is_set, timeout=3)
                # Proposals issued while snapshot() reads the state: appended and committed,
                # but applied only once the file is written, in the order they were proposed.
                futs = [node.submit(set_cmd("c", str(i)), timeout=10) for i in range(20, 60)]
                await wait_for(lambda: node.status().commit >= applied_before + 40, timeout=3)
                assert node.status().applied == applied_before
                assert sm.in_snapshot.is_set() and not any(f.done() for f in futs)
                # A read issued now must see the committed writes, not the frozen state.
                read = node.submit_query(b"c", "linearizable", timeout=10)
                sm.release.set()
                meta = await asyncio.wait_for(snap, 5)
                results = await asyncio.wait_for(asyncio.gather(*futs), 5)
                assert results == [str(i - 1).encode() for i in range(20, 60)]
                assert await asyncio.wait_for(read, 5) == b"59"
                assert sm.applied_during_snapshot == [], "apply ran while snapshot() read state"
                assert sm.order[-40:] == [set_cmd("c", str(i)) for i in range(20, 60)]
                # The snapshot holds the state at its index: before any held proposal.
                assert meta.index == applied_before
                assert node.status().applied == applied_before + 40
                store = store_of(node)
                assert restore_kv(store, meta) == state_before
                assert state_before == {"c": "19", **expected(range(30))}
        finally:
            sm.release.set()  # never leave a worker thread blocked (asyncio.run joins it)

    asyncio.run(main())


def test_slow_writer_with_prepare_snapshot_does_not_hold_applies(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        sm = CopyKV()
        node = node_at(net, tmp_path, 1, PEERS1, MANUAL, sm)
        assert isinstance(sm, ConcurrentSnapshot)
        try:
            async with node:
                await single_leader(node)
                await write(node, range(30))
                # The leader records its address in the membership once (one CONFIG entry):
                # wait for it, so no entry but the test's own is applied from here on.
                await wait_for(lambda: bool(node.members().addresses), timeout=3)
                applied_before = node.status().applied
                state_before = dict(sm.data)
                snap = asyncio.ensure_future(node.snapshot())
                started = await asyncio.to_thread(sm.writer_started.wait, 3)
                assert started, "the snapshot writer never ran"
                # The writer is blocked: proposals and reads still complete.
                await asyncio.wait_for(write(node, range(30, 60)), 5)
                assert await node.query(b"k59", timeout=5) == b"59"
                assert not sm.writer_done.is_set() and not snap.done()
                assert node.status().applied >= applied_before + 30
                sm.release.set()
                meta = await asyncio.wait_for(snap, 5)
                assert sm.prepared == 1
                assert meta.index == applied_before
                store = store_of(node)
                assert restore_kv(store, meta) == state_before == expected(range(30))
                assert sm.data == expected(range(60))
        finally:
            sm.release.set()  # never leave a worker thread blocked (asyncio.run joins it)

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# The operator's snapshot
# ----------------------------------------------------------------------------------------------


class RecordingConn:
    def __init__(self) -> None:
        self.answers: list[ClientResponse] = []

    def respond(self, response: ClientResponse) -> None:
        self.answers.append(response)


def test_operator_snapshot_returns_the_applied_index_and_is_idempotent(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path, MANUAL)) as nodes:
            leader = await wait_leader(nodes)
            await write(leader, range(40))
            meta = await asyncio.wait_for(leader.snapshot(), 5)
            st = leader.status()
            assert meta.index == st.applied == st.commit
            assert meta.term == st.term
            assert snapshot_status(leader).index == meta.index
            assert snapshot_status(leader).taken == 1
            dir_ = tmp_path / f"n{leader.node_id}"
            assert snap_files(dir_) == [snapshot_file_name(meta)]
            assert restore_kv(store_of(leader), meta) == expected(range(40))
            # Nothing new applied: the same snapshot again, no new file.
            again = await asyncio.wait_for(leader.snapshot(), 5)
            assert again == meta
            assert snapshot_status(leader).taken == 1
            # The first snapshot compacts nothing (there is no previous one to compact to).
            assert leader.status().first_index == 1

            # Through the client protocol (what `raftpy snapshot ADDRESS` sends).
            await write(leader, range(40, 50))
            conn = RecordingConn()
            leader._service.handle(conn, ClientRequest(7, ClientOp.SNAPSHOT))
            await wait_for(lambda: bool(conn.answers), timeout=5)
            (answer,) = conn.answers
            assert answer.id == 7 and answer.status.value == "ok", answer
            assert answer.result is not None
            decoded = msgspec.msgpack.decode(answer.result)
            st = leader.status()
            assert decoded == {"index": st.applied, "term": st.term}
            assert decoded["index"] > meta.index
            assert snapshot_status(leader).index == decoded["index"]
            # The second snapshot compacts the log to the first one.
            assert leader.status().first_index == meta.index + 1
            conn2 = RecordingConn()
            leader._service.handle(conn2, ClientRequest(8, ClientOp.SNAPSHOT))
            await wait_for(lambda: bool(conn2.answers), timeout=5)
            (answer2,) = conn2.answers
            assert answer2.result is not None
            assert msgspec.msgpack.decode(answer2.result) == decoded
            # A follower takes its own snapshot too.
            follower = next(n for n in nodes if n is not leader)
            await wait_for(lambda: follower.status().applied == st.applied, timeout=5)
            fmeta = await asyncio.wait_for(follower.snapshot(), 5)
            assert fmeta.index == follower.status().applied

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# Start-up: NodeSnapshots.recover()
# ----------------------------------------------------------------------------------------------


def wal_snapshot_index(status: NodeStatus) -> int:
    return int(status.first_index) - 1


def test_recover_refuses_a_log_compacted_to_a_missing_snapshot_file(tmp_path: Path) -> None:
    async def main() -> None:
        status, state = await populate_single(tmp_path)
        wal_index = wal_snapshot_index(status)
        assert wal_index > 0
        sdir = snap_dir(tmp_path / "n1")
        saved = tmp_path / "saved"
        shutil.copytree(sdir, saved)
        for name in snap_files(tmp_path / "n1"):
            os.unlink(sdir / name)
        net = LocalNetwork()
        node = node_at(net, tmp_path, 1, PEERS1)
        with pytest.raises(StorageError) as info:
            await node.start()
        message = str(info.value)
        assert str(wal_index) in message and str(sdir) in message, message
        # The failed start released the data dir: put the files back and it starts.
        for name in os.listdir(saved):
            shutil.copy(saved / name, sdir / name)
        node = node_at(net, tmp_path, 1, PEERS1)
        async with node:
            await single_leader(node)
            await wait_for(lambda: kv(node) == state, timeout=5)

    asyncio.run(main())


def test_recover_uses_a_newer_snapshot_when_the_wal_one_is_gone(tmp_path: Path) -> None:
    async def main() -> None:
        status, state = await populate_single(tmp_path)
        wal_index = wal_snapshot_index(status)
        newest = status.snapshot.index
        assert 0 < wal_index < newest
        sdir = snap_dir(tmp_path / "n1")
        (wal_file,) = [n for n in snap_files(tmp_path / "n1") if int(n[:20]) == wal_index]
        os.unlink(sdir / wal_file)
        net = LocalNetwork()
        node = node_at(net, tmp_path, 1, PEERS1)
        async with node:
            st = node.status()
            assert st.snapshot.index == newest
            assert st.applied >= newest
            # The log is compacted to the snapshot that has a file.
            assert st.first_index == newest + 1
            await single_leader(node)
            await wait_for(lambda: kv(node) == state, timeout=5)

    asyncio.run(main())


def flip_body_byte(path: Path, find: bytes, replace: bytes) -> None:
    """Change the first ``find`` in the body of the snapshot file at ``path`` (same length)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(find, 40)  # past the header
    assert at > 0 and len(find) == len(replace)
    raw[at : at + len(find)] = replace
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param((b'"k1"', b'"k2"'), id="body-still-decodes"),
        pytest.param((b'"k1"', b'"k1{'), id="body-garbled"),
    ],
)
def test_recover_refuses_a_corrupt_snapshot_file(
    tmp_path: Path, damage: tuple[bytes, bytes]
) -> None:
    async def main() -> None:
        status, _ = await populate_single(tmp_path)
        newest = status.snapshot.index
        (name,) = [n for n in snap_files(tmp_path / "n1") if int(n[:20]) == newest]
        path = snap_dir(tmp_path / "n1") / name
        flip_body_byte(path, *damage)
        node = node_at(LocalNetwork(), tmp_path, 1, PEERS1)
        with pytest.raises(CorruptSnapshotError) as info:
            await node.start()
        assert str(path) in str(info.value)
        assert info.value.file == str(path)

    asyncio.run(main())


def test_recover_deletes_newer_snapshot_files_the_log_does_not_vouch_for(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        status, state = await populate_single(tmp_path)
        newest = status.snapshot.index
        term = status.snapshot.term
        store = SnapshotStore(snap_dir(tmp_path / "n1"))
        latest = store.latest()
        assert latest is not None and latest.index == newest
        conf = latest.conf
        kept = snap_files(tmp_path / "n1")
        bogus_state = json.dumps({"bogus": "1"}).encode()

        def body(out: BinaryIO) -> None:
            out.write(bogus_state)

        # Well-formed files the log does not vouch for: past its end, and at a committed index
        # with another term than the log's entry there.
        past = SnapshotMeta(status.last_index + 100, term, conf)
        wrong_term = SnapshotMeta(status.commit, term + 5, conf)
        for meta in (past, wrong_term):
            store.create(meta, body)
        assert len(snap_files(tmp_path / "n1")) == len(kept) + 2
        node = node_at(LocalNetwork(), tmp_path, 1, PEERS1)
        async with node:
            assert snap_files(tmp_path / "n1") == kept
            assert node.status().snapshot.index == newest
            assert "bogus" not in kv(node)
            await single_leader(node)
            await wait_for(lambda: kv(node) == state, timeout=5)

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# A received snapshot that fails verification
# ----------------------------------------------------------------------------------------------


def test_received_snapshot_failing_verification_is_rejected_then_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = SnapshotSink.finish
    calls: list[str] = []
    lock = threading.Lock()

    def flaky_finish(self: SnapshotSink) -> SnapshotMeta:
        with lock:
            calls.append(self.path)
            first = len(calls) == 1
        if first:
            raise CorruptSnapshotError(self.path, 0, "injected by the test")
        return real_finish(self)

    monkeypatch.setattr(SnapshotSink, "finish", flaky_finish)

    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path)) as nodes:
            leader, lagger, _ = await cut_off_past_compaction(net, nodes)
            net.isolated.clear()
            await wait_for(lambda: kv(lagger) == expected(range(300)), timeout=10)
            assert len(calls) >= 2, calls  # rejected once, then a later transfer succeeded
            assert snapshot_status(lagger).installed >= 1
            assert snapshot_status(leader).sent >= 2
            # The rejected file was deleted, not kept or installed.
            lag_dir = snap_dir(tmp_path / f"n{lagger.node_id}")
            assert not os.path.exists(calls[0])
            assert not [n for n in os.listdir(lag_dir) if n.endswith(".partial")]
            leader = await wait_leader(nodes)
            await write(leader, range(300, 310))
            await wait_for(lambda: kv(lagger) == expected(range(310)), timeout=5)

    asyncio.run(main())


def test_recover_deletes_a_copied_snapshot_file_under_a_newer_name(tmp_path: Path) -> None:
    async def main() -> None:
        status, state = await populate_single(tmp_path)
        kept = snap_files(tmp_path / "n1")
        sdir = snap_dir(tmp_path / "n1")
        term = status.snapshot.term
        # Copies of the newest file under names the log does not vouch for: past its end, and
        # at a committed index with another term.
        for index, t in ((status.last_index + 100, term), (status.commit, term + 5)):
            shutil.copy(sdir / kept[-1], sdir / f"{index:020d}-{t:020d}.snap")
        node = node_at(LocalNetwork(), tmp_path, 1, PEERS1)
        async with node:
            assert snap_files(tmp_path / "n1") == kept
            assert node.status().snapshot.index == status.snapshot.index
            await single_leader(node)
            await wait_for(lambda: kv(node) == state, timeout=5)

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# Pacing by the previous snapshot's size (snapshot_ratio)
# ----------------------------------------------------------------------------------------------

PAD = 20_000  # characters of state besides the keys written: each snapshot is about 20 KB


def padded_kv() -> KV:
    sm = KV()
    sm.data["pad"] = "x" * PAD
    return sm


def test_snapshot_ratio_spaces_snapshots_of_a_large_state_by_its_size(tmp_path: Path) -> None:
    """Thesis §5.1.2: with ``snapshot_ratio`` the next snapshot waits until the log written
    since the last one reaches that fraction of its size, as well as ``snapshot_entries``.
    Here each entry adds about 44 bytes of log (command and framing) and a snapshot is about
    20 KB, so at a ratio of 0.5 the snapshots come about 230 entries apart, not 50; a small
    state (no padding) still snapshots every 50 entries. After a restart the size of the
    snapshot it starts from paces the next one too."""

    async def run(
        base: Path, ratio: float | None, pad: bool, n: int, prefix: str = "k"
    ) -> list[int]:
        config = dataclasses.replace(SNAP, snapshot_ratio=ratio)
        node = node_at(LocalNetwork(), base, 1, PEERS1, config, padded_kv() if pad else KV())
        taken: list[int] = []
        async with node:
            await single_leader(node)
            for start in range(0, n, 10):
                await write(node, range(start, start + 10), prefix=prefix)
                await wait_for(lambda: not snapshotting(node), timeout=5)
                index = snap_index(node)
                if index and (not taken or taken[-1] != index):
                    taken.append(index)
        return taken

    async def main() -> None:
        paced = await run(tmp_path / "paced", 0.5, pad=True, n=600)
        assert paced, "no snapshot taken"
        assert paced[0] <= 70, paced  # the first: nothing to pace it by
        gaps = [b - a for a, b in itertools.pairwise(paced)]
        assert gaps and all(200 <= g <= 300 for g in gaps), paced
        # Without the ratio, or with a small state, snapshot_entries alone sets the pace.
        for base, ratio, pad in ((tmp_path / "off", None, True), (tmp_path / "small", 0.5, False)):
            every = await run(base, ratio, pad=pad, n=300)
            gaps = [b - a for a, b in itertools.pairwise(every)]
            assert len(every) >= 5 and all(g <= 70 for g in gaps), (ratio, pad, every)
        # A restart reads the size of the snapshot it starts from: 60 more entries (past
        # snapshot_entries since it, but far from half its size) take no new snapshot.
        again = await run(tmp_path / "paced", 0.5, pad=True, n=60, prefix="r")
        assert again == [paced[-1]], (paced, again)

    asyncio.run(main())
