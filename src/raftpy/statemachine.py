"""The StateMachine protocol: what a user replicates with raftpy.

Contract (hashicorp/raft's FSM contract, adapted):

- ``apply`` must be deterministic: the same commands in the same order give the same state and
  results on every node. No clocks, randomness or I/O whose outcome can differ between nodes.
  Its result is returned to the proposer.
- ``query`` reads without changing state.
- ``snapshot`` writes the whole state to ``out``, streamed (the state may not fit in memory);
  ``restore`` replaces all state with what ``snapshot`` wrote.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol, runtime_checkable


@runtime_checkable
class StateMachine(Protocol):
    """A deterministic state machine replicated through the Raft log."""

    def apply(self, command: bytes) -> bytes:
        """Apply one committed command; return its result (sent back to the proposer)."""
        ...

    def query(self, query: bytes) -> bytes:
        """Answer a read-only query from the current state."""
        ...

    def snapshot(self, out: BinaryIO) -> None:
        """Write the complete state to ``out``."""
        ...

    def restore(self, inp: BinaryIO) -> None:
        """Replace all state with a snapshot read from ``inp``."""
        ...
