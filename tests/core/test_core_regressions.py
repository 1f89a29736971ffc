"""Regression tests for core bugs found by the process-level harnesses."""

from __future__ import annotations

from raftpy.core.messages import AppendEntries
from tests.corehelpers import Network


def test_readindex_heartbeats_do_not_resend_probes_to_a_lagging_follower() -> None:
    """Found by the Jepsen harness: every ReadIndex heartbeat answered by a lagging follower
    re-sent it a full probe (up to max_msg_bytes), so a read-heavy load buried the leader's
    event loop when a follower came back. A paused flow may resume at most once per periodic
    heartbeat. Reference: Thesis §6.4 (ReadIndex) and §10.2 (flow control)."""
    net = Network.of((1, 2, 3), check_quorum=True, pre_vote=True)
    leader = net.elect(1)
    net.drop_kind(AppendEntries, dst=3)  # node 3 falls behind; its heartbeats still arrive
    for k in range(50):
        net.propose(1, b"x%d" % k)
    net.tick(1)  # one periodic heartbeat round: node 3 may be probed once
    before = len([m for m in net.dropped if isinstance(m, AppendEntries) and m.dst == 3])
    for k in range(100):
        leader.read_index(b"read-%d" % k)
        net.stabilize()
    after = len([m for m in net.dropped if isinstance(m, AppendEntries) and m.dst == 3])
    assert after - before <= 1, f"{after - before} appends to the lagging follower for 100 reads"
    assert len(net.nodes[1].raft.log.entries(1, 100)) >= 51
