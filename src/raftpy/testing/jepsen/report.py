"""What a run of the harness found (:class:`JepsenResult`) and how it is reported: the printable
summary (operations, the share of writes that ended indeterminate, latencies, availability in
each fault window by operations and by time (:mod:`~raftpy.testing.jepsen.availability`), the
longest time without a successful write, the checks, the settings and the command that
replays the run), a one-line digest for reports of many runs (:func:`run_line`) and the files
of a run's output directory: ``history.jsonl`` (the register workload) or ``adds.jsonl`` (the
set workload: one line per add), ``timeline.html`` (throughput over time with the fault
windows; plus ``violation.html``, the checker's timeline of the failing key, when there is
one) and ``summary.txt``.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from raftpy.testing.history import Operation, write_history
from raftpy.testing.jepsen.availability import (
    GAP_THRESHOLD_NS,
    Gap,
    TimeAvailability,
    WriteProgress,
    sample_completions,
)
from raftpy.testing.jepsen.checks import JepsenCheck
from raftpy.testing.jepsen.config import JepsenConfig, options_line, replay_command
from raftpy.testing.jepsen.nemesis import FaultWindow
from raftpy.testing.jepsen.set_checks import SetAdd, SetVerdict
from raftpy.testing.jepsen.workload import Sample, SampleKind
from raftpy.testing.linearizability import CheckResult, render_html

__all__ = ["RUN_LINE_HEADER", "JepsenResult", "run_line", "summarize", "write_report"]


@dataclass
class JepsenResult:
    """What a run found. ``valid``: every check passed. ``summary``: the printable report."""

    config: JepsenConfig
    seed: int
    history: list[Operation]
    checks: list[JepsenCheck]
    linearizability: CheckResult | None
    violations: list[CheckResult]
    windows: list[FaultWindow]
    samples: list[Sample]
    started: int
    workload_seconds: float
    workload_ops: int
    out_dir: Path
    adds: list[SetAdd] = field(default_factory=list)
    set_verdict: SetVerdict | None = None
    summary: str = ""

    @property
    def valid(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def counts(self) -> dict[str, int]:
        """Outcomes of the workload's calls (not the recovery write and final reads)."""
        out = {"ok": 0, "failed": 0, "unknown": 0}
        for s in self.samples[: self.workload_ops]:
            out[s.outcome] += 1
        return out

    @property
    def recorded_per_second(self) -> float:
        """The workload's operations recorded in the history (ok and unknown) per second."""
        c = self.counts
        return (c["ok"] + c["unknown"]) / self.workload_seconds if self.workload_seconds else 0.0

    @property
    def kinds(self) -> tuple[SampleKind, ...]:
        """The kinds of call the run's workload makes."""
        return ("add",) if self.config.workload == "set" else ("read", "write", "cas")

    @property
    def indeterminate_writes(self) -> tuple[int, int]:
        """(writes of the workload whose outcome stayed unknown, writes): every write, cas or
        add, whatever its outcome."""
        writes = [s for s in self.samples[: self.workload_ops] if s.kind != "read"]
        return sum(1 for s in writes if s.outcome == "unknown"), len(writes)

    @property
    def workload_end(self) -> int:
        """When the workload's clients stopped (``time.monotonic_ns``)."""
        return self.started + round(self.workload_seconds * 1e9)

    @property
    def by_operations(self) -> float:
        """Availability by operations: the share of the workload's calls that succeeded."""
        c = self.counts
        total = sum(c.values())
        return c["ok"] / total if total else 0.0

    def progress(self, home: int | None = None) -> WriteProgress:
        """The gaps between the workload's successful writes from its start to its end: of all
        its clients, or (``home``) of the clients living on that node."""
        workload = self.samples[: self.workload_ops]
        if home is not None:
            workload = [s for s in workload if s.home == home]
        return WriteProgress(sample_completions(workload), self.started, self.workload_end)

    @property
    def homes(self) -> list[int]:
        """The nodes the workload's clients live on (none when they reach every node)."""
        return sorted({s.home for s in self.samples[: self.workload_ops] if s.home is not None})


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def _latency_line(samples: Iterable[Sample]) -> str:
    lat = sorted((s.ret - s.call) / 1e6 for s in samples if s.outcome == "ok")
    if not lat:
        return "no successful operation"
    parts = [
        f"p{label} {_percentile(lat, q):.1f}"
        for label, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))
    ]
    return " ".join(parts) + f" max {lat[-1]:.1f}"


def _window_stats(samples: Sequence[Sample], w: FaultWindow) -> tuple[int, int, int, int]:
    """(total, ok, failed, unknown) of the calls made during ``w`` (samples sorted by call)."""
    calls = [s.call for s in samples]
    lo = bisect.bisect_left(calls, w.start)
    hi = bisect.bisect_left(calls, w.end)
    ok = failed = unknown = 0
    for s in samples[lo:hi]:
        if s.outcome == "ok":
            ok += 1
        elif s.outcome == "failed":
            failed += 1
        else:
            unknown += 1
    return hi - lo, ok, failed, unknown


def _windows_of(gap: Gap, windows: Sequence[FaultWindow]) -> str:
    """The windows ``gap`` overlaps, by their short names (``quiet``, the fault's name)."""
    names = [
        w.label.split(":")[0]
        for w in windows
        if w.start < gap.end and gap.start < w.end and not w.healed
    ]
    return " + ".join(names) if names else "-"


def _gap_text(gap: Gap, result: JepsenResult) -> str:
    t0 = (gap.start - result.started) / 1e9
    t1 = (gap.end - result.started) / 1e9
    return f"{gap.duration:.2f} s ({t0:.2f}-{t1:.2f} s, in {_windows_of(gap, result.windows)})"


def _share(a: TimeAvailability) -> str:
    return f"{100 * a.share:5.1f}%"


def _by_time_of(progress: WriteProgress, windows: Iterable[FaultWindow]) -> float | None:
    """Availability by time of several windows together (``None`` when there are none)."""
    span = unavailable = 0
    for w in windows:
        a = progress.over(w.start, w.end)
        span += a.span
        unavailable += a.unavailable
    return 1.0 - unavailable / span if span else None


def _availability_lines(result: JepsenResult) -> list[str]:
    """Availability by time of the whole workload, its longest gap, and the same for the
    clients of each node."""
    progress = result.progress()
    whole = progress.over()
    threshold_ms = GAP_THRESHOLD_NS / 1e6
    lines = [
        f"availability: by operations {100 * result.by_operations:.1f}% (calls that "
        f"succeeded), by time {100 * whole.share:.1f}% (of {whole.span / 1e9:.1f} s, the time "
        f"not in gaps of more than {threshold_ms:g} ms between successful writes)",
        f"longest gap without a successful write: {_gap_text(progress.longest, result)}",
    ]
    homes = result.homes
    if len(homes) > 1:
        lines.append("  by the clients of each node (calls by those clients only):")
        faults = [w for w in result.windows if w.fault]
        for home in homes:
            own = result.progress(home)
            calls = [s for s in result.samples[: result.workload_ops] if s.home == home]
            ok = sum(1 for s in calls if s.outcome == "ok")
            by_ops = f"{100 * ok / len(calls):.1f}%" if calls else "-"
            in_faults = _by_time_of(own, faults)
            fault_text = (
                f", in fault windows {100 * in_faults:.1f}%" if in_faults is not None else ""
            )
            lines.append(
                f"  node {home}: by operations {by_ops}, by time {100 * own.over().share:.1f}%"
                f"{fault_text}; longest gap {_gap_text(own.longest, result)}"
            )
    return lines


def summarize(result: JepsenResult) -> str:
    """The printable report of ``result`` (its :attr:`~JepsenResult.summary`)."""
    cfg = result.config
    c = result.counts
    total = sum(c.values())
    secs = max(1e-9, result.workload_seconds)
    workload = result.samples[: result.workload_ops]
    lines = [
        f"raftpy jepsen: {cfg.workload} workload, {cfg.nodes} nodes, {cfg.clients} clients, "
        f"{cfg.keys} keys, {cfg.seconds:g} s, nemesis {cfg.nemesis}, seed {result.seed}",
        f"operations: {total} in {secs:.1f} s ({total / secs:.0f}/s): ok {c['ok']}, "
        f"failed {c['failed']}, unknown {c['unknown']}; recorded "
        f"{result.recorded_per_second:.0f}/s; "
        + (
            f"adds: {len(result.adds)} with the recovery write"
            if result.config.workload == "set"
            else f"history: {len(result.history)} operations with the recovery write and "
            "final reads"
        ),
    ]
    for kind in result.kinds:
        ks = [s for s in workload if s.kind == kind]
        ok = sum(1 for s in ks if s.outcome == "ok")
        failed = sum(1 for s in ks if s.outcome == "failed")
        lines.append(
            f"  {kind:<5} {len(ks):>7}: ok {ok}, failed {failed}, unknown {len(ks) - ok - failed}"
        )
    unknown, writes = result.indeterminate_writes
    share = f"{100 * unknown / writes:.3f}%" if writes else "-"
    lines.append(f"writes that ended indeterminate: {unknown} of {writes} ({share})")
    sets = result.set_verdict
    if sets is not None:
        lines.append(
            f"sets: {len(result.adds)} adds (acknowledged {sets.acknowledged}, failed "
            f"{sets.failed}, unknown {sets.unknown}); {sets.present} elements present; "
            f"duplicates {len(sets.duplicates)}, losses {len(sets.lost)}, unknown adds applied "
            f"{sets.unknown_present}, present but not added "
            f"{len(sets.unexpected) + len(sets.failed_present)}, sets unread {len(sets.unread)}"
        )
    lines.append(f"latency of successful operations (ms): {_latency_line(workload)}")
    for kind in result.kinds:
        lines.append(f"  {kind:<5} {_latency_line(s for s in workload if s.kind == kind)}")
    lines.append(
        "availability per window: ok = by operations (the calls made in it that succeeded), "
        "time = by time (see below), gap = its longest time without a successful write:"
    )
    samples = sorted(result.samples, key=lambda s: s.call)
    progress = result.progress()
    totals = {True: [0, 0], False: [0, 0]}
    for w in result.windows:
        n, ok, failed, unknown = _window_stats(samples, w)
        if not w.healed:
            totals[w.fault][0] += ok
            totals[w.fault][1] += n
        t0 = (w.start - result.started) / 1e9
        t1 = (w.end - result.started) / 1e9
        avail = f"{100 * ok / n:5.1f}%" if n else "    -"
        rate = ok / max(1e-9, t1 - t0)
        # The healed window holds only the recovery write and the final reads: no workload.
        if w.healed:
            by_time = "time     - gap      -"
        else:
            a = progress.over(w.start, w.end)
            by_time = f"time {_share(a)} gap {a.longest.duration:6.3f} s"
        lines.append(
            f"  {t0:6.1f}-{t1:6.1f} s  ok {avail} {by_time} ({ok}/{n}, failed {failed}, "
            f"unknown {unknown}, {rate:.0f} ok/s)  {w.label}"
        )
    for fault, name in ((False, "quiet"), (True, "fault")):
        ok, n = totals[fault]
        in_time = _by_time_of(
            progress, [w for w in result.windows if w.fault == fault and not w.healed]
        )
        if n:
            time_text = f", by time {100 * in_time:.1f}%" if in_time is not None else ""
            lines.append(f"  all {name} windows: ok {100 * ok / n:5.1f}% ({ok}/{n}){time_text}")
    lines.extend(_availability_lines(result))
    lines.append("checks:")
    for chk in result.checks:
        lines.append(f"  [{'ok' if chk.passed else 'FAIL'}] {chk.name}: {chk.detail}")
    for v in result.violations[:3]:
        if v.violation is not None:
            lines.append(v.violation.explain(max_prefix=5))
    lines.append(f"valid: {'yes' if result.valid else 'NO'}")
    lines.append(f"options: {options_line(cfg, result.seed)}")
    command, missing = replay_command(cfg, result.seed)
    lines.append(f"replay: {command}")
    if missing:
        lines.append(f"  (not on the command line, set them in JepsenConfig: {', '.join(missing)})")
    lines.append(f"output: {result.out_dir}")
    return "\n".join(lines)


RUN_LINE_HEADER: Final = (
    f"{'fault':<24} {'seed':>5} {'secs':>5} {'ops':>8} {'by-ops':>7} {'by-time':>7} "
    f"{'gap-s':>6}  {'gap-in':<30} valid"
)
"""The column names of :func:`run_line`."""


def run_line(result: JepsenResult) -> str:
    """One line for a report of many runs: the fault, seed, seconds, the workload's calls,
    availability by operations and by time, the longest gap (seconds, the windows it fell in)
    and whether the run was valid (columns of :data:`RUN_LINE_HEADER`)."""
    progress = result.progress()
    gap = progress.longest
    return (
        f"{result.config.nemesis:<24} {result.seed:>5} {result.config.seconds:>5g} "
        f"{sum(result.counts.values()):>8} {100 * result.by_operations:>6.1f}% "
        f"{100 * progress.over().share:>6.1f}% {gap.duration:>6.2f}  "
        f"{_windows_of(gap, result.windows)[:30]:<30} {'yes' if result.valid else 'NO'}"
    )


def _timeline_html(result: JepsenResult) -> str:
    """Throughput over time (ok / failed / unknown per bucket, by call time) with the fault
    windows shaded, and the summary."""
    started = result.started
    end = max([w.end for w in result.windows] + [s.ret for s in result.samples] + [started + 1])
    span = (end - started) / 1e9
    buckets = max(1, min(600, int(span / 0.1)))
    width_s = span / buckets
    ok = [0] * buckets
    failed = [0] * buckets
    unknown = [0] * buckets
    for s in result.samples:
        b = min(buckets - 1, max(0, int((s.call - started) / 1e9 / width_s)))
        (ok if s.outcome == "ok" else failed if s.outcome == "failed" else unknown)[b] += 1
    peak = max([a + b + c for a, b, c in zip(ok, failed, unknown, strict=True)] + [1])
    left, top, plot_w, plot_h = 50, 30, 1100, 260
    bar_w = plot_w / buckets

    def x(t_ns: int) -> float:
        return left + (t_ns - started) / 1e9 / span * plot_w

    # Under the axis, one band per group of clients (all of them, then those of each node):
    # dark where it went more than the threshold without a successful write.
    bands: list[tuple[str, WriteProgress]] = [("all", result.progress())]
    if len(result.homes) > 1:
        bands += [(f"node {h}", result.progress(h)) for h in result.homes]
    band_top = top + plot_h + 22
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + plot_w + 20}" '
        f'height="{band_top + 12 * len(bands) + 10}">'
    ]
    for i, (name, progress) in enumerate(bands):
        y0 = band_top + 12 * i
        parts.append(f'<text x="2" y="{y0 + 8}" font-size="9">{html.escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="8" fill="#cfe8d2"/>')
        for gap in progress.long_gaps():
            parts.append(
                f"<g><title>{html.escape(name)}: no successful write for "
                f'{gap.duration:.2f} s</title><rect x="{x(gap.start):.1f}" y="{y0}" '
                f'width="{max(1.0, x(gap.end) - x(gap.start)):.1f}" height="8" '
                'fill="#303030"/></g>'
            )
    for w in result.windows:
        if w.fault:
            parts.append(
                f'<g><title>{html.escape(w.label)}</title><rect x="{x(w.start):.1f}" y="{top}" '
                f'width="{max(1.0, x(w.end) - x(w.start)):.1f}" height="{plot_h}" '
                'fill="#f4d8d8"/></g>'
            )
            parts.append(
                f'<text x="{x(w.start) + 2:.1f}" y="{top - 4}" font-size="10">'
                f"{html.escape(w.label.split(':')[0])}</text>"
            )
    for b in range(buckets):
        y = float(top + plot_h)
        for count, color in ((ok[b], "#3a9a4a"), (unknown[b], "#e0a020"), (failed[b], "#888")):
            if count:
                h = count / peak * plot_h
                y -= h
                parts.append(
                    f'<rect x="{left + b * bar_w:.1f}" y="{y:.1f}" width="{max(bar_w, 0.5):.1f}" '
                    f'height="{h:.1f}" fill="{color}"/>'
                )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#000"/>'
    )
    for k in range(int(span) + 1):
        if span > 60 and k % 10:
            continue
        xx = left + k / span * plot_w
        parts.append(
            f'<text x="{xx:.1f}" y="{top + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{k}s</text>'
        )
    rate = peak / width_s
    parts.append(f'<text x="2" y="{top + 10}" font-size="10">{rate:.0f}/s</text>')
    parts.append("</svg>")
    violation = ""
    if any(v.violation is not None for v in result.violations):
        violation = (
            "<p><b>Not linearizable</b>: see <a href='violation.html'>violation.html</a> "
            "for the checker's timeline of the first failing key.</p>"
        )
    title = f"raftpy jepsen: nemesis {html.escape(result.config.nemesis)}, seed {result.seed}"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:1em}}"
        "pre{background:#f6f6f6;padding:.6em}</style></head><body>"
        f"<h1>{title}</h1>"
        "<p>Operations per 100 ms by call time: <span style='color:#3a9a4a'>ok</span>, "
        "<span style='color:#e0a020'>unknown</span>, <span style='color:#888'>failed</span>; "
        "fault windows shaded red (hover for the fault). Under the axis, for all clients and "
        "for the clients of each node: green while writes succeed, dark for each time of more "
        f"than {GAP_THRESHOLD_NS / 1e6:g} ms without a successful write (the time the "
        "availability by time counts as unavailable; hover for its length).</p>"
        f"{violation}<div>{''.join(parts)}</div>"
        f"<pre>{html.escape(result.summary)}</pre></body></html>\n"
    )


def write_report(result: JepsenResult) -> None:
    """Write the history (or the adds), the timeline (and the violation, if any) and the summary to
    ``result.out_dir``."""
    out = result.out_dir
    if result.config.workload == "set":
        with (out / "adds.jsonl").open("w", encoding="utf-8") as f:
            for add in result.adds:
                f.write(json.dumps(dataclasses.asdict(add)) + "\n")
    else:
        write_history(out / "history.jsonl", result.history)
    for v in result.violations[:1]:
        if v.violation is not None:
            (out / "violation.html").write_text(render_html(v), encoding="utf-8")
    (out / "timeline.html").write_text(_timeline_html(result), encoding="utf-8")
    (out / "summary.txt").write_text(result.summary + "\n", encoding="utf-8")
