"""The StateMachine protocol: what a user replicates with raftpy.

Contract (hashicorp/raft's FSM contract, adapted):

- ``apply`` must be deterministic: the same commands in the same order give the same state and
  results on every node. No clocks, randomness or I/O whose outcome can differ between nodes.
  Its result is returned to the proposer.
- ``query`` reads without changing state.
- ``snapshot`` writes the whole state to ``out``, streamed (the state may not fit in memory);
  ``restore`` replaces all state with what ``snapshot`` wrote. Write and read in pieces (for
  example one record per key), never the whole state as one ``bytes``.
- Exceptions: one raised by ``apply`` fails that proposal only (it must be deterministic too,
  so every replica raises alike); one raised by ``query`` fails that read only; one raised by
  ``prepare_snapshot`` or ``snapshot`` fails that snapshot attempt only. The client gets the
  exception's type and message. A ``restore`` that raises on a verified snapshot ends the node
  (exit status 70), since its state is then unknown. README.md, "Failures", has the details.

Snapshots and threads (what a state machine author must guarantee). A node snapshots when its
log since the last snapshot passes ``NodeConfig.snapshot_entries`` / ``snapshot_bytes``, and
``snapshot_ratio`` times that snapshot's size (or an operator asks). The state is taken at one
applied index, and the file is written in a worker thread so the event loop keeps serving:

- If the state machine has ``prepare_snapshot()`` (see :class:`ConcurrentSnapshot`), the node
  calls it on the event loop between two ``apply`` calls. It must return quickly a function that
  writes the state *as of that moment*; that function runs in a worker thread while ``apply``
  and ``query`` go on in the event loop's thread. It must therefore not see later applies: take
  a copy (``dict(self.data)`` when values are immutable, though a large one pauses the
  event loop), or use copy-on-write or versioned storage
  (:class:`raftpy.examples.versioned_map.VersionedMap`, as the hashmap example does).
- Otherwise ``snapshot(out)`` runs in a worker thread while the node holds back applies (reads
  and writes wait, peers and clients are still served), so it sees a frozen state; ``query``
  may still be called concurrently from the event loop and must not mutate.
- ``restore(inp)`` runs in a worker thread while nothing else touches the state machine.
"""

from __future__ import annotations

from collections.abc import Callable
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


@runtime_checkable
class ConcurrentSnapshot(Protocol):
    """Optional: state machines that can write a snapshot while they keep applying
    (hashicorp/raft's ``FSM.Snapshot`` + ``FSMSnapshot.Persist`` split)."""

    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        """Called on the event loop at a consistent applied index; return a function that
        writes the state as of now to ``out`` from a worker thread, unaffected by later
        ``apply`` calls."""
        ...
