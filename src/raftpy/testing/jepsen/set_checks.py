"""The checker of the set workload: was every add applied exactly once?

Each add appends an element that no other add uses to one set key (a JSON list of the hash map
example, see :mod:`raftpy.testing.jepsen.set_workload`), so after healing a read of every set
tells exactly which adds took effect and how many times:

- an acknowledged add must be present exactly once (absent: a *loss*);
- no element may be present twice (a *duplicate*: one write applied twice, e.g. a resend
  after an unknown outcome that the cluster did not recognise as a resend);
- an add whose outcome is unknown may be present once or not at all;
- an add that failed definitely must be absent, and nothing may be present that no client
  ever tried to add to that key.

:func:`check_sets` judges a run's adds against its final reads (a :class:`SetVerdict`);
:func:`set_checks` turns the verdict into the run's :class:`~raftpy.testing.jepsen.checks.
JepsenCheck` lines. Pure functions of their inputs, so a handcrafted history tests them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from raftpy.testing.jepsen.checks import JepsenCheck
from raftpy.testing.jepsen.workload import Outcome

__all__ = ["SetAdd", "SetVerdict", "check_sets", "set_checks"]

_SHOWN = 10
"""How many element ids a check's line names before it says how many more there are."""


@dataclass(frozen=True)
class SetAdd:
    """One add of the set workload: ``element`` to the set ``key``, and how it ended
    (``call``/``ret``: monotonic nanoseconds)."""

    client: int
    key: str
    element: str
    outcome: Outcome
    call: int
    ret: int


@dataclass(frozen=True)
class SetVerdict:
    """What the final reads say about the adds (element ids are the adds' ``element``).

    ``duplicates``: element -> times present, for every element present more than once.
    ``lost``: acknowledged adds absent from their set. ``unexpected``: ``"key:element"`` for
    each element present that no client tried to add to that set. ``failed_present``: present
    although their add failed definitely.
    ``unknown_present``: adds with an unknown outcome that took effect (once: allowed).
    ``unread``: set keys whose final read never succeeded (their adds cannot be judged, so a
    run with any is not valid). ``malformed``: keys whose value was not a list of strings.
    """

    acknowledged: int = 0
    unknown: int = 0
    failed: int = 0
    present: int = 0
    unknown_present: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    failed_present: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not (
            self.duplicates
            or self.lost
            or self.unexpected
            or self.failed_present
            or self.unread
            or self.malformed
        )


def check_sets(adds: Iterable[SetAdd], final: Mapping[str, object]) -> SetVerdict:
    """Judge ``adds`` against ``final``: each set key's value as read after healing (a list
    of element ids; ``None`` for a key never written). A key the adds use but ``final`` lacks
    was not read: its adds are not judged and the key is reported ``unread``."""
    by_key: dict[str, dict[str, Outcome]] = {}
    counts = Counter[str]()
    for add in adds:
        outcomes = by_key.setdefault(add.key, {})
        if add.element in outcomes:
            # Element ids are unique per add; a reused one would blur the verdict.
            raise ValueError(f"element {add.element!r} added twice to {add.key!r}")
        outcomes[add.element] = add.outcome
        counts[add.outcome] += 1
    duplicates: dict[str, int] = {}
    lost: list[str] = []
    unexpected: list[str] = []
    failed_present: list[str] = []
    unread: list[str] = []
    malformed: list[str] = []
    present = unknown_present = 0
    for key in sorted(set(by_key) | set(final)):
        outcomes = by_key.get(key, {})
        if key not in final:
            unread.append(key)
            continue
        value = final[key]
        if value is None:
            value = []
        if not (isinstance(value, list) and all(isinstance(e, str) for e in value)):
            malformed.append(key)
            continue
        seen = Counter[str](value)
        present += len(seen)
        for element, times in seen.items():
            if times > 1:
                duplicates[element] = times
            outcome = outcomes.get(element)
            if outcome is None:
                unexpected.append(f"{key}:{element}")
            elif outcome == "failed":
                failed_present.append(element)
            elif outcome == "unknown":
                unknown_present += 1
        lost.extend(e for e, outcome in outcomes.items() if outcome == "ok" and e not in seen)
    return SetVerdict(
        acknowledged=counts["ok"],
        unknown=counts["unknown"],
        failed=counts["failed"],
        present=present,
        unknown_present=unknown_present,
        duplicates=duplicates,
        lost=lost,
        unexpected=unexpected,
        failed_present=failed_present,
        unread=unread,
        malformed=malformed,
    )


def _some(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = len(items) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def set_checks(v: SetVerdict) -> list[JepsenCheck]:
    """The run's checks from a verdict: at most once, no acknowledged add lost, nothing
    present that was not attempted."""
    if v.duplicates:
        dup = [f"{e} x{n}" for e, n in sorted(v.duplicates.items())]
        once = f"{len(v.duplicates)} element(s) present more than once: {_some(dup)}"
    else:
        once = (
            f"{v.present} elements present, none twice ({v.unknown_present} of "
            f"{v.unknown} adds with an unknown outcome took effect)"
        )
    if v.unread or v.malformed:
        parts = []
        if v.unread:
            parts.append(f"could not read {len(v.unread)} set(s): {_some(v.unread)}")
        if v.malformed:
            parts.append(f"{len(v.malformed)} set(s) not a list: {_some(v.malformed)}")
        if v.lost:
            parts.append(f"{len(v.lost)} acknowledged add(s) missing: {_some(v.lost)}")
        lost = "; ".join(parts)
    elif v.lost:
        lost = f"{len(v.lost)} of {v.acknowledged} acknowledged adds missing: {_some(v.lost)}"
    else:
        lost = f"all {v.acknowledged} acknowledged adds present"
    strays = v.unexpected + v.failed_present
    if strays:
        parts = []
        if v.unexpected:
            parts.append(f"{len(v.unexpected)} never attempted: {_some(v.unexpected)}")
        if v.failed_present:
            parts.append(
                f"{len(v.failed_present)} whose add failed definitely: {_some(v.failed_present)}"
            )
        stray = "present but not added: " + "; ".join(parts)
    else:
        stray = f"every element present was attempted ({v.failed} definite failures absent)"
    return [
        JepsenCheck("every add applied at most once", not v.duplicates, once),
        JepsenCheck("no acknowledged add lost", not (v.lost or v.unread or v.malformed), lost),
        JepsenCheck("nothing present that was not added", not strays, stray),
    ]
