"""Write availability by time, from the times at which successful writes completed.

Counting operations hides outages: a call that fails takes up to its deadline (``op_timeout``,
1 s by default) while a successful one takes a few milliseconds, so an outage of 6 s in a 30 s
run costs a few dozen failed calls against hundreds of thousands of successful ones and the
share of successful operations still reads 99.9%. This module measures time instead.

The definition (README.md, "Jepsen-style fault harness", and docs/jepsen.md):

- A *successful write* is a write-kind call (``write``, ``cas`` or the set workload's ``add``)
  that returned an answer: a cas that did not swap counts, it went through the log just the
  same. Its *completion* is the time it returned (its ``ret``); it committed at or before then.
- The completions inside a span ``[start, end]`` cut the span into *gaps*: from ``start`` to the
  first completion, between consecutive completions, from the last one to ``end`` (all of the
  span, with no completion).
- A gap longer than ``threshold`` (:data:`GAP_THRESHOLD_NS`, 100 ms) is *unavailable* as a
  whole; shorter gaps (including one exactly ``threshold`` long) are available: writes were
  completing every few milliseconds around them.
- *Availability by time* of the span, or of a window inside it, is the share of its time not
  covered by unavailable gaps (a gap that crosses a window's edge counts in each window for
  the part inside it). The *longest gap* is the longest time without a successful write.

Why completions, and not the calls' ``[call, ret]`` intervals or fixed buckets: a call made
during an outage that hangs until the new leader answers would cover up to its deadline of
the outage; fixed buckets count an outage by where it falls against the bucket edges; and the
unavailable time and the longest gap are then one notion. Only successful writes' completion
times are needed, which the history keeps (it drops definite failures), so the figures can be
computed offline from ``history.jsonl`` as well (:func:`history_completions`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from raftpy.testing.history import Operation
from raftpy.testing.jepsen.workload import Sample

__all__ = [
    "GAP_THRESHOLD_NS",
    "Gap",
    "TimeAvailability",
    "WriteProgress",
    "history_completions",
    "sample_completions",
]

GAP_THRESHOLD_NS: Final = 100_000_000
"""A time without a successful write longer than this (100 ms, about fifty times a write's
latency on a quiet machine, less than one election timeout) counts as unavailable."""

_WRITE_KINDS: Final = frozenset({"write", "cas", "add"})


@dataclass(frozen=True)
class Gap:
    """A time without a successful write, ``start`` to ``end`` (``time.monotonic_ns``)."""

    start: int
    end: int

    @property
    def duration(self) -> float:
        """The gap in seconds."""
        return (self.end - self.start) / 1e9


@dataclass(frozen=True)
class TimeAvailability:
    """Availability by time of ``[start, end)``: ``unavailable`` nanoseconds of it were in gaps
    longer than the threshold; ``longest`` is the longest gap (cut at the span's edges)."""

    start: int
    end: int
    unavailable: int
    longest: Gap

    @property
    def span(self) -> int:
        return self.end - self.start

    @property
    def share(self) -> float:
        """The share of the time that was available, 0.0 .. 1.0 (1.0 for an empty span)."""
        return 1.0 - self.unavailable / self.span if self.span > 0 else 1.0


def sample_completions(samples: Iterable[Sample]) -> list[int]:
    """The completion times of the successful writes among ``samples``, sorted."""
    return sorted(s.ret for s in samples if s.outcome == "ok" and s.kind in _WRITE_KINDS)


def history_completions(history: Iterable[Operation]) -> list[int]:
    """The completion times of the successful writes of a history (``history.jsonl``), sorted:
    writes and cas (swapped or not) that returned, not the indeterminate ones."""
    return sorted(
        op.ret
        for op in history
        if op.op in _WRITE_KINDS and not op.indeterminate and op.ret is not None
    )


class WriteProgress:
    """The gaps between successful writes over ``[start, end]``; :meth:`over` answers for any
    window inside it."""

    def __init__(
        self,
        completions: Sequence[int],
        start: int,
        end: int,
        threshold: int = GAP_THRESHOLD_NS,
    ) -> None:
        if end < start:
            raise ValueError(f"the span ends ({end}) before it starts ({start})")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.start = start
        self.end = end
        self.threshold = threshold
        points = [start, *sorted(c for c in completions if start <= c <= end), end]
        self.gaps = [Gap(a, b) for a, b in itertools.pairwise(points) if b > a]
        self._long = [g for g in self.gaps if g.end - g.start > threshold]
        self._long_ends = [g.end for g in self._long]
        self._ends = [g.end for g in self.gaps]

    @property
    def longest(self) -> Gap:
        """The longest gap of the whole span (the span itself when it is empty)."""
        return max(self.gaps, key=lambda g: g.end - g.start, default=Gap(self.start, self.end))

    def long_gaps(self) -> list[Gap]:
        """The gaps that count as unavailable, in order."""
        return list(self._long)

    def over(self, start: int | None = None, end: int | None = None) -> TimeAvailability:
        """Availability by time of ``[start, end)`` (the whole span by default; cut to it)."""
        lo = self.start if start is None else max(self.start, start)
        hi = self.end if end is None else min(self.end, end)
        hi = max(lo, hi)
        unavailable = 0
        for g in self._long[bisect.bisect_right(self._long_ends, lo) :]:
            if g.start >= hi:
                break
            unavailable += min(g.end, hi) - max(g.start, lo)
        longest = Gap(lo, lo)
        for g in self.gaps[bisect.bisect_right(self._ends, lo) :]:
            if g.start >= hi:
                break
            cut = Gap(max(g.start, lo), min(g.end, hi))
            if cut.end - cut.start > longest.end - longest.start:
                longest = cut
        return TimeAvailability(lo, hi, unavailable, longest)
