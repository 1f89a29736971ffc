"""The incarnation of a data directory: drawn once when the directory is new, kept in IDENTITY,
the same at every later start; an IDENTITY written before incarnations existed gets one at the
next start, once, durably. A directory that was wiped comes back with another one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from raftpy.core.storage import HardState
from raftpy.storage.errors import DataDirError
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.identity import is_incarnation, new_incarnation
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage
from tests.storage.test_damage import open_dir, write_log

HEX32 = re.compile(r"[0-9a-f]{32}")


def identity_file(d: Path) -> dict[str, object]:
    parsed: dict[str, object] = json.loads((d / "IDENTITY").read_text())
    return parsed


def test_new_dir_draws_an_incarnation_once_and_keeps_it(tmp_path: Path) -> None:
    s = open_dir(tmp_path)
    inc = s.incarnation
    assert HEX32.fullmatch(inc) and is_incarnation(inc)
    assert not (tmp_path / "IDENTITY").exists()  # opening changes nothing on disk
    s.sync()
    assert identity_file(tmp_path) == {"cluster_id": "c1", "node_id": 1, "incarnation": inc}
    s.set_hard_state(HardState(1, 1, 0))
    s.sync()
    s.close()
    for _ in range(3):
        with open_dir(tmp_path) as again:
            assert again.incarnation == inc
            again.sync()
    assert identity_file(tmp_path)["incarnation"] == inc


def test_a_wiped_dir_comes_back_with_another_incarnation(tmp_path: Path) -> None:
    with open_dir(tmp_path / "a") as s:
        s.sync()
        first = s.incarnation
    with open_dir(tmp_path / "b") as s:  # the same node id, a new (empty) directory
        s.sync()
        assert s.incarnation != first


def test_old_identity_without_incarnation_is_upgraded_once_durably(tmp_path: Path) -> None:
    write_log(tmp_path)
    old = b'{"cluster_id":"c1","node_id":1}\n'  # as written before incarnations existed
    (tmp_path / "IDENTITY").write_bytes(old)
    s = open_dir(tmp_path)
    inc = s.incarnation
    assert is_incarnation(inc)
    assert (tmp_path / "IDENTITY").read_bytes() == old  # nothing written before the first write
    s.sync()
    s.close()
    assert identity_file(tmp_path) == {"cluster_id": "c1", "node_id": 1, "incarnation": inc}
    with open_dir(tmp_path) as again:
        assert again.incarnation == inc
    # The upgrade keeps the identity checks: another node id is still refused.
    with pytest.raises(DataDirError, match="node id 1"):
        open_dir(tmp_path, node_id=2)


def test_incarnation_survives_a_crash_after_the_first_sync() -> None:
    fs = FaultyFileSystem()
    s = FileStorage("/d", [1, 2, 3], fs=fs, segment_size=1 << 16, cluster_id="c", node_id=1)
    inc = s.incarnation
    s.sync()
    fs.crash("drop")  # whatever was not synced is gone; the identity was
    assert FileStorage("/d", fs=fs, cluster_id="c", node_id=1).incarnation == inc


@pytest.mark.parametrize("bad", ["ABCDEF" * 5 + "AB", "a" * 31, "a" * 33, "g" * 32, 7])
def test_malformed_incarnation_in_identity_is_a_damaged_identity(
    tmp_path: Path, bad: object
) -> None:
    write_log(tmp_path)
    (tmp_path / "IDENTITY").write_text(
        json.dumps({"cluster_id": "c1", "node_id": 1, "incarnation": bad}) + "\n"
    )
    with pytest.raises(DataDirError, match=f"identity file {tmp_path / 'IDENTITY'} is damaged"):
        open_dir(tmp_path)


def test_incarnations_are_random_128_bit_hex_and_memory_storage_has_none() -> None:
    drawn = {new_incarnation() for _ in range(1000)}
    assert len(drawn) == 1000 and all(is_incarnation(i) for i in drawn)
    assert not is_incarnation(None) and not is_incarnation("A" * 32)
    assert MemoryStorage([1]).incarnation is None
