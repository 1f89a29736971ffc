"""Prometheus metrics of a node: the collector's exact output for a known state, a live
in-process cluster scraped over HTTP, what a bad scraper costs (its connection only), the
settings' errors, and the client service's count of answers by op and outcome."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftpy import ConfigError, NotLeaderError
from raftpy.core.messages import Heartbeat, HeartbeatResponse
from raftpy.node import RaftNode
from raftpy.node import metrics_server as metrics_server_module
from raftpy.node.config import NodeConfig
from raftpy.node.latency import Histogram
from raftpy.node.loop_lag import LoopLag
from raftpy.node.metrics import registry_for
from raftpy.node.metrics_server import MAX_CONNECTIONS, MAX_REQUEST_BYTES
from raftpy.node.peer_rtt import PeerRtt
from raftpy.node.service import ClientService
from raftpy.node.stats import NodeStats, SnapshotStats
from raftpy.node.status import NodeStatus, PeerReplication, SnapshotStatus, TransferStatus
from raftpy.transport.address import free_port
from raftpy.transport.protocol import ClientOp, ClientRequest, ResponseStatus
from raftpy.transport.stats import PeerTraffic, TransportStats
from tests.node.test_service import Conn, FakeNode
from tests.nodehelpers import (
    FAST,
    KV,
    LocalNetwork,
    leader_status,
    make_cluster,
    running,
    set_cmd,
    wait_for,
)


def observed(*seconds: float) -> Histogram:
    h = Histogram()
    for x in seconds:
        h.observe(x)
    return h


KNOWN = leader_status(
    applied=38,
    snapshot=SnapshotStatus(
        index=10, term=2, taken=1, installed=0, sent=2, bytes_sent=4096, bytes_received=0
    ),
    learners=(4,),
    peers={
        1: PeerReplication(
            address="127.0.0.1:7001", match=42, next=43, state="replicate", lag=0, active=True
        ),
        2: PeerReplication(
            address="127.0.0.1:7002",
            match=5,
            next=6,
            state="snapshot",
            lag=37,
            active=False,
            inflight=3,
            last_contact=2.5,
            lag_seconds=1.25,
        ),
    },
    transfers=(
        TransferStatus(
            peer=2, direction="send", index=10, bytes_done=1024, size=4096, started=1.0e9
        ),
    ),
    healthy=False,
    last_error="disk full",
    last_error_time=1.7e9,
    sessions=2,
    stats=NodeStats(
        proposals=40,
        batches=7,
        syncs=9,
        reads=3,
        applied=40,
        rejected_messages=1,
        leader_changes=4,
        elections={"election timeout": 2, "leader transfer": 1},
        fsync=observed(0.00015, 0.0007, 9.0),
        wal_append=observed(0.00005),
        proposal=observed(0.002, 0.002),
        snapshots=SnapshotStats(taken=1, sent=2, bytes_sent=4096, chunks_refused=5),
        transport=TransportStats(
            bytes_sent=9000, bytes_received=8000, messages_sent=120, messages_received=118, dials=2
        ),
    ),
)


def scrape_text(node: RaftNode) -> dict[str, float]:
    """The node's metrics rendered and parsed back: sample name with labels -> value."""
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(node, *MEASURED.get(node, (None, None)))).decode()
    return samples(text)


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


MEASURED: dict[RaftNode, tuple[LoopLag, PeerRtt]] = {}
"""The loop lag and round trips of :func:`known_node`'s nodes (measured while metrics are
served: here, set by hand)."""


def known_node() -> RaftNode:
    """A node (not started) whose status is :data:`KNOWN`, with answers, loop lag, round
    trips and per-peer traffic set by hand."""
    node = RaftNode(1, "local:1", {1: "local:1"}, KV(), None, FAST)
    node.status = lambda: KNOWN  # type: ignore[method-assign]
    node._service.answered.update(
        {
            (ClientOp.PROPOSE, ResponseStatus.OK): 30,
            (ClientOp.PROPOSE, ResponseStatus.NOT_LEADER): 4,
            (ClientOp.PROPOSE, ResponseStatus.TIMEOUT): 1,
            (ClientOp.QUERY, ResponseStatus.OK): 7,
        }
    )
    lag = LoopLag()
    lag.histogram.observe(0.0002)  # the bucket up to 0.2 ms
    lag.histogram.observe(0.003)  # up to 3.2 ms
    rtt = PeerRtt()
    rtt.on_sent([Heartbeat(3, 1, 2, 41, round=9)], now=10.0)
    rtt.on_received([HeartbeatResponse(3, 2, 1, round=8)], now=10.001)  # stale round
    rtt.on_received([HeartbeatResponse(3, 2, 1, round=9)], now=10.00025)
    MEASURED[node] = (lag, rtt)
    node._transport = SimpleNamespace(  # type: ignore[assignment]
        peer_traffic={2: PeerTraffic(bytes_sent=700, bytes_received=600, messages_sent=7)}
    )
    return node


def test_the_collector_exports_a_known_state_exactly() -> None:
    got = scrape_text(known_node())
    expected = {
        "raftpy_server_id": 1,
        "raftpy_server_running": 1,
        "raftpy_server_failed": 0,
        "raftpy_server_disk_full": 0,
        "raftpy_server_has_leader": 1,
        "raftpy_server_is_leader": 1,
        "raftpy_server_is_learner": 0,
        "raftpy_server_term": 3,
        "raftpy_server_members{kind=voter}": 3,
        "raftpy_server_members{kind=learner}": 1,
        "raftpy_server_sessions": 2,
        "raftpy_server_proposals_committed_total": 41,
        "raftpy_server_proposals_applied_total": 38,
        "raftpy_server_apply_lag_entries": 3,
        "raftpy_server_log_last_index": 42,
        "raftpy_server_log_first_index": 11,
        "raftpy_server_proposals_pending": 0,
        "raftpy_server_proposals_failed_total": 5,
        "raftpy_server_proposals_appended_total": 40,
        "raftpy_server_append_batches_total": 7,
        "raftpy_server_entries_applied_total": 40,
        "raftpy_server_reads_total": 3,
        "raftpy_server_rejected_messages_total": 1,
        "raftpy_disk_wal_syncs_total": 9,
        "raftpy_snapshot_taken_total": 1,
        "raftpy_snapshot_installed_total": 0,
        "raftpy_snapshot_sent_total": 2,
        "raftpy_snapshot_sent_bytes_total": 4096,
        "raftpy_snapshot_received_bytes_total": 0,
        "raftpy_snapshot_chunks_refused_total": 5,
        "raftpy_snapshot_index": 10,
        "raftpy_server_peer_match_index{To=2}": 5,
        "raftpy_server_peer_lag_entries{To=2}": 37,
        "raftpy_server_peer_active{To=2}": 0,
        "raftpy_server_peer_inflight_appends{To=2}": 3,
        "raftpy_server_peer_lag_seconds{To=2}": 1.25,
        "raftpy_server_peer_last_contact_seconds{To=2}": 2.5,
        "raftpy_server_healthy": 0,
        "raftpy_server_last_error_timestamp_seconds": 1.7e9,
        "raftpy_server_leader_changes_seen_total": 4,
        "raftpy_server_elections_total{reason=election timeout}": 2,
        "raftpy_server_elections_total{reason=leader transfer}": 1,
        "raftpy_snapshot_transfer_bytes{direction=send,peer=2}": 1024,
        "raftpy_snapshot_transfer_size_bytes{direction=send,peer=2}": 4096,
        "raftpy_network_sent_bytes_total": 9000,
        "raftpy_network_received_bytes_total": 8000,
        "raftpy_network_peer_messages_sent_total": 120,
        "raftpy_network_peer_messages_received_total": 118,
        "raftpy_network_peer_messages_dropped_total{reason=no_route}": 0,
        "raftpy_network_peer_messages_dropped_total{reason=queue_full}": 0,
        "raftpy_network_peer_messages_dropped_total{reason=too_large}": 0,
        "raftpy_transport_dials_total": 2,
        "raftpy_network_peer_sent_bytes_total{To=2}": 700,
        "raftpy_network_peer_received_bytes_total{From=2}": 600,
        "raftpy_network_peer_sent_messages_total{To=2}": 7,
        "raftpy_network_peer_received_messages_total{From=2}": 0,
        "raftpy_client_requests_total{op=propose,outcome=ok}": 30,
        "raftpy_client_requests_total{op=propose,outcome=not-leader}": 4,
        "raftpy_client_requests_total{op=propose,outcome=timeout}": 1,
        "raftpy_client_requests_total{op=query,outcome=ok}": 7,
        "raftpy_event_loop_lag_seconds_count": 2,
        "raftpy_event_loop_lag_seconds_bucket{le=0.0001}": 0,
        "raftpy_event_loop_lag_seconds_bucket{le=0.0002}": 1,
        "raftpy_event_loop_lag_seconds_bucket{le=0.0016}": 1,
        "raftpy_event_loop_lag_seconds_bucket{le=0.0032}": 2,
        "raftpy_event_loop_lag_seconds_bucket{le=+Inf}": 2,
        "raftpy_network_peer_round_trip_time_seconds_count{To=2}": 1,
        "raftpy_disk_wal_fsync_duration_seconds_bucket{le=0.0001}": 0,
        "raftpy_disk_wal_fsync_duration_seconds_bucket{le=0.0002}": 1,
        "raftpy_disk_wal_fsync_duration_seconds_bucket{le=0.0008}": 2,
        "raftpy_disk_wal_fsync_duration_seconds_bucket{le=6.5536}": 2,
        "raftpy_disk_wal_fsync_duration_seconds_bucket{le=+Inf}": 3,
        "raftpy_disk_wal_fsync_duration_seconds_count": 3,
        "raftpy_disk_wal_write_duration_seconds_bucket{le=0.0001}": 1,
        "raftpy_disk_wal_write_duration_seconds_count": 1,
        "raftpy_server_proposal_duration_seconds_bucket{le=0.0016}": 0,
        "raftpy_server_proposal_duration_seconds_bucket{le=0.0032}": 2,
        "raftpy_server_proposal_duration_seconds_count": 2,
        "raftpy_network_peer_round_trip_time_seconds_bucket{To=2,le=0.0002}": 0,
        "raftpy_network_peer_round_trip_time_seconds_bucket{To=2,le=0.0004}": 1,
    }
    assert {k: got.get(k) for k in expected} == expected
    assert not [k for k in got if "{To=1}" in k]  # the leader itself is no peer
    assert got["raftpy_event_loop_lag_seconds_sum"] == pytest.approx(0.0032)
    assert got["raftpy_disk_wal_fsync_duration_seconds_sum"] == pytest.approx(9.00085)
    assert got["raftpy_network_peer_round_trip_time_seconds_sum{To=2}"] == pytest.approx(0.00025)
    # Every transport counter is there, under its own name.
    transport = {k for k in got if k.startswith("raftpy_transport_")}
    assert len(transport) == len(TransportStats.__dataclass_fields__) - 7


def test_a_node_not_started_exports_no_consensus_state() -> None:
    node = RaftNode(1, "local:1", {1: "local:1"}, KV(), None, FAST)
    got = scrape_text(node)
    assert got["raftpy_server_running"] == 0
    assert "raftpy_server_term" not in got and "raftpy_server_has_leader" not in got
    assert "raftpy_event_loop_lag_seconds_count" not in got  # measured only while served


def get(address: str, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scrape(node: RaftNode) -> dict[str, float]:
    assert node.metrics_address is not None
    status, text = await asyncio.to_thread(get, node.metrics_address)
    assert status == 200
    return samples(text)


METRICS = replace(FAST, metrics_address="127.0.0.1:0")


def test_a_live_cluster_is_scraped_over_http() -> None:
    asyncio.run(_a_live_cluster_is_scraped_over_http())


async def _a_live_cluster_is_scraped_over_http() -> None:
    async with running(make_cluster(LocalNetwork(), 3, METRICS)) as cluster:
        await live_cluster(cluster)


async def live_cluster(cluster: list[RaftNode]) -> None:
    await wait_for(lambda: any(n.role.value == "leader" for n in cluster))
    leader = next(n for n in cluster if n.role.value == "leader")
    before = await scrape(leader)
    for i in range(5):
        await leader.propose(set_cmd(f"k{i}", "v"))
    await wait_for(lambda: all(n.status().applied == leader.status().applied for n in cluster))
    after = await scrape(leader)
    assert after["raftpy_server_is_leader"] == 1 and after["raftpy_server_has_leader"] == 1
    assert after["raftpy_server_proposals_appended_total"] - before.get(
        "raftpy_server_proposals_appended_total", 0
    ) == pytest.approx(5)
    assert (
        after["raftpy_server_proposals_applied_total"]
        >= before["raftpy_server_proposals_applied_total"] + 5
    )
    for peer in (n.node_id for n in cluster if n is not leader):
        await wait_for(lambda p=peer: leader._rtt is not None and p in leader._rtt.by_peer)
    after = await scrape(leader)
    for peer in (n.node_id for n in cluster if n is not leader):
        assert after[f"raftpy_network_peer_round_trip_time_seconds_count{{To={peer}}}"] >= 1
    follower = next(n for n in cluster if n is not leader)
    seen = await scrape(follower)
    assert seen["raftpy_server_is_leader"] == 0 and seen["raftpy_server_has_leader"] == 1
    await wait_for(
        lambda: follower._metrics is not None and follower._metrics.loop_lag.last is not None
    )
    assert (await scrape(follower))["raftpy_event_loop_lag_seconds_count"] >= 1


def test_each_node_serves_its_own_port_and_stop_closes_it() -> None:
    asyncio.run(_each_node_serves_its_own_port_and_stop_closes_it())


async def _each_node_serves_its_own_port_and_stop_closes_it() -> None:
    async with running(make_cluster(LocalNetwork(), 3, METRICS)) as cluster:
        await own_ports(cluster)


async def own_ports(cluster: list[RaftNode]) -> None:
    addresses = {n.metrics_address for n in cluster}
    assert None not in addresses and len(addresses) == 3
    ids = [(await scrape(n))["raftpy_server_id"] for n in cluster]
    assert ids == [n.node_id for n in cluster]
    node = cluster[0]
    address = node.metrics_address
    assert address is not None
    await node.stop()
    assert node.metrics_address is None
    with pytest.raises(OSError):
        await asyncio.to_thread(get, address)


async def raw(address: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers before closing."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    except ConnectionResetError:
        return b""  # closed unread: nothing answered
    finally:
        writer.close()


def test_a_bad_request_costs_only_its_connection() -> None:
    asyncio.run(_a_bad_request_costs_only_its_connection())


async def _a_bad_request_costs_only_its_connection() -> None:
    async with running(make_cluster(LocalNetwork(), 1, METRICS)) as cluster:
        await bad_requests(cluster)


async def bad_requests(cluster: list[RaftNode]) -> None:
    node = cluster[0]
    address = node.metrics_address
    assert address is not None
    assert (await raw(address, b"\x00\xff garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    for size in (2 * MAX_REQUEST_BYTES, 1 << 20):
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * size + b"\r\n\r\n"
        assert (await raw(address, huge)).startswith(b"HTTP/1.1 431 ")
    assert (await raw(address, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
    assert await asyncio.to_thread(get, address, "/other") == (404, "metrics are at /metrics\n")
    # A scraper that connects and says nothing holds no one up, and neither do connections
    # over the cap: they are closed at once.
    host, port = address.rsplit(":", 1)
    silent = [await asyncio.open_connection(host, int(port)) for _ in range(MAX_CONNECTIONS)]
    try:
        await wait_for(lambda: len(node._metrics.server._writers) == MAX_CONNECTIONS)  # type: ignore[union-attr]
        assert await raw(address, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
    finally:
        for _, w in silent:
            w.close()
    await wait_for(lambda: not node._metrics.server._writers)  # type: ignore[union-attr]
    status, text = await asyncio.to_thread(get, address)
    assert status == 200 and "raftpy_server_term" in text
    # A failure while rendering answers 500 and harms nothing.
    real = node.status
    node.status = broken_status  # type: ignore[method-assign]
    try:
        assert await asyncio.to_thread(get, address) == (500, "rendering metrics failed\n")
    finally:
        node.status = real  # type: ignore[method-assign]
    assert (await asyncio.to_thread(get, address))[0] == 200
    assert node.status().running


def broken_status() -> NodeStatus:
    raise RuntimeError("planted")


def test_a_bad_metrics_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="metrics_address: address 'nope'"):
        NodeConfig(metrics_address="nope").validate()
    with pytest.raises(ValueError, match="port out of range"):
        NodeConfig(metrics_address="127.0.0.1:70000").validate()
    NodeConfig(metrics_address="127.0.0.1:0").validate()  # any free port


def test_metrics_without_prometheus_client_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_server_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'raftpy\[metrics\]'"):
        NodeConfig(metrics_address="127.0.0.1:9100").validate()


def test_a_metrics_port_in_use_fails_start_and_releases_the_node() -> None:
    asyncio.run(_a_metrics_port_in_use_fails_start_and_releases_the_node())


async def _a_metrics_port_in_use_fails_start_and_releases_the_node() -> None:
    port = free_port()
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    try:
        config = replace(FAST, metrics_address=f"127.0.0.1:{port}")
        net = LocalNetwork()
        node = make_cluster(net, 1, config)[0]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await node.start()
        assert not node.status().running and 1 not in net.endpoints  # transport closed
    finally:
        blocker.close()


def test_the_service_counts_every_answer_by_op_and_outcome() -> None:
    asyncio.run(_the_service_counts_every_answer_by_op_and_outcome())


async def _the_service_counts_every_answer_by_op_and_outcome() -> None:
    node = FakeNode()
    service = ClientService(node)
    conn = Conn()
    service.handle(conn, ClientRequest(1, ClientOp.PROPOSE, b"x"))
    service.handle(conn, ClientRequest(4, ClientOp.PROPOSE, b"z"))
    node.futures[0].set_result(b"ok")
    node.futures[1].set_result(b"ok")
    node.refuse = NotLeaderError(2, "127.0.0.1:7002")
    service.handle(conn, ClientRequest(2, ClientOp.PROPOSE, b"y"))
    service.handle(conn, ClientRequest(3, ClientOp.STATUS, b""))
    await asyncio.sleep(0)
    assert [a.status for a in conn.answers] == [
        ResponseStatus.NOT_LEADER,
        ResponseStatus.OK,
        ResponseStatus.OK,
        ResponseStatus.OK,
    ]
    assert service.answered == {
        (ClientOp.PROPOSE, ResponseStatus.OK): 2,
        (ClientOp.PROPOSE, ResponseStatus.NOT_LEADER): 1,
        (ClientOp.STATUS, ResponseStatus.OK): 1,
    }


# -- docs/metrics.md and docs/alerts.yml --------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def exported_families() -> set[str]:
    """Every family name the collector exports for :data:`KNOWN` (counters with ``_total``)."""
    names = set()
    node = known_node()
    for family in registry_for(node, *MEASURED[node]).collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_exported_metric_is_documented() -> None:
    text = (DOCS / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(raftpy_[a-z_]+)", text, flags=re.M))
    missing = {
        n for n in exported_families() if n not in documented and "raftpy_transport_" not in n
    }
    assert not missing, f"not in docs/metrics.md: {sorted(missing)}"
    # The transport's other counters are documented together, by their TransportStats name.
    assert "`raftpy_transport_<name>_total`" in text


def alert_rules(text: str) -> list[dict[str, str]]:
    """The rules of docs/alerts.yml, read with a structural check of the YAML subset it uses
    (PyYAML is not a dependency): ``key: value`` lines, nested by two spaces, one list of
    rules that each start with ``- alert:``."""
    rules: list[dict[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert "\t" not in line, f"line {number}: a tab"
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"line {number}: indented by {indent}"
        key, sep, value = line.strip().removeprefix("- ").partition(":")
        assert sep, f"line {number}: not 'key: value'"
        value = value.strip()
        if value.startswith('"'):
            assert value.endswith('"') and len(value) > 1, f"line {number}: unbalanced quotes"
        if line.lstrip().startswith("- alert:"):
            rules.append({})
        if rules and indent >= 6:
            rules[-1][key] = value.strip('"')
    return rules


def test_the_alerts_are_well_formed_with_etcds_thresholds() -> None:
    text = (DOCS / "alerts.yml").read_text()
    assert text.startswith("#") and "\ngroups:\n  - name: raftpy\n    rules:\n" in text
    rules = alert_rules(text)
    by_name = {r["alert"]: r for r in rules}
    assert len(by_name) == len(rules) >= 8
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "severity", "summary", "description"}
        assert rule["severity"] in ("warning", "critical")
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    fsync = by_name["RaftpyHighFsyncDurations"]["expr"]
    assert "raftpy_disk_wal_fsync_duration_seconds_bucket" in fsync and fsync.endswith("> 0.5")
    changes = by_name["RaftpyHighNumberOfLeaderChanges"]["expr"]
    assert changes == "increase(raftpy_server_leader_changes_seen_total[15m]) >= 4"
    rtt = by_name["RaftpyMemberCommunicationSlow"]["expr"]
    assert "raftpy_network_peer_round_trip_time_seconds_bucket" in rtt and rtt.endswith("> 0.15")
    assert by_name["RaftpyNoLeader"]["expr"] == "raftpy_server_has_leader == 0"
    # Every metric an alert reads is one the nodes export (the leader changes once counted).
    documented = set(re.findall(r"`(raftpy_[a-z_]+)", (DOCS / "metrics.md").read_text()))
    for rule in rules:
        for name in re.findall(r"raftpy_[a-z_]+", rule["expr"]):
            assert name.removesuffix("_bucket") in documented, (rule["alert"], name)


def test_the_alerts_parse_as_yaml() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: checked structurally")
    doc = yaml.safe_load((DOCS / "alerts.yml").read_text())
    rules = doc["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        r["alert"] for r in alert_rules((DOCS / "alerts.yml").read_text())
    ]


def test_round_trips_pair_each_heartbeat_with_its_own_answer() -> None:
    rtt = PeerRtt()
    # Answers slower than the heartbeat interval: three rounds out before the first answer.
    for k, now in enumerate((0.0, 0.05, 0.1), start=1):
        rtt.on_sent([Heartbeat(1, 1, 2, 0, round=k), Heartbeat(1, 1, 3, 0, round=k)], now)
    rtt.on_received([HeartbeatResponse(1, 2, 1, round=1)], now=0.2)
    rtt.on_received([HeartbeatResponse(1, 2, 1, round=3)], now=0.22)  # round 2's was lost
    rtt.on_received([HeartbeatResponse(1, 2, 1, round=2)], now=0.23)  # too late: forgotten
    h = rtt.by_peer[2]
    assert h.count == 2 and h.sum == pytest.approx(0.2 + 0.12)
    assert 3 not in rtt.by_peer  # never answered
    # Without a lease heartbeats carry no round: the oldest unanswered one counts.
    plain = PeerRtt()
    plain.on_sent([Heartbeat(1, 1, 2, 0)], 1.0)
    plain.on_sent([Heartbeat(1, 1, 2, 0)], 1.05)
    plain.on_received([HeartbeatResponse(1, 2, 1)], now=1.08)
    plain.on_received([HeartbeatResponse(1, 2, 1)], now=1.09)  # nothing left to pair with
    assert plain.by_peer[2].count == 1 and plain.by_peer[2].sum == pytest.approx(0.08)
