"""``raftpy doctor DATA_DIR [--json | --repair]``: inspect a stopped node's data directory
offline and give a verdict (docs/doctor.md).

It reads the write-ahead log, the hard state, the identity, the peer pins and the snapshots
with the node's own recovery code (:mod:`raftpy.storage.inspect`), read-only, prints what it
found and a verdict line. ``--json`` prints the report as JSON instead (the keys of
:class:`~raftpy.storage.inspect.DataDirReport`, documented in docs/doctor.md). ``--repair``
cuts a torn tail (a last write that a crash interrupted before its fdatasync returned, so
never acknowledged), after printing exactly what it cuts; it refuses anything else.

Exit status: 0 healthy (the node starts on this directory; warnings say what it repairs by
itself), 1 damaged (the node refuses to start; the verdict names the file, the byte offset and
what to do), also when ``--repair`` refuses; 2 usage: no such directory, not a data directory,
a directory that cannot be read, or one a running node holds (its lock is taken: stop the
node first; a lock is never stale, the kernel drops it when the node's process dies).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import TextIO

import msgspec

from raftpy.cli.arguments import EXIT_USAGE
from raftpy.storage.errors import DataDirError, DataDirLockedError
from raftpy.storage.inspect import (
    DataDirReport,
    Finding,
    Inspection,
    NotADataDirError,
    RepairRefused,
    SegmentReport,
    SnapshotReport,
)

__all__ = ["EXIT_DAMAGED", "EXIT_HEALTHY", "add_parser", "render_report"]

EXIT_HEALTHY = 0
EXIT_DAMAGED = 1

_MAX_TERM_RUNS = 8
_INDENT = " " * 12


@contextlib.contextmanager
def _quiet_recovery() -> Iterator[None]:
    """Recovery logs a warning for a torn tail it cuts; here it is a finding instead."""
    logger = logging.getLogger("raftpy.storage")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _n(value: int) -> str:
    return f"{value:,}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) if ids else "none"


def _segment_line(s: SegmentReport) -> str:
    if s.first_index is None or s.last_index is None:
        entries = "no entries"
    else:
        entries = f"entries {s.first_index}..{s.last_index}"
    parts = [s.file, entries, _plural(s.records, "record")]
    if s.version is None:
        parts.append(f"{_n(s.size)} bytes")
    else:
        parts.append(f"{_n(s.bytes)} of {_n(max(s.size, s.preallocated))} bytes")
        if s.version < 2:
            parts.append("format 1")
    if s.sealed:
        parts.append("sealed")
    if s.damage is not None:
        parts.append(f"DAMAGE: {s.damage}")
    return "  ".join(parts)


_ROLES = {
    "restored": "restored at start",
    "log": "the log's snapshot, kept",
    "unvouched": "not vouched for by the log, deleted at start",
    "old": "older, deleted at start",
    "unknown": "the log is unreadable: its use is unknown",
}


def _snapshot_line(s: SnapshotReport) -> str:
    check = "checksum ok" if s.checksum_ok else f"DAMAGED: {s.problem}"
    return f"{s.file}  index {s.index} term {s.term}  {_n(s.size)} bytes  {check}  {_ROLES[s.role]}"


def _where(f: Finding) -> str:
    if f.file is None:
        return ""
    return f"{f.file} at byte offset {f.offset}" if f.offset is not None else f.file


def verdict_line(report: DataDirReport) -> str:
    """The last line of the report: ``verdict: healthy`` (with the number of warnings the node
    handles at start) or ``verdict: damaged: FILE at byte offset N: what. what it means``."""
    if report.damaged:
        first = report.damaged[0]
        where = _where(first)
        more = len(report.damaged) - 1
        also = f" (and {_plural(more, 'more damage finding')})" if more else ""
        return (
            f"verdict: damaged: {where + ': ' if where else ''}{first.what}{also}. {first.meaning}"
        )
    warnings = sum(1 for f in report.findings if f.severity == "warning")
    if warnings:
        return f"verdict: healthy ({_plural(warnings, 'warning')}: the node handles it at start)"
    return "verdict: healthy"


def render_report(report: DataDirReport) -> list[str]:
    """The readable report ``raftpy doctor`` prints, line by line (the verdict last)."""
    lines = [f"raftpy doctor: {report.data_dir}"]
    ident = report.identity
    if ident is None:
        lines.append("identity    none recorded")
    else:
        lines.append(
            f"identity    node {ident.node_id}, cluster {ident.cluster_id!r}, "
            f"incarnation {ident.incarnation}"
        )
    hard = report.hard_state
    if hard is None:
        lines.append("hard state  none recorded")
    else:
        vote = "nobody" if hard.vote is None else str(hard.vote)
        lines.append(f"hard state  term {hard.term}, vote {vote}, commit {hard.commit}")
    log = report.log
    if log is None:
        lines.append("log         not readable (see the findings)")
    else:
        entries = (
            "no entries"
            if log.last_index < log.first_index
            else f"entries {log.first_index}..{log.last_index}"
        )
        lines.append(
            f"log         {entries} after snapshot {log.snapshot_index} (term "
            f"{log.snapshot_term}), {_n(log.bytes)} bytes of records"
        )
        runs = log.terms
        if len(runs) > _MAX_TERM_RUNS:
            lines.append(f"{_INDENT}... {len(runs) - _MAX_TERM_RUNS} older terms")
            runs = runs[-_MAX_TERM_RUNS:]
        lines += [f"{_INDENT}term {r.term}: {r.first}..{r.last}" for r in runs]
    m = report.membership
    if m is not None:
        text = f"voters {_ids(m.voters)}; learners {_ids(m.learners)}"
        if m.voters_outgoing:
            text += f"; outgoing voters {_ids(m.voters_outgoing)} (joint)"
        lines.append(f"membership  {text}")
        lines += [f"{_INDENT}{i} at {a}" for i, a in sorted(m.addresses.items())]
    if report.pinned_peers:
        pins = ", ".join(f"{i} {inc[:8]}..." for i, inc in sorted(report.pinned_peers.items()))
        lines.append(f"peers       pinned: {pins}")
    lines.append(f"segments    {len(report.segments)}")
    lines += [_INDENT + _segment_line(s) for s in report.segments]
    lines.append(f"snapshots   {len(report.snapshots)}")
    lines += [_INDENT + _snapshot_line(s) for s in report.snapshots]
    lines.append(f"findings    {len(report.findings) or 'none'}")
    for f in report.findings:
        where = _where(f)
        lines.append(f"  {f.severity:<9} {f.code}{': ' + where if where else ''}")
        lines.append(f"{_INDENT}{f.what}")
        lines.append(f"{_INDENT}means: {f.meaning}")
    lines.append(verdict_line(report))
    return lines


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftpy doctor``: inspect, print, and repair a torn tail if asked."""
    path: str = args.data_dir
    try:
        with _quiet_recovery(), Inspection(path) as inspection:
            report = inspection.report
            if args.json:
                out.write(msgspec.json.format(msgspec.json.encode(report)).decode() + "\n")
                return EXIT_DAMAGED if report.damaged else EXIT_HEALTHY
            print("\n".join(render_report(report)), file=out)
            if not args.repair:
                return EXIT_DAMAGED if report.damaged else EXIT_HEALTHY
            return _repair(inspection, out, err)
    except NotADataDirError as exc:
        print(args.usage, end="", file=err)
        print(f"raftpy doctor: {exc}", file=err)
        return EXIT_USAGE
    except DataDirLockedError as exc:
        print(f"raftpy doctor: {exc}; nothing was read", file=err)
        return EXIT_USAGE
    except DataDirError as exc:
        print(f"raftpy doctor: {exc}", file=err)
        return EXIT_USAGE


def _repair(inspection: Inspection, out: TextIO, err: TextIO) -> int:
    report = inspection.report
    if not report.damaged and not report.repairs:
        print("repair: nothing to cut", file=out)
        return EXIT_HEALTHY
    for r in report.repairs:
        what = (
            f"{_n(r.bytes)} bytes ({_plural(r.records, 'record')}) at byte offset {r.offset} "
            f"of {r.file} (up to offset {r.end}), never synced"
            if r.bytes
            else f"nothing, and writes the missing end marker at byte offset {r.offset} of {r.file}"
        )
        if not report.damaged:
            print(f"repair: cuts {what}", file=out)
    out.flush()
    try:
        done = inspection.repair()
    except RepairRefused as exc:
        print(f"repair: {exc}. Nothing was changed.", file=err)
        return EXIT_DAMAGED
    print(f"repair: done ({_plural(len(done), 'cut')}, synced)", file=out)
    inspection.close()
    with Inspection(inspection.data_dir) as again:
        print(verdict_line(again.report), file=out)
        return EXIT_DAMAGED if again.report.damaged else EXIT_HEALTHY


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "doctor",
        help="inspect a stopped node's data dir offline and give a verdict",
        description=(
            "Inspect a stopped node's data dir (write-ahead log, hard state, identity, peer "
            "pins, snapshots) read-only, with the node's own recovery code, and give a "
            "verdict. Exit status: 0 healthy, 1 damaged (the verdict names the file, the byte "
            "offset and what to do), 2 usage (no such directory, not a data dir, or a running "
            "node holds it). See docs/doctor.md."
        ),
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="the node's data directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--json", action="store_true", help="print the report as JSON (keys in docs/doctor.md)"
    )
    mode.add_argument(
        "--repair",
        action="store_true",
        help=(
            "cut a torn tail (a last write never synced), after printing what it cuts; "
            "refuses anything else"
        ),
    )
    p.set_defaults(handler=_run, usage=p.format_usage())
