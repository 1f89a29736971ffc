"""Ready: everything the driver must do after feeding the core, in order.

The driver's loop (etcd raft's RawNode contract; docs/architecture.md, "The Ready loop")::

    while core.has_ready():
        rd = core.ready()
        send(rd.messages)                 # may go at once: the leader's appends and heartbeats
        stream(rd.snapshot_requests)      # may start at once: our latest snapshot to a follower
        persist(rd.hard_state, rd.snapshot, rd.entries); fsync   # before anything below
        send(rd.persisted_messages)       # votes and acknowledgements: they promise durability
        apply(rd.committed_entries)       # in order, then report how far:
        core.applied_to(last_applied)     # (later, for entries whose apply was held back)
        core.advance(rd)                  # call before the next ready()

Sending ``messages`` after persisting is always correct too; only ``persisted_messages`` must
wait for the sync (Thesis §10.2.1: the leader may write its log in parallel with replication).

Snapshot bytes never pass through the core (Raft §7). A leader's driver streams the file a
:class:`SnapshotRequest` names (:mod:`raftpy.node.transfer`) and reports the outcome with
``Raft.report_snapshot``; a follower's driver collects the file, verifies it and hands it over
with ``Raft.install_snapshot``, and if the core takes it, it comes back as ``Ready.snapshot``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import msgspec

from raftpy.core.messages import Entry, Message, SnapshotMeta
from raftpy.core.storage import HardState


class Role(enum.Enum):
    """A node's role (Raft §5.1; PRE_CANDIDATE is Thesis §9.6)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Appended(NamedTuple):
    """Where ``Raft.propose_batch`` put a batch of commands: the index of the first (the
    others follow it consecutively) and the term they were appended in. A command lives or
    dies at its index and term (Raft §5.3): if another term's entry is applied at that index,
    the command was overwritten and never will be applied."""

    first_index: int
    term: int


class SoftState(msgspec.Struct, frozen=True):
    """Volatile state the driver may want to observe: the role and the known leader."""

    role: Role
    leader_id: int | None


class ReadState(msgspec.Struct, frozen=True):
    """A linearizable read is ready (Thesis §6.4): once the local state machine has applied
    ``index``, a query tagged ``context`` may be answered from it."""

    index: int
    context: bytes


class SnapshotRequest(msgspec.Struct, frozen=True):
    """Stream our latest snapshot, ``meta``, to follower ``to`` (Raft §7): it needs entries the
    log no longer holds. ``term`` is the leader's term when it asked. The driver reports the
    end of the transfer with ``Raft.report_snapshot(request, ok)``; until then the core sends
    ``to`` no entries."""

    to: int
    term: int
    meta: SnapshotMeta


# A Struct rather than a frozen dataclass: the driver takes one per pass of its loop, and a
# frozen dataclass's __init__ (object.__setattr__ per field) cost twenty times as much.
class Ready(msgspec.Struct, frozen=True):
    """What to persist, send and apply; hand it back with ``advance()`` when done.

    - ``hard_state``: persist when not ``None`` (term, vote, commit: one atomic record).
    - ``snapshot``: a snapshot received from the leader, to persist and restore.
    - ``entries``: append to stable storage, replacing any stored suffix from
      ``entries[0].index`` on.
    - ``must_sync``: whether the writes above need an fsync before ``persisted_messages`` go
      (term, vote or entries changed; a commit-only change does not).
    - ``messages``: send now (they do not depend on the writes above).
    - ``snapshot_requests``: start streaming a snapshot to each follower named, now (they do
      not depend on the writes above either); report each outcome with
      ``Raft.report_snapshot``.
    - ``persisted_messages``: send only after the writes above are durable.
    - ``committed_entries``: apply in order, then report it with ``Raft.applied_to`` (the
      core marks no entry applied by itself: the driver may hold applies back; only a
      restored ``snapshot`` counts as applied up to its index at ``advance()``).
    - ``read_states``: linearizable reads now servable once their index is applied.
    - ``soft_state``: role or leader changed when not ``None``.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: SnapshotMeta | None
    entries: tuple[Entry, ...]
    must_sync: bool
    messages: tuple[Message, ...]
    snapshot_requests: tuple[SnapshotRequest, ...]
    persisted_messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]

    def is_empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.snapshot
            or self.entries
            or self.messages
            or self.snapshot_requests
            or self.persisted_messages
            or self.committed_entries
            or self.read_states
        )
