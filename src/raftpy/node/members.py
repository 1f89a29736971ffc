"""Membership on a running node: changes waiting for their outcome, leadership transfers, and
the transport following the membership in force (README.md, "Changing members").

:class:`NodeMembers` is owned by :class:`~raftpy.node.RaftNode`; the node's loop feeds it what
the core says. What it keeps, like :class:`~raftpy.node.requests.PendingRequests` does for
commands:

- A change is queued until the loop hands it to the core (``Raft.propose_conf_change``), then
  pending at its index until the CONFIG entry there is applied: the caller gets the membership
  after it. Refused before it was appended (not the leader, another change pending, an invalid
  or unwise change) is definite; appended and then leadership lost, or the deadline passed, is
  :class:`~raftpy.errors.IndeterminateError` (the entry may still commit).
- A leadership transfer (Thesis §3.10) ends when the chosen voter leads; the core aborts one
  that did not finish within an election timeout, which the caller gets as a definite
  :class:`~raftpy.errors.ProposalDropped`.
- Whenever the membership in force changes (Thesis §4.1: on append, and back on truncation),
  the transport is told every member's address: the one recorded in the membership, or the
  one the command line gave. Members of the last *committed* membership stay reachable until
  the change commits: a leader removing itself still leads until then (Thesis §4.2.2), and
  needs its followers' answers to commit the change.
- The command line only bootstraps a new cluster; once a leader committed an entry of its
  term it records the addresses it knows into the membership, so that servers which join
  later learn them from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from raftpy.core.confchange import ConfChange, ConfChangeKind, ConfChangeSingle, is_joint
from raftpy.core.messages import ConfState, Entry, decode_conf_state
from raftpy.core.raft import Raft
from raftpy.core.ready import Role
from raftpy.core.storage import LogStorage
from raftpy.errors import (
    ConfChangeError,
    IndeterminateError,
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
)
from raftpy.node.config import NodeConfig
from raftpy.node.join import JoinClient, Joiner, LocalProgress
from raftpy.transport.address import parse_address

logger = logging.getLogger("raftpy.node.members")


@runtime_checkable
class PeerMapTransport(Protocol):
    """A transport that can follow membership changes (:class:`~raftpy.transport.tcp.
    TcpTransport` does; in-process fakes need not)."""

    def update_peers(self, peers: Mapping[int, str]) -> None:
        """Replace the map of peers' addresses: connect to new ones, drop removed ones."""
        ...


@dataclass(eq=False)
class _Change:
    cc: ConfChange
    force: bool
    future: asyncio.Future[ConfState]
    deadline: float
    promote: int = -1  # a promotion of this learner (-1: none): checked against the membership
    index: int = 0  # 0 until appended
    term: int = 0


@dataclass(eq=False)
class _Transfer:
    to: int
    future: asyncio.Future[None]
    deadline: float
    started: bool = False


def describe(conf: ConfState) -> str:
    """``conf`` in one short phrase, for log lines."""
    text = f"voters {list(conf.voters)}"
    if conf.voters_outgoing:
        text += f" (joint with outgoing {list(conf.voters_outgoing)})"
    learners = conf.learners + conf.learners_next
    if learners:
        text += f", learners {sorted(learners)}"
    return text


class NodeMembers:
    """A node's membership work (see the module docstring).

    ``peers`` are the command line's members and addresses (this node included): the bootstrap
    membership, and the addresses of members the membership records none for. ``leader_error``
    builds the NotLeaderError naming the leader the node knows now.
    """

    def __init__(
        self,
        node_id: int,
        address: str,
        peers: Mapping[int, str],
        leader_error: Callable[[], NotLeaderError],
        config: NodeConfig,
    ) -> None:
        self._id = node_id
        self._address = address
        self._peers = dict(peers)
        # The membership found to record every address in _peers (record_addresses).
        self._all_recorded: ConfState | None = None
        self._request_timeout = config.request_timeout
        self._leader_error = leader_error
        self.on_membership: Callable[[ConfState], None] = lambda conf: None
        """Called with each new membership in force, after the transport was told."""
        self._learned: dict[int, str] = {}  # addresses a joining node learned from the cluster
        self._queued: list[_Change] = []
        self._pending: dict[int, _Change] = {}  # by index, once appended
        self._transfers: list[_Transfer] = []
        self._conf: ConfState | None = None
        self._committed_conf: ConfState | None = None
        self._told: dict[int, str] | None = None  # the peer map the transport has
        self._transport: PeerMapTransport | None = None
        self._was_member = False
        self._said_removed = False
        self._joiner: asyncio.Task[bool] | None = None

    # ------------------------------------------------------------------------------------------
    # Start
    # ------------------------------------------------------------------------------------------

    def check_stored(self, storage: LogStorage, join: list[str]) -> list[str]:
        """Say, in one line, when the membership stored in the data dir (its log, hard state
        or a snapshot hold something) differs from the command line's: the stored one is used
        (the command line only bootstraps a new cluster). Returns ``join`` when the node may
        join (its log is empty: it may have learned a term, but no entry), else nothing."""
        hard, stored = storage.initial_state()
        if storage.last_index() == 0 and (join or hard.term == 0):
            return join
        if join:
            # Its command line names only itself, on purpose: nothing more to compare.
            logger.info("node %d has a log already: not joining %s", self._id, join)
            return []
        recorded = stored.address_map()
        differs = stored.members() != set(self._peers) or any(
            recorded.get(node, address) != address for node, address in self._peers.items()
        )
        if differs:
            given = ", ".join(f"{node}={addr}" for node, addr in sorted(self._peers.items()))
            logger.warning(
                "node %d: the membership stored in its data dir (%s%s) differs from the command "
                "line's members (%s); using the stored one: the command line only bootstraps a "
                "new cluster (README.md, 'Changing members')",
                self._id,
                describe(stored),
                f", addresses {recorded}" if recorded else "",
                given,
            )
        return []

    def peer_map(self, conf: ConfState, committed: ConfState | None = None) -> dict[int, str]:
        """Every other member's address under ``conf`` and ``committed`` (the last committed
        membership): recorded in them, else from the command line, else learned while joining.
        While this node is not yet a member (joining), the cluster's members it learned of are
        included too, so that it accepts their messages."""
        recorded = {**(committed.address_map() if committed else {}), **conf.address_map()}
        known = {**self._learned, **self._peers}
        found: dict[int, str] = {}
        for node in conf.members() | (committed.members() if committed else frozenset()):
            address = recorded.get(node) or known.get(node)
            if address is not None:
                found[node] = address
        if self._id not in conf.members():
            for node, address in self._learned.items():
                found.setdefault(node, address)
        found.pop(self._id, None)
        return found

    def address_of(self, node: int | None) -> str | None:
        """Where ``node`` listens, as far as this node knows."""
        if node is None:
            return None
        if self._conf is not None:
            address = self._conf.address_map().get(node)
            if address is not None:
                return address
        return self._peers.get(node) or self._learned.get(node)

    def attach(self, raft: Raft, transport: object) -> None:
        """The node started: follow ``raft``'s membership with ``transport`` from now on."""
        self._transport = transport if isinstance(transport, PeerMapTransport) else None
        self._conf = raft.conf_state()
        self._committed_conf = raft.conf_state_at(raft.log.committed)
        self._was_member = self._id in self._conf.members()
        self._tell_transport()

    def start_join(
        self, raft: Raft, client: JoinClient, promote: bool, config: NodeConfig, rng: random.Random
    ) -> None:
        """Ask the cluster, through ``client``, to add this node (see :mod:`raftpy.node.join`)."""

        def progress() -> LocalProgress:
            return LocalProgress(raft.conf_state(), raft.log.committed, raft.log.applied)

        joiner = Joiner(
            self._id,
            self._address,
            client,
            promote=promote,
            max_lag=config.raft.max_learner_lag,
            timeout=config.join_timeout,
            learn=lambda addresses: self.learn(addresses, raft),
            progress=progress,
            rng=rng,
        )
        self._joiner = asyncio.get_running_loop().create_task(joiner.run(), name="raftpy-join")

    async def stop_join(self) -> None:
        """Stop joining (the node stops)."""
        if self._joiner is not None:
            self._joiner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._joiner

    def learn(self, addresses: Mapping[int, str], raft: Raft) -> None:
        """Addresses of the cluster's members, learned by a joining node from the cluster."""
        fresh = {n: a for n, a in addresses.items() if n != self._id and self._learned.get(n) != a}
        if fresh:
            self._learned.update(fresh)
            self._tell_transport()

    # ------------------------------------------------------------------------------------------
    # Accepting requests
    # ------------------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return asyncio.get_running_loop().time() + (
            self._request_timeout if timeout is None else timeout
        )

    @staticmethod
    def adding(node_id: int, address: str, voter: bool) -> ConfChangeSingle:
        """The change adding ``node_id`` at ``address`` (ConfChangeError for a bad address)."""
        try:
            parse_address(address)
        except ValueError as exc:
            raise ConfChangeError(f"node {node_id}: {exc}") from None
        kind = ConfChangeKind.ADD_VOTER if voter else ConfChangeKind.ADD_LEARNER
        return ConfChangeSingle(kind, node_id, address)

    def change(
        self, cc: ConfChange, force: bool, timeout: float | None, promote: int = -1
    ) -> asyncio.Future[ConfState]:
        """Queue ``cc`` for the loop; the future resolves as the module docstring says."""
        fut: asyncio.Future[ConfState] = asyncio.get_running_loop().create_future()
        self._queued.append(_Change(cc, force, fut, self._deadline(timeout), promote))
        return fut

    def transfer(self, to: int, timeout: float | None) -> asyncio.Future[None]:
        """Queue a leadership transfer to ``to``; the future resolves once ``to`` leads."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transfers.append(_Transfer(to, fut, self._deadline(timeout)))
        return fut

    # ------------------------------------------------------------------------------------------
    # Into the core (once per loop pass)
    # ------------------------------------------------------------------------------------------

    def start(self, raft: Raft) -> None:
        """Hand the queued changes and transfers to the core."""
        if self._queued:
            queued, self._queued = self._queued, []
            for change in queued:
                if not change.future.done():
                    self._propose(raft, change)
        for t in self._transfers:
            if not t.started and not t.future.done():
                self._start_transfer(raft, t)

    def _propose(self, raft: Raft, change: _Change) -> None:
        try:
            if change.promote >= 0:
                conf = raft.conf_state()
                node = change.promote
                if raft.role is Role.LEADER and node in conf.voters:
                    # Already a voter: a promotion retried after an unknown outcome is done.
                    change.future.set_result(conf)
                    return
                if raft.role is Role.LEADER and node not in conf.learners:
                    raise ConfChangeError(
                        f"node {node} is not a learner ({describe(conf)}): add it first"
                    )
            index = raft.propose_conf_change(change.cc, force=change.force)
        except NotLeaderError:
            change.future.set_exception(self._leader_error())
            return
        except (ProposalDropped, ConfChangeError) as exc:
            change.future.set_exception(exc)  # definite: nothing was appended
            return
        change.index = index
        change.term = raft.term
        self._pending[index] = change
        logger.info(
            "node %d appended a membership change at index %d: %s",
            self._id,
            index,
            describe(raft.conf_state()),
        )

    def _start_transfer(self, raft: Raft, t: _Transfer) -> None:
        t.started = True
        try:
            raft.transfer_leadership(t.to)
        except NotLeaderError:
            t.future.set_exception(self._leader_error())
            return
        except LocalProtocolError as exc:
            t.future.set_exception(exc)
            return
        if t.to == self._id:
            t.future.set_result(None)
            return
        logger.info("node %d hands leadership over to node %d", self._id, t.to)

    def record_addresses(self, raft: Raft) -> None:
        """On a leader that committed an entry of its term: record in the membership the
        address of every member it knows (from the command line) that has none recorded, with
        one change that changes nothing else. Servers that join later learn them from there."""
        if raft.role is not Role.LEADER or self._queued or self._pending:
            return
        conf = raft.conf_state()
        if conf is self._all_recorded:
            return  # the usual tick: this membership already records every address we know
        if is_joint(conf) or raft.log.term(raft.log.committed) != raft.term:
            return
        recorded = conf.address_map()
        singles = tuple(
            ConfChangeSingle(
                ConfChangeKind.ADD_VOTER if node in conf.voters else ConfChangeKind.ADD_LEARNER,
                node,
                self._peers[node],
            )
            for node in sorted(conf.members())
            if node not in recorded and node in self._peers
        )
        if not singles:
            self._all_recorded = conf
            return
        try:
            index = raft.propose_conf_change(ConfChange(singles), force=True)
        except (ProposalDropped, ConfChangeError) as exc:
            logger.debug("node %d: addresses not recorded yet: %s", self._id, exc)
            return
        logger.info(
            "node %d records the addresses of members %s in the membership (index %d)",
            self._id,
            [s.node_id for s in singles],
            index,
        )

    # ------------------------------------------------------------------------------------------
    # Out of the core
    # ------------------------------------------------------------------------------------------

    def on_applied(self, entry: Entry) -> None:
        """A CONFIG entry was applied here: its change is done."""
        change = self._pending.pop(entry.index, None)
        if change is None or change.future.done():
            return
        if change.term != entry.term:
            change.future.set_exception(
                ProposalDropped("overwritten by a newer leader's entry; not applied")
            )
        else:
            change.future.set_result(decode_conf_state(entry.data))

    def after_ready(self, raft: Raft) -> None:
        """Follow the membership in force and see how transfers went (after each Ready: the
        core changes the membership as entries are appended or truncated)."""
        conf = raft.conf_state()
        committed = raft.conf_state_at(raft.log.committed)
        if conf is not self._conf:
            self._conf = conf
            self._committed_conf = committed
            self._tell_transport()
            self._note_removal(conf)
            self.on_membership(conf)
        elif committed is not self._committed_conf:
            self._committed_conf = committed
            self._tell_transport()
        if self._transfers:
            self._check_transfers(raft)

    def tick(self, raft: Raft, now: float) -> None:
        """Once per tick: deadlines, transfers the core aborted, addresses to record."""
        self.expire(now)
        if self._transfers:
            self._check_transfers(raft)
        self.record_addresses(raft)

    def _tell_transport(self) -> None:
        if self._transport is None or self._conf is None:
            return
        peers = self.peer_map(self._conf, self._committed_conf)
        if peers != self._told:
            self._told = peers
            self._transport.update_peers(peers)

    def _note_removal(self, conf: ConfState) -> None:
        member = self._id in conf.members()
        if member:
            self._was_member = True
            self._said_removed = False
        elif self._was_member and not self._said_removed:
            # Thesis §4.2.3: a removed server must not disrupt the cluster; the core never lets
            # it campaign. It keeps running, quiet, until an operator stops it or adds it back.
            self._said_removed = True
            logger.warning(
                "node %d was removed from the membership (%s): it no longer votes or "
                "campaigns; stop it, or add it back",
                self._id,
                describe(conf),
            )

    def _check_transfers(self, raft: Raft) -> None:
        keep: list[_Transfer] = []
        for t in self._transfers:
            if not t.started or t.future.done():
                if not t.future.done():
                    keep.append(t)
                continue
            if raft.role is not Role.LEADER and raft.lead == t.to:
                t.future.set_result(None)
            elif raft.role is Role.LEADER and raft.lead_transferee != t.to:
                t.future.set_exception(
                    ProposalDropped(
                        f"leadership transfer to node {t.to} aborted: it did not take over "
                        "within an election timeout (is it up and caught up?)"
                    )
                )
            elif raft.role is not Role.LEADER and raft.lead not in (None, t.to):
                t.future.set_exception(
                    ProposalDropped(f"node {raft.lead} took over instead of node {t.to}")
                )
            else:
                keep.append(t)
        self._transfers = keep

    # ------------------------------------------------------------------------------------------
    # Failures
    # ------------------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Fail changes and transfers whose deadline passed (checked once per tick)."""
        for index, change in list(self._pending.items()):
            if change.deadline <= now:
                del self._pending[index]
                if not change.future.done():
                    change.future.set_exception(
                        IndeterminateError("deadline passed after the change was appended")
                    )
        for t in self._transfers:
            if t.deadline <= now and not t.future.done():
                t.future.set_exception(
                    IndeterminateError(
                        f"node {t.to} did not take over before the deadline; it still may"
                    )
                )

    def on_leadership_lost(self, raft: Raft) -> None:
        """This node stopped leading. A change whose entry is already known committed will be
        applied here (a removed leader steps down in the very step that commits its removal);
        any other appended change may or may not commit (indeterminate); queued ones were
        never started (not leader)."""
        committed = raft.log.committed
        for index, change in list(self._pending.items()):
            if index <= committed and raft.log.term(index) == change.term:
                continue
            del self._pending[index]
            if not change.future.done():
                change.future.set_exception(
                    IndeterminateError("leadership lost before the change committed")
                )
        not_leader = self._leader_error()
        for change in self._queued:
            if not change.future.done():
                change.future.set_exception(not_leader)
        self._queued = []

    def fail_all(self, reason: str) -> None:
        """The node stops or failed: fail everything, appended changes as indeterminate."""
        for change in self._pending.values():
            if not change.future.done():
                change.future.set_exception(
                    IndeterminateError(f"{reason}; the change may still commit")
                )
        self._pending.clear()
        for change in self._queued:
            if not change.future.done():
                change.future.set_exception(
                    ProposalDropped(f"{reason}; the change was not appended")
                )
        self._queued = []
        for t in self._transfers:
            if not t.future.done():
                t.future.set_exception(ProposalDropped(f"{reason}; transfer abandoned"))
        self._transfers = []
