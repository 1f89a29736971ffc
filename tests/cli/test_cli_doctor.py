"""``raftpy doctor DATA_DIR [--json | --repair]``: the report, the verdict line and the exit
status on real data dirs (written by FileStorage and SnapshotStore, damaged as in
tests/storage/test_damage.py), the JSON keys, the repair of a torn tail and its refusals, and,
as a real process, on the data dir of a stopped hashmap node.

Every wait is bounded; every process is killed when a test ends, pass or fail.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from raftpy.cli import main
from raftpy.examples.hashmap import HashMapClient
from raftpy.storage import data_dir_report, inspect, segments
from raftpy.storage.wal import FileStorage
from tests.examples.test_examples_process import leader_of, put_until_acknowledged
from tests.processhelpers import ProcessCluster, wait_until
from tests.storage.test_damage import HS, open_dir, tail_offset, wal_files
from tests.storage.test_inspect import SNAP30, compacted, flip, tear_tail, tree

pytestmark = pytest.mark.timeout(120)


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def incarnation(d: Path) -> str:
    value = json.loads((d / "IDENTITY").read_text())["incarnation"]
    assert isinstance(value, str)
    return value


HEALTHY = """\
raftpy doctor: {d}
identity    node 1, cluster 'c1', incarnation {inc}
hard state  term 3, vote 2, commit 60
log         entries 31..90 after snapshot 30 (term 1), 9,279 bytes of records
            term 2: 31..60
            term 3: 61..90
membership  voters 1, 2, 3; learners none
peers       pinned: 2 22222222..., 3 33333333...
segments    3
            0000000000000002.wal  entries 28..54  20 records  4,014 of 4,096 bytes  sealed
            0000000000000003.wal  entries 55..81  14 records  3,900 of 4,096 bytes  sealed
            0000000000000004.wal  entries 82..90  6 records  1,365 of 4,096 bytes
snapshots   1
            {snap}  index 30 term 1  54 bytes  checksum ok  restored at start
findings    none
verdict: healthy
"""


def test_a_healthy_data_dir_prints_its_report_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    code, out, err = doctor(capsys, str(tmp_path))
    assert (code, err) == (0, "")
    assert out == HEALTHY.format(d=tmp_path, inc=incarnation(tmp_path), snap=SNAP30)


def test_a_torn_tail_is_healthy_with_a_warning_naming_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    last, at, n = tear_tail(tmp_path, lambda size: size // 2)
    code, out, err = doctor(capsys, str(tmp_path))
    assert (code, err) == (0, "")  # recovery's own warning is a finding here, not a log line
    lines = out.splitlines()
    assert lines[-5:] == [
        "findings    1",
        f"  warning   torn-tail: {last} at byte offset {at}",
        f"            torn tail: the last batch, at offset {at} ({n} bytes, 1 record), is "
        f"incomplete (checksum mismatch at offset {at})",
        "            means: A crash interrupted this write before its fdatasync returned, so it "
        "was never acknowledged: the node cuts it at start (or run raftpy doctor --repair); "
        "nothing acknowledged is lost",
        "verdict: healthy (1 warning: the node handles it at start)",
    ]
    assert f"  DAMAGE: checksum mismatch at offset {at}" in out


def test_a_flipped_byte_in_synced_data_is_damaged_naming_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    last = wal_files(tmp_path)[-1]
    at = tail_offset(last) - 3
    flip(last, at)
    code, out, err = doctor(capsys, str(tmp_path))
    assert (code, err) == (1, "")
    verdict = out.splitlines()[-1]
    start = segments.scan_segment(last.read_bytes(), 4, str(last)).end
    assert verdict.startswith(
        f"verdict: damaged: {last} at byte offset {start}: checksum mismatch inside the batch "
        f"at offset {start}, which was written whole"
    )
    assert verdict.endswith(
        "The node refuses to start (DataLossError): state it had synced, so possibly "
        "acknowledged, is gone. Replace this member: remove it from the cluster and add it "
        'back with an empty data dir (README.md, "Changing members"), or restore the data dir '
        "from a backup taken while the node was stopped"
    )
    assert "log         not readable (see the findings)" in out


def test_a_damaged_snapshot_is_damaged_naming_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    path = tmp_path / "snapshots" / SNAP30
    flip(path, path.stat().st_size - 20)
    code, out, _ = doctor(capsys, str(tmp_path))
    assert code == 1
    assert out.splitlines()[-1].startswith(
        f"verdict: damaged: {path} at byte offset {path.stat().st_size - 16}: the snapshot the "
        "node restores from is damaged: checksum mismatch"
    )


JSON_KEYS = {
    "data_dir",
    "verdict",
    "identity",
    "hard_state",
    "log",
    "membership",
    "segments",
    "snapshots",
    "restored_snapshot",
    "pinned_peers",
    "findings",
    "repairs",
}


def test_json_has_the_documented_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compacted(tmp_path)
    last, at, n = tear_tail(tmp_path, lambda size: size // 2)
    code, out, _ = doctor(capsys, str(tmp_path), "--json")
    assert code == 0
    r = json.loads(out)
    assert set(r) == JSON_KEYS
    assert r["verdict"] == "healthy"
    assert r["hard_state"] == {"term": 3, "vote": 2, "commit": 60}
    assert r["log"]["terms"] == [
        {"term": 2, "first": 31, "last": 60},
        {"term": 3, "first": 61, "last": 90},
    ]
    assert set(r["segments"][0]) == {
        "file",
        "number",
        "version",
        "first_index",
        "last_index",
        "records",
        "bytes",
        "size",
        "preallocated",
        "sealed",
        "damage",
    }
    assert set(r["snapshots"][0]) == {
        "file",
        "index",
        "term",
        "size",
        "checksum_ok",
        "problem",
        "role",
    }
    (finding,) = r["findings"]
    assert {k: finding[k] for k in ("severity", "code", "file", "offset")} == {
        "severity": "warning",
        "code": "torn-tail",
        "file": str(last),
        "offset": at,
    }
    assert r["repairs"] == [
        {"file": str(last), "offset": at, "end": at + n, "bytes": n, "records": 1}
    ]
    flip(wal_files(tmp_path)[0], 100)
    code, out, _ = doctor(capsys, str(tmp_path), "--json")
    assert code == 1 and json.loads(out)["verdict"] == "damaged"


def test_repair_cuts_a_torn_tail_after_saying_what_it_cuts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    last, at, n = tear_tail(tmp_path, lambda size: size // 2)
    code, out, err = doctor(capsys, str(tmp_path), "--repair")
    assert (code, err) == (0, "")
    assert out.splitlines()[-4:] == [
        "verdict: healthy (1 warning: the node handles it at start)",
        f"repair: cuts {n} bytes (1 record) at byte offset {at} of {last} (up to offset "
        f"{at + n}), never synced",
        "repair: done (1 cut, synced)",
        "verdict: healthy",
    ]
    code, out, _ = doctor(capsys, str(tmp_path))
    assert code == 0 and out.endswith("findings    none\nverdict: healthy\n")
    s = open_dir(tmp_path)
    assert (s.last_index(), s.hard_state) == (90, HS)
    s.close()
    code, out, _ = doctor(capsys, str(tmp_path), "--repair")
    assert code == 0 and out.endswith("verdict: healthy\nrepair: nothing to cut\n")


def test_repair_refuses_damage_in_synced_data_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    last = wal_files(tmp_path)[-1]
    flip(last, tail_offset(last) - 3)
    before = tree(tmp_path)
    code, out, err = doctor(capsys, str(tmp_path), "--repair")
    assert code == 1
    assert "repair: cuts" not in out
    assert err.startswith("repair: refusing to repair: checksum mismatch inside the batch")
    assert err.endswith("and this data dir holds damage to synced state. Nothing was changed.\n")
    assert tree(tmp_path) == before


def test_usage_errors_exit_2_with_the_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = doctor(capsys, str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert err == (
        "usage: raftpy doctor [-h] [--json | --repair] DATA_DIR\n"
        f"raftpy doctor: {tmp_path / 'nope'} does not exist\n"
    )
    code, _, err = doctor(capsys, str(tmp_path))
    assert code == 2 and "is not a raftpy data dir" in err
    code, _, err = doctor(capsys, str(tmp_path), "--json", "--repair")
    assert code == 2 and "not allowed with argument" in err
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_a_running_node_holds_is_refused_with_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    tear_tail(tmp_path, lambda size: size // 2)
    before = tree(tmp_path)
    s = FileStorage(tmp_path)  # a node: holds the lock
    try:
        for args in ([], ["--repair"], ["--json"]):
            code, out, err = doctor(capsys, str(tmp_path), *args)
            assert (code, out) == (2, "")
            assert err == (
                f"raftpy doctor: data dir {tmp_path} is in use: a running node holds its lock "
                f"({tmp_path / 'LOCK'}); stop the node first; nothing was read\n"
            )
    finally:
        s.close()
    assert tree(tmp_path) == before


# -- a real node's data dir -------------------------------------------------------------------


def raftpy(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m raftpy.cli args...`` (the ``raftpy`` command); bounded."""
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.process
@pytest.mark.timeout(180)
def test_doctor_on_a_stopped_hashmap_node(tmp_path: Path) -> None:
    extra = ["--snapshot-entries", "20", "--segment-size", "4096"]
    with ProcessCluster("hashmap", 1, tmp_path, extra=extra) as c:
        c.start_all()
        leader_of(c, timeout=30)
        with HashMapClient(c.addresses, timeout=10) as client:
            for i in range(60):
                put_until_acknowledged(client, f"key{i}", "v" * 100)
        data = tmp_path / "data1"
        wait_until(lambda: any((data / "snapshots").glob("*.snap")), 30, "a snapshot")
        running = raftpy("doctor", str(data))
        assert running.returncode == 2 and "is in use: a running node holds its lock" in (
            running.stderr
        )
        c.signal(1, signal.SIGTERM)
        c.procs[1].wait(timeout=20)
    result = raftpy("doctor", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    s = FileStorage(data)  # what the node recovers, read before its first write
    hard, snap, last, size = s.hard_state, s.snapshot_meta(), s.last_index(), s.persisted_bytes()
    s.close()
    lines = result.stdout.splitlines()
    assert lines[:6] == [
        f"raftpy doctor: {data}",
        f"identity    node 1, cluster 'raftpy', incarnation {incarnation(data)}",
        f"hard state  term {hard.term}, vote 1, commit {hard.commit}",
        f"log         entries {snap.index + 1}..{last} after snapshot {snap.index} (term "
        f"{snap.term}), {size:,} bytes of records",
        f"            term 1: {snap.index + 1}..{last}",
        "membership  voters 1; learners none",
    ]
    assert lines[-2:] == ["findings    none", "verdict: healthy"]
    # The newest snapshot the log vouches for: the log's own, or a newer committed one.
    restored = [line.split()[0] for line in lines if line.endswith("restored at start")]
    assert len(restored) == 1 and int(restored[0][:20]) >= snap.index

    # A copy with a torn tail, as a crash in the middle of a write leaves it: healthy, one
    # warning (recovery's own log line is a finding, not noise on stderr), and repaired.
    torn = tmp_path / "torn"
    shutil.copytree(data, torn)
    tear_tail(torn, lambda size: size // 2)
    result = raftpy("doctor", str(torn))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == (
        "verdict: healthy (1 warning: the node handles it at start)"
    )
    result = raftpy("doctor", "--repair", str(torn))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-3].startswith("repair: cuts ")
    assert result.stdout.splitlines()[-1] == "verdict: healthy"
    s = FileStorage(torn)
    assert (s.hard_state, s.last_index()) == (hard, last)
    s.close()

    # Damage a copy: a flipped byte in a synced record of the newest segment.
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    newest = wal_files(copy)[-1]
    scan = segments.scan_segment(newest.read_bytes(), int(newest.stem, 16), str(newest))
    at = scan.records[-1][2] + segments._RH  # the first payload byte of the last record
    flip(newest, at)
    result = raftpy("doctor", str(copy))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith(f"verdict: damaged: {newest} at byte offset ")
    assert "checksum mismatch" in result.stdout.splitlines()[-1]
    refused = raftpy("doctor", "--repair", str(copy))
    assert refused.returncode == 1 and "Nothing was changed." in refused.stderr


def test_the_docs_list_every_finding_code_and_json_key() -> None:
    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "doctor.md").read_text()
    source = Path(inspect.__file__).read_text()
    codes = set(re.findall(r'self\._damaged\(\s*"([a-z-]+)"', source))
    codes |= set(re.findall(r'self\._finding\(\s*"[a-z]+",\s*"([a-z-]+)"', source))
    assert len(codes) == 15  # a new code must be added here and to docs/doctor.md
    assert [c for c in sorted(codes) if f"| `{c}` |" not in docs] == []
    for struct in vars(data_dir_report).values():
        if isinstance(struct, type) and issubclass(struct, msgspec.Struct):
            missing = [k for k in struct.__struct_fields__ if f'"{k}"' not in docs]
            assert missing == [] or struct is data_dir_report.DataDirReport, (struct, missing)
    report_keys = data_dir_report.DataDirReport.__struct_fields__
    assert [k for k in report_keys if f"| `{k}` |" not in docs] == []


def test_a_data_dir_that_cannot_be_read_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compacted(tmp_path)
    (tmp_path / "0000000000000009.wal").mkdir()  # a "segment" no one can read
    code, out, err = doctor(capsys, str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith(f"raftpy doctor: cannot read {tmp_path}: [Errno 21] Is a directory")
