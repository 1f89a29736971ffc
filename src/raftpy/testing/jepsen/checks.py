"""The checks that judge a run of the harness, each a :class:`JepsenCheck`:

1. the history is linearizable (:mod:`raftpy.testing.linearizability`);
2. no acknowledged write was lost: a final read of every key, through the leader after healing,
   is part of the checked history, and must agree with what was acknowledged before it;
3. a write succeeds within :data:`RECOVERY_LIMIT` seconds of healing;
4. no node exited on its own (only the nemesis kills nodes).

:func:`judge_history` makes checks 1 and 2 from a history alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from raftpy.testing.history import Operation
from raftpy.testing.linearizability import CheckResult, Verdict, check

__all__ = [
    "RECOVERY_LIMIT",
    "JepsenCheck",
    "crash_check",
    "judge_history",
    "membership_check",
    "recovery_check",
]

RECOVERY_LIMIT: Final = 5.0
"""Seconds after the start of healing within which a write must succeed (check 3)."""


@dataclass(frozen=True)
class JepsenCheck:
    """One check of a run: its name, whether it passed, and a line of detail."""

    name: str
    passed: bool
    detail: str


def _check_history(
    history: Sequence[Operation], timeout: float
) -> tuple[CheckResult, list[CheckResult], list[str]]:
    """Check the whole history, then (if it fails) every key on its own to list every violated
    key. Returns (overall result, failing per-key results, undecided keys)."""
    overall = check(history, timeout=timeout)
    if overall.verdict is Verdict.LINEARIZABLE:
        return overall, [], []
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    start = time.monotonic()
    failures: list[CheckResult] = []
    undecided: list[str] = []
    for key, ops in by_key.items():
        remaining = max(1.0, timeout - (time.monotonic() - start))
        result = check(ops, timeout=remaining)
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            failures.append(result)
        elif result.verdict is Verdict.UNDECIDED:
            undecided.append(key)
    return overall, failures, undecided


def judge_history(
    history: Sequence[Operation],
    *,
    final_reader: int,
    unread_keys: Sequence[str] = (),
    timeout: float = 120.0,
) -> tuple[CheckResult, list[CheckResult], list[JepsenCheck]]:
    """Checks 1 and 2 of a run on its history: linearizability, and no acknowledged write lost.

    ``final_reader`` is the client id of the final reads (one per key, after healing);
    ``unread_keys`` the keys whose final read never succeeded. A key loses an acknowledged
    write when its history is not linearizable and its final read is among the operations
    that cannot be placed (the value read contradicts what was acknowledged before it).
    Returns the checker's result on the whole history, the failing per-key results (every
    violated key, not just the first) and the two checks.
    """
    overall, violations, undecided = _check_history(history, timeout)
    if overall.verdict is Verdict.LINEARIZABLE:
        detail = (
            f"{overall.operations} operations in {overall.partitions} keys, checked in "
            f"{overall.elapsed:.2f} s"
        )
    elif violations:
        keys_text = ", ".join(v.violation.key for v in violations if v.violation)
        detail = f"NOT linearizable: {len(violations)} key(s) violated: {keys_text}"
    else:
        detail = f"undecided within {timeout:g} s: keys {', '.join(undecided)}"
    checks = [JepsenCheck("linearizable", overall.verdict is Verdict.LINEARIZABLE, detail)]
    lost_keys = sorted(
        v.violation.key
        for v in violations
        if v.violation is not None
        and any(op.client == final_reader for op in v.violation.unplaceable)
    )
    final_reads = sum(1 for op in history if op.client == final_reader)
    if unread_keys:
        lost = f"could not read {len(unread_keys)} key(s) at the end: "
        lost += ", ".join(unread_keys[:10])
    elif lost_keys:
        lost = "the final reads of these keys contradict acknowledged operations: "
        lost += ", ".join(lost_keys)
    else:
        lost = f"final reads of {final_reads} keys agree with the history"
    passed = not unread_keys and not lost_keys
    checks.append(JepsenCheck("no acknowledged write lost", passed, lost))
    return overall, violations, checks


def recovery_check(recovered: bool, after: float) -> JepsenCheck:
    """Check 3: did a write succeed within :data:`RECOVERY_LIMIT` seconds of healing (it took
    ``after`` seconds)?"""
    return JepsenCheck(
        "recovery",
        recovered,
        f"a write succeeded {after:.2f} s after healing began"
        if recovered
        else f"no write succeeded within {RECOVERY_LIMIT:g} s of healing",
    )


def crash_check(problems: Sequence[str]) -> JepsenCheck:
    """Check 4: ``problems`` are what went wrong with the servers themselves (see
    :attr:`~raftpy.testing.jepsen.processes.Cluster.problems`)."""
    return JepsenCheck(
        "no node crashed",
        not problems,
        "every exit was the nemesis'" if not problems else "; ".join(problems),
    )


def membership_check(problems: Sequence[str], faults: int) -> JepsenCheck:
    """Check 5, in runs with membership faults: after each of the ``faults`` membership faults
    every original node became a voter again on its own (``problems``: what did not, see
    :attr:`~raftpy.testing.jepsen.members.MemberFaults.problems`)."""
    return JepsenCheck(
        "membership restored",
        not problems,
        f"every node a voter again after each of {faults} membership faults"
        if not problems
        else "; ".join(problems),
    )
