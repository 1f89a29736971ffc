"""The membership nemesis: faults that change who is in the cluster, and the repair that makes
every original node a voter again.

``member-remove-add``: remove a node (the leader as often as not: a removed leader steps down
once the change commits, Thesis §4.2.2) through the operator's client, stop its process, add it
back as a learner at its member port, and restart it with its data dir kept: it catches up from
the log (or a snapshot) while the fault lasts; the repair promotes it once the leader lets it
(a learner that lags is refused, Thesis §4.2.1).

``member-replace-wiped``: remove a node, SIGKILL it, delete its data dir (a dead disk) and start
it empty with ``--join``: it asks the cluster to add it as a learner and promotes itself once
caught up; the repair waits until it is a voter again. This is how README.md ("Changing
members") replaces a machine that lost its disk.

Every step has a deadline and is logged; the description (the fault window's label) says which
node and which steps were done. A step that fails ends the fault there: the repair starts from
whatever state the cluster is in (also one a cancelled step left), so it restores the same
membership however far the fault got.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from raftpy.errors import RaftError
from raftpy.testing.jepsen.processes import Cluster, NodeProcessError, serves_no_membership
from raftpy.transport.protocol import Members

__all__ = ["MEMBER_FAULTS", "MemberFaults"]

log = logging.getLogger(__name__)

MEMBER_FAULTS: Final = ("member-remove-add", "member-replace-wiped")
"""The membership faults (see the module docstring)."""

_T = TypeVar("_T")


class MemberFaults:
    """Injects one membership fault at a time into ``cluster`` and repairs it.

    ``step_timeout``: the deadline of each step of a fault (a change, a stop, a start).
    ``repair_timeout``: how long :meth:`repair` may take to make every original node a voter
    at its member port again; a server that joined and has not promoted itself within
    ``join_grace`` of the repair's start is promoted by the harness, and recorded in
    :attr:`problems` (joining is meant to finish on its own).
    """

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        *,
        step_timeout: float = 10.0,
        repair_timeout: float = 60.0,
        join_grace: float = 30.0,
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.step_timeout = step_timeout
        self.repair_timeout = repair_timeout
        self.join_grace = join_grace
        self.target: int | None = None
        self.steps: list[str] = []
        """What the current fault did so far, in order."""
        self.injected = 0
        """Membership faults injected so far."""
        self.problems: list[str] = []
        """Repairs that did not restore the membership on their own: a finding of the run
        (see :func:`~raftpy.testing.jepsen.checks.membership_check`)."""

    @property
    def active(self) -> bool:
        return self.target is not None

    # -- faults ------------------------------------------------------------------------------

    async def inject(self, fault: str) -> str:
        """Apply membership fault ``fault`` (one of :data:`MEMBER_FAULTS`); return its
        description: the node, and the steps done (a failed step ends the list)."""
        if fault not in MEMBER_FAULTS:
            raise ValueError(f"unknown membership fault {fault!r}")
        node, who = await self._pick_target()
        self.target, self.steps = node, []
        self.injected += 1
        try:
            await self._step("removed", self._remove(node))
            if fault == "member-remove-add":
                await self._step("stopped", self.cluster.stop(node))
                await self._step("added as learner", self._add_learner(node))
                await self._step("restarted with its data", self._start(node))
            else:
                await self._step("killed", self.cluster.kill(node))
                self.cluster.wipe(node)
                self.steps.append("data dir deleted")
                await self._step("restarted empty with --join", self._start(node))
        except _StepFailed as exc:
            self.steps.append(str(exc))
        return f"{fault}: {who}: {', '.join(self.steps)}"

    async def _pick_target(self) -> tuple[int, str]:
        """The leader half the time (removing it is the interesting case), else any node."""
        if self.rng.random() < 0.5:
            leader = await self.cluster.leader(timeout=2.0)
            if leader is not None:
                return leader, f"leader {leader}"
        node = self.rng.choice(self.cluster.ids)
        return node, f"node {node}"

    async def _step(self, what: str, action: Awaitable[object]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.step_timeout):
                await action
        except (RaftError, NodeProcessError, TimeoutError, OSError) as exc:
            log.warning("nemesis: node %s not %s: %s", self.target, what, exc)
            raise _StepFailed(f"not {what} ({type(exc).__name__}: {exc})") from None
        log.info("nemesis: node %s %s (%.2f s)", self.target, what, loop.time() - started)
        self.steps.append(what)

    async def _remove(self, node: int) -> None:
        members = await self._until_done(
            lambda left: self.cluster.admin.remove_member(node, timeout=left)
        )
        if node in members.voters or node in members.learners:
            raise _StepFailedError(f"node {node} is still a member: {_fmt(members)}")

    async def _add_learner(self, node: int) -> None:
        address = self.cluster.member_address(node)
        await self._until_done(
            lambda left: self.cluster.admin.add_member(node, address, voter=False, timeout=left)
        )

    async def _start(self, node: int) -> None:
        process = self.cluster.nodes[node]
        if not process.running:
            self.cluster.start_node(node)  # joining when wiped
        await process.wait_ready(self.step_timeout)

    async def _until_done(self, call: Callable[[float], Awaitable[_T]]) -> _T:
        """``call(seconds_left)`` again after each refusal (another change pending, no leader
        yet, the leader has not committed an entry of its term: all pass) until it succeeds;
        the step's own deadline bounds it. A server without membership support fails at once."""
        while True:
            try:
                return await call(min(3.0, self.step_timeout))
            except RaftError as exc:
                if serves_no_membership(exc):
                    raise
                log.debug("nemesis: membership call refused, again: %s", exc)
            await asyncio.sleep(0.05 + 0.1 * self.rng.random())

    # -- repair ------------------------------------------------------------------------------

    async def repair(self) -> None:
        """Make every original node a running voter recorded at its member port again: start
        what is down (a wiped node joining), add back who is not a member, promote learners
        once the leader lets them, fix addresses. Bounded by ``repair_timeout``; what is still
        wrong then is recorded in :attr:`problems`. Cancelled, it leaves the fault active
        for the next call to finish."""
        target = self.target
        if target is None:
            return
        # The fault stays active until this returns: a repair cancelled half way (the run
        # ended while it waited) is done again by the next call (the run's final heal).
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.repair_timeout
        cluster = self.cluster
        wiped = target in cluster.wiped
        actions: list[str] = []
        try:
            if not cluster.nodes[target].running:
                cluster.start_node(target)
                actions.append("started empty with --join" if wiped else "started")
                await cluster.nodes[target].wait_ready(self.step_timeout)
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                members = await cluster.admin.members(timeout=min(3.0, left))
                if self._healthy(members):
                    break
                joining = wiped and loop.time() - started < self.join_grace
                await self._repair_step(members, target, wiped, joining, actions)
                await asyncio.sleep(0.1)
        except (RaftError, NodeProcessError, TimeoutError, OSError) as exc:
            problem = (
                f"membership not repaired within {self.repair_timeout:g} s after node "
                f"{target}'s fault ({', '.join(actions) or 'nothing done'}): "
                f"{type(exc).__name__}: {exc}"
            )
            log.error("nemesis: %s", problem)
            self.problems.append(problem)
            self.target = None
            return
        self.target = None
        cluster.wiped.discard(target)
        log.info(
            "nemesis: membership repaired in %.2f s: %s",
            loop.time() - started,
            ", ".join(actions) or "nothing to do",
        )

    def _healthy(self, members: Members) -> bool:
        """Every original node is a voter at its member port, outside a joint change."""
        return (
            not members.voters_outgoing
            and set(self.cluster.ids) <= set(members.voters)
            and all(
                members.addresses.get(i) == self.cluster.member_address(i) for i in self.cluster.ids
            )
        )

    async def _repair_step(
        self, members: Members, target: int, wiped: bool, joining: bool, actions: list[str]
    ) -> None:
        """One change towards :meth:`_healthy` (refusals are retried by the caller's loop).
        ``joining``: the wiped ``target`` is still given time to add and promote itself."""
        admin = self.cluster.admin
        for i in self.cluster.ids:
            address = self.cluster.member_address(i)
            try:
                if i not in members.voters and i not in members.learners:
                    if joining and i == target:
                        continue  # it adds itself
                    await admin.add_member(i, address, voter=False, timeout=3.0)
                    actions.append(f"node {i} added as learner")
                elif i in members.learners:
                    if joining and i == target:
                        continue  # it promotes itself once caught up
                    await admin.promote(i, timeout=3.0)
                    actions.append(f"node {i} promoted")
                    if i == target and wiped:
                        self.problems.append(
                            f"node {i} joined with --join but did not promote itself within "
                            f"{self.join_grace:g} s; the harness promoted it"
                        )
                elif members.addresses.get(i) != address:
                    await admin.add_member(i, address, voter=True, timeout=3.0)
                    actions.append(f"node {i}'s address recorded as its member port")
                else:
                    continue
                return
            except RaftError as exc:
                if serves_no_membership(exc):
                    raise
                log.debug("nemesis: repair of node %d refused, again: %s", i, exc)
                return


class _StepFailedError(RaftError):
    """A step's call succeeded but the membership it returned is not what it should be."""


class _StepFailed(Exception):
    """A step of a fault failed: the fault ends there (its message is the step's outcome)."""


def _fmt(members: Members) -> str:
    text = f"voters {list(members.voters)}"
    if members.learners:
        text += f", learners {list(members.learners)}"
    if members.voters_outgoing:
        text += f", outgoing {list(members.voters_outgoing)}"
    return text
