"""Prometheus metrics of real example servers (``--metrics HOST:PORT``, docs/metrics.md): a
3-node hashmap cluster written to with the hashmap command line and scraped over HTTP, and a
bad scraper that costs only its own connection. Every wait is bounded; every process is
killed when the test ends."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftpy.transport.address import free_port
from tests.examples.test_examples_process import leader_of
from tests.processhelpers import ProcessCluster, run_cli, wait_until


def scrape(port: int) -> dict[str, float]:
    """Sample name with its labels -> value, from ``http://127.0.0.1:port/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@pytest.mark.process
def test_a_hashmap_cluster_serves_metrics_that_follow_its_writes(tmp_path: Path) -> None:
    mports = {i: free_port() for i in (1, 2, 3)}
    with ProcessCluster(
        "hashmap", 3, tmp_path, node_args=lambda i: ["--metrics", f"127.0.0.1:{mports[i]}"]
    ) as cluster:
        cluster.start_all()
        leader = leader_of(cluster, timeout=30)
        before = scrape(mports[leader])
        for k in range(3):
            done = run_cli("hashmap", "put", f"k{k}", f'"v{k}"', *cluster.addresses, timeout=60)
            assert done.returncode == 0, done.stderr
        # The answer came from the leader once the entry was applied there; another leader
        # may have taken over meanwhile on a loaded machine, so read the one that leads now.
        leader = leader_of(cluster, timeout=30)
        after = scrape(mports[leader])
        assert after["raftpy_server_is_leader"] == 1
        assert after["raftpy_server_leader_changes_seen_total"] >= 1
        campaigns = [v for k, v in after.items() if k.startswith("raftpy_server_elections_total")]
        assert sum(campaigns) >= 1  # it campaigned at least once to lead
        assert (
            after["raftpy_server_proposals_committed_total"]
            >= before["raftpy_server_proposals_committed_total"] + 3
        )
        assert after["raftpy_server_proposals_applied_total"] >= 3
        assert after["raftpy_server_entries_applied_total"] >= 3
        assert after["raftpy_disk_wal_syncs_total"] > 0
        assert after["raftpy_disk_wal_fsync_duration_seconds_count"] > 0
        assert after["raftpy_disk_wal_write_duration_seconds_count"] > 0
        assert after["raftpy_server_proposal_duration_seconds_count"] >= 3
        followers = [i for i in (1, 2, 3) if i != leader]
        for f in followers:
            assert after[f"raftpy_network_peer_sent_bytes_total{{To={f}}}"] > 0
            assert after[f"raftpy_network_peer_received_messages_total{{From={f}}}"] > 0
        wait_until(
            lambda: all(
                scrape(mports[leader]).get(
                    f"raftpy_network_peer_round_trip_time_seconds_count{{To={f}}}", 0
                )
                > 0
                for f in followers
            ),
            30,
            "round trips to both followers",
        )
        # Every write went through one leader's client service; all three were answered ok.
        ok = sum(
            scrape(mports[i]).get("raftpy_client_requests_total{op=propose,outcome=ok}", 0)
            for i in (1, 2, 3)
        )
        assert ok >= 3
        follower = scrape(mports[followers[0]])
        assert follower["raftpy_server_is_leader"] == 0
        assert follower["raftpy_server_entries_applied_total"] >= 3
        assert follower["raftpy_event_loop_lag_seconds_count"] >= 1


@pytest.mark.process
def test_a_bad_scraper_costs_only_its_connection(tmp_path: Path) -> None:
    mport = free_port()
    with ProcessCluster(
        "hashmap", 1, tmp_path, node_args=lambda i: ["--metrics", f"127.0.0.1:{mport}"]
    ) as cluster:
        cluster.start_all()
        wait_until(lambda: _answers(mport), 30, "the metrics port to answer")
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400 ")
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 431 ")
        assert scrape(mport)["raftpy_server_running"] == 1
        assert run_cli("hashmap", "put", "k", '"v"', *cluster.addresses).returncode == 0
        assert cluster.procs[1].poll() is None


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


@pytest.mark.process
def test_a_bad_metrics_address_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(
        "hashmap", "server", "1", "1", "127.0.0.1:7001", "--metrics", "localhost", timeout=30
    )
    assert done.returncode == 2
    assert "error: bad --metrics: metrics_address: address 'localhost'" in done.stderr
