"""Pending ReadIndex requests on the leader (Thesis §6.4).

A read is linearizable if the leader, after receiving it, confirms with a quorum that it
still leads; the read may then be served once the state machine has applied the commit index
recorded when the read arrived. Requests are confirmed in arrival order: a heartbeat round
that confirms a later request confirms every earlier one too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection

from raftpy.core.ready import ReadState
from raftpy.errors import LocalProtocolError


class ReadOnly:
    """Read requests waiting for a heartbeat quorum, keyed by their unique context."""

    def __init__(self) -> None:
        self._pending: OrderedDict[bytes, tuple[int, set[int]]] = OrderedDict()

    def add_request(self, index: int, context: bytes, self_id: int) -> None:
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

    def last_context(self) -> bytes | None:
        return next(reversed(self._pending)) if self._pending else None

    def pending_count(self) -> int:
        return len(self._pending)

    def reset(self) -> list[bytes]:
        """Drop every pending read (leadership lost); return their contexts."""
        dropped = list(self._pending)
        self._pending.clear()
        return dropped
