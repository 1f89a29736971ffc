"""Role history with reasons (raftpy.node.leadership), leader changes and elections counted,
and the status fields an older node does not send.

The history is pinned with a fake clock; a live in-process cluster then checks what its
nodes record through a leader transfer and a leader cut off from the others (check quorum).
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from raftpy.node.leadership import LeadershipEvent, LeadershipHistory
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus, decode_status
from tests.nodehelpers import LocalNetwork, make_cluster, running, wait_for, wait_leader


def test_history_keeps_the_last_events_oldest_first() -> None:
    stats = NodeStats()
    now = [1000.0]
    history = LeadershipHistory(stats, size=3, clock=lambda: now[0])
    history.observe("follower", None, 0, "start")
    for term in range(1, 5):
        now[0] += 1
        history.observe("candidate", None, term, "election timeout")
    assert [e.term for e in history.events()] == [2, 3, 4]
    assert history.events()[-1] == LeadershipEvent(
        time=1004.0, term=4, role="candidate", leader=None, reason="election timeout"
    )


def test_leader_changes_count_as_etcd_counts_them() -> None:
    stats = NodeStats()
    history = LeadershipHistory(stats)
    history.observe("follower", None, 0, "start")
    assert stats.leader_changes == 0
    history.observe("follower", 2, 1, "higher term")
    history.observe("follower", 2, 1, "higher term")  # the same leader: no change
    assert stats.leader_changes == 1
    history.observe("pre-candidate", None, 1, "election timeout")
    history.observe("follower", 2, 1, "leader found")  # lost and found again: counts
    history.observe("leader", 1, 2, "election timeout")
    assert stats.leader_changes == 3


def test_size_is_checked() -> None:
    with pytest.raises(ValueError, match="size"):
        LeadershipHistory(NodeStats(), size=0)


def test_a_status_from_an_older_node_decodes_with_defaults() -> None:
    """Every field added for operators has a default: a node that does not send them is read
    as healthy, with no history, no transfers, no error, and peers without the new columns."""
    peer = {"address": "a:1", "match": 3, "next": 4, "state": "replicate", "lag": 0}
    old = {
        "id": 1,
        "address": "a:1",
        "running": True,
        "role": "leader",
        "term": 2,
        "leader": 1,
        "leader_address": "a:1",
        "commit": 3,
        "applied": 3,
        "last_index": 3,
        "first_index": 1,
        "snapshot": None,
        "members": [1],
        "peers": {1: {**peer, "active": False}},
        "disk_full": False,
        "failed": None,
        "stats": {"proposals": 1},
    }
    st = decode_status(msgspec.msgpack.encode(old))
    assert st.elections == () and st.transfers == ()
    assert st.last_error is None and st.last_error_time is None
    assert st.healthy and st.unhealthy_reason is None
    assert st.stats.leader_changes == 0 and st.stats.elections == {}
    p = (st.peers or {})[1]
    assert p.inflight == 0 and p.last_contact is None and p.lag_seconds is None


def _reasons(status: NodeStatus) -> list[tuple[str, str]]:
    return [(e.role, e.reason) for e in status.elections]


def test_a_cluster_records_elections_transfers_and_check_quorum() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            leader = await wait_leader(nodes)
            st = leader.status()
            assert st.elections[0].reason == "start" and st.elections[0].role == "follower"
            assert st.elections[-1].role == "leader"
            assert st.elections[-1].reason == "election timeout"
            assert st.elections[-1].leader == leader.node_id
            assert st.stats.elections.get("election timeout", 0) >= 1
            assert st.stats.leader_changes >= 1
            times = [e.time for e in st.elections]
            assert times == sorted(times)

            # A transfer: the new leader says why it campaigned, the old one why it stepped down.
            target = next(n for n in nodes if n is not leader)
            await leader.transfer_leadership(target.node_id, timeout=5)
            await wait_for(lambda: target.status().role == "leader")
            new = target.status()
            assert new.elections[-1].reason == "leader transfer"
            assert new.stats.elections.get("leader transfer") == 1
            await wait_for(lambda: leader.status().leader == target.node_id)
            old = leader.status()
            assert ("follower", "higher term") in _reasons(old)
            assert old.elections[-1].leader == target.node_id

            # Cut the leader off: it steps down on check quorum.
            net.isolated.add(target.node_id)
            await wait_for(lambda: target.status().role != "leader", timeout=5)
            assert ("follower", "check quorum") in _reasons(target.status())

    asyncio.run(main())


def test_a_copy_of_the_stats_keeps_its_election_counts() -> None:
    stats = NodeStats(elections={"election timeout": 1})
    copy = stats.copy()
    stats.elections["election timeout"] += 1
    assert copy.elections == {"election timeout": 1}
