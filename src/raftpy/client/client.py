"""The asyncio client: :class:`Client`.

It checks its arguments, owns the client's state (the known addresses and leader, the
connections, the retry policy, the session) and turns each public call into one request: a
:class:`~raftpy.client.call.Call` (proposals, queries, status) or
:func:`~raftpy.client.call.take_snapshot`. It opens the session on the first write, keeps it
alive while the client is idle and closes it on :meth:`Client.close`. What the calls
guarantee is described in the :mod:`raftpy.client` docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self

import msgspec

from raftpy.client.call import Call, RetryPolicy, take_snapshot
from raftpy.client.connection import AttemptTimeout, ConnectionLost, RequestTooLarge
from raftpy.client.pool import ConnectionPool
from raftpy.client.session import ClientSession
from raftpy.client.targets import Targets
from raftpy.core.messages import MAX_NODE_ID
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    LocalProtocolError,
    ProposalDropped,
    RaftError,
    RemoteProtocolError,
    SessionExpiredError,
)
from raftpy.node.status import NodeStatus, decode_status
from raftpy.transport.address import parse_address
from raftpy.transport.codec import DEFAULT_MAX_FRAME_BYTES
from raftpy.transport.protocol import (
    ClientOp,
    ClientResponse,
    Consistency,
    MemberRequest,
    Members,
    ResponseStatus,
    decode_members,
    decode_session_granted,
)
from raftpy.transport.tls import TlsConfig

log = logging.getLogger(__name__)

CLOSE_SESSION_BOUND: Final = 1.0
"""How long :meth:`Client.close` tries to close the session (seconds, at most the client's
timeout): best effort, since a session left open expires by itself."""
KEEP_ALIVES_PER_TIMEOUT: Final = 4
"""An idle session is kept alive this many times per session timeout, so a keep-alive or two
may be lost without the session expiring."""


# Read on every write: in Python 3.11 ``ClientOp.PROPOSE`` costs ~0.1 us (EnumType's
# __getattr__ sends every class attribute lookup through a Python-level hook), a global ~0.01.
_PROPOSE: Final = ClientOp.PROPOSE
_LINEARIZABLE: Final = Consistency.LINEARIZABLE
_OK: Final = ResponseStatus.OK
_NO_SESSION: Final = (0, 0, 0)


def parse_consistency(consistency: str | Consistency) -> Consistency:
    """``consistency`` as a :class:`Consistency`; ValueError naming the choices."""
    if isinstance(consistency, Consistency):
        return consistency
    try:
        return Consistency(consistency)
    except ValueError:
        choices = ", ".join(repr(c.value) for c in Consistency)
        raise ValueError(f"consistency must be one of {choices}, got {consistency!r}") from None


class Client:
    """An asyncio client for a raftpy cluster (see the :mod:`raftpy.client` docstring for the
    behaviour).

    ``addresses``: where to start looking (``"host:port"``); any subset of the cluster will do,
    since redirects name the leader. ``cluster_id``: sent in the handshake (``None``: accept
    any cluster). ``timeout``: the default overall deadline of a call, in seconds.
    ``connect_timeout``: bound on opening a connection and its handshake. ``backoff_initial`` /
    ``backoff_max``: the pause between rounds of retries. While a new leader is elected (0.2
    to 0.4 s with the node's defaults) every round ends in "not the leader" or a refused
    connection, and the pause under way when the leader appears adds to what a caller waits:
    the default cap of 0.1 s keeps that to about 40 ms on average, at the cost of a round of
    requests about every 75 ms from each client while a cluster has no leader. ``sessions``:
    make writes exactly-once with a client session (the default; see :mod:`raftpy.client`);
    ``False`` sends each write without one, and a write whose outcome became unknown is then
    never resent. ``attempt_timeout``: how long one attempt of a query, a status or a session's
    write waits for its answer before trying another node. ``rng``: the source of backoff
    jitter (seed it for reproducible tests). ``tls``: connect with mutual TLS
    (:class:`~raftpy.transport.tls.TlsConfig`: this client's certificate and key, and the
    cluster CA); a node is then accepted only if its certificate is a node certificate of
    that CA naming the node id it answers with.

    Use as ``async with Client([...]) as client:`` or call :meth:`close` (which also closes
    the session, so the cluster frees its memory at once rather than at its expiry).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        cluster_id: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 1.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.1,
        sessions: bool = True,
        attempt_timeout: float = 2.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        rng: random.Random | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        if isinstance(addresses, str):
            raise TypeError("addresses must be a sequence of 'host:port' strings, not a str")
        known: list[str] = []
        for address in addresses:
            parse_address(address)
            if address not in known:
                known.append(address)
        if not known:
            raise ValueError("at least one address is needed")
        for name, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("backoff_initial", backoff_initial),
            ("attempt_timeout", attempt_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if backoff_max < backoff_initial:
            raise ValueError(f"backoff_max ({backoff_max}) must be >= backoff_initial")
        self._targets = Targets(known)
        self._pool = ConnectionPool(
            cluster_id=cluster_id,
            connect_timeout=connect_timeout,
            max_frame_bytes=max_frame_bytes,
            # Read the files now: a bad path fails here, not on every connection attempt.
            tls=tls.load() if tls is not None else None,
        )
        self._policy = RetryPolicy(
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            attempt_timeout=attempt_timeout,
            rng=rng if rng is not None else random.Random(),
        )
        self._timeout = timeout
        self._sessions = sessions
        self._session: ClientSession | None = None
        # Set while one write opens the session; the others wait for it (_open_session).
        self._opening: asyncio.Future[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False

    # -- public API -------------------------------------------------------------------------

    @property
    def leader_address(self) -> str | None:
        """The last known leader's address (``None`` when unknown)."""
        return self._targets.leader

    @property
    def addresses(self) -> list[str]:
        """The known addresses: those given, plus leaders learned from redirects."""
        return self._targets.addresses

    @property
    def session_id(self) -> int | None:
        """The id of the open session (``None``: none open yet, or it ended)."""
        session = self._session
        return None if session is None or session.expired else session.id

    async def propose(self, command: bytes, *, timeout: float | None = None) -> bytes:
        """Replicate ``command`` and return what ``StateMachine.apply`` returned; applied
        exactly once however often it is resent (with ``sessions``, the default).

        Raises ``ClusterUnavailableError`` (definitely not done), ``ProposalDropped``
        (definitely not done, retrying cannot help), ``SessionExpiredError`` (definitely not
        done: the session ended; the next write opens a new one), ``IndeterminateError`` (may
        or may not be done) or ``RemoteProtocolError``.
        """
        budget = self._budget(timeout)
        loop = self._pool.loop
        deadline = loop.time() + budget
        session = None
        seq = 0
        if self._sessions:
            session = self._session
            if session is None or session.expired:  # checked here too: every write passes by
                session = await self._open_session(deadline, budget)
            seq = session.begin()
        try:
            leader = self._targets.leader
            conn = None if leader is None else self._pool.ready(leader)
            first = None
            if conn is not None and loop.time() < deadline:
                # The common case: the known leader's connection is open. The first attempt
                # goes out at once, as Call.run would send it, and the call's retry state is
                # built only when that attempt does not end the write. A session's write
                # gives up on a silent node after attempt_timeout (it is resent); a write
                # without one waits until the deadline (Call.bounded).
                if session is not None:
                    attempt_deadline = min(deadline, loop.time() + self._policy.attempt_timeout)
                    fields = (session.id, seq, session.ack())
                else:
                    attempt_deadline = deadline
                    fields = _NO_SESSION
                try:
                    slot = conn.send(_PROPOSE, command, _LINEARIZABLE, attempt_deadline, fields)
                except (ConnectionLost, RequestTooLarge):
                    pass  # nothing was sent: the call below starts from scratch
                else:
                    outcome: ClientResponse | ConnectionLost | AttemptTimeout
                    try:
                        outcome = await slot.future
                    except (ConnectionLost, AttemptTimeout) as exc:
                        outcome = exc
                    finally:
                        conn.forget(slot)
                    if type(outcome) is ClientResponse and outcome.status is _OK:
                        if session is not None:
                            session.last_active = loop.time()
                        return outcome.result if outcome.result is not None else b""
                    first = outcome, attempt_deadline >= deadline
            call = Call(
                self._pool,
                self._targets,
                self._policy,
                ClientOp.PROPOSE,
                command,
                Consistency.LINEARIZABLE,
                pinned=None,
                resend=session is not None,
                session=session,
                seq=seq,
            )
            if first is not None:
                assert leader is not None
                done = call.first_attempt_was(leader, first[0], final=first[1])
                if done is not None:
                    return done.result if done.result is not None else b""
            resp = await call.run(budget, deadline)
        finally:
            if session is not None:
                session.end(seq)
        return resp.result if resp.result is not None else b""

    async def query(
        self,
        query: bytes,
        *,
        consistency: str | Consistency = "linearizable",
        timeout: float | None = None,
    ) -> bytes:
        """Answer ``query`` with ``StateMachine.query`` at ``consistency`` (``"linearizable"``,
        ``"lease"`` or ``"stale"``). Retried until the deadline; raises
        ``ClusterUnavailableError`` if no node answered in time, and ``ProposalDropped`` at
        once if ``query`` is larger than the node accepts (it was not sent)."""
        level = parse_consistency(consistency)
        resp = await self._call(ClientOp.QUERY, query, level, timeout, None, True)
        return resp.result if resp.result is not None else b""

    async def status(
        self, address: str | None = None, *, timeout: float | None = None
    ) -> NodeStatus:
        """The status of the node at ``address`` (default: the last known leader, else the
        first node that answers), as it describes itself. Retried until the deadline; an answer
        that is not a :class:`~raftpy.node.status.NodeStatus` raises RemoteProtocolError."""
        if address is not None:
            parse_address(address)
        resp = await self._call(
            ClientOp.STATUS, b"", Consistency.LINEARIZABLE, timeout, address, True
        )
        return decode_status(resp.result or b"")

    async def snapshot(self, address: str, *, timeout: float | None = None) -> tuple[int, int]:
        """Ask the node at ``address`` to take a snapshot of its state now and compact its
        log; return the snapshot's ``(index, term)``. Any node will do, not only the leader:
        each node snapshots its own state (operators: ``raftpy snapshot ADDRESS``).

        Connecting is retried until the deadline. Once the request is written the call waits
        for the answer until the deadline, not just ``attempt_timeout``: a large state takes a
        while to write, and asking again would only take another snapshot after it. A request
        lost with a broken connection is sent again (a second snapshot is harmless). Raises
        ``ClusterUnavailableError`` when the node could not be reached or did not answer in
        time, and ``RemoteProtocolError`` when it answered anything but the snapshot (a full
        disk, a failed or stopping node, a state machine that cannot write it).
        """
        parse_address(address)
        return await take_snapshot(self._pool, self._policy, address, self._budget(timeout))

    # -- membership (operators: ``raftpy members ...``; README.md, "Changing members") -------
    #
    # Every change is sent to the leader (redirects followed) and returns once it is committed,
    # with the membership after it. Errors are those of propose: ClusterUnavailableError and
    # ProposalDropped are definite (nothing changed; ProposalDropped with ``retryable`` false
    # is a change the leader's membership rules refuse, the message says why), IndeterminateError
    # means the change may or may not take effect, RemoteProtocolError that the node failed it.
    #
    # Unlike proposals, a change whose outcome became unknown IS sent again until the deadline:
    # each change is idempotent by construction (adding a member that already has that role,
    # promoting a voter, removing a non-member change nothing; Thesis §4 and
    # raftpy.core.confchange), so a resent change that had taken effect only confirms it. The
    # exception is a concurrent change to the same node by someone else between the attempts,
    # which the resend may undo (adding a learner that was promoted meanwhile demotes it).

    async def members(self, *, stale: bool = False, timeout: float | None = None) -> Members:
        """The cluster's membership: voters, learners, the outgoing voters of a joint change,
        members' addresses and the leader. By default the leader answers (its log holds the
        newest membership, Thesis §4.1); ``stale=True`` takes the answer of the first node
        that replies, which may lag behind but needs no leader. Retried until the deadline
        like a query (it changes nothing)."""
        level = Consistency.STALE if stale else Consistency.LINEARIZABLE
        resp = await self._call(ClientOp.MEMBERS, b"", level, timeout, None, True)
        return decode_members(resp.result or b"")

    async def add_member(
        self,
        node_id: int,
        address: str,
        voter: bool = False,
        force: bool = False,
        *,
        timeout: float | None = None,
    ) -> Members:
        """Add node ``node_id`` listening at ``address`` as a learner (it receives the log but
        does not vote, Thesis §4.2.1), or as a voter at once if ``voter``. Adding a member that
        already has that role changes at most its address. ``force`` skips the leader's check
        that the change leaves a reachable quorum. Returns the membership once the change is
        committed; see the comment above for errors and retries."""
        parse_address(address)
        return await self._change(
            ClientOp.ADD_MEMBER,
            MemberRequest(node_id=node_id, address=address, voter=voter, force=force),
            timeout,
        )

    async def promote(
        self, node_id: int, force: bool = False, *, timeout: float | None = None
    ) -> Members:
        """Make the learner ``node_id`` a voter. The leader refuses (``ProposalDropped``,
        definite) a learner that has not caught up yet unless ``force``: a voter that lags
        can stall commitment (Thesis §4.2.1). Promoting a voter changes nothing."""
        return await self._change(
            ClientOp.PROMOTE, MemberRequest(node_id=node_id, force=force), timeout
        )

    async def remove_member(
        self, node_id: int, force: bool = False, *, timeout: float | None = None
    ) -> Members:
        """Remove ``node_id`` from the cluster (a removed leader hands over and steps down
        once the change commits, Thesis §4.2.2). The leader refuses a removal that leaves
        fewer reachable voters than a quorum unless ``force``. Removing a non-member changes
        nothing."""
        return await self._change(
            ClientOp.REMOVE_MEMBER, MemberRequest(node_id=node_id, force=force), timeout
        )

    async def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> None:
        """Hand leadership to the voter ``node_id`` (Thesis §3.10); returns once it leads.
        A transfer whose outcome became unknown is sent again: at the new leader, a transfer
        to itself is already done."""
        members = await self._change(
            ClientOp.TRANSFER_LEADER, MemberRequest(node_id=node_id), timeout
        )
        # The node that answered no longer leads: send the next call to the one that does.
        address = None
        if members.leader_id is not None:
            address = members.addresses.get(members.leader_id)
        if address is not None:
            self._targets.learn_leader(address)
        elif self._targets.leader is not None:
            self._targets.forget_leader(self._targets.leader)

    async def _change(self, op: ClientOp, change: MemberRequest, timeout: float | None) -> Members:
        if isinstance(change.node_id, bool) or not isinstance(change.node_id, int):
            raise TypeError(f"node_id must be an int, got {change.node_id!r}")
        if not 0 <= change.node_id <= MAX_NODE_ID:
            raise ValueError(f"node_id must be in 0..{MAX_NODE_ID}, got {change.node_id}")
        data = msgspec.msgpack.encode(change)
        resp = await self._call(op, data, Consistency.LINEARIZABLE, timeout, None, True)
        return decode_members(resp.result or b"")

    async def close(self) -> None:
        """Close the session (best effort, for at most a second) and every connection. Calls
        in flight fail (a proposal already written with ``IndeterminateError``); later calls
        raise ``LocalProtocolError``."""
        if self._closing:
            await self._pool.close()
            return
        self._closing = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        session, self._session = self._session, None
        if session is not None and not session.expired and not self._pool.closed:
            try:
                await self._session_call(
                    ClientOp.CLOSE_SESSION, session, min(self._timeout, CLOSE_SESSION_BOUND)
                )
            except RaftError as exc:
                # It expires by itself after its timeout.
                log.debug("could not close session %d: %s", session.id, exc)
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- calls ------------------------------------------------------------------------------

    def _budget(self, timeout: float | None) -> float:
        """The deadline of a call, in seconds from now; checks the client is open."""
        if self._pool.closed or self._closing:
            raise LocalProtocolError("the client is closed")
        budget = self._timeout if timeout is None else timeout
        if not budget > 0:
            raise ValueError(f"timeout must be > 0, got {budget}")
        return budget

    async def _call(
        self,
        op: ClientOp,
        data: bytes,
        consistency: Consistency,
        timeout: float | None,
        pinned: str | None,
        resend: bool,
    ) -> ClientResponse:
        """Send one request until a node answers it, under one deadline (``resend``: see
        :class:`~raftpy.client.call.Call`)."""
        budget = self._budget(timeout)
        call = Call(
            self._pool,
            self._targets,
            self._policy,
            op,
            data,
            consistency,
            pinned=pinned,
            resend=resend,
        )
        return await call.run(budget)

    # -- the session ------------------------------------------------------------------------

    async def _open_session(self, deadline: float, budget: float) -> ClientSession:
        """The open session, opened now if there is none (one opening for concurrent
        callers). The write was not sent yet, so every failure here is definite for it."""
        loop = asyncio.get_running_loop()
        while True:
            session = self._session
            if session is not None and not session.expired:
                return session
            opening = self._opening
            if opening is None:
                break
            # Another write is opening it: wait with every write queued behind it, all woken
            # in the same loop pass when it ends. (A lock hands over to one waiter per pass:
            # the first writes then left one by one, in as many small batches, and stayed so
            # split for as long as they kept writing: a quarter less throughput at load.) If
            # that opening failed, the first write to wake with time left opens again.
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(opening)
            except TimeoutError:
                raise ClusterUnavailableError(f"no session opened within {budget}s") from None
        opening = self._opening = loop.create_future()
        try:
            call = Call(
                self._pool,
                self._targets,
                self._policy,
                ClientOp.OPEN_SESSION,
                b"",
                Consistency.LINEARIZABLE,
                pinned=None,
                resend=True,
            )
            try:
                resp = await call.run(budget, deadline)
                grant = decode_session_granted(resp.result or b"")
            except IndeterminateError as exc:
                # A session may have been opened; it expires unused. The write was not sent.
                raise ClusterUnavailableError(f"no session opened in time: {exc}") from None
            except RemoteProtocolError as exc:
                # A node that cannot open sessions (or answers garbage) will not start to:
                # definite for the write, which was never sent.
                raise ProposalDropped(
                    f"write not sent: no session could be opened: {exc}", retryable=False
                ) from None
            session = ClientSession(grant, loop.time())
            if self._closing:
                # close() ran meanwhile and found no session to close: this one expires.
                raise LocalProtocolError("the client is closed")
            self._session = session
            if self._keeper is not None:
                self._keeper.cancel()
            self._keeper = loop.create_task(self._keep_alive(session))
            log.debug("opened session %d (timeout %ss)", session.id, session.timeout)
            return session
        finally:
            self._opening = None
            opening.set_result(None)

    async def _session_call(
        self, op: ClientOp, session: ClientSession, budget: float
    ) -> ClientResponse:
        """Send a keep-alive or close of ``session``, resent until answered or ``budget``."""
        call = Call(
            self._pool,
            self._targets,
            self._policy,
            op,
            b"",
            Consistency.LINEARIZABLE,
            pinned=None,
            resend=True,
            session=session,
        )
        return await call.run(budget)

    async def _keep_alive(self, session: ClientSession) -> None:
        """Keep ``session`` alive while the client is idle: a keep-alive whenever the cluster
        has answered nothing for it for a quarter of its timeout (each also acknowledges the
        results received), until it expires, is replaced or the client closes."""
        loop = asyncio.get_running_loop()
        interval = session.timeout / KEEP_ALIVES_PER_TIMEOUT
        while not session.expired and self._session is session and not self._closing:
            idle = loop.time() - session.last_active
            if idle < interval:
                await self._pool.pause(interval - idle)
                continue
            try:
                await self._session_call(ClientOp.KEEP_ALIVE, session, interval)
            except SessionExpiredError:
                session.expire()  # the next write opens a new session
            except RaftError as exc:
                # No leader for now, or a node failing it: try again after a short pause
                # (the session has been idle that long already).
                log.debug("keep-alive of session %d failed: %s", session.id, exc)
                await self._pool.pause(self._policy.backoff_max)
