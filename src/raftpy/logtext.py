"""Logging what strangers send: text from the network escaped, and lines about bad connections
rate-limited.

Anything a connection sends (a cluster id, a refusal reason, a key, an error message built
from a payload) may contain newlines or terminal escapes. :func:`untrusted` is the one place
that turns such text into something safe for a log line: ``repr``-style escaping, so a
newline shows as ``\\n`` and cannot start a forged line, and a bounded length. Every log call
in the transport and the node that carries network text passes it through :func:`untrusted`.

A hostile or broken client can open thousands of bad connections a second; logging each one
would flood the disk and bury everything else. :class:`RateLimitedLog` lets at most ``burst``
lines of one kind through per ``interval`` and reports the rest as one summary line
("suppressed K similar ..."). The counters (:class:`~raftpy.transport.stats.TransportStats`)
still count every event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

MAX_UNTRUSTED_CHARS: Final = 200
"""The longest piece of network text shown in a log line (longer text is cut, saying so)."""


def untrusted(text: object, *, quote: bool = True, limit: int = MAX_UNTRUSTED_CHARS) -> str:
    """``text`` (from the network) made safe for one log line: non-printable characters
    escaped as ``repr`` does (``\\n``, ``\\x1b``, ...), at most ``limit`` characters followed
    by how many more there were. A string is quoted unless ``quote`` is false (for a message
    of ours that embeds network text: still escaped, just not wrapped in quotes)."""
    shown = repr(text)
    if not quote and isinstance(text, str):
        shown = shown[1:-1]
    if len(shown) > limit:
        return f"{shown[:limit]}...(+{len(shown) - limit} chars)"
    return shown


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds for each kind of event; the others are
    counted and reported in one "suppressed" line when the next interval begins (at the next
    event of that kind, or at :meth:`flush`)."""

    __slots__ = ("_burst", "_clock", "_interval", "_kinds", "_logger", "suppressed")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be >= 1 and interval > 0")
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        # kind -> [start of the current interval, lines logged in it, lines suppressed in it]
        self._kinds: dict[str, list[float]] = {}
        self.suppressed = 0
        """Lines suppressed since creation (all kinds)."""

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` at ``level`` unless ``kind`` used up its lines this interval.
        The arguments must already be safe (see :func:`untrusted`)."""
        self._log(level, kind, msg, args)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        """:meth:`log` at ``WARNING``."""
        self._log(logging.WARNING, kind, msg, args)

    def _log(self, level: int, kind: str, msg: str, args: tuple[object, ...]) -> None:
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None:
            state = self._kinds[kind] = [now, 0, 0]
        elif now - state[0] >= self._interval:
            self._summarize(kind, state, level)
            state[0], state[1], state[2] = now, 0, 0
        if state[1] < self._burst:
            state[1] += 1
            # stacklevel: the record names the caller of log() or warning(), not this module.
            self._logger.log(level, msg, *args, stacklevel=3)
        else:
            state[2] += 1
            self.suppressed += 1

    def flush(self) -> None:
        """Report the kinds whose interval is over and that suppressed lines (called
        periodically, so a burst that stops is still reported)."""
        now = self._clock()
        for kind, state in self._kinds.items():
            if state[2] and now - state[0] >= self._interval:
                self._summarize(kind, state, logging.WARNING)
                state[0], state[1], state[2] = now, 0, 0

    def _summarize(self, kind: str, state: list[float], level: int) -> None:
        if state[2]:
            self._logger.log(
                level,
                "suppressed %d similar log lines (%s) in the last %.0f s",
                int(state[2]),
                kind,
                self._clock() - state[0],
            )
