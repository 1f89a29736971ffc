"""Targets: where a client's next request goes."""

from __future__ import annotations

from raftpy.client.targets import Targets


def test_an_unreachable_leader_hint_does_not_stop_the_rotation() -> None:
    """A follower names a leader this client cannot reach: after each failure there, the call
    moves on through the other addresses instead of returning to the follower that keeps
    naming it (found by the Jepsen harness: every write failed while the leader was reachable
    at the client's second address)."""
    t = Targets(["a", "b", "c"])
    tried = []
    address = t.first()
    for _ in range(6):
        tried.append(address)
        if address != "hint":
            t.learn_leader("hint")  # every node redirects to the unreachable hint
            address = t.first()
            continue
        t.forget_leader(address)
        address = t.next_after(address)
    assert {"a", "b", "c"} <= set(tried)


def test_rotation_covers_every_address() -> None:
    t = Targets(["a", "b", "c"])
    seen = [t.first()]
    for _ in range(2):
        seen.append(t.next_after(seen[-1]))
    assert seen == ["a", "b", "c"]
