"""benchmarks.cpu_split: the classifier on a handmade py-spy raw profile (no py-spy needed)."""

from __future__ import annotations

import pytest
from benchmarks.cpu_split import (
    DISK_WAIT,
    IDLE,
    PARTS,
    classify,
    parse_collapsed,
    parse_frame,
    split,
)

UV = "uvloop/loop.cpython-311-x86_64-linux-gnu.so"
MS = "msgspec/_core.cpython-311-x86_64-linux-gnu.so"
PY = "libpython3.11.so.1.0"
LIBC = "libc.so.6"


def py(name: str, path: str, line: int = 1) -> str:
    return f"{name} ({path}:{line})"


def c(name: str, lib: str = LIBC) -> str:
    return f"{name} ({lib})"


ROOT = [
    c("0x7fe620c4524a"),
    py("<module>", "raftpy/examples/hashmap.py", 99),
    py("run", "uvloop/__init__.py", 82),
    c("Loop.run_forever", UV),
]
RUN = [*ROOT, py("RaftNode._run", "raftpy/node/node.py", 640)]
STEP = py("Raft.step", "raftpy/core/raft.py", 300)
WAL = py("Wal.append", "raftpy/storage/wal.py", 120)
SEND = py("Outbound.send", "raftpy/transport/outbound.py", 80)

# Stacks root first, as py-spy writes them, each with its count and the expected part.
PROFILE: list[tuple[list[str], int, str]] = [
    ([*RUN, STEP, py("Log.append", "raftpy/core/log.py")], 7, "core"),
    # A Python frame of the standard library counts to its raftpy caller.
    ([*RUN, STEP, py("Logger.debug", "logging/__init__.py")], 1, "core"),
    # msgspec's native frames are codec, also under a libc helper they call.
    ([*RUN, WAL, c("Encoder_encode", MS), c("realloc")], 4, "codec"),
    ([*RUN, WAL], 5, "storage"),
    # A write issued by the WAL is a system call (glibc's spelling normalized).
    ([*RUN, WAL, c("os_write", PY), c("__libc_write")], 3, "syscalls"),
    # The fsync is waiting for the disk: not CPU.
    ([*RUN, py("DiskSync.sync", "raftpy/node/disk_sync.py"), c("fdatasync")], 20, DISK_WAIT),
    ([*RUN, SEND, py("encode_frame", "raftpy/transport/codec.py")], 2, "codec"),
    ([*RUN, SEND], 2, "transport"),
    ([*RUN, SEND, c("UVStream.write", UV), c("uv_try_write", UV), c("writev")], 3, "syscalls"),
    ([*RUN, SEND, c("UVStream.write", UV)], 1, "event_loop"),
    # The loop waiting for events, a thread waiting on a lock: not CPU.
    ([*ROOT, c("uv_run", UV), c("uv__io_poll", UV), c("epoll_pwait")], 9, IDLE),
    ([c("thread_run", PY), c("PyThread_acquire_lock_timed", PY), c("0x7f51")], 6, IDLE),
    # With debug info, uvloop's frames name their C source: a function named like a
    # system call there is the loop's, a libc one below it is the call.
    ([*ROOT, c("uv__io_poll", "linux.c:1452"), c("read")], 2, "syscalls"),
    ([*RUN, SEND, c("write", "/project/uvloop/loop.c:123")], 2, "event_loop"),
    ([*RUN, c("task_step", "_asynciomodule.c:2990")], 1, "event_loop"),
    ([*ROOT, py("Handle._run", "asyncio/events.py", 84)], 2, "event_loop"),
    ([*RUN, py("HashMap.apply", "raftpy/examples/hashmap.py", 40)], 3, "state_machine"),
    ([*RUN, py("RaftNode._apply", "raftpy/node/node.py"), c("gc_collect_main", PY)], 1, "gc"),
    ([*RUN, py("PendingRequests.start_reads", "raftpy/node/requests.py"), c("0x7fe6")], 4, "node"),
    ([py("_find_and_load", "<frozen importlib._bootstrap>"), c("0x7fe620d70ad4")], 1, "other"),
]


def lines() -> list[str]:
    return [f"{';'.join(stack)} {count}" for stack, count, _ in PROFILE]


def test_each_stack_counts_to_its_innermost_part() -> None:
    for line, (_, count, part) in zip(lines(), PROFILE, strict=True):
        [(stack, parsed)] = list(parse_collapsed(line))
        assert parsed == count
        assert classify(stack) == part, line


def test_split_adds_up_and_leaves_fsync_waits_out() -> None:
    text = "\n".join(lines()) + "\nnot a stack line\n"
    result = split(text)
    expected: dict[str, int] = {}
    for _, count, part in PROFILE:
        expected[part] = expected.get(part, 0) + count
    assert result.waits == {DISK_WAIT: 20, IDLE: 15}
    del expected[DISK_WAIT], expected[IDLE]
    assert dict(result.counts) == expected
    total = sum(expected.values())
    assert result.cpu_samples == total
    out = result.results(us_per_write=40.0)
    assert set(out) >= {f"leader_cpu_split_{p}_pct" for p in PARTS}
    assert sum(out[f"leader_cpu_split_{p}_pct"] for p in PARTS) == pytest.approx(100.0)
    assert out["leader_cpu_split_core_pct"] == pytest.approx(100.0 * 8 / total)
    assert out["leader_cpu_split_core_us_per_write"] == pytest.approx(40.0 * 8 / total)
    assert out["leader_profile_disk_wait_pct"] == pytest.approx(100.0 * 20 / (total + 35))
    assert out["leader_profile_idle_pct"] == pytest.approx(100.0 * 15 / (total + 35))
    assert "fsync" in result.describe(40.0)


def test_frames_without_native_symbols_and_an_empty_profile() -> None:
    assert parse_frame("Raft.step (raftpy/core/raft.py:300)").python
    assert not parse_frame(f"Encoder_encode ({MS})").python
    assert not parse_frame("run_forever (/project/uvloop/loop.c:33192)").python
    assert (
        parse_frame("Raft.step (/src/raftpy/core/raft.py:300)").file == "/src/raftpy/core/raft.py"
    )
    assert parse_frame("<module> (<string>)").python
    assert not parse_frame("garbage").python
    # Without --native only Python frames: C work counts to its Python caller.
    [(stack, _)] = list(parse_collapsed("main (app.py:3);Wal.sync (raftpy/storage/wal.py:200) 4"))
    assert classify(stack) == "storage"
    empty = split("")
    assert empty.cpu_samples == 0
    assert empty.results()["leader_cpu_split_core_pct"] == 0.0
