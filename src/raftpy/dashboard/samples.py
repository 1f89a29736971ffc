"""What the dashboard remembers of each node: its answers over the last minutes, in bounded
memory, and the time series (write rate, write latency) computed from them.

A node's commit index only grows and is the same sequence on every member (Raft §5.3), so
the cluster's write rate is how fast the highest commit index known grows: it follows the
cluster across leader changes. Write latency comes from each node's ``proposal`` histogram
(a write's time from its arrival at the leader's node to its answer; cumulative since the
node started): the latency of a stretch of time is the difference of two of its pictures.
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HistogramCounts",
    "NodeHistory",
    "Sample",
    "histogram_counts",
    "quantile",
    "series",
    "window_latency",
    "window_rate",
]


@dataclass(frozen=True, slots=True)
class HistogramCounts:
    """A latency histogram as a node reported it: upper bounds in seconds (an overflow bucket
    follows) and the count of each bucket (not cumulative)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One answer of one node: when (unix seconds), its commit index, and its proposal
    latency histogram (``None`` from a node that does not report one)."""

    time: float
    commit: int
    proposal: HistogramCounts | None = None


def histogram_counts(histogram: object) -> HistogramCounts | None:
    """``histogram`` (a node's ``Histogram``, or anything with ``bounds`` and ``counts``) as
    :class:`HistogramCounts`; ``None`` when it is missing or not shaped like one (a node of
    another version must not break the page)."""
    bounds = getattr(histogram, "bounds", None)
    counts = getattr(histogram, "counts", None)
    if not isinstance(bounds, Sequence) or not isinstance(counts, Sequence):
        return None
    try:
        b = tuple(float(x) for x in bounds)
        c = tuple(int(x) for x in counts)
    except (TypeError, ValueError):
        return None
    if len(c) != len(b) + 1 or any(x < 0 for x in c):
        return None
    if not all(math.isfinite(x) for x in b) or list(b) != sorted(b):
        return None
    return HistogramCounts(b, c)


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket that holds the ``q``-quantile (the overflow bucket
    answers the largest bound); ``None`` when the counts are empty."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return bounds[min(i, len(bounds) - 1)]
    return bounds[-1]  # pragma: no cover - the loop always reaches the rank


class NodeHistory:
    """The samples of one node over the last ``window`` seconds, oldest first. Bounded twice:
    by age, and by count (``max_samples``), so a node that answers faster than expected
    cannot grow it."""

    def __init__(self, window: float, max_samples: int) -> None:
        if window <= 0 or max_samples < 2:
            raise ValueError("window must be > 0 and max_samples >= 2")
        self.window = window
        self._samples: collections.deque[Sample] = collections.deque(maxlen=max_samples)
        self._times: collections.deque[float] = collections.deque(maxlen=max_samples)

    def add(self, sample: Sample) -> None:
        """Record ``sample`` (one older than the newest is dropped: clocks only go forward
        here) and forget what fell out of the window."""
        if self._times and sample.time < self._times[-1]:
            return
        self._samples.append(sample)
        self._times.append(sample.time)
        horizon = sample.time - self.window
        while self._times and self._times[0] < horizon:
            self._samples.popleft()
            self._times.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def samples(self) -> list[Sample]:
        return list(self._samples)

    @property
    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def at(self, t: float) -> Sample | None:
        """The newest sample taken at or before ``t`` (``None`` if none was)."""
        i = bisect.bisect_right(self._times, t)
        return self._samples[i - 1] if i else None


def _cluster_commit(histories: Iterable[NodeHistory], t: float) -> int | None:
    known = [s.commit for h in histories if (s := h.at(t)) is not None]
    return max(known) if known else None


def window_rate(histories: Sequence[NodeHistory], start: float, end: float) -> float | None:
    """Entries committed per second between ``start`` and ``end``: the growth of the highest
    commit index known; ``None`` without a picture at both ends."""
    a = _cluster_commit(histories, start)
    b = _cluster_commit(histories, end)
    if a is None or b is None or end <= start:
        return None
    return max(0, b - a) / (end - start)


def _latency_counts(
    histories: Sequence[NodeHistory], start: float, end: float
) -> tuple[tuple[float, ...], list[int]] | None:
    """The proposal histograms' counts added between ``start`` and ``end``, summed over the
    nodes (writes are timed by whichever node led). A node that restarted in between (its
    counts went down) is left out of that stretch."""
    bounds: tuple[float, ...] | None = None
    total: list[int] = []
    for h in histories:
        a, b = h.at(start), h.at(end)
        if a is None or b is None or a.proposal is None or b.proposal is None:
            continue
        if a.proposal.bounds != b.proposal.bounds:
            continue
        diff = [y - x for x, y in zip(a.proposal.counts, b.proposal.counts, strict=True)]
        if any(d < 0 for d in diff):
            continue
        if bounds is None:
            bounds, total = b.proposal.bounds, diff
        elif bounds == b.proposal.bounds:
            total = [x + y for x, y in zip(total, diff, strict=True)]
    return None if bounds is None else (bounds, total)


def window_latency(
    histories: Sequence[NodeHistory], start: float, end: float
) -> dict[str, float | None] | None:
    """The p50 and p99 write latency (seconds) of the writes answered between ``start`` and
    ``end``; ``None`` when no node reports a proposal histogram."""
    got = _latency_counts(histories, start, end)
    if got is None:
        return None
    bounds, counts = got
    return {
        "p50": quantile(bounds, counts, 0.5),
        "p99": quantile(bounds, counts, 0.99),
        "count": float(sum(counts)),
    }


def series(
    histories: Sequence[NodeHistory], now: float, window: float, step: float
) -> dict[str, list[float | None]]:
    """The write rate (entries/s) and p50/p99 write latency (s) of each ``step`` of the last
    ``window`` seconds up to ``now``: ``time`` holds each step's end (unix seconds)."""
    n = max(1, int(window / step))
    ends = [now - (n - 1 - k) * step for k in range(n)]
    out: dict[str, list[float | None]] = {
        "time": [],
        "write_rate": [],
        "latency_p50": [],
        "latency_p99": [],
    }
    for end in ends:
        start = end - step
        out["time"].append(round(end, 3))
        rate = window_rate(histories, start, end)
        out["write_rate"].append(None if rate is None else round(rate, 3))
        lat = window_latency(histories, start, end)
        out["latency_p50"].append(None if lat is None else lat["p50"])
        out["latency_p99"].append(None if lat is None else lat["p99"])
    return out
