"""Joining a running cluster: a node started with an empty data dir and ``join`` addresses asks
the cluster to add it as a learner, catches up, then asks to be promoted to voter (Thesis
§4.2.1: a new server copies the log before it counts, so adding it does not stall commits).

The node is started with no voters at all: it never campaigns, and learns the membership from
the leader's entries or snapshot. :class:`Joiner` talks to the cluster through a
:class:`JoinClient` (by default :class:`ClientJoin`, over :class:`raftpy.client.Client`), and
retries with backoff through leader changes and refusals that may pass (another change
pending, a new leader that has not committed yet), until ``NodeConfig.join_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from raftpy.core.messages import ConfState
from raftpy.errors import LocalProtocolError, ProposalDropped, RaftError
from raftpy.node.config import NodeConfig

logger = logging.getLogger("raftpy.node.join")


@dataclass(frozen=True)
class MembersView:
    """What a joining node needs from the cluster's answer about its membership."""

    voters: tuple[int, ...]
    learners: tuple[int, ...]
    addresses: Mapping[int, str]
    leader_id: int | None = None
    index: int = 0
    """The index of the membership entry the answer describes (0: unknown)."""


class JoinClient(Protocol):
    """How a joining node asks the cluster (any member; redirects followed) about members."""

    async def members(self) -> MembersView: ...

    async def add_member(self, node_id: int, address: str, voter: bool = False) -> MembersView: ...

    async def promote(self, node_id: int) -> MembersView: ...

    async def close(self) -> None: ...


class _MembersAnswer(Protocol):
    """The fields of ``raftpy.client``'s Members answer that joining reads."""

    voters: Sequence[int]
    learners: Sequence[int]
    addresses: Mapping[int, str]
    leader_id: int | None
    index: int | None


class _MembershipClient(Protocol):
    """The membership calls of :class:`raftpy.client.Client`."""

    async def members(self) -> _MembersAnswer: ...

    async def add_member(
        self, node_id: int, address: str, voter: bool = False, force: bool = False
    ) -> _MembersAnswer: ...

    async def promote(self, node_id: int, force: bool = False) -> _MembersAnswer: ...

    async def close(self) -> None: ...


def _view(answer: _MembersAnswer) -> MembersView:
    return MembersView(
        tuple(answer.voters),
        tuple(answer.learners),
        dict(answer.addresses),
        answer.leader_id,
        answer.index or 0,
    )


class ClientJoin:
    """:class:`JoinClient` over :class:`raftpy.client.Client` (with the node's cluster id and
    TLS settings)."""

    def __init__(
        self, addresses: Sequence[str], config: NodeConfig, rng: random.Random | None = None
    ) -> None:
        from raftpy.client import Client  # the client imports the node's status: not at import

        # ``rng``: the client's jitter, from the node's seed (a simulation repeats exactly).
        self._client = cast(
            _MembershipClient,
            Client(addresses, cluster_id=config.cluster_id, tls=config.tls, timeout=10.0, rng=rng),
        )

    async def members(self) -> MembersView:
        return _view(await self._client.members())

    async def add_member(self, node_id: int, address: str, voter: bool = False) -> MembersView:
        return _view(await self._client.add_member(node_id, address, voter))

    async def promote(self, node_id: int) -> MembersView:
        return _view(await self._client.promote(node_id))

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class LocalProgress:
    """What the joining node knows of itself: the membership in force, commit, applied."""

    conf: ConfState
    commit: int
    applied: int


class Joiner:
    """Adds node ``node_id`` (listening on ``address``) to the cluster as a learner, then (with
    ``promote``) promotes it once caught up: its applied index within ``max_lag`` entries of its
    commit index (which tracks the leader's) and at least the index that added it.
    ``learn`` hands the members' addresses to the node (its transport must accept the leader
    before the log tells it who the members are); ``progress`` reads the node's own state."""

    def __init__(
        self,
        node_id: int,
        address: str,
        client: JoinClient,
        *,
        promote: bool,
        max_lag: int,
        timeout: float,
        learn: Callable[[Mapping[int, str]], None],
        progress: Callable[[], LocalProgress],
        rng: random.Random,
    ) -> None:
        self._id = node_id
        self._address = address
        self._client = client
        self._promote = promote
        self._max_lag = max_lag
        self._timeout = timeout
        self._learn = learn
        self._progress = progress
        self._rng = rng

    async def run(self) -> bool:
        """Join; True once added (and promoted, when asked). Never raises but for cancellation:
        a join that cannot finish is logged, and the node keeps serving as it is."""
        try:
            async with asyncio.timeout(self._timeout):
                added = await self._add()
                if added is not None and self._promote:
                    await self._promote_when_caught_up(added)
                return added is not None
        except TimeoutError:
            logger.error(
                "node %d: could not join the cluster within %.0f s; still running, not a voter",
                self._id,
                self._timeout,
            )
            return False
        except Exception:
            logger.exception("node %d: joining the cluster failed", self._id)
            return False
        finally:
            await self._client.close()

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[MembersView]], *, refusals: bool = False
    ) -> MembersView:
        """``call`` until it succeeds. A refused change (:class:`ConfChangeError` in process,
        a ProposalDropped that says retrying cannot help over the network) propagates unless
        ``refusals``: a promotion is refused while the learner lags, or while too few voters
        are reachable, and both may pass. Backoff with jitter, so joiners do not call in
        step."""
        pause = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except (LocalProtocolError, ProposalDropped) as exc:
                refused = not isinstance(exc, ProposalDropped) or not exc.retryable
                if refused and not refusals:
                    raise
                reason = str(exc)
            except (RaftError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            log = logger.info if attempt % 10 == 1 else logger.debug
            log("node %d: %s not done yet (attempt %d): %s", self._id, what, attempt, reason)
            await asyncio.sleep(pause * (0.5 + self._rng.random()))
            pause = min(pause * 2, 2.0)

    async def _add(self) -> MembersView | None:
        view = await self._retrying("asking for the members", self._client.members)
        self._learn(view.addresses)
        if self._id in view.voters:
            logger.error(
                "node %d started with an empty data dir, but the cluster has node %d as a "
                "voter: if its disk was lost, remove node %d and add it back (README.md, "
                "'Changing members')",
                self._id,
                self._id,
                self._id,
            )
            return None
        if self._id not in view.learners:
            logger.info("node %d asks the cluster to add it as a learner", self._id)
            view = await self._retrying(
                "adding this node as a learner",
                lambda: self._client.add_member(self._id, self._address, False),
            )
            self._learn(view.addresses)
        logger.info("node %d is a learner of the cluster; catching up", self._id)
        await self._learn_every_address(view)
        return view

    async def _learn_every_address(self, view: MembersView) -> None:
        """Learn where every member listens before the log can say: this node accepts only
        the members it knows of, so one it cannot name (the leader, say) could never send it
        the log. A cluster bootstrapped from command lines records its members' addresses
        once its leader has committed an entry of its term and no other change is pending:
        until then, ask again."""
        pause = 0.05
        while True:
            members = {*view.voters, *view.learners} - {self._id}
            missing = sorted(members - set(view.addresses))
            if not missing:
                return
            logger.info(
                "node %d: waiting for the cluster to record the addresses of members %s",
                self._id,
                missing,
            )
            await asyncio.sleep(pause * (0.5 + self._rng.random()))
            pause = min(pause * 2, 1.0)
            view = await self._retrying("asking for the members", self._client.members)
            self._learn(view.addresses)

    async def _promote_when_caught_up(self, added: MembersView) -> None:
        while True:
            p = self._progress()
            if self._id in p.conf.voters:
                # Our own log may not have reached the entry that added us yet: a node
                # rejoining under its old id after losing its disk may restore a snapshot, or
                # copy log entries, from before its removal, which list it as a voter. Only the
                # cluster's answer says whether we are one now.
                view = await self._retrying("asking for the members", self._client.members)
                if self._id in view.voters:
                    break
                if self._id in view.learners:
                    await self._retrying(
                        "promotion to voter", lambda: self._client.promote(self._id), refusals=True
                    )
                    break
                await asyncio.sleep(0.05)
                continue
            if (
                self._id in p.conf.learners
                and p.commit >= added.index
                and p.commit - p.applied <= self._max_lag
            ):
                logger.info(
                    "node %d caught up (applied %d, commit %d): asks to be promoted to voter",
                    self._id,
                    p.applied,
                    p.commit,
                )
                await self._retrying(
                    "promotion to voter", lambda: self._client.promote(self._id), refusals=True
                )
                break
            await asyncio.sleep(0.05)
        logger.info("node %d is a voter of the cluster", self._id)
