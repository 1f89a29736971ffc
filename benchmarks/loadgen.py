"""The harness the process benchmarks share: a load-client loop that keeps N writes in flight
and times them (:func:`_drive`), child processes with line-oriented pipes (:class:`_Child`,
:func:`_run_load`), the CPU use of server processes over a measured window
(:class:`_CpuMeter`), and the result lines and names every suite prints and reports.

A load client is a separate process (``python -m <module> load ...``) that prints ``mark
start`` / ``mark end`` at the edges of its measured window and one ``result {json}`` line at the
end; the parent samples the servers' CPU at the marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLUSTER_MODULE = "benchmarks.bench_cluster"  # the raftpy load client's module

WARMUP = 1.0
KEYS = 4096
VALUE_BYTES = 100


def _pct(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _kill_all(procs: Sequence[subprocess.Popen[Any] | None]) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
            proc.kill()
    for proc in procs:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


Issue = Callable[[int, int], Awaitable[None]]
"""(worker number, request number) -> one write, raising on failure."""

Measure = Callable[[int, float, dict[str, float]], Awaitable[None]]
"""A running comparison system's (in flight, seconds, results) -> one figure added to the
results, its lines printed."""


async def _drive(issue: Issue, inflight: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Keep ``inflight`` writes outstanding for ``warmup + seconds``; the figures count the
    writes completed inside the window after the warm-up. Prints ``mark start`` / ``mark
    end`` at the window's edges (the parent samples the servers' CPU there)."""
    loop = asyncio.get_running_loop()
    begin = time.perf_counter()
    w_start = begin + warmup
    w_end = w_start + seconds
    done: list[tuple[float, float]] = []  # (end, latency)
    errors: list[str] = []
    counter = 0
    cpu: dict[str, float] = {}

    def mark(name: str) -> None:
        cpu[name] = time.process_time()
        print(f"mark {name}", flush=True)

    loop.call_later(warmup, mark, "start")
    loop.call_later(warmup + seconds, mark, "end")

    async def worker(w: int) -> None:
        nonlocal counter
        while True:
            t0 = time.perf_counter()
            if t0 >= w_end:
                return
            k = counter
            counter += 1
            try:
                await issue(w, k)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            t1 = time.perf_counter()
            done.append((t1, t1 - t0))

    await asyncio.gather(*(worker(w) for w in range(inflight)))
    while "end" not in cpu:  # in case the last write came back before the timer fired
        await asyncio.sleep(0.01)
    window = sorted(lat for end, lat in done if w_start <= end < w_end)
    return {
        "writes": len(window),
        "seconds": seconds,
        "writes_per_s": len(window) / seconds,
        "p50_ms": _pct(window, 0.5) * 1e3,
        "p99_ms": _pct(window, 0.99) * 1e3,
        "p999_ms": _pct(window, 0.999) * 1e3,
        "mean_ms": statistics.fmean(window) * 1e3 if window else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:5],
        "client_cpu": (cpu["end"] - cpu.get("start", cpu["end"])) / seconds,
    }


def _run_loop(coro: Awaitable[None]) -> None:
    """Run on uvloop when installed, as the example servers do."""

    async def wrapper() -> None:
        await coro

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(wrapper())


class _Child:
    """A child process with line-oriented stdin/stdout (asyncio), killed by :meth:`kill`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str, module: str = CLUSTER_MODULE) -> _Child:
        """Run ``python -m module *args`` (this module's client modes by default)."""
        path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(proc)

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"child exited (status {await self.proc.wait()})")
        return raw.decode().rstrip("\n")

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def reap(self) -> None:
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)


async def _run_load(
    args: list[str],
    timeout: float,
    on_mark: Callable[[str], None] | None = None,
    module: str = CLUSTER_MODULE,
) -> dict[str, Any]:
    """Run a load client process (``python -m module *args``) to completion; return its
    result."""
    child = await _Child.start(*args, module=module)
    try:
        deadline = time.monotonic() + timeout
        while True:
            line = await child.line(max(0.1, deadline - time.monotonic()))
            if line.startswith("mark ") and on_mark is not None:
                on_mark(line[5:])
            elif line.startswith("result "):
                result: dict[str, Any] = json.loads(line[7:])
                return result
    finally:
        await child.reap()


class _CpuMeter:
    """CPU use (in cores) of some processes between the client's ``mark start``/``end``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start: dict[str, float] = {}
        self.usage: dict[str, float] = {}
        self._t0 = 0.0

    def __call__(self, mark: str) -> None:
        now = time.monotonic()
        if mark == "start":
            self._t0 = now
            self.start = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        elif mark == "end" and self.start:
            span = max(now - self._t0, 1e-9)
            self.usage = {
                name: (_cpu_seconds(pid) - self.start[name]) / span
                for name, pid in self.pids.items()
            }

    def describe(self, client_cpu: float) -> str:
        parts = [f"{name} {value:.2f}" for name, value in self.usage.items()]
        return "cpu (cores): " + ", ".join([*parts, f"client {client_cpu:.2f}"])


def _report(prefix: str, result: dict[str, Any]) -> dict[str, float]:
    return {
        f"{prefix}_writes_per_s": float(result["writes_per_s"]),
        f"{prefix}_p50_ms": float(result["p50_ms"]),
        f"{prefix}_p99_ms": float(result["p99_ms"]),
    }


def _line(title: str, result: dict[str, Any], load: str) -> str:
    return (
        f"  {title}: {result['writes_per_s']:,.0f} writes/s, p50 {result['p50_ms']:.3f} ms, "
        f"p99 {result['p99_ms']:.3f} ms ({result['writes']:,} writes in {result['seconds']:g} s, "
        f"{result['errors']} errors; {load})"
    )
