"""The simulator's driver treats a message the core rejects as a bug: simulated peers run the
real core and cannot forge, so a rejection means a core sent it (the fuzz must report it)."""

from __future__ import annotations

import pytest

from raftpy.core.messages import Heartbeat
from raftpy.errors import InvariantViolation
from raftpy.testing.sim import SimCluster


def test_a_rejected_message_is_an_invariant_violation_in_the_simulator() -> None:
    sim = SimCluster(3, seed=1)
    sim.run_for(2.0)
    leader = sim.leader()
    assert leader is not None
    node = sim._nodes[leader]
    assert node.raft is not None
    forged = Heartbeat(node.raft.term, (leader + 1) % 3, leader, 0)
    with pytest.raises(InvariantViolation, match="rejected a message a core sent"):
        node.deliver(forged)
