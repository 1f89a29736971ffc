"""Run the benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench`` runs them all).

Every module ``benchmarks/bench_<name>.py`` is a benchmark: it offers ``run() -> dict[str,
float]`` (result name -> value) and may declare ``TARGETS: dict[str, tuple[str, float]]``
(result name -> (``">="`` or ``"<="``, value)). Naming modules (``python -m benchmarks sim``)
runs only those. Each benchmark starts with a line ``== NAME (K of M)``; on a terminal with
``rich`` a bar below the output names the one that runs and its time so far. The results are
printed as a table and written to
``bench-results/latest.json`` at the repository root.

Exit status: 0 when every selected benchmark ran (a missed target is reported, not an error);
1 when one raised; 2 for a usage error (unknown benchmark name).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import compile_raftpy, cpu_reference
from raftpy.progress import Progress

PACKAGE_DIR = Path(__file__).resolve().parent
REPO = PACKAGE_DIR.parent
RESULTS = REPO / "bench-results" / "latest.json"
PREFIX = "bench_"

Target = tuple[str, float]


def discover() -> list[str]:
    """The names of every benchmark module (``bench_sim.py`` -> ``sim``), sorted."""
    return sorted(p.stem[len(PREFIX) :] for p in PACKAGE_DIR.glob(f"{PREFIX}*.py"))


def _targets(module: object) -> dict[str, Target]:
    raw = getattr(module, "TARGETS", {})
    out: dict[str, Target] = {}
    for key, value in dict(raw).items():
        op, bound = value
        if op not in (">=", "<="):
            raise ValueError(f"{module!r}: target {key!r} has unknown comparison {op!r}")
        out[str(key)] = (op, float(bound))
    return out


def _met(value: float, target: Target) -> bool:
    op, bound = target
    return value >= bound if op == ">=" else value <= bound


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def run_one(name: str) -> dict[str, Any]:
    """Import ``benchmarks.bench_<name>``, call its ``run()`` and time it."""
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    targets = _targets(module)
    start = time.perf_counter()
    results = module.run()
    seconds = time.perf_counter() - start
    if not isinstance(results, Mapping):
        raise TypeError(f"{PREFIX}{name}.run() returned {type(results).__name__}, not a dict")
    clean = {str(k): float(v) for k, v in results.items()}
    return {
        "results": clean,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in targets.items()},
        "met": {k: _met(clean[k], t) for k, t in targets.items() if k in clean},
        "seconds": seconds,
    }


def table(report: Mapping[str, Mapping[str, Any]]) -> str:
    """The results as an aligned text table: benchmark, result, value, target, status."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, entry in report.items():
        if "error" in entry:
            first_line = str(entry["error"]).splitlines()[0]
            rows.append((name, "ERROR", "", "", first_line[:60] + "..." * (len(first_line) > 60)))
            continue
        targets = entry["targets"]
        for key, value in entry["results"].items():
            target = targets.get(key)
            if target is None:
                goal = status = ""
            else:
                goal = f"{target['op']} {_fmt(target['value'])}"
                status = "ok" if entry["met"][key] else "BELOW TARGET"
            rows.append((name, key, _fmt(value), goal, status))
    header = ("benchmark", "result", "value", "target", "status")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(5)]
    lines = []
    for r in [header, *rows]:
        cells = [
            r[0].ljust(widths[0]),
            r[1].ljust(widths[1]),
            r[2].rjust(widths[2]),
            r[3].ljust(widths[3]),
            r[4],
        ]
        lines.append("  ".join(cells).rstrip())
        if r is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run raftpy's benchmarks and write bench-results/latest.json.",
        epilog=f"available: {', '.join(available) or '(none)'}",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (available: {', '.join(available)})")
    selected = list(dict.fromkeys(args.names)) or available

    compile_raftpy()  # the processes the benchmarks start must not compile raftpy each time
    load_before = os.getloadavg()
    cpu_before = cpu_reference()
    report: dict[str, dict[str, Any]] = {}
    # On a terminal with rich, a bar below the output names the benchmark that runs (n of m)
    # and its time so far; elsewhere, the header lines alone.
    with Progress(sys.stdout) as progress:
        for k, name in enumerate(selected, 1):
            progress.phase(f"== {name} ({k} of {len(selected)})")
            progress.step(f"benchmark {k} of {len(selected)}: {name}")
            try:
                report[name] = run_one(name)
            except Exception as exc:  # a failing benchmark must not hide the others' results
                traceback.print_exc()
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            progress.phase("")

    print(table(report))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        # Other work on the machine skews wall-clock results: record how busy it was.
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        # How fast this CPU ran a fixed Python loop (benchmarks.machine.cpu_reference): the
        # same code's timings differ from day to day on this virtual machine.
        "cpu_reference_mops_before": cpu_before,
        "cpu_reference_mops_after": cpu_reference(),
        "benchmarks": report,
    }
    RESULTS.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nload average {load} on {os.cpu_count()} CPUs; CPU reference "
        f"{document['cpu_reference_mops_before']:.2f} -> {document['cpu_reference_mops_after']:.2f}"
        f" M loops/s (benchmarks/machine.py); wrote {RESULTS.relative_to(REPO)}"
    )
    return 1 if any("error" in entry for entry in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
