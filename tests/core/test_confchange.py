"""Membership-change arithmetic (raftpy.core.confchange): table tests for each rule and each
refusal, and hypothesis properties against a naive reference written here with plain sets.

The reference decides each node's role after a change directly (a change names a node at most
once, so "the last change to a node wins" is its role), then derives the configuration; it
shares no code with the module under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raftpy
from raftpy.core.confchange import (
    ConfChange,
    ConfChangeKind,
    ConfChangeSingle,
    ConfChangeTransition,
    apply,
    apply_simple,
    check_conf,
    enter_joint,
    leave_joint,
)
from raftpy.core.messages import ConfState, validate_conf_state
from raftpy.errors import ConfChangeError, LocalProtocolError

AUTO = ConfChangeTransition.AUTO
IMPLICIT = ConfChangeTransition.JOINT_IMPLICIT
EXPLICIT = ConfChangeTransition.JOINT_EXPLICIT


def V(node: int) -> ConfChangeSingle:
    return ConfChangeSingle(ConfChangeKind.ADD_VOTER, node)


def L(node: int) -> ConfChangeSingle:
    return ConfChangeSingle(ConfChangeKind.ADD_LEARNER, node)


def R(node: int) -> ConfChangeSingle:
    return ConfChangeSingle(ConfChangeKind.REMOVE_NODE, node)


def C(
    voters: Iterable[int],
    learners: Iterable[int] = (),
    out: Iterable[int] = (),
    nxt: Iterable[int] = (),
    auto: bool = False,
) -> ConfState:
    return ConfState(
        tuple(sorted(voters)), tuple(sorted(learners)), tuple(sorted(out)), tuple(sorted(nxt)), auto
    )


def CC(*changes: ConfChangeSingle, transition: ConfChangeTransition = AUTO) -> ConfChange:
    return ConfChange(changes, transition)


# ----------------------------------------------------------------------------------------------
# Accepted changes, one rule per row: (id, conf, change, result)
# ----------------------------------------------------------------------------------------------

ACCEPTED = [
    ("add-voter", C([1, 2, 3]), CC(V(4)), C([1, 2, 3, 4])),
    ("remove-voter", C([1, 2, 3]), CC(R(3)), C([1, 2])),
    ("remove-self-leaving-one", C([1, 2]), CC(R(1)), C([2])),
    ("add-learner", C([1, 2, 3]), CC(L(4)), C([1, 2, 3], [4])),
    ("promote-learner", C([1, 2, 3], [4]), CC(V(4)), C([1, 2, 3, 4])),
    ("demote-voter-simple", C([1, 2, 3]), CC(L(3)), C([1, 2], [3])),
    ("remove-learner", C([1, 2, 3], [4]), CC(R(4)), C([1, 2, 3])),
    ("remove-non-member-is-no-op", C([1, 2, 3]), CC(R(9)), C([1, 2, 3])),
    ("add-existing-voter-is-no-op", C([1, 2, 3]), CC(V(2)), C([1, 2, 3])),
    ("add-existing-learner-is-no-op", C([1, 2], [3]), CC(L(3)), C([1, 2], [3])),
    (
        "auto-one-voter-and-learners-is-simple",
        C([1, 2, 3], [4]),
        CC(V(5), R(4), L(6)),
        C([1, 2, 3, 5], [6]),
    ),
    (
        "promote-and-remove-learners-is-simple",
        C([1, 2, 3], [4, 5]),
        CC(V(4), R(5)),
        C([1, 2, 3, 4]),
    ),
    (
        "auto-two-voters-goes-joint-auto-leave",
        C([1, 2, 3]),
        CC(V(4), V(5)),
        C([1, 2, 3, 4, 5], out=[1, 2, 3], auto=True),
    ),
    (
        "auto-replace-voter-goes-joint",
        C([1, 2, 3]),
        CC(R(3), V(4)),
        C([1, 2, 4], out=[1, 2, 3], auto=True),
    ),
    (
        "implicit-single-voter-still-joint",
        C([1, 2, 3]),
        CC(V(4), transition=IMPLICIT),
        C([1, 2, 3, 4], out=[1, 2, 3], auto=True),
    ),
    (
        "explicit-joint-no-auto-leave",
        C([1, 2, 3]),
        CC(V(4), V(5), transition=EXPLICIT),
        C([1, 2, 3, 4, 5], out=[1, 2, 3]),
    ),
    (
        "joint-demotion-waits-in-learners-next",
        C([1, 2, 3]),
        CC(L(3), V(4), transition=EXPLICIT),
        C([1, 2, 4], out=[1, 2, 3], nxt=[3]),
    ),
    (
        "joint-promotion-is-immediate",
        C([1, 2, 3], [4, 5]),
        CC(V(4), V(5), transition=EXPLICIT),
        C([1, 2, 3, 4, 5], out=[1, 2, 3]),
    ),
    (
        "joint-may-replace-every-voter",
        C([1, 2, 3]),
        CC(R(1), R(2), R(3), V(4), transition=IMPLICIT),
        C([4], out=[1, 2, 3], auto=True),
    ),
    ("leave-joint", C([1, 2, 4], out=[1, 2, 3], auto=True), CC(), C([1, 2, 4])),
    (
        "leave-joint-demoted-become-learners",
        C([1, 2, 4], [5], out=[1, 2, 3], nxt=[3]),
        CC(),
        C([1, 2, 4], [3, 5]),
    ),
    (
        "leave-joint-explicit-transition-field-ignored",
        C([4], out=[1]),
        CC(transition=EXPLICIT),
        C([4]),
    ),
]


@pytest.mark.parametrize(
    ("conf", "cc", "want"), [row[1:] for row in ACCEPTED], ids=[row[0] for row in ACCEPTED]
)
def test_accepted_change(conf: ConfState, cc: ConfChange, want: ConfState) -> None:
    """Each accepted rule gives exactly this membership, sorted, and a valid one.

    Reference: Thesis §4.1 (one voter at a time), §4.2.1 (learners catch up, then are
    promoted), §4.3 (joint consensus); etcd raft ConfChangeV2 (transitions, LearnersNext)."""
    got = apply(conf, cc)
    assert got == want
    check_conf(got)
    assert validate_conf_state(got) is None
    assert naive_apply(conf, cc) == want


# ----------------------------------------------------------------------------------------------
# Refusals: (id, conf, change, words the message must contain)
# ----------------------------------------------------------------------------------------------

REFUSED = [
    ("simple-two-voters-added", C([1, 2, 3]), apply_simple, (V(4), V(5)), "[4, 5]"),
    ("simple-voter-replaced", C([1, 2, 3]), apply_simple, (R(3), V(4)), "[3, 4]"),
    ("simple-two-demoted", C([1, 2, 3]), apply_simple, (L(2), L(3)), "one voter"),
    ("simple-while-joint", C([1, 2, 4], out=[1, 2, 3]), apply_simple, (L(5),), "joint"),
    ("simple-removes-last-voter", C([1]), apply_simple, (R(1),), "no voters"),
    ("simple-demotes-last-voter", C([1]), apply_simple, (L(1),), "no voters"),
    ("simple-empty", C([1, 2, 3]), apply_simple, (), "empty"),
    ("simple-same-node-twice", C([1, 2, 3]), apply_simple, (L(4), V(4)), "node 4 is changed twice"),
    ("simple-node-id-negative", C([1, 2, 3]), apply_simple, (V(-1),), "out of range"),
    ("joint-while-joint", C([1, 2, 4], out=[1, 2, 3]), enter_joint, (V(5),), "already"),
    ("joint-removes-every-voter", C([1, 2, 3]), enter_joint, (R(1), R(2), R(3)), "no voters"),
    ("joint-empty", C([1, 2, 3]), enter_joint, (), "empty"),
    ("joint-same-node-twice", C([1, 2, 3]), enter_joint, (R(2), R(2)), "twice"),
    ("bad-input-conf", C([1, 2], [2]), apply_simple, (V(3),), "both learners and voters"),
]


@pytest.mark.parametrize(
    ("conf", "fn", "changes", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_refused_change(
    conf: ConfState, fn: object, changes: tuple[ConfChangeSingle, ...], words: str
) -> None:
    """A change that breaks a rule is refused with a message saying which, and the membership
    it was given is untouched (frozen data, changes made to a private copy).

    Reference: Thesis §4.1 (more than one voter at once lets two majorities decide apart),
    §4.3 (one change at a time: a joint configuration must be left first); Thesis §4 (a
    configuration needs a voter)."""
    before = msgspec.msgpack.encode(conf)
    with pytest.raises(ConfChangeError, match=None) as info:
        if fn is enter_joint:
            enter_joint(conf, changes, auto_leave=True)
        else:
            apply_simple(conf, changes)
    assert words in str(info.value)
    assert msgspec.msgpack.encode(conf) == before


REFUSED_APPLY = [
    ("auto-change-while-joint", C([1, 2, 4], out=[1, 2, 3]), CC(V(5)), "joint"),
    ("implicit-while-joint", C([1, 2, 4], out=[1, 2, 3]), CC(V(5), transition=IMPLICIT), "already"),
    ("explicit-while-joint", C([1, 2, 4], out=[1, 2, 3]), CC(V(5), transition=EXPLICIT), "already"),
    ("empty-while-not-joint", C([1, 2, 3]), CC(), "nothing to leave"),
    ("auto-removes-every-voter", C([1, 2]), CC(R(1), R(2)), "no voters"),
    ("auto-same-node-twice", C([1, 2, 3]), CC(V(4), R(4)), "twice"),
]


@pytest.mark.parametrize(
    ("conf", "cc", "words"), [r[1:] for r in REFUSED_APPLY], ids=[r[0] for r in REFUSED_APPLY]
)
def test_refused_apply(conf: ConfState, cc: ConfChange, words: str) -> None:
    """``apply`` refuses what its transition's function refuses, and an empty change outside a
    joint configuration (there is nothing to leave).

    Reference: Thesis §4.3; etcd raft ConfChangeV2 (an empty change leaves the joint config)."""
    with pytest.raises(ConfChangeError) as info:
        apply(conf, cc)
    assert words in str(info.value)
    assert naive_apply(conf, cc) is None


def test_leave_joint_refused_outside_joint() -> None:
    """Reference: Thesis §4.3 (only C_old,new is left for C_new)."""
    with pytest.raises(ConfChangeError, match="nothing to leave"):
        leave_joint(C([1, 2, 3]))


def test_leave_joint_drops_removed_outgoing_voters() -> None:
    """Leaving C_old,new, the outgoing voters that are not in C_new stop being members, the
    demoted ones become learners, and ``auto_leave`` is cleared.

    Reference: Thesis §4.3."""
    got = leave_joint(C([2, 4], [6], out=[1, 2, 3], nxt=[3], auto=True))
    assert got == C([2, 4], [3, 6])


def test_enter_joint_records_auto_leave() -> None:
    """Reference: etcd raft ConfChangeV2 (AutoLeave is kept in ConfState while joint)."""
    assert enter_joint(C([1]), (V(2),), auto_leave=True).auto_leave is True
    assert enter_joint(C([1]), (V(2),), auto_leave=False).auto_leave is False


def test_error_is_a_local_protocol_error_and_exported() -> None:
    """A bad change is the caller's mistake (errors typed by who is at fault)."""
    assert issubclass(ConfChangeError, LocalProtocolError)
    assert raftpy.ConfChangeError is ConfChangeError
    assert "ConfChangeError" in raftpy.__all__


# ----------------------------------------------------------------------------------------------
# check_conf and the wire
# ----------------------------------------------------------------------------------------------

BAD_CONFS = [
    ("no-voters", ConfState(()), "without voters"),
    ("voter-twice", ConfState((1, 1)), "voters lists a node twice"),
    ("learner-twice", ConfState((1,), (2, 2)), "learners lists"),
    ("outgoing-twice", ConfState((1,), (), (1, 1)), "voters_outgoing lists"),
    ("next-twice", ConfState((1,), (), (2,), (2, 2)), "learners_next lists"),
    ("learner-and-voter", ConfState((1, 2), (2,)), "both learners and voters"),
    ("learner-and-outgoing", ConfState((1,), (2,), (1, 2)), "both learners and outgoing"),
    ("next-and-voter", ConfState((1, 2), (), (1, 2), (2,)), "both pending learners and voters"),
    ("next-not-outgoing", ConfState((1,), (), (1,), (3,)), "not outgoing voters"),
    ("next-outside-joint", ConfState((1,), (), (), (1,)), "outside a joint"),
    ("auto-leave-outside-joint", ConfState((1,), auto_leave=True), "outside a joint"),
]


@pytest.mark.parametrize(
    ("conf", "words"), [r[1:] for r in BAD_CONFS], ids=[r[0] for r in BAD_CONFS]
)
def test_check_conf_refuses(conf: ConfState, words: str) -> None:
    """Reference: Thesis §4 (a configuration has voters), §4.2.1 (a learner never votes), §4.3
    (demotions wait for the leave)."""
    with pytest.raises(ConfChangeError) as info:
        check_conf(conf)
    assert words in str(info.value)
    assert not naive_valid(conf)


@pytest.mark.parametrize(
    ("conf", "ok"),
    [
        (C([1, 2, 4], [5], out=[1, 2, 3], nxt=[3], auto=True), True),
        (ConfState((1,), (), (), (1,)), False),
        (ConfState((1,), (), (1, 2), (2, 2)), False),
        (ConfState((1,), (), (1,), (2,)), False),
        (ConfState((1, 2), (), (1, 2), (2,)), False),
        (ConfState((1,), (), (), (), True), False),
    ],
    ids=[
        "joint-demotion",
        "next-outside-joint",
        "next-twice",
        "next-not-outgoing",
        "next-voter",
        "auto-leave",
    ],
)
def test_peer_validation_of_new_fields(conf: ConfState, ok: bool) -> None:
    """A membership from a peer (snapshot, configuration entry) is checked for the joint-only
    fields too, so no forged one makes a node both voter and learner after the leave.

    Reference: Thesis §4.3."""
    assert (validate_conf_state(conf) is None) is ok


def test_conf_state_wire_round_trip_and_compatibility() -> None:
    """The new trailing fields round-trip; a membership encoded without them (an older node)
    decodes with their defaults, and an older decoder reads a new one, skipping them."""
    conf = C([1, 2, 4], [5], out=[1, 2, 3], nxt=[3], auto=True)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(conf), type=ConfState) == conf

    class OldConfState(msgspec.Struct, frozen=True, array_like=True):
        voters: tuple[int, ...]
        learners: tuple[int, ...] = ()
        voters_outgoing: tuple[int, ...] = ()

    old = msgspec.msgpack.encode(OldConfState((1, 2, 3), (4,), (1, 2)))
    assert msgspec.msgpack.decode(old, type=ConfState) == ConfState((1, 2, 3), (4,), (1, 2))
    seen = msgspec.msgpack.decode(msgspec.msgpack.encode(conf), type=OldConfState)
    assert seen == OldConfState((1, 2, 4), (5,), (1, 2, 3))


def test_conf_change_wire_round_trip() -> None:
    """A ConfChange is plain frozen data, fit for a configuration entry's payload."""
    cc = CC(V(4), L(3), R(2), transition=EXPLICIT)
    raw = msgspec.msgpack.encode(cc)
    assert msgspec.msgpack.decode(raw, type=ConfChange) == cc
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ConfChange()), type=ConfChange) == CC()
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode([[[7, 1]], 0]), type=ConfChange)


# ----------------------------------------------------------------------------------------------
# The naive reference
# ----------------------------------------------------------------------------------------------


def naive_valid(conf: ConfState) -> bool:
    fields = (conf.voters, conf.learners, conf.voters_outgoing, conf.learners_next)
    if any(len(set(f)) != len(f) for f in fields):
        return False
    voters, learners, out, nxt = (set(f) for f in fields)
    if not out and (nxt or conf.auto_leave):
        return False
    return bool(voters) and not learners & (voters | out) and nxt <= out - voters


def naive_apply(conf: ConfState, cc: ConfChange) -> ConfState | None:
    """The next membership, or None if refused: each node's new role is what the one change
    naming it says; then simple if allowed, else joint."""
    if not naive_valid(conf):
        return None
    voters, learners = set(conf.voters), set(conf.learners)
    out, nxt = set(conf.voters_outgoing), set(conf.learners_next)
    named = [c.node_id for c in cc.changes]
    if out:  # joint: the only thing to do is leave
        if cc.changes:
            return None
        return C(voters, learners | nxt)
    if not cc.changes or len(named) != len(set(named)):
        return None
    role = {n: "voter" for n in voters} | {n: "learner" for n in learners}
    for c in cc.changes:
        role[c.node_id] = {
            ConfChangeKind.ADD_VOTER: "voter",
            ConfChangeKind.ADD_LEARNER: "learner",
            ConfChangeKind.REMOVE_NODE: "gone",
        }[c.kind]
    new_voters = {n for n, r in role.items() if r == "voter"}
    new_learners = {n for n, r in role.items() if r == "learner"}
    if not new_voters:
        return None
    if cc.transition is AUTO and len(voters ^ new_voters) <= 1:
        return C(new_voters, new_learners)
    demoted = new_learners & voters  # still votes in C_old until the leave
    return C(new_voters, new_learners - demoted, voters, demoted, cc.transition is not EXPLICIT)


def quorums(conf: ConfState, universe: list[int]) -> list[int]:
    """Every subset of ``universe`` (as a bit mask) holding a majority of the voters and, while
    joint, of the outgoing voters too: everything such a configuration can decide with."""
    out = []
    for mask in range(1 << len(universe)):
        members = {n for k, n in enumerate(universe) if mask >> k & 1}
        if all(
            2 * len(members & set(half)) > len(half)
            for half in (conf.voters, conf.voters_outgoing)
            if half
        ):
            out.append(mask)
    return out


def quorums_overlap(old: ConfState, new: ConfState) -> bool:
    """Whether every quorum of ``old`` shares a server with every quorum of ``new``."""
    universe = sorted(
        set(old.voters) | set(old.voters_outgoing) | set(new.voters) | set(new.voters_outgoing)
    )
    return all(a & b for a in quorums(old, universe) for b in quorums(new, universe))


def test_overlap_check_can_fail() -> None:
    """The safety check itself: two voters added at once to three, {1,2} decides for the old
    configuration and {3,4,5} for the new one, apart.

    Reference: Thesis §4.1 (Figure 4.2's reason for one server at a time)."""
    assert not quorums_overlap(C([1, 2, 3]), C([1, 2, 3, 4, 5]))
    assert quorums_overlap(C([1, 2, 3]), C([1, 2, 3, 4]))
    assert quorums_overlap(C([1, 2, 3]), C([1, 2, 3, 4, 5], out=[1, 2, 3]))


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

node_ids = st.integers(min_value=1, max_value=6)
ROLES = ("voter", "incoming", "outgoing", "learner", "demoting")


@st.composite
def valid_confs(draw: st.DrawFn) -> ConfState:
    """A valid membership, joint or not, from a role per node."""
    roles = draw(st.dictionaries(node_ids, st.sampled_from(ROLES), min_size=1, max_size=6))
    joint = draw(st.booleans())
    if not joint:
        simple = {"voter": "voter", "incoming": "voter", "outgoing": "voter"}
        roles = {n: simple.get(r, "learner") for n, r in roles.items()}
    voters = {n for n, r in roles.items() if r in ("voter", "incoming")}
    out = (
        {n for n, r in roles.items() if r in ("voter", "outgoing", "demoting")} if joint else set()
    )
    if not voters:
        voters = {7}
    if joint and not out:
        out = {8}
    learners = {n for n, r in roles.items() if r == "learner"}
    nxt = {n for n, r in roles.items() if r == "demoting"} if joint else set()
    return C(voters, learners, out, nxt, joint and draw(st.booleans()))


singles = st.builds(ConfChangeSingle, st.sampled_from(ConfChangeKind), st.integers(1, 7))
changes = st.one_of(
    st.just(ConfChange()),
    st.builds(
        ConfChange,
        st.lists(singles, min_size=1, max_size=4).map(tuple),
        st.sampled_from(ConfChangeTransition),
    ),
)


def try_apply(conf: ConfState, cc: ConfChange) -> ConfState | None:
    try:
        return apply(conf, cc)
    except ConfChangeError:
        return None


@settings(max_examples=300)
@given(valid_confs())
def test_generated_confs_are_valid(conf: ConfState) -> None:
    """The generator and both invariant checks agree (so the properties below start from
    valid memberships)."""
    assert naive_valid(conf)
    check_conf(conf)
    assert validate_conf_state(conf) is None


raw_confs = st.builds(
    ConfState, *[st.lists(st.integers(1, 4), max_size=3).map(tuple)] * 4, st.booleans()
)
# Valid memberships with one joint-only field flipped or one node moved: near misses, which
# raw random tuples rarely produce.
near_misses = st.one_of(
    st.builds(
        lambda c, auto: msgspec.structs.replace(c, auto_leave=auto), valid_confs(), st.booleans()
    ),
    st.builds(
        lambda c, n, field: msgspec.structs.replace(c, **{field: (*getattr(c, field), n)}),
        valid_confs(),
        node_ids,
        st.sampled_from(["voters", "learners", "voters_outgoing", "learners_next"]),
    ),
    st.builds(
        lambda c, field: msgspec.structs.replace(c, **{field: getattr(c, field) * 2}),
        valid_confs(),
        st.sampled_from(["voters", "learners", "voters_outgoing", "learners_next"]),
    ),
)


@settings(max_examples=400)
@given(st.one_of(raw_confs, near_misses))
def test_check_conf_matches_reference(conf: ConfState) -> None:
    """check_conf accepts exactly what the naive invariants accept."""
    try:
        check_conf(conf)
        ok = True
    except ConfChangeError:
        ok = False
    assert ok is naive_valid(conf)


@settings(max_examples=400)
@given(valid_confs(), st.lists(changes, min_size=1, max_size=6))
def test_change_sequences_match_reference(conf: ConfState, ccs: list[ConfChange]) -> None:
    """From a random membership, a random sequence of changes: the module and the naive
    reference accept the same changes with the same results, every result keeps the invariants,
    and every accepted change keeps every old quorum overlapping every new one.

    Reference: Thesis §4.1 (one voter at a time keeps majorities overlapping), §4.3 (C_old ->
    C_old,new -> C_new: each step overlaps the previous one)."""
    for cc in ccs:
        got = try_apply(conf, cc)
        assert got == naive_apply(conf, cc), (conf, cc)
        if got is None:
            continue
        check_conf(got)
        assert naive_valid(got)
        assert validate_conf_state(got) is None
        assert quorums_overlap(conf, got), (conf, cc, got)
        conf = got


@settings(max_examples=300)
@given(valid_confs(), st.lists(singles, min_size=1, max_size=4).map(tuple))
def test_accepted_simple_changes_keep_majorities_overlapping(
    conf: ConfState, chs: tuple[ConfChangeSingle, ...]
) -> None:
    """For every simple change accepted, every majority of the old voters intersects every
    majority of the new voters (enumerating all subsets of a small cluster): why one voter at a
    time needs no joint configuration.

    Reference: Thesis §4.1."""
    try:
        new = apply_simple(conf, chs)
    except ConfChangeError:
        return
    old_voters, new_voters = set(conf.voters), set(new.voters)
    assert len(old_voters ^ new_voters) <= 1
    assert not new.voters_outgoing
    for a in majorities(old_voters):
        for b in majorities(new_voters):
            assert a & b, (conf, chs, new, a, b)


def majorities(voters: set[int]) -> list[set[int]]:
    members = sorted(voters)
    return [
        set(s)
        for k in range(len(members) + 1)
        for s in itertools.combinations(members, k)
        if 2 * k > len(members)
    ]


@settings(max_examples=400)
@given(st.one_of(raw_confs, near_misses))
def test_wire_validation_matches_reference(conf: ConfState) -> None:
    """validate_conf_state (what a node accepts from a peer, and what every change must keep)
    accepts exactly the memberships with voters, no duplicates, no learner among the voters of
    either half, and joint-only fields only while joint, naming outgoing voters that are
    nothing else: a peer cannot hand over a membership a later change would refuse.

    Reference: Thesis §4, §4.3."""
    assert (validate_conf_state(conf) is None) is naive_valid(conf)
