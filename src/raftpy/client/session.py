"""A client's session with the cluster (Thesis §6.3): its id, how its writes are numbered,
and which results it has received.

The cluster keeps, per session, the result of every write the client has not acknowledged,
so a write resent with the same ``(session, seq)`` is answered from that table instead of
being applied again. The client numbers its writes ``1, 2, 3, ...`` and sends with each
attempt its *ack*: the lowest ``seq`` whose result it has not received yet (every result
below it may be forgotten by the cluster). Writes run concurrently, so the ack is the lowest
seq still *outstanding*, not the last one sent: acknowledging a write still being resent
would let the cluster forget its result and answer its next attempt "already acknowledged".

A write leaves the outstanding set when its call ends, whatever the ending: after a success
or a definite failure nobody asks for its result again; after an unknown outcome the call gave
up, and a late attempt of it still in flight is refused by the cluster once the ack has passed
it, never applied late.

The session ends when the cluster says it does not know it (``SESSION_EXPIRED``: idle past its
timeout, evicted, closed); the client then opens a new one for its next write.
"""

from __future__ import annotations

from collections import deque

from raftpy.transport.protocol import SessionGranted


class ClientSession:
    """One open session: its id and timeout, the next seq, the outstanding seqs."""

    __slots__ = ("_next_seq", "_order", "_outstanding", "expired", "id", "last_active", "timeout")

    def __init__(self, grant: SessionGranted, now: float) -> None:
        self.id = grant.session
        self.timeout = grant.timeout
        """Seconds of cluster time the session lives without a write or keep-alive."""
        self.expired = False
        """Set when the cluster answered that it does not know this session."""
        self.last_active = now
        """Loop time of the last answer the cluster gave for this session (to its opening, a
        write or a keep-alive): the cluster counts the session idle from about then."""
        self._next_seq = 1
        self._outstanding: set[int] = set()
        # The seqs begun, in order, with lazy deletion at the front: the ack is read on every
        # attempt, and pipelined writes can keep thousands outstanding. Seqs are begun in
        # increasing order, so the front is always the lowest.
        self._order: deque[int] = deque()

    def begin(self) -> int:
        """Number a new write; it is outstanding until :meth:`end`."""
        seq = self._next_seq
        self._next_seq = seq + 1
        self._outstanding.add(seq)
        self._order.append(seq)
        return seq

    def end(self, seq: int) -> None:
        """The call of write ``seq`` ended: its result is no longer wanted."""
        self._outstanding.discard(seq)

    def ack(self) -> int:
        """The lowest seq whose result has not been received (the next seq when none is
        outstanding): every write below it is acknowledged."""
        order = self._order
        outstanding = self._outstanding
        while order:
            first = order[0]
            if first in outstanding:
                return first
            order.popleft()
        return self._next_seq

    @property
    def outstanding(self) -> int:
        """How many writes of this session are in flight."""
        return len(self._outstanding)

    def expire(self) -> None:
        """The cluster does not know this session any more: open a new one for the next
        write."""
        self.expired = True
