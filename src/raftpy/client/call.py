"""One request's life in a client: where it goes, when it is sent again, and how it ends.

A :class:`Call` sends one request until a node answers it, under one deadline. It goes first to
the last known leader, else to the next address in rotation, and follows ``NOT_LEADER``
redirects. Moving on to an address not yet tried is immediate; coming back to one that already
failed since the last pause (a whole round without success, a redirect loop, a leader shedding
load) first sleeps a jittered :class:`Backoff`. Each request tells the node how much of the
deadline remains, so the node gives up too.

How it ends is the point: a *definite* failure (the command did not happen) must never be
reported for a proposal that may have been appended. Every attempt that wrote a proposal and
got no definite answer makes the call *uncertain*, and that is sticky: a later definite
failure does not undo it. The statuses and the errors that stand for them are in
:mod:`raftpy.outcomes`; what a caller can rely on is in the :mod:`raftpy.client` docstring.

A write that carries its session's ``(session, seq)`` (:mod:`raftpy.client.session`) is
*resent* after an unknown outcome: the cluster answers a duplicate from its session table
instead of applying it again (Thesis §6.3), so the call goes on through lost connections,
``INDETERMINATE`` answers, redirects and stuck nodes (an attempt waits at most
``attempt_timeout``) until an answer or the deadline. Each attempt carries the session's
current ack. ``SESSION_EXPIRED`` ends the session; it is the definite
:class:`~raftpy.errors.SessionExpiredError` only when no earlier attempt may have been
appended (one may have been applied before the session expired). The session ops themselves
(open, keep-alive, close) are resent too: each is harmless twice (a second open leaves a
session that expires unused).

:func:`take_snapshot` is the simpler life of a snapshot request, pinned to one node.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import NoReturn

from raftpy.client.connection import (
    AttemptTimeout,
    ConnectFailed,
    ConnectionLost,
    RequestTooLarge,
)
from raftpy.client.pool import ConnectionPool
from raftpy.client.session import ClientSession
from raftpy.client.targets import Targets
from raftpy.errors import (
    ClusterUnavailableError,
    HandshakeRefusedError,
    IndeterminateError,
    ProposalDropped,
    RemoteProtocolError,
)
from raftpy.outcomes import error_for_status
from raftpy.transport.address import parse_address
from raftpy.transport.protocol import (
    MEMBERSHIP_CHANGES,
    SESSION_OPS,
    ClientOp,
    ClientResponse,
    Consistency,
    ResponseStatus,
    decode_snapshot_taken,
)

log = logging.getLogger(__name__)

SESSION_WRITES = SESSION_OPS | {ClientOp.OPEN_SESSION}
"""The session ops: each goes through the leader's log."""


class Backoff:
    """Pauses between rounds of retries: ``initial`` doubling up to ``maximum``, each pause
    drawn uniformly from ``[b/2, b]`` so that clients retrying together spread out."""

    __slots__ = ("_maximum", "_next", "_rng")

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self._next = initial
        self._maximum = maximum
        self._rng = rng

    def pause(self) -> float:
        """The next pause, in seconds."""
        jittered = self._next * (0.5 + 0.5 * self._rng.random())
        self._next = min(self._next * 2, self._maximum)
        return jittered


@dataclass(frozen=True)
class RetryPolicy:
    """How one client retries: its backoff and how long a read attempt may wait."""

    backoff_initial: float
    backoff_max: float
    attempt_timeout: float
    """How long one query or status attempt waits for its answer before trying another node."""
    rng: random.Random

    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max, self.rng)


class Call:
    """One request sent until a node answers it: where to go next, what failed, and whether an
    earlier attempt of a proposal may have been appended. Each ``on_*`` method either raises
    the call's final error or decides the next ``target``.

    ``resend``: send a write again after an unknown outcome (a session's write, a session op,
    an idempotent membership change); otherwise the first unknown outcome ends the call.
    ``session`` and ``seq``: the session the request belongs to and the write's number."""

    __slots__ = (
        "bounded",
        "consistency",
        "data",
        "is_write",
        "last",
        "op",
        "pinned",
        "policy",
        "pool",
        "refused",
        "resend",
        "seq",
        "session",
        "target",
        "targets",
        "tried",
        "uncertain",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        targets: Targets,
        policy: RetryPolicy,
        op: ClientOp,
        data: bytes,
        consistency: Consistency,
        *,
        pinned: str | None,
        resend: bool,
        session: ClientSession | None = None,
        seq: int = 0,
    ) -> None:
        self.pool = pool
        self.targets = targets
        self.policy = policy
        self.op = op
        self.data = data
        self.consistency = consistency
        # Membership changes and session ops are writes too: once sent, their outcome may be
        # unknown.
        self.is_write = op is ClientOp.PROPOSE or op in MEMBERSHIP_CHANGES or op in SESSION_WRITES
        # Reads, and writes that are safe to resend elsewhere, give up on a silent node after
        # attempt_timeout; other writes wait for their answer until the deadline, since
        # giving up early would only turn a possible success into an unknown outcome.
        self.bounded = not self.is_write or (
            resend and (session is not None or op is ClientOp.OPEN_SESSION)
        )
        self.pinned = pinned
        self.resend = resend
        self.session = session
        self.seq = seq
        self.target = pinned if pinned is not None else targets.first()
        self.tried: set[str] = set()
        # Addresses that refused this call for good (ConnectFailed.permanent), with why.
        self.refused: dict[str, str] = {}
        self.last = "no attempt was made in time"
        # Why an earlier attempt of this proposal may have been appended. Sticky: a later
        # definite failure does not make an earlier unknown outcome definite.
        self.uncertain: str | None = None

    async def run(self, budget: float, deadline: float | None = None) -> ClientResponse:
        """Send the request until a node answers it, within ``budget`` seconds (or until
        ``deadline``, loop time, when given: ``budget`` is then the call's whole budget, for
        the error message)."""
        pool = self.pool
        loop = pool.loop
        if deadline is None:
            deadline = loop.time() + budget
        backoff: Backoff | None = None  # made at the first pause: most calls never pause
        while not pool.closed:
            if self.target in self.refused:
                self._move_on()  # another address is left: on_refused ends the call otherwise
                continue
            if self.target in self.tried:
                # Back at a node that already failed since the last pause: a whole round went
                # by, a redirect loop, or the leader shedding load. Wait before going on.
                backoff = await self._pause(backoff, deadline)
                self.tried.clear()
                continue
            if loop.time() >= deadline:
                break
            target = self.target
            self.tried.add(target)
            try:
                # The open connection without a coroutine when there is one (most attempts).
                conn = pool.ready(target) or await pool.connection(target, deadline)
            except TimeoutError:
                # Keep the earlier, more telling reason (a refusal, a redirect) in front.
                self.last = f"{self.last}; then still connecting to {target} at the deadline"
                break
            except ConnectFailed as exc:
                if exc.permanent:
                    self.on_refused(exc)
                else:
                    self.on_unreachable(str(exc))
                continue
            attempt_deadline = deadline
            if self.bounded:
                attempt_deadline = min(deadline, loop.time() + self.policy.attempt_timeout)
            outcome: ClientResponse | ConnectionLost | AttemptTimeout
            try:
                # conn.request() inlined: one coroutine less per attempt.
                slot = conn.send(
                    self.op, self.data, self.consistency, attempt_deadline, self.fields()
                )
                try:
                    outcome = await slot.future
                except AttemptTimeout as exc:
                    outcome = exc
                finally:
                    conn.forget(slot)
            except ConnectionLost as exc:  # from send (not sent) or from the future
                outcome = exc
            except RequestTooLarge as exc:
                self.on_too_large(exc)
            resp = self.judge(outcome, final=attempt_deadline >= deadline)
            if resp is not None:
                return resp
        raise self.final_error(budget)

    def judge(
        self, outcome: ClientResponse | ConnectionLost | AttemptTimeout, *, final: bool
    ) -> ClientResponse | None:
        """How the attempt at ``self.target`` ended: the answer to return, or ``None`` to go
        on (``target`` is then the next address), or raise the call's final error.
        ``final``: the attempt's deadline was the call's."""
        if isinstance(outcome, ConnectionLost):
            self.on_connection_lost(outcome)
            return None
        if isinstance(outcome, AttemptTimeout):
            self.on_attempt_timeout(outcome.sent, final=final)
            return None
        return outcome if self.on_response(outcome) else None

    def first_attempt_was(
        self,
        target: str,
        outcome: ClientResponse | ConnectionLost | AttemptTimeout,
        *,
        final: bool,
    ) -> ClientResponse | None:
        """The call's first attempt went to ``target`` outside :meth:`run` (the client's fast
        path for writes) and ended with ``outcome``: judge it as :meth:`run` would have, so
        that :meth:`run` goes on from there."""
        self.target = target
        self.tried.add(target)
        return self.judge(outcome, final=final)

    async def _pause(self, backoff: Backoff | None, deadline: float) -> Backoff:
        """Sleep the next pause of ``backoff`` (made now if ``None``), at most until
        ``deadline``; the backoff, for the next pause."""
        if backoff is None:
            backoff = self.policy.backoff()
        delay = min(backoff.pause(), deadline - self.pool.loop.time())
        if delay > 0:
            await self.pool.pause(delay)
        return backoff

    def fields(self) -> tuple[int, int, int]:
        """This attempt's ``(session, seq, ack)``: the ack is read now, since writes that
        ended meanwhile raised it."""
        session = self.session
        if session is None:
            return (0, 0, 0)
        if self.op is ClientOp.PROPOSE:
            return (session.id, self.seq, session.ack())
        if self.op is ClientOp.KEEP_ALIVE:
            return (session.id, 0, session.ack())
        return (session.id, 0, 0)

    def _move_on(self) -> None:
        """Try the next address in rotation (or the pinned one again)."""
        if self.pinned is None:
            self.target = self.targets.next_after(self.target)

    def _indeterminate(self, why: str) -> IndeterminateError:
        what = "proposal" if self.op is ClientOp.PROPOSE else self.op.value.replace("-", " ")
        return IndeterminateError(f"outcome of the {what} is unknown: {why}")

    def _unknown_outcome(self, why: str) -> None:
        """This attempt of a proposal may have been appended: stop unless told to resend."""
        self.uncertain = why
        if not self.resend:
            raise self._indeterminate(why)

    def on_unreachable(self, reason: str) -> None:
        """Could not connect or the handshake was refused: nothing was sent."""
        self.last = reason
        log.debug("%s", reason)
        self.targets.forget_leader(self.target)
        self._move_on()

    def on_refused(self, exc: ConnectFailed) -> None:
        """The node refused the connection for a reason asking again cannot change (another
        cluster id, say): leave it out of this call, and end the call once every address it
        could use did so, instead of retrying until the deadline."""
        self.refused[exc.address] = exc.reason
        self.last = str(exc)
        log.debug("%s", self.last)
        self.targets.forget_leader(self.target)
        if self.pinned is not None or set(self.targets.addresses) <= self.refused.keys():
            if self.uncertain is not None:
                raise self._indeterminate(f"{self.uncertain}; then {self.last}")
            raise refused_error(self.refused)
        self._move_on()

    def on_connection_lost(self, exc: ConnectionLost) -> None:
        self.last = str(exc)
        log.debug("%s", self.last)
        if self.is_write and exc.sent:
            self._unknown_outcome(
                f"the connection to {self.target} broke after it was sent ({exc.reason})"
            )
        self.targets.forget_leader(self.target)
        self._move_on()

    def on_too_large(self, exc: RequestTooLarge) -> NoReturn:
        """The node announced it accepts no frame this large: nothing was sent, and sending
        it anywhere else cannot help (every node of a cluster shares its settings)."""
        if self.uncertain is not None:
            raise self._indeterminate(f"{self.uncertain}; then refused: {exc}")
        what = "proposal" if self.is_write else "request"
        raise ProposalDropped(f"{what} not sent: {exc}", retryable=False)

    def on_attempt_timeout(self, sent: bool, *, final: bool) -> None:
        """No answer before the attempt's deadline (``final``: the call's deadline)."""
        self.last = f"{self.target}: no answer in time"
        if self.is_write and sent:
            when = "before the deadline" if final else "in time"
            self._unknown_outcome(f"no answer from {self.target} {when}")
            if final:
                # Nothing is left to resend in: the attempt lasted until the deadline.
                raise self._indeterminate(self.uncertain or self.last)
        # A node that hangs may be stopped (or paused): prefer others.
        self.targets.forget_leader(self.target)
        self._move_on()

    def on_response(self, resp: ClientResponse) -> bool:
        """Judge an answer: True to return it, False to go on, or raise."""
        target = self.target
        status = resp.status
        if status is ResponseStatus.OK:
            if self.session is not None:
                self.session.last_active = self.pool.loop.time()
            # Only a leader answers writes, lease reads and membership reads that are not
            # stale; followers answer linearizable reads too (ReadIndex through the leader,
            # Thesis §6.4). A node that just handed leadership over does not lead.
            leads = (
                (self.is_write and self.op is not ClientOp.TRANSFER_LEADER)
                or (self.op is ClientOp.QUERY and self.consistency is Consistency.LEASE)
                or (self.op is ClientOp.MEMBERS and self.consistency is not Consistency.STALE)
            )
            if leads and self.pinned is None:
                self.targets.learn_leader(target)
            return True
        if status is ResponseStatus.NOT_LEADER:
            self._on_not_leader(resp)
        elif status is ResponseStatus.DROPPED:
            message = resp.message or "dropped"
            # The node says whether a retry can help (a command too large never fits).
            if self.is_write and not resp.retryable:
                if self.uncertain is not None:
                    raise self._indeterminate(f"{self.uncertain}; then dropped: {message}")
                # Keep the node's word that retrying cannot help (a change the membership
                # rules refuse, a command too large).
                raise ProposalDropped(message, retryable=False)
            # Back-pressure or a transfer: the same node again, after a pause (it is in
            # `tried`); a redirect, if any, comes with its next answer.
            self.last = f"{target}: dropped: {message}"
        elif status is ResponseStatus.INDETERMINATE or status is ResponseStatus.TIMEOUT:
            detail = f": {resp.message}" if resp.message else ""
            self.last = f"{target} answered {status.value}{detail}"
            if self.is_write:  # TIMEOUT is for reads; on a proposal, assume the worst
                self._unknown_outcome(self.last)
            self._move_on()
        else:
            message = resp.message or "unspecified error"
            if status is ResponseStatus.SESSION_EXPIRED and self.session is not None:
                # Whatever came before, the session is gone: the next write opens another.
                self.session.expire()
            if self.uncertain is not None:
                raise self._indeterminate(f"{self.uncertain}; then {target} failed: {message}")
            raise error_for_status(status, f"{target} failed the request: {message}")
        return False

    def _on_not_leader(self, resp: ClientResponse) -> None:
        hint = resp.leader_address
        leader = hint or (resp.leader_id if resp.leader_id is not None else "unknown")
        self.last = f"{self.target}: not the leader (leader: {leader})"
        if hint is not None and hint != self.target and _valid_address(hint):
            self.targets.learn_leader(hint)
            if self.pinned is None:
                self.target = hint
            return
        self.targets.forget_leader(self.target)
        self._move_on()

    def final_error(self, budget: float) -> Exception:
        """The error for a call that ran out of time (or was cut short by closing)."""
        if self.uncertain is not None:
            return self._indeterminate(self.uncertain)
        if self.pool.closed:
            return ClusterUnavailableError("the client was closed before the request was answered")
        what = "no node" if self.op is ClientOp.STATUS else "no leader"
        return ClusterUnavailableError(f"{what} answered within {budget}s (last: {self.last})")


def refused_error(refused: dict[str, str]) -> HandshakeRefusedError:
    """The error of a call every usable node refused for good (address -> reason)."""
    each = "; ".join(f"{address} {reason}" for address, reason in refused.items())
    return HandshakeRefusedError(
        f"{each} (asking again cannot change that: check the address, the cluster id and the "
        "TLS settings)"
    )


def _valid_address(address: str) -> bool:
    try:
        parse_address(address)
    except ValueError:
        log.warning("ignoring malformed leader address %r", address)
        return False
    return True


async def take_snapshot(
    pool: ConnectionPool, policy: RetryPolicy, address: str, budget: float
) -> tuple[int, int]:
    """Ask the node at ``address`` for a snapshot within ``budget`` seconds; its ``(index,
    term)``. Connecting is retried; once written, the request waits for its answer until the
    deadline, and one lost with a broken connection is sent again (a second snapshot is
    harmless)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    backoff = policy.backoff()
    last = "no attempt was made in time"
    failed = False  # an attempt ended with a reason worth keeping in front
    while not pool.closed and loop.time() < deadline:
        try:
            conn = await pool.connection(address, deadline)
            resp = await conn.request(ClientOp.SNAPSHOT, b"", Consistency.LINEARIZABLE, deadline)
        except TimeoutError:
            # Keep an earlier, more telling reason (a refused connection) in front, as a
            # call does: the attempt the deadline cut short is only the last of several.
            still = f"still connecting to {address} at the deadline"
            last = f"{last}; then {still}" if failed else still
            break
        except ConnectFailed as exc:
            if exc.permanent:
                raise refused_error({address: exc.reason}) from None
            last, failed = str(exc), True
        except ConnectionLost as exc:
            last, failed = str(exc), True
        except AttemptTimeout:
            last = f"{address}: no answer in time"
            break
        else:
            if resp.status is ResponseStatus.OK:
                try:
                    taken = decode_snapshot_taken(resp.result or b"")
                except RemoteProtocolError as exc:
                    raise RemoteProtocolError(f"{address}: {exc}") from None
                return taken.index, taken.term
            # Any other answer comes from the node itself (a failed or stopping node, a full
            # disk, a state machine that cannot write): asking again will not help, and a
            # snapshot changes no state, so every status is the node failing the request.
            message = resp.message or resp.status.value
            raise RemoteProtocolError(f"{address} failed the snapshot: {message}")
        log.debug("snapshot: %s", last)
        await pool.pause(max(0.0, min(backoff.pause(), deadline - loop.time())))
    if pool.closed:
        raise ClusterUnavailableError("the client was closed before the snapshot was taken")
    raise ClusterUnavailableError(f"no snapshot from {address} within {budget}s (last: {last})")
