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
        """The address after ``address`` in rotation (moves the shared cursor)."""
        try:
            index = self._addresses.index(address) + 1
        except ValueError:
            index = self._cursor
        self._cursor = index % len(self._addresses)
        return self._addresses[self._cursor]

    def learn_leader(self, address: str) -> None:
        if address not in self._addresses:
            self._addresses.append(address)
        self.leader = address

    def forget_leader(self, address: str) -> None:
        if self.leader == address:
            self.leader = None
