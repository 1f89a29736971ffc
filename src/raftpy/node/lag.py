"""Replication lag in seconds: how long ago the leader appended the first entry a follower
still lacks (``PeerReplication.lag_seconds``).

A follower ``lag`` entries behind may be fine (a burst of writes a few milliseconds old) or
stuck (one write, an hour old); the time tells the two apart. The leader records one sample
per append batch, ``(last index of the batch, when)``: every entry up to that index existed
by then. A follower whose log ends at ``match`` lacks entry ``match + 1``, which the first
sample with an index past ``match`` dates.

Memory stays bounded: samples no follower needs any more (indexes every follower holds) are
dropped by :meth:`AppendTimes.trim`, and past ``max_samples`` neighbouring samples are merged
two by two, keeping the older time. A merge can only make a lag look longer, never shorter,
by at most the time between the two batches merged: a follower that stopped long ago
(thousands of batches behind) is never shown as nearly caught up.

Times are from a monotonic clock (``time.monotonic``), so a wall-clock step does not move them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_SAMPLES", "AppendTimes", "LastContact"]

DEFAULT_MAX_SAMPLES = 1024
"""At most this many samples (about 120 KB) per leader."""


class AppendTimes:
    """When this leader appended its entries: see the module docstring.

    Call :meth:`reset` when the node becomes leader, :meth:`appended` for each batch it
    appends, :meth:`lag_seconds` for a follower's lag and :meth:`trim` now and then.
    """

    def __init__(
        self,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        self._max = max_samples
        self._clock = clock
        self._samples: deque[tuple[int, float]] = deque()
        self._since = clock()

    def __len__(self) -> int:
        return len(self._samples)

    def reset(self) -> None:
        """This node just became leader: entries it holds already existed at least since now
        (when the previous leader appended them is not known here)."""
        self._samples.clear()
        self._since = self._clock()

    def appended(self, last_index: int) -> None:
        """Entries up to ``last_index`` are in this leader's log as of now."""
        samples = self._samples
        if samples and last_index <= samples[-1][0]:
            return  # nothing new (a leader never truncates its own log)
        samples.append((last_index, self._clock()))
        if len(samples) > self._max:
            self._merge()

    def _merge(self) -> None:
        """Halve the samples: each pair becomes one with the newer index and the older time."""
        old = list(self._samples)
        merged: deque[tuple[int, float]] = deque()
        for i in range(0, len(old) - 1, 2):
            merged.append((old[i + 1][0], old[i][1]))
        if len(old) % 2:
            merged.append(old[-1])
        self._samples = merged

    def trim(self, smallest_match: int) -> None:
        """Every follower holds the entries up to ``smallest_match``: forget their samples (the
        first entry any follower lacks is past it)."""
        samples = self._samples
        while samples and samples[0][0] <= smallest_match:
            samples.popleft()

    def lag_seconds(self, match: int, last_index: int) -> float:
        """Seconds since this leader appended entry ``match + 1``; 0.0 when ``match`` is
        ``last_index`` or more (caught up)."""
        if match >= last_index:
            return 0.0
        now = self._clock()
        for index, at in self._samples:
            if index > match:
                return max(0.0, now - at)
        # Not sampled (appended before we led, or trimmed): it existed since we lead.
        return max(0.0, now - self._since)


class LastContact:
    """When each peer was last heard from (any message), on a monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.heard: dict[int, float] = {}
        """Peer id -> when its latest message arrived (written by the node's loop)."""

    def now(self) -> float:
        return self._clock()

    def seconds_since(self, peer: int) -> float | None:
        """Seconds since ``peer`` was last heard from; ``None`` if never."""
        at = self.heard.get(peer)
        return None if at is None else max(0.0, self._clock() - at)
