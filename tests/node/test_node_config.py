"""NodeConfig composes the core's RaftConfig: each consensus setting is written once (in
``NodeConfig.raft``), the node's defaults are the ones it always had, and validation lives in
the config objects."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from raftpy import NodeConfig as ExportedNodeConfig
from raftpy.core.config import RaftConfig
from raftpy.node import NODE_RAFT_DEFAULTS, RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.session_records import RECORD_OVERHEAD
from raftpy.transport.tls import TlsConfig
from tests.nodehelpers import FAST, KV, LocalNetwork, wait_for

OLD_NODE_DEFAULTS: dict[str, object] = {
    "cluster_id": "raftpy",
    "max_frame_bytes": 64 << 20,
    "peer_queue_bytes": 64 << 20,
    "request_timeout": 5.0,
    "max_batch": 4096,
    "segment_size": 64 << 20,
    "snapshot_entries": 10_000,
    "snapshot_bytes": 64 << 20,
    "snapshot_chunk_bytes": 1 << 20,
    "snapshot_window_bytes": 4 << 20,
    "exit_on_fatal": True,
    "unsafe_stale_reads": False,
}
"""NodeConfig's runtime defaults before it held a RaftConfig (copied from that version)."""

TIMING: dict[str, object] = {"tick_seconds": 0.02}
"""The tick, 0.05 s in that version: shortened so that a killed leader is replaced in about
0.3 s (elections after 0.2-0.4 s instead of 0.5-1 s, Raft §9.3)."""

RESOURCE_LIMITS: dict[str, object] = {
    "max_client_frame_bytes": None,
    "max_peer_connections": 64,
    "max_client_connections": 1024,
    "peer_idle_timeout": 300.0,
    "client_idle_timeout": 300.0,
}
"""The limits on what connections may cost, added later with these defaults."""

OLD_CONSENSUS_DEFAULTS: dict[str, object] = {
    "election_ticks": 10,
    "heartbeat_ticks": 1,
    "pre_vote": True,
    "check_quorum": True,
    "max_msg_bytes": 256 << 10,
    "max_inflight_msgs": 256,
    "max_inflight_bytes": 2 << 20,
    "max_uncommitted_bytes": 64 << 20,
}
"""The consensus settings NodeConfig used to repeat, with the node's own defaults."""


def test_every_runtime_default_is_unchanged() -> None:
    config = NodeConfig()
    assert {name: getattr(config, name) for name in OLD_NODE_DEFAULTS} == OLD_NODE_DEFAULTS
    assert {name: getattr(config, name) for name in RESOURCE_LIMITS} == RESOURCE_LIMITS
    assert {name: getattr(config, name) for name in TIMING} == TIMING
    names = {f.name for f in dataclasses.fields(NodeConfig)}
    # Nothing else came or went; the security settings came later, off by default, and the
    # joining deadline with membership changes, the session limits with client sessions, the
    # metrics address (off by default) with metrics, the snapshot ratio with pacing snapshots
    # by their size (Thesis §5.1.2).
    assert names == {
        *OLD_NODE_DEFAULTS,
        *RESOURCE_LIMITS,
        *TIMING,
        "raft",
        "tls",
        "insecure",
        "join_timeout",
        "session_timeout",
        "max_sessions",
        "max_session_results",
        "max_clock_drift",
        "max_fsync_p99",
        "metrics_address",
        "snapshot_ratio",
    }
    assert config.snapshot_ratio == 1.0
    assert config.metrics_address is None
    assert config.tls is None and config.insecure is False
    assert config.join_timeout == 300.0
    assert config.max_clock_drift == 0.1
    assert (config.session_timeout, config.max_sessions, config.max_session_results) == (
        120.0,
        10_000,
        1_000,
    )


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("session_timeout", 0.0),
        ("session_timeout", -1.0),
        ("session_timeout", 31 * 24 * 3600.0),
        ("snapshot_ratio", -0.1),
        ("snapshot_ratio", math.nan),
        ("snapshot_ratio", math.inf),
        ("max_sessions", 0),
        ("max_sessions", 10_000_001),
        ("max_session_results", 0),
        ("max_session_results", 1_000_001),
    ],
)
def test_session_limits_are_validated(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(NodeConfig(), **{field: bad}).validate()


def test_lease_ticks_are_derived_from_the_election_timeout_less_a_tick_and_the_drift() -> None:
    """raftpy.core.lease: E - 1 - ceil(drift / tick); 0 without CheckQuorum or room."""
    assert NodeConfig().lease_ticks() == 10 - 1 - 5  # 20 ms ticks, 0.1 s drift: 80 ms
    assert NodeConfig().raft_config(7).lease_ticks == 4
    assert NodeConfig(tick_seconds=0.05).lease_ticks() == 10 - 1 - 2
    assert NodeConfig(max_clock_drift=0).lease_ticks() == 9
    assert NodeConfig(max_clock_drift=0.01).lease_ticks() == 8
    no_quorum = dataclasses.replace(NODE_RAFT_DEFAULTS, check_quorum=False)
    assert NodeConfig(raft=no_quorum).lease_ticks() == 0
    assert NodeConfig(max_clock_drift=0.45).lease_ticks() == 0
    assert NodeConfig(max_clock_drift=5.0).lease_ticks() == 0
    shorter = dataclasses.replace(NODE_RAFT_DEFAULTS, lease_ticks=3)
    assert NodeConfig(raft=shorter).lease_ticks() == 3  # a hand-set lease only shortens it
    NodeConfig(max_clock_drift=5.0).validate()  # valid: the lease is just off


@pytest.mark.parametrize("drift", [-0.01, float("inf"), float("nan")])
def test_max_clock_drift_must_be_finite_and_not_negative(drift: float) -> None:
    with pytest.raises(ValueError, match="max_clock_drift"):
        NodeConfig(max_clock_drift=drift).validate()


def test_tls_and_insecure_exclude_each_other() -> None:
    tls = TlsConfig("cert.pem", "key.pem", "ca.pem")
    with pytest.raises(ValueError, match="exclude each other"):
        NodeConfig(tls=tls, insecure=True).validate()
    NodeConfig(tls=tls).validate()  # the files are read when the node starts


def test_every_consensus_default_is_unchanged() -> None:
    raft = NodeConfig().raft
    assert raft is NODE_RAFT_DEFAULTS
    assert {name: getattr(raft, name) for name in OLD_CONSENSUS_DEFAULTS} == (
        OLD_CONSENSUS_DEFAULTS
    )


def test_the_core_gets_what_it_got_before() -> None:
    """What the node hands its core is what the old ``raft_config(node_id)`` built: the
    repeated settings, and the core's defaults for the rest."""
    old = RaftConfig(id=3, **OLD_CONSENSUS_DEFAULTS)  # type: ignore[arg-type]
    # ... and the lease the node derives (lease reads came later; 4 ticks of 20 ms).
    assert NodeConfig().raft_config(3) == dataclasses.replace(old, lease_ticks=4)
    assert NodeConfig().raft_config(3).max_apply_bytes == RaftConfig(id=3).max_apply_bytes


def test_each_consensus_setting_is_written_once() -> None:
    node_fields = {f.name for f in dataclasses.fields(NodeConfig)}
    raft_fields = {f.name for f in dataclasses.fields(RaftConfig)}
    assert node_fields & raft_fields == set()
    assert ExportedNodeConfig is NodeConfig


def test_the_node_fills_in_its_id() -> None:
    config = NodeConfig(raft=dataclasses.replace(NODE_RAFT_DEFAULTS, election_ticks=20))
    assert config.raft.id == 0  # a placeholder, shared by every member
    assert config.raft_config(7) == dataclasses.replace(config.raft, id=7, lease_ticks=14)
    assert FAST.raft_config(7).lease_ticks == 0  # 0.1 s elections leave no room for 0.1 s

    async def main() -> None:
        net = LocalNetwork()
        peers = {5: "local:5"}
        node = RaftNode(5, "local:5", peers, KV(), None, FAST, transport_factory=net.factory(5))
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=2)
            raft = node._raft
            assert raft is not None and raft.id == 5
            # The core takes the session record around a command of max_entry_bytes.
            expected = FAST.raft_config(5)
            big = expected.max_entry_bytes + RECORD_OVERHEAD
            assert raft.config == dataclasses.replace(expected, max_entry_bytes=big)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            NodeConfig(raft=dataclasses.replace(NODE_RAFT_DEFAULTS, heartbeat_ticks=10)),
            r"election_ticks \(10\) must exceed heartbeat_ticks \(10\)",
            id="core-election-vs-heartbeat",
        ),
        pytest.param(
            NodeConfig(raft=dataclasses.replace(NODE_RAFT_DEFAULTS, max_inflight_bytes=0)),
            "max_inflight_bytes must be >= 1 or None, got 0",
            id="core-inflight-bytes",
        ),
        pytest.param(
            NodeConfig(tick_seconds=0), "tick_seconds must be > 0, got 0", id="tick-seconds"
        ),
        pytest.param(
            NodeConfig(segment_size=4095),
            "segment_size 4095 is below the minimum of 4096 bytes",
            id="segment-size",
        ),
        pytest.param(
            NodeConfig(peer_idle_timeout=0.4),
            r"peer_idle_timeout \(0.4 s\) must be well above the longest election timeout",
            id="peer-idle-vs-election",
        ),
        pytest.param(
            NodeConfig(max_client_connections=0),
            "max_client_connections must be >= 1, got 0",
            id="client-cap",
        ),
        pytest.param(
            NodeConfig(max_frame_bytes=1 << 20),
            r"snapshot_chunk_bytes \(1048576\) must fit in a frame \(max_frame_bytes 1048576\)",
            id="chunk-vs-frame",
        ),
    ],
)
def test_validation_lives_in_the_configs(config: NodeConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.validate()
    with pytest.raises(ValueError, match=message):  # the node refuses it before anything else
        RaftNode(1, "local:1", {1: "local:1"}, KV(), None, config)


def test_the_smallest_segment_is_accepted() -> None:
    NodeConfig(segment_size=4096).validate()


def test_the_client_frame_limit_follows_the_largest_command() -> None:
    assert NodeConfig().client_frame_limit() == (16 << 20) + (64 << 10)
    bigger = NodeConfig(raft=dataclasses.replace(NODE_RAFT_DEFAULTS, max_entry_bytes=32 << 20))
    assert bigger.client_frame_limit() == (32 << 20) + (64 << 10)
    assert NodeConfig(max_client_frame_bytes=1 << 20).client_frame_limit() == 1 << 20
    assert NodeConfig(max_frame_bytes=8 << 20).client_frame_limit() == 8 << 20
