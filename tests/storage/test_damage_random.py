"""Randomized damage to a stopped node's write-ahead log: the node must either refuse to start
or start with every acknowledged entry and its last hard state (term, vote, commit) intact,
never anything in between.

Each seed writes a log on the fault-injecting disk (appends, conflicting suffixes above the
commit index, hard states, compactions, crashes in the middle of a sync), ends with a synced
batch (so what was acknowledged is exact), closes it, damages its files at random (truncate a
segment anywhere or at a batch boundary, drop a segment, delete every segment, flip bytes,
delete the identity or lock file) and opens it again, twice (the second time after the first
open's first write, which carries out its repairs).

``RAFTPY_DAMAGE_SEEDS=N`` runs seeds 0..N-1 (default 300); ``RAFTPY_DAMAGE_SEED=S`` replays
one. A failure prints its replay command.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.storage import segments
from raftpy.storage.errors import StorageError
from raftpy.storage.fs import FaultyFileSystem, SimulatedCrash
from raftpy.storage.wal import FileStorage

D = "/data"
VOTERS = (1, 2, 3)


def seeds() -> list[int]:
    one = os.environ.get("RAFTPY_DAMAGE_SEED")
    if one is not None:
        return [int(one)]
    return list(range(int(os.environ.get("RAFTPY_DAMAGE_SEEDS", "300"))))


def open_log(fs: FaultyFileSystem, segment_size: int) -> FileStorage:
    return FileStorage(
        D, VOTERS, fs=fs, segment_size=segment_size, cluster_id="c", node_id=1, cache_bytes=4096
    )


def state_of(s: FileStorage) -> tuple[Any, ...]:
    first, last = s.first_index(), s.last_index()
    entries = tuple(s.entries(first, last + 1)) if last >= first else ()
    return (s.snapshot_meta(), first, last, entries, s.hard_state, s.initial_state()[1])


def write_log(rng: random.Random, fs: FaultyFileSystem, segment_size: int) -> tuple[Any, ...]:
    """Write a random log; return the state acknowledged last (after its final sync)."""
    s = open_log(fs, segment_size)
    term = 1
    for _ in range(rng.randrange(5, 60)):
        hard = s.hard_state
        roll = rng.random()
        crash = rng.random() < 0.08
        mode = rng.choice(["drop", "torn", "partial", "keep"])
        if roll < 0.1 and s.hard_state.commit > s.first_index():
            index = rng.randrange(s.first_index(), s.hard_state.commit + 1)
            try:
                if crash:
                    fs.crash_on_next_sync(mode)  # type: ignore[arg-type]
                s.create_snapshot(SnapshotMeta(index, s.term(index), ConfState(voters=VOTERS)))
            except SimulatedCrash:
                s = open_log(fs, segment_size)
            continue
        term += rng.random() < 0.2
        back = rng.randrange(0, 4)
        first = max(s.first_index(), s.last_index() + 1 - back, hard.commit + 1)
        n = rng.randrange(1, 8)
        s.append(
            [
                Entry(term, i, EntryKind.COMMAND, rng.randbytes(rng.randrange(1, 300)))
                for i in range(first, first + n)
            ]
        )
        commit = rng.randrange(hard.commit, s.last_index() + 1)
        s.set_hard_state(HardState(term, rng.choice([None, 1, 2, 3]), commit))
        try:
            if crash:
                fs.crash_on_next_sync(mode)  # type: ignore[arg-type]
            s.sync()
        except SimulatedCrash:
            s = open_log(fs, segment_size)
            term = max(term, s.hard_state.term)
    # The last batch is synced: exactly this state was acknowledged.
    last = s.last_index()
    s.append([Entry(term, last + 1, EntryKind.COMMAND, rng.randbytes(50))])
    s.set_hard_state(HardState(term, 1, max(s.hard_state.commit, last)))
    s.sync()
    acked = state_of(s)
    s.close()
    return acked


def damage(rng: random.Random, fs: FaultyFileSystem) -> list[str]:
    """Damage the log's files at random; what was done, for the failure message. Never both
    every segment and the identity file: then nothing records that the directory ever held a
    log, and it is a new one (the node's snapshot files, if any, still tell: see
    test_damage.py)."""
    done: list[str] = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        names = fs.listdir(D)
        wals = [n for n in names if n.endswith(".wal")]
        kind = rng.choice(
            ["truncate", "truncate-boundary", "drop", "drop-all", "flip", "flip-data", "delete"]
        )
        identity_gone = "IDENTITY" not in names
        if not wals or (
            identity_gone and (kind == "drop-all" or (len(wals) == 1 and kind == "drop"))
        ):
            kind = "delete"
        name = rng.choice(wals) if wals else ""
        path = f"{D}/{name}"
        if kind in ("truncate", "truncate-boundary", "flip", "flip-data"):
            f = fs.open(path)
            data = f.read_at(0, f.size())
            if kind == "truncate":
                at = rng.randrange(0, len(data) + 1)
                f.truncate(at)
            elif kind == "truncate-boundary":
                at = rng.choice(boundaries(data, name))
                f.truncate(at)
            else:
                end = len(data.rstrip(b"\0")) if kind == "flip-data" else len(data)
                at = rng.randrange(0, max(1, end))
                if at < len(data):
                    f.write_at(at, bytes([data[at] ^ (1 << rng.randrange(8))]))
            done.append(f"{kind} {name} at {at}")
        elif kind == "drop":
            fs.unlink(path)
            done.append(f"drop {name}")
        elif kind == "drop-all":
            for n in wals:
                fs.unlink(f"{D}/{n}")
            done.append("drop every segment")
        else:
            keep_identity = not wals or any(d.startswith("drop") for d in done)
            victim = "LOCK" if keep_identity else rng.choice(["IDENTITY", "LOCK"])
            if victim in names:
                fs.unlink(f"{D}/{victim}")
            done.append(f"delete {victim}")
    return done


def boundaries(data: bytes, name: str) -> list[int]:
    """Offsets where a batch or the TAIL starts in the segment ``data``."""
    try:
        scan = segments.scan_segment(data, int(name[:16], 16), name)
    except StorageError:
        return [0]
    starts = [off for _, _, off in scan.records if segments._REC.unpack_from(data, off)[3] == 0]
    return [*starts, scan.end]


@pytest.mark.parametrize("seed", seeds())
def test_damaged_log_is_refused_or_opens_with_everything_acknowledged(seed: int) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(seed)
    segment_size = rng.choice([4096, 8192, 1 << 16])
    acked = write_log(rng, fs, segment_size)
    done = damage(rng, fs)
    replay = f"RAFTPY_DAMAGE_SEED={seed} .venv/bin/pytest tests/storage/test_damage_random.py"
    print(f"seed {seed}: {done} (replay: {replay})")
    for attempt in range(2):
        try:
            s = open_log(fs, segment_size)
        except StorageError:
            assert attempt == 0, f"refused only after a first open had started: {done}; {replay}"
            return  # refused: the operator is told
        got = state_of(s)
        assert got == acked, (
            f"seed {seed}: opened after {done} with a state that is not the acknowledged one "
            f"(attempt {attempt}): last index {got[2]} vs {acked[2]}, hard state {got[4]} vs "
            f"{acked[4]}; replay: {replay}"
        )
        s.sync()  # the first write: carries out recovery's repairs
        s.close()
