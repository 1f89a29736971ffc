"""Applying committed entries: the node hands each to the state machine (through the session
table), to the membership, or to nobody (a no-op), in log order, then tells the core and the
snapshot work how far it applied (Raft §5.3: a committed entry is applied in order, once).

The node's loop calls :meth:`EntryApplier.apply` with each batch of committed entries a Ready
(or a finished snapshot read) releases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from raftpy.core.messages import Entry, EntryKind, decode_conf_state
from raftpy.core.raft import Raft
from raftpy.node.last_error import LastError
from raftpy.node.members import NodeMembers
from raftpy.node.requests import PendingRequests
from raftpy.node.session_machine import SessionStateMachine
from raftpy.node.snapshots import NodeSnapshots
from raftpy.node.stats import NodeStats
from raftpy.storage.peers import PeerIncarnations

logger = logging.getLogger("raftpy.node")

# Read per entry: in Python 3.11 ``EntryKind.SESSION`` costs ~0.1 us (EnumType's __getattr__
# sends every class attribute lookup through a Python-level hook), a global ~0.01.
_SESSION = EntryKind.SESSION
_COMMAND = EntryKind.COMMAND


class EntryApplier:
    """Applies committed entries for one node (see the module docstring)."""

    def __init__(
        self,
        node_id: int,
        raft: Raft,
        machine: SessionStateMachine,
        requests: PendingRequests,
        members: NodeMembers,
        incarnations: PeerIncarnations,
        snaps: NodeSnapshots,
        stats: NodeStats,
        last_error: LastError,
    ) -> None:
        self._node_id = node_id
        self._raft = raft
        self._machine = machine
        self._requests = requests
        self._members = members
        self._incarnations = incarnations
        self._snaps = snaps
        self._stats = stats
        self._last_error = last_error

    def apply(self, entries: Sequence[Entry]) -> None:
        """Apply ``entries`` (consecutive, committed, not applied yet) and answer their
        proposers."""
        apply_entry = self._machine.apply_entry
        on_applied = self._requests.on_applied
        for entry in entries:
            result = b""
            failure: Exception | None = None
            kind = entry.kind
            if kind is _SESSION or kind is _COMMAND:
                # SESSION entries go through the session table; COMMAND ones (older logs) raw.
                result, failure, applied = apply_entry(entry)
                if failure is not None and applied:
                    # A deterministic state machine fails the same way on every node, so the
                    # replicas stay equal; the proposer gets the error.
                    logger.error(
                        "node %d: apply of entry %d raised",
                        self._node_id,
                        entry.index,
                        exc_info=failure,
                    )
                    self._last_error.note(
                        f"apply of entry {entry.index} raised {type(failure).__name__}: {failure}"
                    )
            elif kind is EntryKind.CONFIG:
                self._members.on_applied(entry)
                self._forget_removed(entry)
            on_applied(entry, result, failure)
        self._requests.end_of_batch()
        self._stats.applied += len(entries)
        self._raft.applied_to(entries[-1].index)  # only now: the core's applied index is the one
        self._snaps.note_applied(entries)

    def _forget_removed(self, entry: Entry) -> None:
        """Forget the data-dir incarnation of the members a CONFIG entry removes, as it is
        applied (in log order, on every node): a member removed and added back with a new disk
        is then accepted even when both changes arrive together and the membership in force,
        which the transport follows, never lacked it."""
        before = self._raft.conf_state_at(entry.index - 1).members()
        for node in before - decode_conf_state(entry.data).members():
            self._incarnations.forget(node)
