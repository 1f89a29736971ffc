"""Tiny helpers for the core's unit tests, in the spirit of etcd's ``raft_test.go``.

- :func:`entries` builds Entry lists from terms: ``entries([1, 1, 2])``.
- :func:`new_storage` / :func:`new_raft` build a node over a :class:`MemoryStorage`.
- :func:`drive` carries out one Ready the way a driver would (persist, then advance).
- :class:`Network` wires several cores together in-process and delivers every message until
  the cluster is quiet, with ``cut``/``isolate``/``drop`` faults (etcd's ``newNetwork``).

Everything here is deterministic: nodes are visited and messages delivered in a fixed order,
and each node's randomness comes from a ``random.Random`` seeded from ``seed`` and its id.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from raftpy.core.config import RaftConfig
from raftpy.core.messages import Entry, EntryKind, Message, RequestVoteResponse
from raftpy.core.raft import Raft
from raftpy.core.ready import Ready, Role, SnapshotRequest
from raftpy.core.storage import HardState
from raftpy.storage.memory import MemoryStorage

M = TypeVar("M", bound=Message)


def entries(
    terms: Sequence[int], start: int = 1, data: bytes = b"", kind: EntryKind = EntryKind.COMMAND
) -> list[Entry]:
    """Entries with the given ``terms`` at consecutive indexes from ``start``."""
    return [Entry(term, start + k, kind, data) for k, term in enumerate(terms)]


def new_storage(
    peers: Iterable[int],
    terms: Sequence[int] = (),
    *,
    term: int | None = None,
    vote: int | None = None,
    commit: int = 0,
) -> MemoryStorage:
    """A MemoryStorage for voters ``peers`` holding a log with ``terms`` and a hard state.

    ``term`` defaults to the last log term (a node's term is never below its log's)."""
    storage = MemoryStorage(voters=list(peers))
    if terms:
        storage.append(entries(terms))
    hard_term = term if term is not None else max(terms, default=0)
    storage.set_hard_state(HardState(hard_term, vote, commit))
    return storage


def rng_for(seed: int, node_id: int) -> random.Random:
    """The random generator node ``node_id`` gets in a run with ``seed``."""
    return random.Random(seed * 1_000_003 + node_id)


def new_raft(
    id: int,
    peers: Iterable[int],
    *,
    election: int = 10,
    heartbeat: int = 1,
    pre_vote: bool = True,
    check_quorum: bool = True,
    storage: MemoryStorage | None = None,
    seed: int = 0,
    **settings: int | None,
) -> Raft:
    """A core for node ``id`` among voters ``peers`` (``storage`` defaults to an empty one).

    ``settings`` are further :class:`RaftConfig` fields, e.g. ``max_inflight_msgs=2``."""
    if storage is None:
        storage = new_storage(peers)
    config = RaftConfig(
        id=id,
        election_ticks=election,
        heartbeat_ticks=heartbeat,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        **settings,  # type: ignore[arg-type]
    )
    return Raft(config, storage, rng_for(seed, id))


def storage_of(raft: Raft) -> MemoryStorage:
    storage = raft.log.storage
    assert isinstance(storage, MemoryStorage)
    return storage


def persist(rd: Ready, storage: MemoryStorage) -> None:
    """Write what a Ready asks to persist: snapshot, entries, then hard state."""
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    if rd.entries:
        storage.append(rd.entries)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)


def drive(raft: Raft, storage: MemoryStorage | None = None) -> Ready:
    """Take one Ready, persist it into ``storage`` (default: the node's own), report its
    committed entries applied (there is no state machine: the caller records them) and
    advance.

    Returns the Ready, so a test can look at what it asked for; :func:`msgs` lists its
    messages."""
    rd = raft.ready()
    persist(rd, storage if storage is not None else storage_of(raft))
    if rd.committed_entries:
        raft.applied_to(rd.committed_entries[-1].index)
    raft.advance(rd)
    return rd


def msgs(rd: Ready) -> list[Message]:
    """Every message of a Ready: the ones to send now, then the ones that waited for the sync."""
    return [*rd.messages, *rd.persisted_messages]


def drain(raft: Raft, storage: MemoryStorage | None = None) -> list[Message]:
    """:func:`drive` until the node has nothing more to do; return all messages, in order."""
    out: list[Message] = []
    while raft.has_ready():
        out.extend(msgs(drive(raft, storage)))
    return out


def of_kind(messages: Iterable[Message], kind: type[M], dst: int | None = None) -> list[M]:
    """The messages of one kind (optionally to one destination)."""
    return [m for m in messages if isinstance(m, kind) and (dst is None or m.dst == dst)]


def log_terms(raft: Raft) -> list[int]:
    """The terms of every entry in the node's log, index 1 first."""
    terms: list[int] = []
    for index in range(1, raft.log.last_index() + 1):
        term = raft.log.term(index)
        assert term is not None
        terms.append(term)
    return terms


def role_of(raft: Raft) -> Role:
    """The node's current role (a call, so type checkers do not narrow it across steps)."""
    return raft.role


def make_leader(raft: Raft) -> Raft:
    """Make ``raft`` win an election by stepping granted (pre-)votes from its peers, in id
    order, until it leads. Its Ready (with the no-op and the appends) is left to the caller."""
    raft.campaign()
    peers = sorted(raft.voters() - {raft.id})
    if role_of(raft) is Role.PRE_CANDIDATE:
        for peer in peers:
            if role_of(raft) is not Role.PRE_CANDIDATE:
                break
            raft.step(RequestVoteResponse(raft.term + 1, peer, raft.id, True, pre_vote=True))
    for peer in peers:
        if role_of(raft) is not Role.CANDIDATE:
            break
        raft.step(RequestVoteResponse(raft.term, peer, raft.id, True))
    assert raft.role is Role.LEADER, raft.status()
    return raft


@dataclass
class Node:
    """One member of a :class:`Network`: its core, its storage and what it applied."""

    raft: Raft
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)


class Network:
    """Cores wired together in-process (for tests), like etcd's ``newNetwork``.

    :meth:`stabilize` repeatedly drives every node with work (in id order), then delivers the
    collected messages (in the order they were produced) until no node has anything left to
    do. ``delivered`` records every message that arrived, ``dropped`` every one that did not.
    ``snapshot_requests`` records every snapshot a leader asked its driver to stream (nothing
    streams it here: a test hands the follower the snapshot with ``install_snapshot``).
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes: dict[int, Node] = {n.raft.id: n for n in nodes}
        self._cut: set[frozenset[int]] = set()
        self._drop: list[Callable[[Message], bool]] = []
        self.delivered: list[Message] = []
        self.dropped: list[Message] = []
        self.snapshot_requests: list[SnapshotRequest] = []

    @classmethod
    def of(
        cls,
        ids: Sequence[int] = (1, 2, 3),
        *,
        logs: dict[int, Sequence[int]] | None = None,
        terms: dict[int, int] | None = None,
        seed: int = 0,
        **kwargs: int | bool | None,
    ) -> Network:
        """A network of fresh nodes ``ids``; ``logs`` gives some nodes an initial log (by
        terms) and ``terms`` an initial hard-state term. ``kwargs`` go to :func:`new_raft`."""
        nodes = []
        for node_id in ids:
            storage = new_storage(
                ids,
                (logs or {}).get(node_id, ()),
                term=(terms or {}).get(node_id),
            )
            raft = new_raft(node_id, ids, storage=storage, seed=seed, **kwargs)  # type: ignore[arg-type]
            nodes.append(Node(raft, storage))
        return cls(nodes)

    def __getitem__(self, node_id: int) -> Raft:
        return self.nodes[node_id].raft

    # -- faults -------------------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        """Drop every message between ``a`` and ``b``, both ways."""
        self._cut.add(frozenset((a, b)))

    def isolate(self, node_id: int) -> None:
        """Cut ``node_id`` off from every other node."""
        for other in self.nodes:
            if other != node_id:
                self.cut(node_id, other)

    def drop(self, predicate: Callable[[Message], bool]) -> None:
        """Drop every message for which ``predicate`` is true (until :meth:`heal`)."""
        self._drop.append(predicate)

    def drop_kind(self, kind: type, src: int | None = None, dst: int | None = None) -> None:
        """Drop messages of one kind, optionally only from ``src`` or to ``dst``."""
        self.drop(
            lambda m: (
                isinstance(m, kind)
                and (src is None or m.src == src)
                and (dst is None or m.dst == dst)
            )
        )

    def heal(self) -> None:
        """Remove every fault."""
        self._cut.clear()
        self._drop.clear()

    def _passes(self, m: Message) -> bool:
        if frozenset((m.src, m.dst)) in self._cut or m.dst not in self.nodes:
            return False
        return not any(p(m) for p in self._drop)

    # -- running ------------------------------------------------------------------------------

    def collect(self) -> list[Message]:
        """Drive every node with work once (id order); return their messages."""
        out: list[Message] = []
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if node.raft.has_ready():
                rd = drive(node.raft, node.storage)
                node.applied.extend(rd.committed_entries)
                self.snapshot_requests.extend(rd.snapshot_requests)
                out.extend(msgs(rd))
        return out

    def send(self, messages: Iterable[Message]) -> None:
        """Deliver ``messages`` (subject to the faults), in order."""
        for m in messages:
            if self._passes(m):
                self.delivered.append(m)
                self.nodes[m.dst].raft.step(m)
            else:
                self.dropped.append(m)

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Drive and deliver until no node has anything to do."""
        for _ in range(max_rounds):
            out = self.collect()
            if not out and not any(n.raft.has_ready() for n in self.nodes.values()):
                return
            self.send(out)
        raise AssertionError(f"network did not stabilize within {max_rounds} rounds")

    def tick(self, node_id: int, times: int = 1) -> None:
        """Tick one node ``times`` times, stabilizing after each tick."""
        for _ in range(times):
            self.nodes[node_id].raft.tick()
            self.stabilize()

    def tick_all(self, times: int = 1) -> None:
        """Tick every node once (id order), stabilizing after each round; ``times`` rounds."""
        for _ in range(times):
            for node_id in sorted(self.nodes):
                self.nodes[node_id].raft.tick()
            self.stabilize()

    def campaign(self, node_id: int) -> None:
        """Node ``node_id`` starts an election now; run it to the end."""
        self.nodes[node_id].raft.campaign()
        self.stabilize()

    def elect(self, node_id: int) -> Raft:
        """Run an election that ``node_id`` must win; return its core."""
        self.campaign(node_id)
        leader = self[node_id]
        assert leader.role is Role.LEADER, f"{node_id} did not win: {leader.status()}"
        return leader

    def propose(self, node_id: int, data: bytes) -> int:
        index = self[node_id].propose(data)
        self.stabilize()
        return index

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.raft.role is Role.LEADER]

    def check_invariants(self) -> None:
        for node in self.nodes.values():
            node.raft.check_invariants()


def core_state(raft: Raft) -> tuple[object, ...]:
    """Everything a step may change in a core, as one comparable value: a message the core
    rejects must leave it equal (roles, term, vote, leader, timers, log, commit and apply
    cursors, progress, transfer, pending output)."""
    log = raft.log
    return (
        raft.role,
        raft.term,
        raft.vote,
        raft.lead,
        raft.election_elapsed,
        raft.heartbeat_elapsed,
        raft.randomized_election_timeout,
        raft.lead_transferee,
        raft._leader_transferee,
        log.committed,
        log.applying,
        log.applied,
        log.first_index(),
        log.last_index(),
        tuple(log.unstable_entries()),
        log.unstable_snapshot(),
        raft.conf_state(),
        tuple(sorted((i, pr.match, pr.next, pr.state) for i, pr in raft.prs.items())),
        dict(raft.tracker.votes()),
        raft.has_ready(),
    )
