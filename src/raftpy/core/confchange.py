"""Membership changes as arithmetic: a :class:`ConfState` and a :class:`ConfChange` in, the
next :class:`ConfState` out (Thesis §4), or a :class:`~raftpy.errors.ConfChangeError`.

Pure functions over frozen data: nothing here knows about logs, leaders or commitment. Each
function checks its input, works on a private copy, checks the result and only then returns
it, so a refused change never half-applies. Results list every id in ascending order, so two
equal memberships compare equal.

Two ways to change the voters, as in Ongaro's thesis and etcd raft's ConfChangeV2:

- **Simple** (Thesis §4.1): at most one voter is added or removed. Safe in one step because
  any majority of the old voters and any majority of the new voters share a server when the
  two sets differ by one, so the old and new configurations can never decide apart.
- **Joint consensus** (Thesis §4.3): any change. The cluster first moves to the joint
  configuration C_old,new (``voters`` = new, ``voters_outgoing`` = old; every decision needs a
  majority of each), then leaves it for C_new. ``auto_leave`` says whether the leader leaves
  on its own once the joint configuration commits (``JOINT_IMPLICIT``, and ``AUTO`` when it
  had to go joint) or waits for an explicit empty change (``JOINT_EXPLICIT``).

The rules for one node, each change naming a node at most once:

- ``ADD_VOTER`` makes it a voter: a new server, or a learner promoted once it has caught up
  (Thesis §4.2.1: new servers join as non-voting learners first, so adding them does not
  stall commitment while they copy the log). A voter already is one: no change.
- ``ADD_LEARNER`` makes it a learner. Demoting a voter is a voter removal: in a simple change
  it is a learner at once; entering a joint configuration it still votes in the outgoing half
  until the joint configuration is left, so it waits in ``learners_next`` (a node is never a
  voter and a learner at once).
- ``REMOVE_NODE`` removes it. Removing a node that is not a member is no change rather than an
  error (as etcd): a change retried after an unknown outcome must not fail because its first
  attempt took effect. A voter removed entering a joint configuration still votes in the
  outgoing half until the leave.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from raftpy.core.messages import (
    MAX_NODE_ID,
    Address,
    ConfState,
    MemberAddress,
    NodeId,
    validate_conf_state,
)
from raftpy.errors import ConfChangeError


class ConfChangeKind(enum.IntEnum):
    """What one change does to one node (etcd's ConfChangeType)."""

    ADD_VOTER = 0
    """Make the node a voter (add it, or promote a learner)."""
    ADD_LEARNER = 1
    """Make the node a learner (add it, or demote a voter)."""
    REMOVE_NODE = 2
    """Remove the node (no change if it is not a member)."""


class ConfChangeTransition(enum.IntEnum):
    """How a :class:`ConfChange` is carried out (etcd's ConfChangeTransition)."""

    AUTO = 0
    """A simple change when at most one voter changes (Thesis §4.1), else joint consensus
    (Thesis §4.3) left automatically."""
    JOINT_IMPLICIT = 1
    """Joint consensus, left automatically once the joint configuration commits."""
    JOINT_EXPLICIT = 2
    """Joint consensus, left only by an explicit empty :class:`ConfChange`."""


class ConfChangeSingle(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One change to one node. ``address`` (for ``ADD_*``) records where the node listens;
    ``None`` keeps the address already recorded. Adding a voter that already is one with a new
    address changes only the address."""

    kind: ConfChangeKind
    node_id: NodeId
    address: Address | None = None


class ConfChange(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A membership change, as an operator proposes it and a configuration entry will carry it.

    ``changes`` are applied in order and name each node at most once. No changes at all means
    "leave the joint configuration" (Thesis §4.3's second step).
    """

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO


def is_joint(conf: ConfState) -> bool:
    """Whether ``conf`` is a joint configuration C_old,new (Thesis §4.3)."""
    return bool(conf.voters_outgoing)


def check_conf(conf: ConfState) -> None:
    """Raise :class:`ConfChangeError` unless ``conf`` keeps the membership invariants (stated
    once, in :func:`raftpy.core.messages.validate_conf_state`, which peers' memberships pass
    too)."""
    problem = validate_conf_state(conf)
    if problem is not None:
        raise ConfChangeError(problem)


def apply_simple(conf: ConfState, changes: Sequence[ConfChangeSingle]) -> ConfState:
    """``conf`` after ``changes`` made in one step (Thesis §4.1).

    Refused while joint (a joint configuration must be left first), when more than one voter
    would be added or removed (two majorities of configurations further apart need not overlap:
    {1,2,3} -> {1,2,3,4,5} lets {1,2} and {3,4,5} decide apart), and when no voter would be left.
    """
    check_conf(conf)
    if is_joint(conf):
        raise ConfChangeError(
            "a simple change while joint: leave the joint configuration first (Thesis §4.3)"
        )
    draft = _Draft.of(conf)
    draft.apply(changes)
    changed = set(conf.voters) ^ draft.voters
    if len(changed) > 1:
        raise ConfChangeError(
            f"a simple change may add or remove one voter, this one changes {sorted(changed)} "
            "(Thesis §4.1): use joint consensus"
        )
    return draft.result(auto_leave=False)


def enter_joint(
    conf: ConfState, changes: Sequence[ConfChangeSingle], auto_leave: bool
) -> ConfState:
    """The joint configuration C_old,new for ``changes`` (Thesis §4.3): ``voters_outgoing`` are
    the voters of ``conf``, ``voters`` the voters after ``changes``.

    Refused when ``conf`` is already joint (one change at a time: a second change would need a
    majority of a configuration no longer tracked) and when no voter would be left in C_new.
    """
    check_conf(conf)
    if is_joint(conf):
        raise ConfChangeError(
            "already in a joint configuration: leave it before the next change (Thesis §4.3)"
        )
    draft = _Draft.of(conf)
    draft.outgoing = set(conf.voters)
    draft.apply(changes)
    return draft.result(auto_leave=auto_leave)


def leave_joint(conf: ConfState) -> ConfState:
    """C_new, from the joint configuration C_old,new (Thesis §4.3's second step).

    The outgoing voters stop voting: those not in C_new are removed, except the demoted ones
    (``learners_next``), which become learners now. Refused outside a joint configuration.
    """
    check_conf(conf)
    if not is_joint(conf):
        raise ConfChangeError("not in a joint configuration: there is nothing to leave")
    draft = _Draft.of(conf)
    draft.learners |= draft.learners_next
    draft.learners_next = set()
    draft.outgoing = set()
    # Outgoing voters that are not staying on are no longer members: forget where they were.
    for node in list(draft.addresses):
        if node not in draft.voters and node not in draft.learners:
            del draft.addresses[node]
    return draft.result(auto_leave=False)


def apply(conf: ConfState, cc: ConfChange) -> ConfState:
    """``conf`` after ``cc``, by its transition.

    No changes leaves the joint configuration (refused outside one). Otherwise ``conf`` must
    not be joint; ``AUTO`` makes a simple change when at most one voter changes and enters a
    joint configuration left automatically otherwise; the ``JOINT_*`` transitions always enter
    a joint configuration.
    """
    if not cc.changes:
        return leave_joint(conf)
    transition = cc.transition
    if transition is ConfChangeTransition.AUTO:
        check_conf(conf)
        if is_joint(conf) or _voters_changed(conf, cc.changes) <= 1:
            return apply_simple(conf, cc.changes)
        return enter_joint(conf, cc.changes, auto_leave=True)
    if transition is ConfChangeTransition.JOINT_IMPLICIT:
        return enter_joint(conf, cc.changes, auto_leave=True)
    if transition is ConfChangeTransition.JOINT_EXPLICIT:
        return enter_joint(conf, cc.changes, auto_leave=False)
    raise ConfChangeError(f"unknown transition {transition!r}")


# ----------------------------------------------------------------------------------------------
# The working copy
# ----------------------------------------------------------------------------------------------


def _voters_changed(conf: ConfState, changes: Sequence[ConfChangeSingle]) -> int:
    """How many voters ``changes`` add or remove, applied to the non-joint ``conf``."""
    draft = _Draft.of(conf)
    draft.apply(changes)
    return len(set(conf.voters) ^ draft.voters)


def _sorted(ids: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(ids))


@dataclass
class _Draft:
    """A mutable copy of a :class:`ConfState` that changes are made to."""

    voters: set[int]
    learners: set[int]
    outgoing: set[int]
    learners_next: set[int]
    addresses: dict[int, str]

    @classmethod
    def of(cls, conf: ConfState) -> _Draft:
        return cls(
            set(conf.voters),
            set(conf.learners),
            set(conf.voters_outgoing),
            set(conf.learners_next),
            conf.address_map(),
        )

    def apply(self, changes: Sequence[ConfChangeSingle]) -> None:
        if not changes:
            raise ConfChangeError("an empty change changes nothing")
        seen: set[int] = set()
        for change in changes:
            node = change.node_id
            if not 0 <= node <= MAX_NODE_ID:
                raise ConfChangeError(f"node id {node} is out of range")
            if node in seen:
                # Applied in order, the first change to a node would be silently undone by the
                # second: almost certainly not what the operator meant.
                raise ConfChangeError(f"node {node} is changed twice in one change")
            seen.add(node)
            self._apply_one(change.kind, node)
            if change.address is not None and change.kind is not ConfChangeKind.REMOVE_NODE:
                self.addresses[node] = change.address

    def _apply_one(self, kind: ConfChangeKind, node: int) -> None:
        if kind is ConfChangeKind.ADD_VOTER:
            self.learners.discard(node)
            self.learners_next.discard(node)
            self.voters.add(node)
        elif kind is ConfChangeKind.ADD_LEARNER:
            self.voters.discard(node)
            if node in self.outgoing:
                # Still a voter of C_old until the joint configuration is left.
                self.learners_next.add(node)
            else:
                self.learners.add(node)
        elif kind is ConfChangeKind.REMOVE_NODE:
            self.voters.discard(node)
            self.learners.discard(node)
            self.learners_next.discard(node)
            if node not in self.outgoing:
                # An outgoing voter still votes (and is dialed) until the joint configuration
                # is left; anyone else is gone now.
                self.addresses.pop(node, None)
        else:
            raise ConfChangeError(f"unknown change kind {kind!r}")

    def result(self, auto_leave: bool) -> ConfState:
        if not self.voters:
            raise ConfChangeError("the change would leave no voters")
        conf = ConfState(
            voters=_sorted(self.voters),
            learners=_sorted(self.learners),
            voters_outgoing=_sorted(self.outgoing),
            learners_next=_sorted(self.learners_next),
            auto_leave=auto_leave,
            addresses=tuple(MemberAddress(n, self.addresses[n]) for n in sorted(self.addresses)),
        )
        check_conf(conf)
        return conf
