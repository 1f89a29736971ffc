"""raftpy.progress: what long work shows on a terminal (with and without rich), on a pipe, and
nothing where it must stay quiet."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from raftpy.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_piped_lines_are_rate_limited() -> None:
    out, clock = io.StringIO(), FakeClock()
    with Progress(out, prefix="bench: ", every=10.0, clock=clock) as progress:
        assert progress.mode == "lines"
        progress.phase("starting")
        progress.step("keys", 100)
        progress.update(10)  # the first is shown
        clock.now += 5
        progress.update(20)  # within 10 s of the last line: not shown
        clock.now += 6
        progress.update(30, line="30 keys written")
        progress.phase("done")
    assert out.getvalue() == (
        "bench: starting\nbench: keys: 10 of 100\nbench: 30 keys written\nbench: done\n"
    )


def test_quiet_when_piped_shows_nothing() -> None:
    out = io.StringIO()
    with Progress(out, piped="quiet") as progress:
        assert progress.mode == "quiet"
        progress.phase("starting")
        progress.step("keys", 10)
        progress.update(5)
        progress.timed("waiting", 0.2)
        time.sleep(0.3)
    assert out.getvalue() == ""


def test_terminal_without_rich_prints_at_most_a_line_a_second() -> None:
    term, clock = Terminal(), FakeClock()
    with Progress(term, piped="quiet", use_rich=False, clock=clock) as progress:
        assert progress.mode == "lines"  # a terminal is never quiet
        progress.step("node 4 catching up", None)
        progress.update(400, 1000, line="node 4: at 400 of 1000")
        clock.now += 0.5
        progress.update(500, line="node 4: at 500 of 1000")
        clock.now += 0.6
        progress.update(600)
    assert term.getvalue() == "node 4: at 400 of 1000\nnode 4 catching up: 600 of 1000\n"


def test_a_timed_step_shows_the_time_left_by_itself() -> None:
    out = io.StringIO()
    with Progress(out, prefix="jepsen: ", every=0.2) as progress:
        progress.phase("running 4 clients for 1 s")
        progress.timed("workload", 1.0)
        deadline = time.monotonic() + 10
        while out.getvalue().count("left") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        progress.phase("healing")
        lines = out.getvalue().splitlines()
    assert lines[0] == "jepsen: running 4 clients for 1 s"
    assert lines[-1] == "jepsen: healing"
    left = [line for line in lines if line.endswith(" s left")]
    assert len(left) >= 2, lines
    assert all(line.startswith("jepsen: workload: ") for line in left)
    # After the phase ended, the ticker stopped: no line comes after "healing".
    time.sleep(0.5)
    assert out.getvalue().splitlines()[-1] == "jepsen: healing"


def test_terminal_with_rich_draws_a_bar_and_keeps_the_phase_lines() -> None:
    pytest.importorskip("rich")
    term = Terminal()
    with Progress(term, prefix="x: ") as progress:
        assert progress.mode == "rich"
        progress.phase("benchmark 1 of 2: sim")
        progress.step("benchmarks", 2)
        progress.update(1)
        progress.timed("workload", 0.6)
        time.sleep(0.8)
        progress.phase("benchmark 2 of 2: storage")
    text = term.getvalue()
    assert "benchmark 1 of 2: sim" in text
    assert "benchmark 2 of 2: storage" in text
    assert "s left" in text  # the timed step's bar moved by itself


def test_no_thread_is_left_behind() -> None:
    import threading

    with Progress(io.StringIO(), every=0.05) as progress:
        progress.timed("a", 5.0)
        progress.timed("b", 5.0)
        assert [t.name for t in threading.enumerate()].count("raftpy-progress") == 1
    assert "raftpy-progress" not in [t.name for t in threading.enumerate()]


def test_make_bench_names_each_benchmark_n_of_m(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import benchmarks.__main__ as bench

    def run_one(name: str) -> dict[str, Any]:
        print(f"running {name}")
        return {"results": {"x": 1.0}, "targets": {}, "met": {}, "seconds": 0.0}

    monkeypatch.setattr(bench, "discover", lambda: ["alpha", "beta", "gamma"])
    monkeypatch.setattr(bench, "run_one", run_one)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "bench-results" / "latest.json")
    monkeypatch.setattr(bench, "REPO", tmp_path)
    assert bench.main(["alpha", "gamma"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "== alpha (1 of 2)\nrunning alpha\n\n== gamma (2 of 2)\nrunning gamma\n\n"
    )
