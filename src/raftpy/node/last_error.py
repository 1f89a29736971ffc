"""LastError: the latest warning-or-worse event of one node (``NodeStatus.last_error`` and
``last_error_time``), so an operator sees the newest trouble without reading the logs.

One object per node, written by the node's warning paths (a full disk, a rejected peer
message, a failed snapshot transfer, a state machine that raised, a fatal error) beside the
log line they write, read by ``RaftNode.status()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MAX_ERROR_CHARS", "LastError"]

MAX_ERROR_CHARS = 500
"""Longer messages are cut (a status stays small whatever a peer made us log)."""


class LastError:
    """The latest error recorded, and when (unix seconds); ``clock``: tests pass a fake."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.message: str | None = None
        self.time: float | None = None

    def note(self, message: str) -> None:
        """Record ``message`` as the latest error, now."""
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        self.message = message
        self.time = self._clock()
