"""Availability by time (raftpy.testing.jepsen.availability) and how the report shows it, on
synthetic histories with exact figures: no server processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftpy.testing.history import Operation
from raftpy.testing.jepsen import JepsenConfig, JepsenResult
from raftpy.testing.jepsen.availability import (
    GAP_THRESHOLD_NS,
    Gap,
    WriteProgress,
    history_completions,
    sample_completions,
)
from raftpy.testing.jepsen.nemesis import FaultWindow
from raftpy.testing.jepsen.report import RUN_LINE_HEADER, run_line, summarize, write_report
from raftpy.testing.jepsen.workload import Sample

S = 1_000_000_000  # one second in nanoseconds
MS = 1_000_000


def _ok_writes(start: int, end: int, count: int, home: int | None = None) -> list[Sample]:
    """``count`` successful writes evenly spread, the first completing at ``start``, the last
    before ``end``; each took 2 ms."""
    rets = [start + (end - start) * k // count for k in range(count)]
    return [Sample("write", ret - 2 * MS, ret, "ok", home) for ret in rets]


WINDOWS = [
    FaultWindow("quiet", 0, 12 * S),
    FaultWindow("partition-leader: n1 isolated", 12 * S, 18 * S),
    FaultWindow("quiet", 18 * S, 30 * S),
    FaultWindow("healed: recovery write, final reads", 30 * S, 31 * S),
]


def _result(samples: list[Sample], tmp_path: Path, seconds: float = 30.0) -> JepsenResult:
    result = JepsenResult(
        config=JepsenConfig(nemesis="partition-leader", seconds=seconds, out_dir=tmp_path),
        seed=7,
        history=[],
        checks=[],
        linearizability=None,
        violations=[],
        windows=WINDOWS,
        samples=samples,
        started=0,
        workload_seconds=seconds,
        workload_ops=len(samples),
        out_dir=tmp_path,
    )
    result.summary = summarize(result)
    return result


def _outage_run() -> list[Sample]:
    """30 s of writes every ~4 ms except from 12 s to 18 s, where six calls fail after 1 s
    each: 5,994 successes and 6 failures (99.9% by operations), 6 s without a successful
    write (80% by time). The first write completes at 4 ms, the last at 12 s; then at 18 s."""
    before = [
        Sample("write", r - 2 * MS, r, "ok") for r in (12 * S * k // 2997 for k in range(1, 2998))
    ]
    failing = [Sample("write", (12 + i) * S, (13 + i) * S, "failed") for i in range(6)]
    after = _ok_writes(18 * S, 30 * S, 2997)
    return sorted(before + failing + after, key=lambda s: s.call)


def test_an_outage_of_6_s_in_30_s_is_80_percent_by_time_and_99_9_by_operations(
    tmp_path: Path,
) -> None:
    samples = _outage_run()
    assert max(s.ret for s in samples if s.ret < 13 * S and s.outcome == "ok") == 12 * S
    result = _result(samples, tmp_path)
    assert result.by_operations == pytest.approx(0.999, abs=1e-12)
    progress = result.progress()
    assert progress.over().share == pytest.approx(0.8, abs=1e-12)
    assert progress.longest == Gap(12 * S, 18 * S)
    assert progress.long_gaps() == [Gap(12 * S, 18 * S)]
    # Per window: the fault window had no successful write at all, the quiet ones all time.
    assert progress.over(12 * S, 18 * S).share == 0.0
    assert progress.over(0, 12 * S).share == 1.0 and progress.over(18 * S, 30 * S).share == 1.0

    text = result.summary
    assert "availability: by operations 99.9% (calls that succeeded), by time 80.0%" in text
    assert (
        "longest gap without a successful write: 6.00 s (12.00-18.00 s, in partition-leader)"
        in text
    )
    # The call that succeeded at 18 s was made in the fault window (at 17.998 s).
    assert "ok  14.3% time   0.0% gap  6.000 s (1/7, failed 6" in text
    assert "ok 100.0% time 100.0% gap  0.004 s (2997/2997" in text
    assert "all fault windows: ok  14.3% (1/7), by time 0.0%" in text
    assert "all quiet windows: ok 100.0% (5993/5993), by time 100.0%" in text
    assert "time     - gap      -" in text  # the healed window has no workload to judge

    line = run_line(result)
    assert line.split() == [
        "partition-leader",
        "7",
        "30",
        "6000",
        "99.9%",
        "80.0%",
        "6.00",
        "partition-leader",
        "yes",  # no checks failed (there are none here)
    ]
    assert len(RUN_LINE_HEADER.split()) == len(line.split())

    write_report(result)
    assert "no successful write for 6.00 s" in (tmp_path / "timeline.html").read_text()
    assert "by time 80.0%" in (tmp_path / "summary.txt").read_text()


def test_the_clients_of_an_isolated_node_show_their_own_outage(tmp_path: Path) -> None:
    """Node 1's clients see the 6 s outage; node 2's keep writing: 100% by time overall (some
    client could write all the time), 80% for node 1's clients."""
    node1 = [s for s in _outage_run() if s.outcome == "ok"]
    node1 = [Sample(s.kind, s.call, s.ret, s.outcome, 1) for s in node1]
    node2 = _ok_writes(0, 30 * S, 6000, home=2)
    result = _result(sorted(node1 + node2, key=lambda s: s.call), tmp_path)
    assert result.homes == [1, 2]
    assert result.progress().over().share == 1.0
    assert result.progress(1).over().share == pytest.approx(0.8, abs=1e-12)
    assert result.progress(2).over().share == 1.0
    text = result.summary
    assert "by time 100.0%" in text
    assert (
        "node 1: by operations 100.0%, by time 80.0%, in fault windows 0.0%; longest gap "
        "6.00 s (12.00-18.00 s, in partition-leader)" in text
    )
    assert "node 2: by operations 100.0%, by time 100.0%, in fault windows 100.0%" in text
    write_report(result)
    assert "node 1: no successful write for 6.00 s" in (tmp_path / "timeline.html").read_text()


def test_a_gap_longer_than_the_threshold_counts_whole_and_one_as_long_not_at_all() -> None:
    t = GAP_THRESHOLD_NS
    at_threshold = WriteProgress([t, 2 * t], 0, 2 * t)
    assert at_threshold.over().unavailable == 0 and at_threshold.over().share == 1.0
    over = WriteProgress([t + 1], 0, t + 1)
    assert over.over().unavailable == t + 1 and over.over().share == 0.0
    assert over.longest == Gap(0, t + 1)


def test_the_start_and_the_end_of_the_span_bound_gaps() -> None:
    # Nothing before 2 s nor after 7 s of a 10 s span: 5 s unavailable, the longest is 3 s.
    p = WriteProgress([2 * S + k * MS for k in range(0, 5001, 5)], 0, 10 * S)
    assert p.over().unavailable == 5 * S and p.over().share == pytest.approx(0.5)
    assert p.longest == Gap(7 * S, 10 * S)
    # Completions outside the span are ignored; no completion at all: all unavailable.
    empty = WriteProgress([-5, 11 * S], 0, 10 * S)
    assert empty.over().share == 0.0 and empty.longest == Gap(0, 10 * S)
    assert WriteProgress([], 5, 5).over().share == 1.0  # an empty span is not an outage


def test_a_gap_across_a_window_edge_counts_in_each_window_for_its_part() -> None:
    # Writes until 4.95 s and from 6 s: the gap starts 50 ms before the window at 5 s. It
    # is one long gap, so both parts count, although 50 ms alone would be under the threshold.
    rets = [k * MS for k in range(0, 4951)] + [6 * S + k * MS for k in range(0, 4001)]
    p = WriteProgress(rets, 0, 10 * S)
    first, second = p.over(0, 5 * S), p.over(5 * S, 10 * S)
    assert first.unavailable == 50 * MS and second.unavailable == S
    assert first.longest == Gap(4950 * MS, 5 * S) and second.longest == Gap(5 * S, 6 * S)
    assert p.over(2 * S, 3 * S).share == 1.0
    assert p.over(2 * S, 3 * S).longest.duration == pytest.approx(0.001)


def test_bad_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="ends"):
        WriteProgress([], 10, 5)
    with pytest.raises(ValueError, match="threshold"):
        WriteProgress([], 0, 5, threshold=-1)


def test_which_calls_count_as_successful_writes() -> None:
    samples = [
        Sample("write", 0, 10, "ok"),
        Sample("cas", 0, 20, "ok"),
        Sample("add", 0, 30, "ok"),
        Sample("read", 0, 40, "ok"),  # a read writes nothing
        Sample("write", 0, 50, "failed"),
        Sample("cas", 0, 60, "unknown"),
    ]
    assert sample_completions(samples) == [10, 20, 30]
    history = [
        Operation(client=1, op="write", key="a", call=0, ret=15, value=1),
        Operation(client=1, op="cas", key="a", call=0, ret=5, from_=1, to=2, ok=False),
        Operation(client=2, op="read", key="a", call=0, ret=7, value=1),
        Operation(client=3, op="write", key="a", call=0, ret=9, value=2, unknown=True),
        Operation(client=4, op="write", key="a", call=0, ret=None, value=3),
    ]
    # A cas that did not swap went through the log all the same: it counts.
    assert history_completions(history) == [5, 15]


def test_the_figures_come_back_offline_from_history_jsonl(tmp_path: Path) -> None:
    """docs/jepsen.md: availability by time recomputed from a written history file."""
    from raftpy.testing.history import load_history, write_history

    ops = [
        Operation(client=1, op="write", key="a", call=ret - 2 * MS, ret=ret, value=1)
        for ret in [k * 10 * MS for k in range(1, 101)] + [3 * S + k * 10 * MS for k in range(101)]
    ]
    write_history(tmp_path / "history.jsonl", ops)
    done = history_completions(load_history(tmp_path / "history.jsonl"))
    progress = WriteProgress(done, done[0], done[-1])
    assert progress.longest == Gap(S, 3 * S)
    assert progress.over().share == pytest.approx(1 - 2 / 3.99)
