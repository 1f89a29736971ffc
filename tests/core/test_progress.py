"""Progress (match/next and the probe/replicate/snapshot states) and Inflights.

Table tests in the style of etcd's ``tracker/progress_test.go`` and ``inflights_test.go``, plus
a hypothesis test of Inflights against a naive list.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy.core.progress import Inflights, Progress, ProgressState


def progress(
    state: ProgressState = ProgressState.PROBE,
    match: int = 0,
    next: int = 1,
    max_inflight: int = 256,
    max_inflight_bytes: int | None = None,
) -> Progress:
    pr = Progress(next, max_inflight, max_inflight_bytes)
    pr.match = match
    if state is ProgressState.REPLICATE:
        pr.become_replicate()
        pr.next = next
    elif state is ProgressState.SNAPSHOT:
        pr.become_snapshot(10)
        pr.next = next
    return pr


def test_new_progress_probes_from_next() -> None:
    pr = Progress(7, 4)
    assert (pr.match, pr.next, pr.state, pr.probe_sent, pr.is_paused()) == (
        0,
        7,
        ProgressState.PROBE,
        False,
        False,
    )
    assert pr.inflights.count() == 0 and not pr.recent_active and not pr.is_learner


# -------------------------------------------------------------------------------------------
# State transitions
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "match", "next", "pending", "want_next"),
    [
        (ProgressState.REPLICATE, 1, 5, 0, 2),  # back to just past what is known held
        (ProgressState.PROBE, 3, 9, 0, 4),
        (ProgressState.SNAPSHOT, 1, 5, 10, 11),  # the snapshot is assumed to have arrived
        (ProgressState.SNAPSHOT, 1, 5, 0, 2),
        (ProgressState.SNAPSHOT, 12, 13, 10, 13),  # match already past the snapshot
    ],
)
def test_become_probe(
    state: ProgressState, match: int, next: int, pending: int, want_next: int
) -> None:
    pr = progress(state, match, next)
    pr.pending_snapshot = pending
    pr.inflights.add(next, 10)
    pr.probe_sent = True
    pr.become_probe()
    assert (pr.state, pr.match, pr.next) == (ProgressState.PROBE, match, want_next)
    assert (pr.probe_sent, pr.pending_snapshot, pr.inflights.count()) == (False, 0, 0)


def test_become_replicate_and_snapshot() -> None:
    pr = progress(ProgressState.PROBE, 3, 9)
    pr.probe_sent = True
    pr.become_replicate()
    assert (pr.state, pr.match, pr.next, pr.probe_sent) == (ProgressState.REPLICATE, 3, 4, False)
    pr.inflights.add(5, 1)
    pr.become_snapshot(20)
    assert (pr.state, pr.pending_snapshot, pr.inflights.count()) == (
        ProgressState.SNAPSHOT,
        20,
        0,
    )
    assert pr.is_paused()


# (match, next, acknowledged index) -> (updated, match after, next after)
MAYBE_UPDATE = [
    (3, 5, 2, False, 3, 5),  # stale: nothing moves back
    (3, 5, 3, False, 3, 5),
    (3, 5, 4, True, 4, 5),
    (3, 5, 5, True, 5, 6),
    (3, 5, 9, True, 9, 10),
    (0, 1, 0, False, 0, 1),
]


@pytest.mark.parametrize(
    ("match", "next", "index", "want", "want_match", "want_next"),
    MAYBE_UPDATE,
    ids=[f"m{m}n{n}-ack{i}" for m, n, i, *_ in MAYBE_UPDATE],
)
@pytest.mark.parametrize("state", [ProgressState.PROBE, ProgressState.REPLICATE])
def test_maybe_update(
    state: ProgressState,
    match: int,
    next: int,
    index: int,
    want: bool,
    want_match: int,
    want_next: int,
) -> None:
    pr = progress(state, match, next)
    pr.probe_sent = True
    assert pr.maybe_update(index) is want
    assert (pr.match, pr.next, pr.state) == (want_match, want_next, state)
    assert pr.probe_sent is (not want)  # an acknowledgement that moves match unpauses a probe


# (state, match, next, rejected prev_index, match hint) -> (moved, next after)
MAYBE_DECR = [
    # replicate: a rejection below match is stale; otherwise back to match + 1 (a rejection
    # of match itself: test_rejection_of_an_acknowledged_entry_moves_match_back)
    (ProgressState.REPLICATE, 5, 10, 4, 4, False, 10),
    (ProgressState.REPLICATE, 5, 10, 9, 9, True, 6),
    (ProgressState.REPLICATE, 5, 10, 9, 2, True, 6),  # the hint is ignored in replicate
    # probe: only the answer to the latest probe (rejected == next - 1) counts
    (ProgressState.PROBE, 0, 10, 9, 9, True, 9),  # plain decrement
    (ProgressState.PROBE, 0, 10, 9, 3, True, 4),  # the hint skips ahead
    (ProgressState.PROBE, 0, 10, 9, 20, True, 9),  # never above the rejected index
    (ProgressState.PROBE, 5, 10, 9, 2, True, 6),  # never below match + 1
    (ProgressState.PROBE, 0, 10, 5, 4, False, 10),  # stale: for an older probe
    (ProgressState.PROBE, 0, 10, 10, 4, False, 10),
    (ProgressState.PROBE, 0, 1, 0, 0, True, 1),
]


@pytest.mark.parametrize(
    ("state", "match", "next", "rejected", "hint", "want", "want_next"),
    MAYBE_DECR,
    ids=[f"{s.value}-m{m}n{n}-rej{r}-hint{h}" for s, m, n, r, h, *_ in MAYBE_DECR],
)
def test_maybe_decr_to(
    state: ProgressState,
    match: int,
    next: int,
    rejected: int,
    hint: int,
    want: bool,
    want_next: int,
) -> None:
    pr = progress(state, match, next)
    pr.probe_sent = True
    assert pr.maybe_decr_to(rejected, hint) is want
    assert (pr.match, pr.next, pr.state) == (match, want_next, state)
    if state is ProgressState.PROBE:
        assert pr.probe_sent is (not want)


# -------------------------------------------------------------------------------------------
# Pausing and sending
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "probe_sent", "inflight", "want"),
    [
        (ProgressState.PROBE, False, 0, False),
        (ProgressState.PROBE, True, 0, True),
        (ProgressState.REPLICATE, False, 0, False),
        (ProgressState.REPLICATE, True, 0, False),  # probe_sent means nothing here
        (ProgressState.REPLICATE, False, 1, False),
        (ProgressState.REPLICATE, False, 2, True),  # window of 2 is full
        (ProgressState.SNAPSHOT, False, 0, True),
        (ProgressState.SNAPSHOT, True, 0, True),
    ],
)
def test_is_paused(state: ProgressState, probe_sent: bool, inflight: int, want: bool) -> None:
    pr = progress(state, 0, 1, max_inflight=2)
    pr.probe_sent = probe_sent
    for k in range(inflight):
        pr.inflights.add(k + 1, 1)
    assert pr.is_paused() is want


def test_sent_entries_in_replicate_advances_next_and_fills_window() -> None:
    pr = progress(ProgressState.REPLICATE, 3, 4, max_inflight=2)
    pr.sent_entries(2, 200)
    assert (pr.next, pr.inflights.count(), pr.is_paused()) == (6, 1, False)
    pr.sent_entries(0, 0)  # an empty append (commit only) takes no room
    assert (pr.next, pr.inflights.count()) == (6, 1)
    pr.sent_entries(1, 100)
    assert (pr.next, pr.inflights.count(), pr.is_paused()) == (7, 2, True)
    assert pr.maybe_update(5)
    pr.inflights.free_le(5)
    assert (pr.match, pr.next, pr.inflights.count(), pr.is_paused()) == (5, 7, 1, False)


def test_sent_entries_in_probe_pauses_until_answered() -> None:
    pr = progress(ProgressState.PROBE, 0, 4)
    pr.sent_entries(3, 300)
    assert (pr.next, pr.probe_sent, pr.is_paused(), pr.inflights.count()) == (4, True, True, 0)
    assert pr.maybe_update(6)
    assert (pr.next, pr.probe_sent, pr.is_paused()) == (7, False, False)
    pr.sent_entries(0, 0)  # even an empty probe pauses
    assert pr.is_paused()


def test_sent_entries_in_snapshot_changes_nothing() -> None:
    pr = progress(ProgressState.SNAPSHOT, 0, 4)
    pr.sent_entries(2, 10)
    assert (pr.next, pr.inflights.count(), pr.is_paused()) == (4, 0, True)


# -------------------------------------------------------------------------------------------
# Inflights
# -------------------------------------------------------------------------------------------


def test_inflights_count_limit() -> None:
    inf = Inflights(3)
    for index in (2, 4, 6):
        assert not inf.full()
        inf.add(index, 10)
    assert (inf.count(), inf.full()) == (3, True)
    inf.free_le(3)
    assert (inf.count(), inf.full()) == (2, False)
    inf.free_le(1)  # nothing at or below 1 left
    assert inf.count() == 2
    inf.free_le(6)
    assert (inf.count(), inf.full()) == (0, False)


def test_inflights_byte_limit() -> None:
    inf = Inflights(10, max_bytes=100)
    inf.add(1, 60)
    assert not inf.full()
    inf.add(2, 40)
    assert inf.full()  # exactly at the byte limit
    inf.free_le(1)
    assert not inf.full()
    inf.add(3, 500)  # one oversized message may go; then the window is full
    assert inf.full()
    inf.reset()
    assert (inf.count(), inf.full()) == (0, False)


@settings(max_examples=200)
@given(
    st.integers(1, 5),
    st.none() | st.integers(1, 300),
    st.lists(st.tuples(st.booleans(), st.integers(0, 120)), max_size=30),
)
def test_inflights_match_list_model(
    max_count: int, max_bytes: int | None, ops: list[tuple[bool, int]]
) -> None:
    """add (only when not full, as the leader does) and free_le against a plain list."""
    inf = Inflights(max_count, max_bytes)
    model: list[tuple[int, int]] = []
    last = 0
    for is_add, value in ops:
        if is_add:
            if inf.full():
                continue
            last += 1 + value % 3
            inf.add(last, value)
            model.append((last, value))
        else:
            model = [(i, s) for i, s in model if i > value % (last + 2)]
            inf.free_le(value % (last + 2))
        total = sum(s for _, s in model)
        assert inf.count() == len(model)
        assert inf.full() is (
            len(model) >= max_count or (max_bytes is not None and total >= max_bytes)
        )


@pytest.mark.parametrize("state", [ProgressState.REPLICATE, ProgressState.PROBE])
@pytest.mark.parametrize(("hint", "want_next"), [(0, 1), (2, 3), (4, 4)])
def test_a_follower_refusing_what_it_acknowledged_is_asked_again_then_found_lost(
    state: ProgressState, hint: int, want_next: int
) -> None:
    """Reference: Raft §5.3 (nextIndex backs off until the logs match). A follower that refuses
    the entry at its ``match`` lost what it acknowledged (a wiped or restored disk), or the
    answer is stale: the leader asks one entry lower, claiming one entry less meanwhile. A
    second refusal confirms the loss: ``match`` is forgotten, the loss counted, and probing
    starts from the hint."""
    pr = progress(state, 5, 6 if state is ProgressState.PROBE else 10)
    assert pr.maybe_decr_to(5, hint)
    assert (pr.match, pr.next, pr.state, pr.lost_entries) == (4, 5, ProgressState.PROBE, 0)
    assert not pr.maybe_decr_to(5, hint)  # a stale copy of the first refusal confirms nothing
    assert pr.maybe_decr_to(4, hint)
    assert (pr.match, pr.next, pr.lost_entries) == (0, want_next, 1)


def test_a_stale_refusal_of_an_acknowledged_entry_is_not_a_loss() -> None:
    """Reference: Raft §5.3. The follower acknowledges again when asked one entry lower: its
    earlier refusal was stale, nothing is counted and ``match`` is back."""
    pr = progress(ProgressState.REPLICATE, 5, 10)
    assert pr.maybe_decr_to(5, 4)
    assert pr.maybe_update(7)
    assert (pr.match, pr.lost_entries, pr.loss_check) == (7, 0, None)
