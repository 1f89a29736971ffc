"""Durations the node measures on its hot paths: fsyncs, WAL writes and proposals.

Two shapes, for two readers:

- :class:`Histogram` counts every sample since the node started into fixed buckets, as a
  Prometheus histogram does (it is part of :class:`~raftpy.node.stats.NodeStats`, so it
  travels in a status and a metrics exporter or dashboard can take differences between two
  readings to see a recent interval);
- :class:`RecentDurations` keeps the last samples themselves, for an exact quantile of what
  happened lately (the fsync p99 in a status, and the node's health check).

Both cost a few hundred nanoseconds per sample, against an fsync of tens of microseconds or
more: cheap enough to measure every one (a benchmark, not a test, holds that line).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from itertools import islice

import msgspec

DURATION_BOUNDS: tuple[float, ...] = tuple(0.0001 * 2**k for k in range(17))
"""Upper bounds of the duration buckets, in seconds: 100 µs doubling up to 6.55 s. Finer at
the bottom than etcd's 1 ms start, because a local fsync here takes well under a
millisecond; an overflow bucket holds anything slower."""


class Histogram(msgspec.Struct, kw_only=True):
    """Counts of durations by bucket since the node started (see the module docstring)."""

    bounds: tuple[float, ...] = DURATION_BOUNDS
    """Upper bounds of the buckets in seconds, ascending; an overflow bucket follows."""
    counts: list[int] = msgspec.field(default_factory=lambda: [0] * (len(DURATION_BOUNDS) + 1))
    """Samples per bucket (not cumulative): ``counts[i]`` holds those at most ``bounds[i]``
    and above ``bounds[i - 1]``; the last one those above every bound."""
    sum: float = 0.0
    """The sum of every sample, in seconds."""
    count: int = 0
    """How many samples were observed."""

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q``-quantile (``0 < q <= 1``), the
        largest bound for the overflow bucket; ``None`` without samples. An upper estimate:
        the true value lies in that bucket."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return self.bounds[min(i, len(self.bounds) - 1)]
        return self.bounds[-1]

    def copy(self) -> Histogram:
        """A copy that later samples no longer change."""
        return Histogram(
            bounds=self.bounds, counts=list(self.counts), sum=self.sum, count=self.count
        )


class RecentDurations:
    """The last ``size`` durations, for exact quantiles of recent behaviour."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self._samples: deque[float] = deque(maxlen=size)

    def observe(self, seconds: float) -> None:
        """Keep one duration, forgetting the oldest once ``size`` are kept."""
        self._samples.append(seconds)

    def quantile(self, q: float, last: int | None = None) -> float | None:
        """The ``q``-quantile (``0 < q <= 1``, nearest rank) of the kept samples, or of the
        ``last`` newest of them; ``None`` without samples."""
        if last is None:
            samples = list(self._samples)
        else:
            # The newest ``last`` only, without copying the rest (the health check asks for
            # the last 100 of 1,000 at each tick); their order does not matter, they are sorted.
            samples = list(islice(reversed(self._samples), max(last, 0)))
        if not samples:
            return None
        samples.sort()
        rank = max(1, math.ceil(round(q * len(samples), 9)))  # nearest rank: ceil(q * n)
        return samples[min(rank, len(samples)) - 1]

    def __len__(self) -> int:
        return len(self._samples)
