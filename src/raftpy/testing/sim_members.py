"""Membership changes in the simulator: how a :class:`~raftpy.testing.sim.SimCluster` drives
one change (add a member, promote a learner, remove a member, or any change through joint
consensus) to completion through whichever node leads, in virtual time.

Like an operator's tool, the driver proposes through the current leader with
:meth:`~raftpy.core.raft.Raft.propose_conf_change` and waits until the membership in force on
a leader is the one asked for, with its configuration entry committed and applied there. It
goes on through leader changes and through the refusals the core marks retryable
(:class:`~raftpy.errors.ProposalDropped`: a new leader that has not committed an entry of its
term yet, a change still pending, a leadership transfer), re-proposing when a new leader's log
lost the entry. Retrying is safe because a change already made is no change (adding a member
that is one, removing one that is not: :mod:`raftpy.core.confchange`), so a change that did
commit is never made twice. A change the core refuses for good
(:class:`~raftpy.errors.ConfChangeError`) is raised at once; one that is not done by the
deadline raises :class:`~raftpy.errors.IndeterminateError`, as it may still commit later.

:class:`DiskIdentities` models the data dir identity check of the real node for nodes whose
disk was wiped: a server that lost its disk lost its votes and the entries it acknowledged, so
it must never be counted as the member it was, by anyone, even by a removed server that never
learned it was removed and still counts the old member's vote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from raftpy.core import confchange
from raftpy.core.confchange import (
    ConfChange,
    ConfChangeKind,
    ConfChangeSingle,
    ConfChangeTransition,
)
from raftpy.core.messages import ConfState, Entry
from raftpy.core.raft import Raft
from raftpy.errors import ConfChangeError, IndeterminateError, NotLeaderError, ProposalDropped

if TYPE_CHECKING:
    from raftpy.testing.sim import SimCluster

__all__ = ["DiskIdentities", "MembershipDriver", "sim_address"]

_POLL = 0.02  # virtual seconds between looks at the leader


def sim_address(node_id: int) -> str:
    """The address the simulator records for a member: nodes have no real address, but the
    configuration carries one, as it does on a real cluster."""
    return f"sim://{node_id}"


class MembershipDriver:
    """Drives membership changes of one cluster. ``leader`` returns the node to propose at
    (the connected node leading the highest term, or None); ``process`` runs a node's Ready
    loop once its core has something to do."""

    def __init__(
        self,
        cluster: SimCluster,
        leader: Callable[[], int | None],
        process: Callable[[int], None],
        tag: Callable[[str], str],
        on_add: Callable[[int, int, int], None],
    ) -> None:
        self._c = cluster
        self._leader = leader
        self._process = process
        self._tag = tag
        self._on_add = on_add  # (node, index, term) of a proposal adding a non-member

    # -- the operations -----------------------------------------------------------------------

    def add_member(self, node_id: int, voter: bool, timeout: float) -> ConfState:
        kind = ConfChangeKind.ADD_VOTER if voter else ConfChangeKind.ADD_LEARNER
        cc = ConfChange((ConfChangeSingle(kind, node_id, sim_address(node_id)),))

        def not_a_member(conf: ConfState) -> None:
            if node_id in conf.members():
                raise ConfChangeError(
                    f"node {node_id} is already a member; to replace it (a lost disk), remove "
                    "it first and then add it back"
                )

        return self.change(cc, force=False, timeout=timeout, precheck=not_a_member)

    def promote(self, node_id: int, force: bool, timeout: float) -> ConfState:
        cc = ConfChange((ConfChangeSingle(ConfChangeKind.ADD_VOTER, node_id),))

        def a_member(conf: ConfState) -> None:
            if node_id not in conf.members():
                raise ConfChangeError(f"node {node_id} is not a member: add it first")

        def caught_up(raft: Raft) -> bool:
            # Thesis §4.2.1: promote a learner once it holds (nearly) the whole log; the core
            # refuses a lagging one, so wait for it as the real node's promote does.
            if force or node_id in raft.voters():
                return True
            pr = raft.prs.get(node_id)
            lag = raft.log.last_index() - (pr.match if pr is not None else 0)
            return lag <= raft.config.max_learner_lag

        return self.change(cc, force=force, timeout=timeout, precheck=a_member, ready=caught_up)

    def remove_member(self, node_id: int, force: bool, timeout: float) -> ConfState:
        cc = ConfChange((ConfChangeSingle(ConfChangeKind.REMOVE_NODE, node_id),))
        return self.change(cc, force=force, timeout=timeout)

    # -- the loop -----------------------------------------------------------------------------

    def change(
        self,
        cc: ConfChange,
        force: bool,
        timeout: float,
        precheck: Callable[[ConfState], None] | None = None,
        ready: Callable[[Raft], bool] | None = None,
    ) -> ConfState:
        """Make ``cc`` and return the leader's membership once it is committed and applied
        there. ``precheck`` sees the membership once, before the first proposal, and raises to
        refuse; ``ready`` says whether the leader may propose now (else wait)."""
        if not cc.changes or cc.transition is ConfChangeTransition.JOINT_EXPLICIT:
            raise ValueError("the simulator makes changes that leave joint consensus by itself")
        c = self._c
        deadline = c.now + timeout
        proposed = False
        while c.now < deadline:
            lead = self._leader()
            if lead is None:
                c.run_for(_POLL)
                continue
            raft = c.raft(lead)
            log = raft.log
            conf = raft.conf_state()
            if log.confs.pending(log.committed) or (conf.auto_leave and confchange.is_joint(conf)):
                c.run_for(_POLL)  # a change (ours, perhaps) is on its way: wait for it
                continue
            if precheck is not None and not proposed:
                precheck(conf)
                precheck = None
            if _done(conf, cc):
                if log.confs.latest_index() == 0:  # the membership in force is applied
                    return conf
                c.run_for(_POLL)
                continue
            if ready is not None and not ready(raft):
                c.run_for(_POLL)
                continue
            try:
                index = raft.propose_conf_change(cc, force=force)
            except (ProposalDropped, NotLeaderError):
                c.run_for(_POLL)
                continue
            members = conf.members()
            for change in cc.changes:
                if change.kind is not ConfChangeKind.REMOVE_NODE and change.node_id not in members:
                    self._on_add(change.node_id, index, raft.term)
            proposed = True
            self._process(lead)
            c.run_for(_POLL)
        raise IndeterminateError(
            self._tag(f"membership change {cc} not done within {timeout} s; it may still commit")
        )


def _done(conf: ConfState, cc: ConfChange) -> bool:
    """Whether ``cc`` is already made in ``conf`` (making it again would change nothing)."""
    if confchange.is_joint(conf):
        return False
    try:
        after = confchange.apply(conf, cc)
    except ConfChangeError:
        return False
    return not confchange.is_joint(after) and after == conf


class DiskIdentities:
    """Which disk each server expects each member to have, as the real node's data dir
    identity check does (README.md, "Changing members"): a server knows a member's identity
    from the configuration entry that added it, and refuses the member if it answers with
    another disk. The simulator then drops the member's answers (votes, acknowledgements) to
    that server: it never counts them.

    Node ``x`` expects member ``y`` to have the disk ``y`` had when the latest configuration
    entry adding ``y`` that ``x``'s log holds was proposed, or its first disk if ``x``'s log
    holds none (``y`` was an initial member). ``x`` does not judge nodes that are not members of
    its own membership in force (a node that joined with an empty disk knows no one until it
    reaches a configuration entry). So a wiped node is refused until a configuration entry
    adds it back, and then only by servers whose log holds that entry: a removed server that
    never heard of it still refuses it, and cannot count its vote as the old member's.

    ``committed`` is the simulator's record of the entry applied at each index
    (:class:`~raftpy.testing.checkers.StateMachineSafety`): a log compacted past an add holds
    it if that add is what was committed there.
    """

    def __init__(self, committed: list[Entry | None]) -> None:
        self._committed = committed
        self._adds: dict[int, list[tuple[int, int, int]]] = {}  # node -> [(index, term, disk)]

    def record_add(self, node: int, index: int, term: int, disk: int) -> None:
        """A configuration entry at ``(index, term)`` adds ``node``, whose disk is ``disk``."""
        self._adds.setdefault(node, []).append((index, term, disk))

    def expected(self, raft: Raft, node: int) -> int | None:
        """The disk ``raft``'s server expects ``node`` to have; None if it does not judge."""
        if node not in raft.conf_state().members():
            return None
        log = raft.log
        last = log.last_index()
        for index, term, disk in reversed(self._adds.get(node, ())):
            if index > last:
                continue
            held = log.term(index)
            if held is None and index < log.first_index():
                entry = self._committed[index] if index < len(self._committed) else None
                held = entry.term if entry is not None else None
            if held == term:
                return disk
        return 0

    def accepts(self, raft: Raft | None, node: int, disk: int) -> bool:
        """Whether ``raft``'s server (None: down) talks to ``node``, whose disk is ``disk``."""
        if raft is None:
            return True
        expected = self.expected(raft, node)
        return expected is None or expected == disk
