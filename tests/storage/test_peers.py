"""PeerIncarnations: the incarnation of each peer, pinned at first sight in PEERS beside the log,
refused when it changes, forgotten when the member leaves; a damaged PEERS file stops start-up
naming the file, the line and its byte offset."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from raftpy.storage.errors import DataDirError
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.peers import PEERS, PeerIncarnations
from tests.storage.test_damage import open_dir

A = "a" * 32  # a pin line of it is 63 bytes: {"node_id":2,"incarnation":"..."} and a newline
B = "b" * 32
C = "0123456789abcdef" * 2


def test_first_sight_pins_and_a_different_incarnation_is_refused(tmp_path: Path) -> None:
    pins = PeerIncarnations(str(tmp_path))
    assert pins.check(2, A) is None  # first sight: pinned
    assert pins.check(2, A) is None
    reason = pins.check(2, B)
    assert reason is not None
    assert reason.startswith(
        "node 2 came back with a different data directory (incarnation bbbbbbbb..., "
        "expected aaaaaaaa...): it lost its disk and must not vote as its old self; "
        "remove it and add it back"
    )
    assert '"Changing members"' in reason
    assert pins.pinned() == {2: A}  # a refusal changes no pin
    assert pins.check(2, None) is None  # announces none (memory storage): not checked
    assert pins.check(3, None) is None and pins.pinned() == {2: A}  # ... nor pinned


def test_pins_survive_a_restart_and_the_file_is_owner_only(tmp_path: Path) -> None:
    pins = PeerIncarnations(str(tmp_path))
    pins.check(3, C)
    pins.check(2, A)
    path = tmp_path / PEERS
    assert pins.path == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines() == [
        f'{{"node_id":2,"incarnation":"{A}"}}',
        f'{{"node_id":3,"incarnation":"{C}"}}',
    ]
    assert not (tmp_path / (PEERS + ".tmp")).exists()
    again = PeerIncarnations(str(tmp_path))
    assert again.pinned() == {2: A, 3: C}
    assert again.check(2, B) is not None


def test_forget_and_retain_let_a_member_come_back_with_a_new_disk(tmp_path: Path) -> None:
    pins = PeerIncarnations(str(tmp_path))
    for node_id in (2, 3, 4):
        pins.check(node_id, A)
    pins.retain([1, 2, 4])  # 3 was removed
    assert pins.pinned() == {2: A, 4: A}
    assert PeerIncarnations(str(tmp_path)).pinned() == {2: A, 4: A}  # durably
    assert pins.check(3, B) is None  # added back with another disk: pinned afresh
    pins.forget(2)
    pins.forget(9)  # unknown: nothing happens
    assert PeerIncarnations(str(tmp_path)).pinned() == {3: B, 4: A}
    assert pins.check(2, B) is None


def test_pins_are_durable_once_check_returns() -> None:
    fs = FaultyFileSystem()
    fs.makedirs("/d")
    pins = PeerIncarnations("/d", fs=fs)
    pins.check(2, A)
    fs.crash("drop")  # drops whatever was not synced (file data and directory entries)
    assert PeerIncarnations("/d", fs=fs).pinned() == {2: A}


def test_a_pin_that_cannot_be_written_is_kept_in_memory_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs = FaultyFileSystem()
    fs.makedirs("/d")
    pins = PeerIncarnations("/d", fs=fs)
    fs.set_capacity(0)  # ENOSPC on every write
    with caplog.at_level(logging.ERROR, logger="raftpy.storage.peers"):
        assert pins.check(2, A) is None
    assert "could not record peer incarnations in /d/PEERS" in caplog.text
    assert pins.check(2, B) is not None  # still refused while the process lives


def test_memory_pins_have_no_file(tmp_path: Path) -> None:
    pins = PeerIncarnations.beside(MemoryStorage([1, 2]))
    assert pins.path is None and pins.own is None
    assert pins.check(2, A) is None and pins.check(2, B) is not None


def test_beside_a_file_storage_makes_its_incarnation_durable_first(tmp_path: Path) -> None:
    s = open_dir(tmp_path)
    assert not (tmp_path / "IDENTITY").exists()
    pins = PeerIncarnations.beside(s)
    assert pins.own == s.incarnation
    assert s.incarnation in (tmp_path / "IDENTITY").read_text()  # on disk before announced
    assert pins.path == str(tmp_path / PEERS)
    s.close()


@pytest.mark.parametrize(
    ("content", "line", "offset", "why"),
    [
        (f'{{"node_id":2,"incarnation":"{A}"}}\ngarbage\n', 2, 63, "JSON"),
        (f'{{"node_id":2,"incarnation":"{A[:-1]}"}}\n', 1, 0, "incarnation"),
        (f'{{"node_id":-1,"incarnation":"{A}"}}\n', 1, 0, "node_id"),
        (f'{{"node_id":2,"incarnation":"{A}","x":1}}\n', 1, 0, "unknown field"),
        (f'{{"node_id":2,"incarnation":"{A}"}}\n{{"node_id":2,"incarnation":"{B}"}}\n', 2, 63,
         "node 2 is pinned twice"),
        (f'{{"node_id":2,"incarnation":"{A}"}}\n\n', 2, 63, "an empty line"),
        (f'{{"node_id":2,"incarnation":"{A}"}}', 1, 0, "cut off"),
        ('{"node_id":2,"incarnation":"aaaa', 1, 0, "truncated"),
        ("\x00" * 64, 1, 0, "JSON"),
    ],
    ids=["garbage", "short", "negative-id", "unknown-field", "twice", "empty-line", "no-newline",
         "truncated", "zeros"],
)  # fmt: skip
def test_damaged_pin_file_stops_start_up_naming_file_line_and_offset(
    tmp_path: Path, content: str, line: int, offset: int, why: str
) -> None:
    (tmp_path / PEERS).write_text(content)
    with pytest.raises(DataDirError) as info:
        PeerIncarnations(str(tmp_path))
    msg = str(info.value)
    assert f"peer incarnation file {tmp_path / PEERS} is damaged at line {line} " in msg
    assert f"(byte offset {offset})" in msg
    assert why in msg
    assert "delete the file" in msg


def test_empty_pin_file_means_no_pins(tmp_path: Path) -> None:
    (tmp_path / PEERS).write_bytes(b"")
    assert PeerIncarnations(str(tmp_path)).pinned() == {}
