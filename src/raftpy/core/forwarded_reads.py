"""Follower reads (Thesis §6.4): a follower's linearizable reads forwarded to its leader.

A follower that knows its leader sends it a :class:`~raftpy.core.messages.ReadIndexRequest`;
the leader confirms its leadership as for its own reads and answers with its read index; the
follower may then serve the read once it applied that index, which spreads read load over the
cluster (the thesis's follower variant of ReadIndex). A read whose answer has not come when
the follower's term or leader changes is dropped: the answer of a leader we no longer follow
must not be trusted, and the new leader never heard of it.

On the leader, reads from followers share the :class:`~raftpy.core.read_only.ReadOnly` queue
with its own under a key that names the node the read came from (:func:`read_key`), so two
nodes' contexts never collide.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftpy.errors import LocalProtocolError

_ID_BYTES = 8


def read_key(node: int, context: bytes) -> bytes:
    """The leader's key for read ``context`` of ``node``: unique per (node, context)."""
    return node.to_bytes(_ID_BYTES, "big") + context


def split_key(key: bytes) -> tuple[int, bytes]:
    """``(node, context)`` of a key made by :func:`read_key`."""
    return int.from_bytes(key[:_ID_BYTES], "big"), key[_ID_BYTES:]


class ForwardedReads:
    """A follower's reads waiting for its leader's answer, and those dropped since the driver
    last asked."""

    def __init__(self) -> None:
        self._open: dict[bytes, int] = {}  # context -> the leader asked
        self._dropped: list[bytes] = []

    def add(self, context: bytes, leader: int) -> None:
        if context in self._open:
            raise LocalProtocolError(f"read context {context!r} is already pending")
        self._open[context] = leader

    def answer(self, context: bytes, leader: int) -> bool:
        """Whether ``leader``'s answer for ``context`` settles an open read (it is then
        closed); an answer from another node, or for no open read, is ignored."""
        if self._open.get(context) != leader:
            return False
        del self._open[context]
        return True

    def contexts(self) -> Iterable[bytes]:
        return self._open.keys()

    def drop_all(self) -> None:
        """The term or the leader changed: every open read is dropped."""
        self._dropped.extend(self._open)
        self._open.clear()

    def take_dropped(self) -> list[bytes]:
        dropped, self._dropped = self._dropped, []
        return dropped

    def __len__(self) -> int:
        return len(self._open)
