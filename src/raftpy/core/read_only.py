"""ReadIndex on the leader (Thesis §6.4): every read request from arrival to answer or drop.

A read is linearizable if the leader, after receiving it, confirms with a quorum that it
still leads; the read may then be served once the state machine has applied the commit index
recorded when the read arrived. A read that arrives before the leader committed an entry of
its own term waits for that first (its commit index is not known to be current before).
Requests are confirmed in arrival order: a heartbeat round that confirms a later request
confirms every earlier one too. A read still open when leadership is lost is dropped, and the
driver fails it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection

from raftpy.core.ready import ReadState
from raftpy.errors import LocalProtocolError


class ReadOnly:
    """A leader's open reads: those waiting for a commit in its term (in arrival order),
    those waiting for a heartbeat quorum (keyed by their unique context), and the contexts
    of reads dropped since the driver last asked."""

    def __init__(self) -> None:
        self._waiting: list[bytes] = []
        self._pending: OrderedDict[bytes, tuple[int, set[int]]] = OrderedDict()
        self._dropped: list[bytes] = []

    def wait_for_commit(self, context: bytes) -> None:
        """Hold a read until the leader commits an entry of its term (Thesis §6.4 step 1)."""
        if context in self._waiting:
            raise LocalProtocolError(f"read context {context!r} is already pending")
        self._waiting.append(context)

    def take_waiting(self) -> list[bytes]:
        """The reads held by :meth:`wait_for_commit`, oldest first; they are no longer held."""
        waiting, self._waiting = self._waiting, []
        return waiting

    def has_waiting(self) -> bool:
        return bool(self._waiting)

    def add_request(self, index: int, context: bytes, self_id: int) -> None:
        """Start confirming a read at commit ``index``; the leader's own ack counts at once."""
        if context in self._pending:
            raise LocalProtocolError(f"read context {context!r} is already pending")
        self._pending[context] = (index, {self_id})

    def recv_ack(
        self, src: int, context: bytes, has_quorum: Callable[[Collection[int]], bool]
    ) -> list[ReadState]:
        """Record ``src``'s acknowledgement; return the reads now confirmed, oldest first."""
        req = self._pending.get(context)
        if req is None:
            return []
        req[1].add(src)
        if not has_quorum(req[1]):
            return []
        done: list[ReadState] = []
        while self._pending:
            ctx, (index, _) = self._pending.popitem(last=False)
            done.append(ReadState(index, ctx))
            if ctx == context:
                break
        return done

    def is_open(self, context: bytes) -> bool:
        """Whether a read ``context`` is waiting (for a commit or a quorum)."""
        return context in self._pending or context in self._waiting

    def last_context(self) -> bytes | None:
        return next(reversed(self._pending)) if self._pending else None

    def pending_count(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        """Leadership lost (or a new term): drop every open read, those being confirmed
        first, then those waiting for a commit. :meth:`take_dropped` hands them out."""
        self._dropped.extend(self._pending)
        self._pending.clear()
        self._dropped.extend(self._waiting)
        self._waiting = []

    def take_dropped(self) -> list[bytes]:
        """Contexts of the reads dropped since the last call, oldest first."""
        dropped, self._dropped = self._dropped, []
        return dropped
