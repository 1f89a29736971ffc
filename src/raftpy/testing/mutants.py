"""Mutation testing of the simulator fuzz: a catalogue of realistic Raft bugs, each planted in a
scratch copy of the real code, and a runner that shows which fuzz seed finds each one
(docs/mutants.md).

A pass of the fuzz (:mod:`raftpy.testing.fuzz`) only means something if the fuzz can fail.
Each :class:`Mutant` replaces one exact piece of text (rarely a few) in a file under
``src/raftpy`` with a buggy version and names the rule it breaks (Raft paper section or
Ongaro's thesis). The runner copies the package to a scratch directory, applies one mutant
(its old text must occur exactly once, so a refactor that breaks a mutant fails loudly), and
runs the fuzz alone in a subprocess whose ``PYTHONPATH`` points at the copy, over seeds
``0..N-1`` on 3, 5 and 7 nodes in turn, until the first failing seed or a time limit.

Run it::

    python -m raftpy.testing.mutants                  # the whole catalogue, 2 workers
    python -m raftpy.testing.mutants --only double_vote --seeds 50
    python -m raftpy.testing.mutants --list
    python -m raftpy.testing.mutants --schedule classic --json before.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = [
    "CATALOGUE",
    "Edit",
    "Mutant",
    "MutantError",
    "Result",
    "apply_mutant",
    "fuzz_case",
    "main",
    "run_catalogue",
    "run_mutant",
]

PACKAGE = Path(__file__).resolve().parent.parent  # src/raftpy of this checkout
CaseSchedule = Literal["classic", "swarm", "mixed"]


class MutantError(Exception):
    """A mutant no longer applies to the source: its old text is missing or not unique."""


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) with ``new`` in ``file`` (a path under
    ``src/raftpy``)."""

    file: str
    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: ``edits`` applied together, breaking ``rule``."""

    name: str
    rule: str
    edits: tuple[Edit, ...]


def _m(name: str, file: str, old: str, new: str, rule: str, *more: Edit) -> Mutant:
    return Mutant(name, rule, (Edit(file, old, new), *more))


_RAFT = "core/raft.py"
_LOG = "core/log.py"

CATALOGUE: tuple[Mutant, ...] = (
    _m(
        "figure8_commit_by_counting",
        _LOG,
        "if index > self.committed and self.term(index) == term:",
        "if index > self.committed:",
        "Raft §5.4.2 / Figure 8: a leader commits an earlier term's entry by counting replicas",
    ),
    _m(
        "follower_commit_past_last_new",
        _LOG,
        "self.commit_to(min(commit, last_new))",
        "self.commit_to(min(commit, self.last_index()))",
        "Raft §5.3 / Figure 2, AppendEntries rule 5: commit = min(leaderCommit, index of last new "
        "entry); a follower commits a stale suffix past what the leader sent. Planted with a "
        "legal change that lets a schedule reach it: alone, the line is unreachable in this core "
        "(docs/mutants.md); with it, the leader backs off to the last index it knows matches "
        "(Raft §5.3 allows any back-off that stays at or below the divergence)",
        Edit(
            _RAFT,
            "        lost = pr.lost_entries\n        if pr.maybe_decr_to(m.index, match_hint):",
            "        match_hint = min(match_hint, pr.match)\n"
            "        lost = pr.lost_entries\n        if pr.maybe_decr_to(m.index, match_hint):",
        ),
    ),
    _m(
        "heartbeat_commit_past_match",
        _RAFT,
        "                    min(pr.match, committed),\n",
        "                    committed,\n",
        "Raft §5.3 / Figure 2 rule 5 (heartbeats): the leader tells a follower to commit "
        "past what it is known to hold, so it commits entries that may not match the leader's",
    ),
    _m(
        "vote_reply_before_persist",
        _RAFT,
        "_SEND_NOW = (AppendEntries, Heartbeat, TimeoutNow, ReadIndexRequest, ReadIndexResponse)",
        "_SEND_NOW = (\n    AppendEntries, Heartbeat, TimeoutNow, ReadIndexRequest,\n"
        "    ReadIndexResponse, RequestVoteResponse,\n)",
        "Raft Figure 2 (persistent state, updated before responding to RPCs) / Thesis §3.8: "
        "a vote leaves before it is durable; a crash in the fsync forgets it",
    ),
    _m(
        "vote_not_synced",
        _RAFT,
        "            must_sync = True  # Raft Figure 2: term and vote persist before any reply",
        "            must_sync = must_sync or self.term != prev.term",
        "Raft §5.2 / Figure 2, votedFor is persistent: a vote in the current term is "
        "written but not fsynced before the reply; a power loss forgets it",
    ),
    _m(
        "term_not_persisted",
        _RAFT,
        "        if self.term != prev.term or self.vote != prev.vote:\n"
        "            changed_hard = self._prev_hard = self._hard_state()\n"
        "            must_sync = True  # Raft Figure 2: term and vote persist before any reply\n"
        "        elif log.committed != prev.commit:\n"
        "            changed_hard = self._prev_hard = self._hard_state()\n",
        "        if self.vote != prev.vote:\n"
        "            changed_hard = self._prev_hard = self._hard_state()\n"
        "            must_sync = True\n"
        "        elif log.committed != prev.commit:\n"
        "            changed_hard = self._prev_hard = self._hard_state()\n"
        "        self._prev_hard = self._hard_state()\n",
        "Raft §5.1 / Figure 2, currentTerm is persistent: a term change alone is never "
        "written; after a restart a deposed leader's older term is accepted again",
    ),
    _m(
        "double_vote",
        _RAFT,
        "or (self.vote is None and self.lead is None)",
        "or self.lead is None",
        "Raft §5.2: at most one vote per term; a second candidate of the term gets a vote too",
    ),
    _m(
        "up_to_date_check_removed",
        _RAFT,
        "if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):",
        "if can_vote:",
        "Raft §5.4.1: votes only for a candidate whose log is at least as up to date",
    ),
    _m(
        "campaign_without_new_term",
        _RAFT,
        "self._reset(self.term + 1)\n        self.vote = self.id",
        "self._reset(self.term)\n        self.vote = self.id",
        "Raft §5.2: a candidate increments currentTerm; campaigning in its current term "
        "replaces a vote it may already have given",
    ),
    _m(
        "stale_term_accepted",
        _RAFT,
        "        elif m.term < self.term:\n            self._answer_stale(m)\n            return\n",
        "",
        "Raft §5.1: a request with a stale term is rejected; here a deposed leader's appends "
        "and old votes are processed as current",
    ),
    _m(
        "prev_term_unchecked",
        _LOG,
        "if not self.match_term(prev_index, prev_term):\n            return None",
        "if self.term(prev_index) is None:\n            return None",
        "Raft Figure 2, AppendEntries rule 2 / §5.3 Log Matching: the follower checks only "
        "that it has an entry at prevLogIndex, not its term",
    ),
    _m(
        "truncate_matching_suffix",
        _LOG,
        "conflict = self.find_conflict(entries)",
        "conflict = entries[0].index if entries else 0",
        "Raft §5.3 / Figure 2, AppendEntries rule 3: only a conflicting suffix is deleted; here a "
        "delayed append truncates entries the follower acknowledged (committed entries lost)",
    ),
    _m(
        "conflict_hint_taken_as_match",
        "core/progress.py",
        "            self.next = max(min(rejected, match_hint + 1), self.match + 1)\n",
        "            self.match = max(self.match, min(rejected - 1, match_hint))\n"
        "            self.next = max(min(rejected, match_hint + 1), self.match + 1)\n",
        "Raft §5.3: matchIndex moves only on a successful AppendEntries; here the conflict hint "
        "of a rejection (where to probe next) is taken as proof the logs match up to it",
    ),
    _m(
        "leader_counts_unpersisted_entries",
        _RAFT,
        "        self.log.append(entries)\n        self._uncommitted.append(",
        "        self.log.append(entries)\n"
        "        self.prs[self.id].match = self.log.last_index()\n"
        "        self._uncommitted.append(",
        "Thesis §10.2.1: the leader counts its own entry towards commitment only once it is "
        "durable; here before it is written, so a crash in its fsync loses a committed entry",
    ),
    _m(
        "ack_before_fsync",
        _RAFT,
        "must_sync = bool(entries)",
        "must_sync = False",
        "Raft §5.3/Figure 2 (persist before responding) / Thesis §11.7: appended entries are "
        "acknowledged before they are fsynced; a power loss drops acknowledged entries",
    ),
    _m(
        "majority_off_by_one",
        "core/quorum.py",
        "return n // 2 + 1",
        "return (n + 1) // 2",
        "Raft §5.2/§5.3: a majority of an even-sized voter set is n/2 + 1, not n/2",
    ),
    _m(
        "prevote_raises_term",
        _RAFT,
        "            self._become_pre_candidate()\n"
        "            self._reset_randomized_election_timeout()",
        "            self._reset(self.term + 1)\n            self._become_pre_candidate()\n"
        "            self._reset_randomized_election_timeout()",
        "Thesis §9.6: a pre-vote changes no term; here each pre-campaign raises the "
        "candidate's term, so a partitioned server disrupts the cluster when it returns",
    ),
    _m(
        "checkquorum_never_steps_down",
        _RAFT,
        "if self.config.check_quorum and not self._quorum_active():",
        "if False and not self._quorum_active():",
        "Thesis §6.2: a leader that heard from no majority for an election timeout steps down",
    ),
    _m(
        "readindex_before_commit_in_term",
        _RAFT,
        "        if not self._committed_in_current_term():\n            # Thesis §6.4 step 1",
        "        if False:\n            # Thesis §6.4 step 1",
        "Thesis §6.4 step 1: a new leader serves a read only once it committed an entry of its "
        "term (before that its commit index may be stale)",
    ),
    _m(
        "readindex_without_quorum",
        _RAFT,
        "if self.tracker.voters() == {self.id}:\n            self._read_confirmed(",
        "if True:\n            self._read_confirmed(",
        "Thesis §6.4 step 3: a leader confirms it still leads with a heartbeat round to a "
        "majority before serving a read; here a deposed leader serves stale reads",
    ),
    _m(
        "snapshot_over_newer_entries",
        _RAFT,
        "if self.log.match_term(meta.index, meta.term):\n            # Raft §7",
        "if False:\n            # Raft §7",
        "Raft §7 / Figure 13 rule 6: entries past a snapshot the follower's log matches are "
        "retained; here the snapshot replaces acknowledged newer entries",
    ),
    _m(
        "compaction_past_applied",
        "testing/sim_node.py",
        "        index = self.last_applied\n        term = raft.log.term(index)",
        "        index = raft.log.committed\n        term = raft.log.term(index)",
        "Raft §7: a server snapshots (and compacts its log to) what its state machine applied; "
        "here the driver snapshots and compacts at the commit index, past entries a slow "
        "state machine has not applied yet",
        Edit(
            "testing/sim_node.py",
            "if every is not None and self.last_applied - self.storage.first_index() + 1",
            "if every is not None and self.raft.log.committed - self.storage.first_index() + 1",
        ),
    ),
    _m(
        "membership_on_commit",
        _RAFT,
        "        self._sync_conf()\n        return index\n",
        "        return index\n",
        "Thesis §4.1: a server uses a configuration as soon as it is appended to its log, not "
        "when it commits; here the leader (and followers) switch only on commit",
        Edit(
            _RAFT,
            "        self._finish_conf_change()\n        return True\n",
            "        self._sync_conf()\n        self._finish_conf_change()\n        return True\n",
        ),
        Edit(
            _RAFT,
            "            self._sync_conf()  # Thesis §4.1: a configuration entry takes effect on "
            "append\n",
            "            if not self.log.confs.pending(self.log.committed):\n"
            "                self._sync_conf()\n",
        ),
    ),
)


# ----------------------------------------------------------------------------------------------
# Applying
# ----------------------------------------------------------------------------------------------


def apply_mutant(root: Path, mutant: Mutant) -> None:
    """Apply ``mutant`` to the package copy at ``root`` (the ``raftpy`` directory). Raises
    :class:`MutantError` unless each edit's old text occurs exactly once."""
    for edit in mutant.edits:
        path = root / edit.file
        text = path.read_text(encoding="utf-8")
        count = text.count(edit.old)
        if count != 1:
            raise MutantError(
                f"mutant {mutant.name}: the text to replace occurs {count} times in "
                f"src/raftpy/{edit.file} (expected exactly once): {edit.old!r}"
            )
        path.write_text(text.replace(edit.old, edit.new), encoding="utf-8")


def check_catalogue(root: Path = PACKAGE) -> None:
    """Raise :class:`MutantError` if any mutant does not apply to the source at ``root``."""
    with tempfile.TemporaryDirectory(prefix="raftpy-mutant-check-") as tmp:
        for mutant in CATALOGUE:
            copy = Path(tmp) / mutant.name
            copy.mkdir()
            for edit in mutant.edits:
                target = copy / edit.file
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(root / edit.file, target)
            apply_mutant(copy, mutant)


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

SIZES = (3, 5, 7)


def fuzz_case(k: int, schedule: CaseSchedule) -> tuple[int, bool, Literal["classic", "swarm"]]:
    """The ``k``-th run of a mutation run, seed ``k``: ``(n, reads, schedule)``. Sizes take
    turns; every other seed issues reads (as ``test_fuzz_reads`` does); ``mixed`` runs the
    classic schedule on one pair of seeds in four and the swarm schedule (whose focused
    themes reach the rarer states) on the others, in pairs, so each meets both halves of
    the read turns."""
    n = SIZES[k % 3]
    reads = k % 2 == 1
    if schedule == "mixed":
        return n, reads, "classic" if (k // 2) % 4 == 0 else "swarm"
    return n, reads, schedule


@dataclasses.dataclass
class Result:
    """What one mutant's run found."""

    name: str
    killed: bool
    seed: int | None  # the killing seed
    n: int | None  # its cluster size
    schedule: str | None  # its schedule
    tried: int  # seeds run (the killing one included)
    seconds: float
    error: str = ""  # the failure the fuzz reported, or why the run broke
    broken: bool = False  # the mutated copy did not import / the child crashed


class _SeedTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _SeedTimeout


def _child(name: str, seeds: int, schedule: CaseSchedule, seed_limit: float) -> int:
    """In the subprocess: run the fuzz on the mutated copy, one JSON line per seed. A seed
    that runs past ``seed_limit`` wall seconds (a healthy one takes a few) counts as a kill:
    the mutant made the run hang, as it would hang the test suite."""
    import logging
    import signal

    import raftpy

    logging.disable(logging.CRITICAL)
    where = Path(raftpy.__file__).resolve().parent
    if not where.is_relative_to(Path.cwd().resolve()):  # the runner starts us in the copy
        print(json.dumps({"broken": f"raftpy imported from {where}, not the scratch copy"}))
        return 2
    try:
        from raftpy.testing.fuzz import run_fuzz
    except Exception as e:  # the mutant broke the import: a broken mutant, not a kill
        print(json.dumps({"broken": f"{type(e).__name__}: {e}"}))
        return 2
    signal.signal(signal.SIGALRM, _on_alarm)
    for k in range(seeds):
        n, reads, sched = fuzz_case(k, schedule)
        try:
            signal.setitimer(signal.ITIMER_REAL, seed_limit)
            try:
                run_fuzz(n, k, reads=reads, schedule=sched)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SeedTimeout:
            text = f"hang: the run took more than {seed_limit:g} s (a healthy one takes a few)"
            killed = {"seed": k, "n": n, "schedule": sched, "reads": reads, "error": text}
            print(json.dumps({"killed": killed}), flush=True)
            return 1
        except Exception as e:  # a violation, a failed check or a crash in the core
            text = f"{type(e).__name__}: {e}"[:500]
            killed = {"seed": k, "n": n, "schedule": sched, "reads": reads, "error": text}
            print(json.dumps({"killed": killed}), flush=True)
            return 1
        print(json.dumps({"ok": k}), flush=True)
    return 0


def run_mutant(
    mutant: Mutant,
    seeds: int = 2000,
    *,
    time_limit: float = 300.0,
    schedule: CaseSchedule = "mixed",
    seed_limit: float = 60.0,
) -> Result:
    """Apply ``mutant`` to a scratch copy of the package and run the fuzz on it in a
    subprocess, over seeds ``0..seeds-1``, until the first failure or ``time_limit``."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"raftpy-mutant-{mutant.name}-") as tmp:
        root = Path(tmp) / "raftpy"
        shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
        apply_mutant(root, mutant)
        env = dict(os.environ, PYTHONPATH=tmp, PYTHONDONTWRITEBYTECODE="1")
        cmd = [
            sys.executable,
            "-m",
            "raftpy.testing.mutants",
            "--child",
            mutant.name,
            "--seeds",
            str(seeds),
            "--schedule",
            schedule,
            "--seed-limit",
            str(seed_limit),
        ]
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, env=env, capture_output=True, timeout=time_limit, check=False
            )
            out, err, timed_out = proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as e:
            out = e.stdout if isinstance(e.stdout, bytes) else b""
            err, timed_out = b"", True
    tried = 0
    for line in out.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "ok" in record:
            tried = record["ok"] + 1
        elif "killed" in record:
            kill = record["killed"]
            seconds = round(time.monotonic() - start, 1)
            args = (mutant.name, True, kill["seed"], kill["n"], kill["schedule"], kill["seed"] + 1)
            control = _control(kill["seed"], schedule, seed_limit)
            if control:
                # The same run fails on the real code too: a fuzz or core bug, not a kill.
                error = f"false kill: seed {kill['seed']} fails without the mutant: {control}"
                return Result(*args, seconds, error, broken=True)
            return Result(*args, seconds, kill["error"])
        elif "broken" in record:
            seconds = round(time.monotonic() - start, 1)
            return Result(mutant.name, False, None, None, None, 0, seconds, record["broken"], True)
    seconds = round(time.monotonic() - start, 1)
    if not timed_out and tried < seeds:
        tail = err.decode("utf-8", "replace")[-500:]
        return Result(mutant.name, False, None, None, None, tried, seconds, tail, True)
    note = f"survived {tried} seeds" + (" (time limit)" if timed_out else "")
    return Result(mutant.name, False, None, None, None, tried, seconds, note)


def _control(seed: int, schedule: CaseSchedule, seed_limit: float) -> str:
    """Run the killing case on the unmutated package; return its failure, or "" if it
    passes (so the kill is the mutant's doing)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(PACKAGE.parent)
    cmd = [sys.executable, "-m", "raftpy.testing.mutants", "--control", str(seed)]
    cmd += ["--schedule", schedule, "--seed-limit", str(seed_limit)]
    with tempfile.TemporaryDirectory(prefix="raftpy-mutant-control-") as tmp:
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, check=False)
    if proc.returncode == 0:
        return ""
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")[-500:] or "failed"


def _run_control(seed: int, schedule: CaseSchedule, seed_limit: float) -> int:
    import logging
    import signal

    from raftpy.testing.fuzz import run_fuzz

    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seed_limit)
    n, reads, sched = fuzz_case(seed, schedule)
    try:
        run_fuzz(n, seed, reads=reads, schedule=sched)
    except _SeedTimeout:
        print(f"hang: more than {seed_limit:g} s")
        return 1
    except Exception as e:
        print(f"{type(e).__name__}: {e}"[:500])
        return 1
    return 0


def run_catalogue(
    mutants: Sequence[Mutant],
    seeds: int,
    *,
    time_limit: float,
    schedule: CaseSchedule,
    jobs: int = 2,
    progress: bool = True,
    seed_limit: float = 60.0,
) -> list[Result]:
    """Run each mutant (``jobs`` subprocesses at a time); results in catalogue order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(
                run_mutant,
                m,
                seeds,
                time_limit=time_limit,
                schedule=schedule,
                seed_limit=seed_limit,
            ): m.name
            for m in mutants
        }
        for future in concurrent.futures.as_completed(futures):
            if progress:
                print(_row(future.result()), file=sys.stderr, flush=True)
    order = {m.name: i for i, m in enumerate(mutants)}
    return sorted((f.result() for f in futures), key=lambda r: order[r.name])


def _row(r: Result) -> str:
    status = "BROKEN" if r.broken else "killed" if r.killed else "SURVIVED"
    where = f"seed {r.seed} (n={r.n}, {r.schedule})" if r.killed else ""
    return f"{r.name:36} {status:9} {r.tried:6} {r.seconds:7.1f}s  {where}"


def table(results: Sequence[Result]) -> str:
    """The report as a Markdown table."""
    lines = [
        "| mutant | result | seeds tried | killing seed | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if r.broken:
            status = "broken"
        else:
            status = f"killed within {r.tried}" if r.killed else f"survived {r.tried}"
        seed = f"{r.seed} (n={r.n}, {r.schedule})" if r.killed else "-"
        lines.append(f"| {r.name} | {status} | {r.tried} | {seed} | {r.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftpy.testing.mutants",
        description="Plant each catalogued Raft bug in a scratch copy of raftpy and run the "
        "simulator fuzz against it (docs/mutants.md). Exit status 1 if any mutant survives.",
    )
    parser.add_argument("--seeds", type=int, default=2000, help="seeds per mutant (2000)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run just NAME")
    parser.add_argument("--json", metavar="FILE", help="write the results to FILE as JSON")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument(
        "--schedule",
        choices=("classic", "swarm", "mixed"),
        default="mixed",
        help="the fuzz schedules to run (mixed, the default: classic on one pair of seeds in "
        "four, swarm on the rest)",
    )
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per mutant (300)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (2)")
    parser.add_argument(
        "--seed-limit",
        type=float,
        default=60.0,
        help="wall seconds one seed may take before the run counts as hung, a kill (60)",
    )
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--control", type=int, metavar="SEED", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.control is not None:
        return _run_control(args.control, args.schedule, args.seed_limit)
    if args.child:
        return _child(args.child, args.seeds, args.schedule, args.seed_limit)
    if args.list:
        for m in CATALOGUE:
            files = ", ".join(sorted({e.file for e in m.edits}))
            print(f"{m.name:36} {files:20} {m.rule}")
        return 0
    mutants = list(CATALOGUE)
    if args.only:
        known = {m.name: m for m in CATALOGUE}
        unknown = [name for name in args.only if name not in known]
        if unknown:
            parser.error(f"unknown mutant(s): {', '.join(unknown)} (see --list)")
        mutants = [known[name] for name in args.only]
    check_catalogue()
    start = time.monotonic()
    results = run_catalogue(
        mutants,
        args.seeds,
        time_limit=args.time_limit,
        schedule=args.schedule,
        jobs=args.jobs,
        seed_limit=args.seed_limit,
    )
    total = round(time.monotonic() - start, 1)
    print(table(results))
    killed = sum(r.killed and not r.broken for r in results)
    print(
        f"\n{killed}/{len(results)} killed in {total} s ({args.jobs} workers, "
        f"{args.seeds} seeds max, schedule {args.schedule})"
    )
    if args.json:
        doc = {
            "seeds": args.seeds,
            "schedule": args.schedule,
            "time_limit": args.time_limit,
            "jobs": args.jobs,
            "total_seconds": total,
            "results": [dataclasses.asdict(r) for r in results],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
