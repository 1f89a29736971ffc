"""Where a client sends its next request: the known addresses, a rotation cursor shared by
every call, and the last known leader.

A call starts at the last known leader, else at the cursor. A redirect teaches the leader's
address (added to the known list when new); a node that fails or says it does not lead is
forgotten as leader, and the call moves on to the next address in rotation.
"""

from __future__ import annotations


class Targets:
    """The addresses one client knows and which of them leads, as far as it knows."""

    def __init__(self, addresses: list[str]) -> None:
        self._addresses = addresses
        self._cursor = 0
        self.leader: str | None = None
        """The last known leader's address (``None`` when unknown)."""

    @property
    def addresses(self) -> list[str]:
        """A copy of the known addresses: those given, plus leaders learned from redirects."""
        return list(self._addresses)

    def first(self) -> str:
        """Where a new call goes first."""
        if self.leader is not None:
            return self.leader
        return self._addresses[self._cursor % len(self._addresses)]

    def next_after(self, address: str) -> str:
        """The address to try after ``address`` failed: the next one in rotation (moves the
        shared cursor). The rotation goes on from where it stood, not from ``address``: a
        leader learned from a redirect sits at the end of the list and is tried out of turn,
        and restarting the rotation after it would send the call back to the first address,
        which redirects to that same leader, while the other addresses are never tried (a
        client that cannot reach the leader its first address names would never write)."""
        self._cursor = (self._cursor + 1) % len(self._addresses)
        return self._addresses[self._cursor]

    def learn_leader(self, address: str) -> None:
        if address not in self._addresses:
            self._addresses.append(address)
        self.leader = address

    def forget_leader(self, address: str) -> None:
        if self.leader == address:
            self.leader = None
