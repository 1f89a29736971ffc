"""Where the leader's CPU goes: a py-spy profile of its process split into parts.

``python -m benchmarks.cpu_split PROFILE [--us-per-write X]`` prints the split of a profile
in py-spy's raw format (``py-spy record --format raw``: one line per distinct stack, its
frames from the outermost to the innermost separated by ``;``, then a space and how many
samples had it). With ``--us-per-write`` (the leader's CPU microseconds per committed write,
measured from ``/proc``) each part is also given in microseconds per write.
``benchmarks/bench_cluster.py`` records the leader during its 256-in-flight window with
:class:`Recorder` whenever py-spy is installed (``pip install 'raftpy[bench]'``) and reports
``leader_cpu_split_<part>_pct``.

The parts:

- ``core``: ``raftpy/core`` (the consensus state machine);
- ``codec``: encoding and decoding: msgspec (its Python and its native frames) and the wire
  modules ``raftpy/transport/codec.py`` (framing) and ``raftpy/transport/protocol.py``;
- ``storage``: ``raftpy/storage`` (the write-ahead log, snapshots);
- ``transport``: the rest of ``raftpy/transport`` (connections, queues, TLS);
- ``node``: ``raftpy/node`` and the other raftpy modules (the node runtime: its loop,
  requests, sessions, status, snapshots' scheduling);
- ``state_machine``: ``raftpy/examples`` and ``raftpy/statemachine.py``;
- ``event_loop``: asyncio, ``selectors`` and uvloop (with libuv, linked into uvloop);
- ``syscalls``: a native frame of a system call wrapper (``write``, ``writev``, ``sendmsg``,
  ``recv``, ``epoll_wait``, ``fstat``...), wherever it was called from;
- ``gc``: CPython's cyclic garbage collector (``gc_collect_*`` native frames);
- ``other``: none of the above (the interpreter starting up, other libraries).

The rule, one part per sample: walk its frames from the innermost outwards; the first frame
that belongs to a part decides. A native frame decides when it is a system call wrapper, a
wait (below), the garbage collector, msgspec, or the event loop's C code (uvloop, libuv, the C
half of asyncio); other native frames (CPython's own, libc's helpers, unresolved addresses)
are skipped, so their time counts to the caller that has a part. A Python frame decides when
its file is one of the parts' (a standard library module other than asyncio and selectors is
skipped: ``logging`` called from the node counts to the node). So an ``os.write`` issued by
the WAL is a system call, its Python caller's own work is storage, and a message encoded by
msgspec for the transport is codec. Files are matched by their path (``raftpy/core/``...):
the recorder passes ``--full-filenames``, since py-spy otherwise shortens some paths to a bare
``raft.py``.

Native frames appear only when py-spy records with ``--native``, which needs its blocking
mode (the process is paused for each sample). Without them, C code (msgspec, system calls,
uvloop) counts to its Python caller, and ``syscalls``, ``gc`` and most of ``codec`` are 0.

Samples that are not CPU are left out of the split and counted on their own, as a share of
all samples: ``disk_wait``, a thread in ``fsync``/``fdatasync`` (py-spy counts a thread in
uninterruptible sleep, waiting for the disk, as active), and ``idle``, a thread blocked in a
wait (``epoll_wait``/``poll``/``select``: the event loop with nothing to do;
``PyThread_acquire_lock_timed``, ``pthread_cond_*wait``, ``sem_*wait``, ``take_gil``: a lock, a
queue or the GIL). py-spy leaves idle threads out itself (``--idle`` off) when it can tell,
but in its blocking mode some blocked threads get through: measured here, an executor thread
waiting on its queue showed in 17% of one profile's samples.

The shares are of samples, not of CPU time: py-spy counts a thread that is runnable as
active, and on a loaded machine a runnable thread often waits for a CPU. A sample then shows
where the thread was preempted or what it is about to run, so the shares still estimate where
the CPU goes, but the samples may add up to more than the CPU the process used (here, on a
2-core machine at load 3, about twice as much). Microseconds per write therefore come from
the CPU measured in ``/proc`` times each share; :class:`LeaderProfile` prints both.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PARTS = (
    "core",
    "codec",
    "storage",
    "transport",
    "node",
    "state_machine",
    "event_loop",
    "syscalls",
    "gc",
    "other",
)
"""The parts of the split, in report order."""

DISK_WAIT = "disk_wait"
"""Samples waiting for an fsync: not CPU, reported apart from :data:`PARTS`."""

IDLE = "idle"
"""Samples blocked in a wait (the event loop's poll, a lock): not CPU either."""

# Python files by part, tried in order (the wire modules before the rest of the transport).
_PYTHON_PARTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), part)
    for pattern, part in (
        (r"(^|/)raftpy/core/", "core"),
        (r"(^|/)raftpy/transport/(codec|protocol)\.py$", "codec"),
        (r"(^|/)msgspec/", "codec"),
        (r"(^|/)raftpy/storage/", "storage"),
        (r"(^|/)raftpy/transport/", "transport"),
        (r"(^|/)raftpy/(examples/|statemachine\.py$)", "state_machine"),
        (r"(^|/)raftpy/", "node"),
        (r"(^|/)(asyncio|uvloop)/|(^|/)selectors\.py$", "event_loop"),
    )
)

# System call wrappers by name, after _syscall_name's normalization.
_SYSCALLS = frozenset(
    (
        *("read", "readv", "pread", "pread64", "preadv"),
        *("write", "writev", "pwrite", "pwrite64", "pwritev"),
        *("send", "sendto", "sendmsg", "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg"),
        *("epoll_ctl", "accept", "accept4", "connect", "shutdown", "close", "open", "openat"),
        *("ioctl", "getsockopt", "setsockopt", "fcntl", "syscall"),
        *("fstat", "fstat64", "stat", "stat64", "lstat", "newfstatat", "statx", "lseek"),
        *("lseek64", "ftruncate", "fallocate", "posix_fallocate", "rename", "renameat"),
        *("unlink", "unlinkat", "mkdir", "getdents64"),
        *("mmap", "munmap", "mremap", "madvise", "brk", "getpid", "gettid", "kill", "tgkill"),
        "sched_yield",
    )
)
_DISK_WAITS = frozenset({"fsync", "fdatasync", "sync_file_range", "syncfs"})
_IDLE_WAITS = frozenset(
    (
        *("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect"),
        *("pselect6", "nanosleep", "clock_nanosleep", "pause", "sigwait", "sigtimedwait"),
        *("PyThread_acquire_lock_timed", "take_gil", "pthread_cond_wait"),
        *("pthread_cond_timedwait", "pthread_cond_clockwait", "sem_wait", "sem_timedwait"),
        *("sem_clockwait", "do_futex_wait", "futex_wait", "futex_abstimed_wait_common"),
    )
)
# The event loop's C code: uvloop (Cython, in loop.c), libuv (uv_*), C asyncio (tasks).
_LOOP_FILES = frozenset({"loop.c", "_asynciomodule.c"})

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")
_WHERE_LINE = re.compile(r"^(?P<file>.*):(?P<line>\d+)$")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a stack: ``file`` is a Python file (``python`` true) or the native
    library it is in (possibly empty)."""

    name: str
    file: str
    python: bool


def parse_frame(text: str) -> Frame:
    """``"func (path/to/file.py:12)"`` (Python), ``"func (lib.so)"``, ``"func (loop.c:88)"``
    or ``"0x7f.. (lib.so)"`` (native)."""
    m = _FRAME.match(text)
    if m is None:
        return Frame(text, "", python=False)
    where = m.group("where")
    line = _WHERE_LINE.match(where)
    file = line.group("file") if line is not None else where
    return Frame(m.group("name"), file, python=file.endswith(".py") or file.startswith("<"))


def parse_collapsed(text: str) -> Iterator[tuple[list[Frame], int]]:
    """The stacks of a raw py-spy profile, outermost frame first, with their sample counts.
    Lines that are not ``frames count`` are skipped."""
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        yield [parse_frame(f) for f in stack.split(";")], int(count)


def _syscall_name(name: str) -> str:
    """glibc's spellings of a wrapper reduced to the call: ``__libc_write``,
    ``__GI___writev``, ``__write_nocancel``, ``write64`` -> ``write``/``writev``."""
    name = name.lstrip("_")
    for prefix in ("GI_", "libc_", "internal_"):
        if name.startswith(prefix):
            name = name[len(prefix) :].lstrip("_")
    return name.removesuffix("_nocancel")


def _native_part(frame: Frame) -> str | None:
    where = frame.file
    base = where.rpartition("/")[2]
    # The event loop's own C first: uvloop's functions may be named like system calls.
    if "uvloop" in where or base in _LOOP_FILES or frame.name.startswith("uv_"):
        return "event_loop"
    name = _syscall_name(frame.name)
    if name in _DISK_WAITS:
        return DISK_WAIT
    if name in _IDLE_WAITS or frame.name in _IDLE_WAITS:
        return IDLE
    if name in _SYSCALLS:
        return "syscalls"
    if "msgspec" in where:
        return "codec"
    if frame.name.startswith("gc_collect") or base == "gcmodule.c":
        return "gc"
    return None


def classify(stack: Sequence[Frame]) -> str:
    """The part one sample counts to (a name in :data:`PARTS`, or :data:`DISK_WAIT` or
    :data:`IDLE`): the innermost frame that belongs to a part decides (the module docstring
    has the rule)."""
    for frame in reversed(stack):
        if frame.python:
            for pattern, part in _PYTHON_PARTS:
                if pattern.search(frame.file):
                    return part
        else:
            native = _native_part(frame)
            if native is not None:
                return native
    return "other"


@dataclass
class Split:
    """CPU samples per part (``counts``), and the samples that are not CPU (``waits``:
    :data:`DISK_WAIT`, :data:`IDLE`)."""

    counts: Counter[str] = field(default_factory=Counter)
    waits: Counter[str] = field(default_factory=Counter)

    @property
    def cpu_samples(self) -> int:
        return sum(self.counts.values())

    @property
    def all_samples(self) -> int:
        return self.cpu_samples + sum(self.waits.values())

    def pct(self, part: str) -> float:
        """The part's share of the CPU samples, in percent (0 without samples)."""
        total = self.cpu_samples
        return 100.0 * self.counts[part] / total if total else 0.0

    def wait_pct(self, kind: str) -> float:
        """The share of all samples that waited so (:data:`DISK_WAIT`, :data:`IDLE`)."""
        total = self.all_samples
        return 100.0 * self.waits[kind] / total if total else 0.0

    def results(self, us_per_write: float | None = None) -> dict[str, float]:
        """``leader_cpu_split_<part>_pct`` for every part and the samples behind them (with
        ``us_per_write``, also each part in microseconds per write), and the shares of the
        samples left out (``leader_profile_<disk_wait|idle>_pct``)."""
        out: dict[str, float] = {f"leader_cpu_split_{p}_pct": self.pct(p) for p in PARTS}
        if us_per_write is not None:
            for p in PARTS:
                out[f"leader_cpu_split_{p}_us_per_write"] = self.pct(p) * us_per_write / 100
        out["leader_cpu_split_samples"] = float(self.cpu_samples)
        for kind in (DISK_WAIT, IDLE):
            out[f"leader_profile_{kind}_pct"] = self.wait_pct(kind)
        return out

    def describe(self, us_per_write: float | None = None) -> str:
        """One line: each part's share (and microseconds per write), largest first."""
        shown = []
        for p in sorted(PARTS, key=lambda p: -self.counts[p]):
            if self.counts[p]:
                us = "" if us_per_write is None else f" ({self.pct(p) * us_per_write / 100:.1f} us)"
                shown.append(f"{p} {self.pct(p):.0f}%{us}")
        return (
            f"leader CPU over {self.cpu_samples} samples: {', '.join(shown) or 'none'}; left "
            f"out as not CPU: {self.wait_pct(DISK_WAIT):.0f}% of all samples in fsync, "
            f"{self.wait_pct(IDLE):.0f}% blocked in a wait"
        )


def split(text: str) -> Split:
    """The split of a raw py-spy profile."""
    result = Split()
    for stack, count in parse_collapsed(text):
        part = classify(stack)
        if part in (DISK_WAIT, IDLE):
            result.waits[part] += count
        else:
            result.counts[part] += count
    return result


def pyspy_exe() -> str | None:
    """The py-spy executable: on ``PATH`` or next to this Python's (a venv's ``bin``)."""
    found = shutil.which("py-spy")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


class Recorder:
    """Records one process with ``py-spy record --native --format raw`` for a window.

    ``--native`` shows the C frames (msgspec, system calls, uvloop) the split needs, and
    needs py-spy's blocking mode: the process is paused for each sample, which costs it some
    throughput, hence the modest default rate. Idle samples (threads asleep, ``--idle``
    off) are mostly not recorded; :func:`classify` sets apart those that are."""

    def __init__(self, output: Path, rate: int = 100) -> None:
        self.output = output
        self.rate = rate
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = output.with_suffix(".log")

    @staticmethod
    def available() -> bool:
        return pyspy_exe() is not None

    @property
    def enabled(self) -> bool:
        return self._recorder is not None

    def start(self, pid: int, seconds: float) -> None:
        exe = pyspy_exe()
        if exe is None:
            return
        with open(self._stderr, "wb") as err:
            self._proc = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--rate",
                    str(self.rate),
                    "--native",
                    "--full-filenames",
                    "--format",
                    "raw",
                    "--output",
                    str(self.output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def finish(self, timeout: float = 60.0) -> Split | None:
        """Wait for the recording to end; its split, or ``None`` (a note is printed) when
        py-spy failed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not self.output.exists():
            reason = self._stderr.read_text(errors="replace").strip().splitlines()[:1]
            print(f"    (py-spy recorded nothing: {' '.join(reason) or 'no output'})", flush=True)
            return None
        return split(self.output.read_text(errors="replace"))

    def kill(self) -> None:
        """Stop a recording still running (cleanup)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


class LeaderProfile:
    """``benchmarks/bench_cluster.py``'s hook: records the leader over a 256-in-flight window
    when py-spy is installed (into ``RAFTPY_BENCH_PYSPY`` when set, else a file under the
    benchmark's scratch dir) and adds the split to the results, in microseconds per write of
    ``inflight256_leader_cpu_us_per_write`` (measured without the profiler). Without py-spy it
    prints a note once and does nothing; ``RAFTPY_BENCH_PYSPY=0`` turns it off."""

    def __init__(self, root: Path) -> None:
        setting = os.environ.get("RAFTPY_BENCH_PYSPY", "")
        self._recorder: Recorder | None = None
        self._seconds = 0.0
        if setting == "0":
            return
        if not Recorder.available():
            print(
                "    (py-spy not installed: no CPU split of the leader; "
                "pip install 'raftpy[bench]')",
                flush=True,
            )
            return
        self._recorder = Recorder(Path(setting) if setting else root / "leader.pyspy")

    @property
    def enabled(self) -> bool:
        return self._recorder is not None

    def start(self, pid: int, seconds: float) -> None:
        self._seconds = seconds
        if self._recorder is not None:
            self._recorder.start(pid, seconds)

    def report(
        self, out: dict[str, float], cores: float | None = None, lost: str | None = None
    ) -> None:
        """Wait for the recording and add ``leader_cpu_split_*`` to ``out`` (the split of
        ``inflight256_leader_cpu_us_per_write``, when measured). ``cores``: the leader's CPU
        use over the recorded window, from ``/proc``, to print beside what py-spy saw.
        ``lost``: why the process recorded did not lead throughout (nothing is reported)."""
        if self._recorder is None:
            return
        result = self._recorder.finish()
        if result is None:
            return
        if lost is not None:
            print(f"    (no CPU split: {lost})", flush=True)
            return
        us = out.get("inflight256_leader_cpu_us_per_write")
        print(f"    {result.describe(us)} ({self._recorder.output})", flush=True)
        if cores is not None and self._seconds > 0:
            sampled = result.cpu_samples / (self._recorder.rate * self._seconds)
            print(
                f"    (py-spy found the leader runnable in {sampled:.2f} cores' worth of "
                f"samples; /proc measured {cores:.2f} cores)",
                flush=True,
            )
        out.update(result.results())

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.kill()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu_split",
        description="Split a py-spy raw profile (py-spy record --format raw) into parts.",
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument(
        "--us-per-write", type=float, help="CPU microseconds per write, to give parts in us"
    )
    args = parser.parse_args(argv)
    result = split(args.profile.read_text(errors="replace"))
    print(result.describe(args.us_per_write))
    for key, value in result.results(args.us_per_write).items():
        print(f"{key:45} {value:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
