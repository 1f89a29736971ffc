"""Client and SyncClient membership calls against the fake nodes of test_client: redirects
followed, the membership decoded, definite and indeterminate outcomes kept apart, and a change
resent after an unknown outcome (each change is idempotent)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from raftpy.client import Client, SyncClient
from raftpy.errors import IndeterminateError, ProposalDropped, RemoteProtocolError
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    Consistency,
    MemberRequest,
    Members,
    ResponseStatus,
)
from tests.client.test_client import (
    FAST,
    FakeConn,
    FakeNode,
    Handler,
    answer,
    follower,
    nodes,
    nodes_in_thread,
    run,
    status_of,
)

pytestmark = pytest.mark.timeout(60)


def members_of(fakes: list[FakeNode], leader: FakeNode, learners: tuple[int, ...] = ()) -> Members:
    return Members(
        voters=tuple(f.node_id for f in fakes if f.node_id not in learners),
        learners=learners,
        addresses={f.node_id: f.address for f in fakes},
        leader_id=leader.node_id,
        node_id=leader.node_id,
    )


def member_leader(
    fakes: list[FakeNode], me: FakeNode, *first: Callable[[FakeConn, ClientRequest], None]
) -> Handler:
    """Answers membership requests as the leader ``me`` (after ``first`` actions); a transfer
    answers with the new leader."""
    actions = list(first)

    async def handle(conn: FakeConn, req: ClientRequest) -> None:
        if actions:
            actions.pop(0)(conn, req)
            return
        leader = me
        if req.op is ClientOp.TRANSFER_LEADER:
            target = msgspec.msgpack.decode(req.data, type=MemberRequest).node_id
            leader = next(f for f in fakes if f.node_id == target)
        result = msgspec.msgpack.encode(members_of(fakes, leader))
        conn.respond(answer(req, result=result))

    return handle


def test_members_follows_the_redirect_to_the_leader_or_asks_anyone_when_stale() -> None:
    async def scenario() -> None:
        async with nodes(3) as fakes:
            a, b, c = fakes
            a.handler = follower(a, hint=c)
            b.handler = member_leader(fakes, b)  # answers stale reads as itself
            c.handler = member_leader(fakes, c)
            async with Client([a.address, b.address], rng=random.Random(1), **FAST) as client:
                got = await client.members()
                assert got == members_of(fakes, c)
                assert client.leader_address == c.address
                assert [r.consistency for r in c.ops(ClientOp.MEMBERS)] == [
                    Consistency.LINEARIZABLE
                ]
            async with Client([b.address], **FAST) as client:
                stale = await client.members(stale=True)
                assert stale.leader_id == b.node_id
                assert b.ops(ClientOp.MEMBERS)[0].consistency is Consistency.STALE

    run(scenario())


@pytest.mark.parametrize(
    ("call", "op", "sent"),
    [
        (
            lambda c: c.add_member(4, "127.0.0.1:9", voter=True, force=True),
            ClientOp.ADD_MEMBER,
            MemberRequest(node_id=4, address="127.0.0.1:9", voter=True, force=True),
        ),
        (lambda c: c.add_member(4, "127.0.0.1:9"), ClientOp.ADD_MEMBER, None),
        (lambda c: c.promote(4), ClientOp.PROMOTE, MemberRequest(node_id=4)),
        (lambda c: c.remove_member(2, force=True), ClientOp.REMOVE_MEMBER, None),
    ],
    ids=["add-voter", "add-learner", "promote", "remove"],
)
def test_changes_are_sent_to_the_leader_and_return_the_membership(
    call: Callable[[Client], Any], op: ClientOp, sent: MemberRequest | None
) -> None:
    async def scenario() -> None:
        async with nodes(3) as fakes:
            a, _, c = fakes
            a.handler = follower(a, hint=c)
            c.handler = member_leader(fakes, c)
            async with Client([a.address], **FAST) as client:
                got = await call(client)
                assert isinstance(got, Members) and got.leader_id == c.node_id
                assert client.leader_address == c.address
            (req,) = c.ops(op)
            if sent is not None:
                assert msgspec.msgpack.decode(req.data, type=MemberRequest) == sent

    run(scenario())


def test_a_refused_change_is_definite_and_not_resent() -> None:
    async def scenario() -> None:
        async with nodes(1) as fakes:
            (a,) = fakes
            refused = status_of(ResponseStatus.DROPPED, "node 4 lags 5000 entries", False)
            a.handler = member_leader(fakes, a, refused)
            async with Client([a.address], **FAST) as client:
                with pytest.raises(ProposalDropped, match="lags") as caught:
                    await client.promote(4)
                assert not caught.value.retryable
            assert len(a.ops(ClientOp.PROMOTE)) == 1

    run(scenario())


def test_a_change_pending_is_retried_until_the_leader_takes_it() -> None:
    async def scenario() -> None:
        async with nodes(1) as fakes:
            (a,) = fakes
            pending = status_of(ResponseStatus.DROPPED, "a change is pending", True)
            a.handler = member_leader(fakes, a, pending, pending)
            async with Client([a.address], **FAST) as client:
                await client.remove_member(3)
            assert len(a.ops(ClientOp.REMOVE_MEMBER)) == 3

    run(scenario())


def test_a_change_with_an_unknown_outcome_is_resent_since_it_is_idempotent() -> None:
    async def scenario() -> None:
        async with nodes(1) as fakes:
            (a,) = fakes
            lost = status_of(ResponseStatus.INDETERMINATE, "leadership lost")
            a.handler = member_leader(fakes, a, lost)
            async with Client([a.address], **FAST) as client:
                await client.add_member(4, "127.0.0.1:9")
            assert len(a.ops(ClientOp.ADD_MEMBER)) == 2

    run(scenario())


def test_an_unknown_outcome_stays_unknown_until_the_deadline() -> None:
    async def scenario() -> None:
        async with nodes(1) as fakes:
            (a,) = fakes
            lost = status_of(ResponseStatus.INDETERMINATE, "leadership lost")
            pending = status_of(ResponseStatus.DROPPED, "a change is pending", True)
            a.handler = member_leader(fakes, a, lost, *[pending] * 1000)
            async with Client([a.address], **FAST) as client:
                with pytest.raises(IndeterminateError, match="outcome of the remove member"):
                    await client.remove_member(3, timeout=0.3)
                # A later refusal does not make the unknown outcome definite either. The
                # script answers only this call's requests (for member 4): an attempt of the
                # first call still on its way when that call gave up must not take its turn.
                script = member_leader(
                    fakes, a, lost, status_of(ResponseStatus.DROPPED, "refused", False)
                )

                async def second_call_only(conn: FakeConn, req: ClientRequest) -> None:
                    if msgspec.msgpack.decode(req.data, type=MemberRequest).node_id == 4:
                        await script(conn, req)
                    else:
                        pending(conn, req)

                a.handler = second_call_only
                with pytest.raises(IndeterminateError, match="then dropped: refused"):
                    await client.remove_member(4)

    run(scenario())


def test_transfer_points_the_client_at_the_new_leader() -> None:
    async def scenario() -> None:
        async with nodes(3) as fakes:
            a, b, _ = fakes
            a.handler = member_leader(fakes, a)
            b.handler = member_leader(fakes, b)
            async with Client([a.address], **FAST) as client:
                await client.members()
                assert client.leader_address == a.address
                await client.transfer_leadership(2)
                assert client.leader_address == b.address
                await client.members()
            assert len(b.ops(ClientOp.MEMBERS)) == 1

    run(scenario())


@pytest.mark.parametrize(
    "result",
    [b"\xc1", msgspec.msgpack.encode({"voters": []}), msgspec.msgpack.encode({"voters": [-1]})],
    ids=["not-msgpack", "no-voters", "negative-id"],
)
def test_an_answer_that_is_not_a_membership_is_a_protocol_error(result: bytes) -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):

            async def handle(conn: FakeConn, req: ClientRequest) -> None:
                conn.respond(answer(req, result=result))

            a.handler = handle
            async with Client([a.address], **FAST) as client:
                with pytest.raises(RemoteProtocolError, match="membership answer"):
                    await client.members()

    run(scenario())


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.add_member(1, "no-port"), ValueError),
        (lambda c: c.promote(-1), ValueError),
        (lambda c: c.remove_member(1 << 64), ValueError),
        (lambda c: c.transfer_leadership("2"), TypeError),
        (lambda c: c.promote(True), TypeError),
    ],
    ids=["bad-address", "negative-id", "huge-id", "id-text", "id-bool"],
)
def test_bad_arguments_are_refused_before_sending(
    call: Callable[[Client], Any], error: type[Exception]
) -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            async with Client([a.address], **FAST) as client:
                with pytest.raises(error):
                    await call(client)
            assert a.requests == []

    run(scenario())


def test_sync_client_membership_calls() -> None:
    with nodes_in_thread(1) as (a,):
        a.handler = member_leader([a], a)
        with SyncClient([a.address], timeout=5.0) as client:
            assert client.members().voters == (1,)
            assert client.add_member(2, "127.0.0.1:9").leader_id == 1
            assert client.promote(2).voters == (1,)
            assert client.remove_member(2).voters == (1,)
            client.transfer_leadership(1)
