"""A node's Prometheus metrics (docs/metrics.md lists every one): :class:`NodeCollector` reads
them from the node at scrape time only, and :class:`NodeMetrics` is what a node runs while it
serves them.

Nothing here runs on the node's hot paths: the node counts in plain ints
(:class:`~raftpy.node.stats.NodeStats`, the transport's counters, the client service's answers)
as it always does, and a scrape turns one :meth:`~raftpy.node.RaftNode.status` picture of them
into metric families. Names follow etcd's where etcd has the same metric
(``etcd_disk_wal_fsync_duration_seconds`` is ``raftpy_disk_wal_fsync_duration_seconds``), so
dashboards and alerts written for etcd read the same way; etcd's
``proposals_committed_total`` and ``proposals_applied_total`` are, as in etcd, gauges holding
the commit and applied indexes.

prometheus-client is an optional extra (``pip install 'raftpy[metrics]'``): this module imports
it, so the node imports this module only when ``NodeConfig.metrics_address`` is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from raftpy.node.latency import Histogram
from raftpy.node.loop_lag import LoopLag
from raftpy.node.metrics_server import MetricsServer
from raftpy.node.peer_rtt import PeerRtt
from raftpy.node.status import NodeStatus
from raftpy.transport.protocol import ClientOp, ResponseStatus
from raftpy.transport.stats import PeerTraffic

if TYPE_CHECKING:
    from raftpy.node.node import RaftNode


def histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    """``h`` as a Prometheus histogram (cumulative buckets, ``le`` labels, ``+Inf`` last)."""
    return HistogramMetricFamily(name, doc, buckets=_cumulative(h), sum_value=h.sum)


def _cumulative(h: Histogram) -> list[tuple[str, float]]:
    """Prometheus' buckets of ``h``: cumulative counts by upper bound, ``+Inf`` last."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        total += n
        buckets.append((_float_text(bound), float(total)))
    buckets.append(("+Inf", float(h.count)))
    return buckets


def _float_text(value: float) -> str:
    # repr keeps 0.0001 * 2**k exact and short ("0.0032"), as Prometheus' own clients do.
    return repr(float(value))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily, rows: Iterable[tuple[Sequence[str], float]]
) -> GaugeMetricFamily | CounterMetricFamily:
    for labels, value in rows:
        family.add_metric(list(labels), value)
    return family


class NodeMetrics:
    """What a node runs while it serves metrics: the HTTP server (on its own event loop,
    :mod:`raftpy.node.metrics_server`), the event-loop lag task and the round-trip counts,
    with a registry of its own (never the process-wide default one: two nodes in one process
    keep separate metrics)."""

    def __init__(self, node: RaftNode, address: str) -> None:
        self.rtt = PeerRtt()
        self.loop_lag = LoopLag()
        registry = registry_for(node, self.loop_lag, self.rtt)
        self.server = MetricsServer(address, lambda: generate_latest(registry), CONTENT_TYPE_LATEST)

    async def start(self) -> None:
        self.loop_lag.start()
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()
        await self.loop_lag.stop()

    @property
    def address(self) -> str | None:
        """The bound ``host:port`` while serving."""
        return self.server.address


class NodeCollector(Collector):
    """The metrics of ``node``, collected when Prometheus scrapes (never in between), with
    the loop lag and round trips measured while metrics are served."""

    def __init__(
        self, node: RaftNode, loop_lag: LoopLag | None = None, rtt: PeerRtt | None = None
    ) -> None:
        self._node = node
        self._loop_lag = loop_lag
        self._rtt = rtt

    def collect(self) -> Iterator[Metric]:
        node = self._node
        st = node.status()
        yield from _server(st)
        yield from _proposals(st, node)
        yield from _latency(st)
        yield from _snapshots(st)
        yield from _peers(st)
        yield from _network(st)
        yield from _peer_traffic(getattr(node._transport, "peer_traffic", None))
        rtt = self._rtt
        if rtt is not None and rtt.by_peer:
            yield _peer_histograms(
                "raftpy_network_peer_round_trip_time_seconds",
                "Round trips of the leader's heartbeats to each peer and back (docs/metrics.md).",
                "To",
                rtt.by_peer,
            )
        yield from _clients(node._service.answered)
        lag = self._loop_lag
        if lag is not None:
            yield histogram(
                "raftpy_event_loop_lag_seconds",
                "How late the node's event loop woke a periodic sleep: its saturation.",
                lag.histogram,
            )


def _server(st: NodeStatus) -> Iterator[Metric]:
    """Who the node is and what it believes: role, term, leader, membership."""
    yield _gauge("raftpy_server_id", "This node's id.", st.id)
    yield _gauge("raftpy_server_running", "1 while the node runs, 0 once stopped.", st.running)
    yield _gauge(
        "raftpy_server_failed",
        "1 once the node failed (a fatal storage error or a crash of its loop).",
        st.failed is not None,
    )
    yield _gauge(
        "raftpy_server_disk_full",
        "1 while the last sync failed for lack of space (proposals are refused).",
        st.disk_full,
    )
    yield _gauge(
        "raftpy_server_healthy",
        "1 while the node's disk lets it lead (fsync p99 and free space; docs/health.md).",
        st.healthy,
    )
    if st.last_error_time is not None:
        yield _gauge(
            "raftpy_server_last_error_timestamp_seconds",
            "When the node's latest warning-or-worse event happened (unix seconds).",
            st.last_error_time,
        )
    if st.term is None:
        return  # not started: no consensus state yet
    yield _gauge(
        "raftpy_server_has_leader",
        "1 when the node knows a leader, 0 otherwise.",
        st.leader is not None,
    )
    yield _gauge("raftpy_server_is_leader", "1 when this node leads.", st.role == "leader")
    yield _gauge(
        "raftpy_server_is_learner",
        "1 when this node is a learner (receives the log, never votes).",
        st.id in (st.learners or ()),
    )
    yield _gauge("raftpy_server_term", "The node's current term.", st.term)
    members = _labelled(
        GaugeMetricFamily(
            "raftpy_server_members", "Members of the cluster, by kind.", labels=["kind"]
        ),
        [(("voter",), len(st.members or ())), (("learner",), len(st.learners or ()))],
    )
    yield members
    yield _counter(
        "raftpy_server_leader_changes_seen",
        "Times this node saw the leader change to a new leader.",
        st.stats.leader_changes,
    )
    yield _labelled(
        CounterMetricFamily(
            "raftpy_server_elections", "Campaigns this node started, by reason.", labels=["reason"]
        ),
        sorted(((reason,), n) for reason, n in st.stats.elections.items()),
    )
    if st.sessions is not None:
        yield _gauge("raftpy_server_sessions", "Client sessions open.", st.sessions)


def _proposals(st: NodeStatus, node: RaftNode) -> Iterator[Metric]:
    """The log and the work through it: commit, apply, appends, reads."""
    stats = st.stats
    if st.commit is not None and st.applied is not None:
        yield _gauge(
            "raftpy_server_proposals_committed_total",
            "The commit index: entries known committed (a gauge, as etcd's).",
            st.commit,
        )
        yield _gauge(
            "raftpy_server_proposals_applied_total",
            "The applied index: entries applied to the state machine (a gauge, as etcd's).",
            st.applied,
        )
        yield _gauge(
            "raftpy_server_apply_lag_entries",
            "Committed entries not yet applied: commit index - applied index.",
            st.commit - st.applied,
        )
    if st.last_index is not None and st.first_index is not None:
        yield _gauge("raftpy_server_log_last_index", "The last index in the log.", st.last_index)
        yield _gauge(
            "raftpy_server_log_first_index",
            "The first index still in the log (earlier ones are in a snapshot).",
            st.first_index,
        )
    yield _gauge(
        "raftpy_server_proposals_pending",
        "Writes waiting for their outcome on this node (queued, or appended and not applied).",
        node._requests.pending_proposals,
    )
    failed = sum(
        n
        for (op, outcome), n in node._service.answered.items()
        if op is ClientOp.PROPOSE and outcome is not ResponseStatus.OK
    )
    yield _counter(
        "raftpy_server_proposals_failed",
        "Client writes answered with a failure (any outcome but ok).",
        failed,
    )
    yield _counter(
        "raftpy_server_proposals_appended",
        "Commands this node appended to its log as leader.",
        stats.proposals,
    )
    yield _counter(
        "raftpy_server_append_batches",
        "Appends of queued commands (one fsync and one AppendEntries per peer each).",
        stats.batches,
    )
    yield _counter(
        "raftpy_server_entries_applied",
        "Committed entries handed to the state machine since start.",
        stats.applied,
    )
    yield _counter(
        "raftpy_server_reads", "Linearizable reads answered after ReadIndex.", stats.reads
    )
    yield _counter(
        "raftpy_server_rejected_messages",
        "Peer messages rejected as impossible from a correct peer (sender disconnected).",
        stats.rejected_messages,
    )
    yield _counter(
        "raftpy_disk_wal_syncs",
        "Successful fsyncs of the log (one per group commit).",
        stats.syncs,
    )


_LATENCIES = (
    (
        "raftpy_disk_wal_fsync_duration_seconds",
        "Duration of each fsync of the log.",
    ),
    (
        "raftpy_disk_wal_write_duration_seconds",
        "Duration of each write of entries and hard state to the log (before fsync).",
    ),
    (
        "raftpy_server_proposal_duration_seconds",
        "A write's time from arrival at the leader's node to its answer.",
    ),
)


def _latency(st: NodeStatus) -> Iterator[Metric]:
    stats = st.stats
    for h, (name, doc) in zip(
        (stats.fsync, stats.wal_append, stats.proposal), _LATENCIES, strict=True
    ):
        yield histogram(name, doc, h)


def _snapshots(st: NodeStatus) -> Iterator[Metric]:
    s = st.stats.snapshots
    yield _counter("raftpy_snapshot_taken", "Snapshots this node wrote of its own state.", s.taken)
    yield _counter(
        "raftpy_snapshot_installed", "Snapshots received from a leader and installed.", s.installed
    )
    yield _counter("raftpy_snapshot_sent", "Snapshot transfers to followers started.", s.sent)
    yield _counter(
        "raftpy_snapshot_sent_bytes",
        "Snapshot bytes sent in chunks, resends included.",
        s.bytes_sent,
    )
    yield _counter(
        "raftpy_snapshot_received_bytes",
        "Snapshot bytes received in chunks, duplicates included.",
        s.bytes_received,
    )
    yield _counter(
        "raftpy_snapshot_chunks_refused",
        "Snapshot chunks refused unwritten (wrong leader or term, past the announced size).",
        s.chunks_refused,
    )
    if st.snapshot is not None:
        yield _gauge(
            "raftpy_snapshot_index", "The last index the newest snapshot covers.", st.snapshot.index
        )
    transfers = st.transfers
    if transfers:
        done = GaugeMetricFamily(
            "raftpy_snapshot_transfer_bytes",
            "Bytes moved so far by each snapshot transfer in progress.",
            labels=["peer", "direction"],
        )
        size = GaugeMetricFamily(
            "raftpy_snapshot_transfer_size_bytes",
            "The whole size of each snapshot transfer in progress.",
            labels=["peer", "direction"],
        )
        for t in transfers:
            done.add_metric([str(t.peer), t.direction], t.bytes_done)
            size.add_metric([str(t.peer), t.direction], t.size)
        yield done
        yield size


def _peers(st: NodeStatus) -> Iterator[Metric]:
    """The leader's view of each other member's replication (nothing on other nodes)."""
    # The other members only: the leader's own entry says nothing about replication.
    rows = sorted((peer, p) for peer, p in (st.peers or {}).items() if peer != st.id)
    if not rows:
        return
    match = GaugeMetricFamily(
        "raftpy_server_peer_match_index",
        "The leader's highest index known in each member's log.",
        labels=["To"],
    )
    lag = GaugeMetricFamily(
        "raftpy_server_peer_lag_entries",
        "Entries each member is behind the leader's log.",
        labels=["To"],
    )
    active = GaugeMetricFamily(
        "raftpy_server_peer_active",
        "1 when the member was heard from within the last election timeout.",
        labels=["To"],
    )
    inflight = GaugeMetricFamily(
        "raftpy_server_peer_inflight_appends",
        "AppendEntries sent to each member and not acknowledged yet.",
        labels=["To"],
    )
    seconds = GaugeMetricFamily(
        "raftpy_server_peer_lag_seconds",
        "Seconds since the leader appended the first entry each member lacks (0: caught up).",
        labels=["To"],
    )
    contact = GaugeMetricFamily(
        "raftpy_server_peer_last_contact_seconds",
        "Seconds since the leader last heard from each member.",
        labels=["To"],
    )
    for peer, p in rows:
        to = [str(peer)]
        match.add_metric(to, p.match)
        lag.add_metric(to, p.lag)
        active.add_metric(to, p.active)
        inflight.add_metric(to, p.inflight)
        if p.lag_seconds is not None:
            seconds.add_metric(to, p.lag_seconds)
        if p.last_contact is not None:
            contact.add_metric(to, p.last_contact)
    yield from (match, lag, active, inflight, seconds, contact)


def _network(st: NodeStatus) -> Iterator[Metric]:
    """The transport's counters: every connection together, peers and clients."""
    t = st.stats.transport
    if t is None:
        return
    yield _counter(
        "raftpy_network_sent_bytes",
        "Bytes sent on every connection (peers and clients).",
        t.bytes_sent,
    )
    yield _counter(
        "raftpy_network_received_bytes",
        "Bytes received on every connection (peers and clients).",
        t.bytes_received,
    )
    yield _counter(
        "raftpy_network_peer_messages_sent", "Peer messages handed to sockets.", t.messages_sent
    )
    yield _counter(
        "raftpy_network_peer_messages_received",
        "Peer messages received and handed to the node.",
        t.messages_received,
    )
    yield _labelled(
        CounterMetricFamily(
            "raftpy_network_peer_messages_dropped",
            "Peer messages dropped before sending, by reason.",
            labels=["reason"],
        ),
        [
            (("no_route",), t.dropped_no_route),
            (("queue_full",), t.dropped_queue_full),
            (("too_large",), t.dropped_too_large),
        ],
    )
    shown = {
        "bytes_sent",
        "bytes_received",
        "messages_sent",
        "messages_received",
        "dropped_no_route",
        "dropped_queue_full",
        "dropped_too_large",
    }
    for f in dataclasses.fields(t):
        if f.name not in shown:
            yield _counter(
                f"raftpy_transport_{f.name}",
                f"The transport's {f.name.replace('_', ' ')} counter (docs/metrics.md).",
                getattr(t, f.name),
            )


def _peer_traffic(traffic: dict[int, PeerTraffic] | None) -> Iterator[Metric]:
    """Peer frames to and from each peer (TCP transport only)."""
    if not traffic:
        return
    rows = sorted(traffic.items())
    for name, label, field, doc in (
        (
            "raftpy_network_peer_sent_bytes",
            "To",
            "bytes_sent",
            "Bytes of peer frames sent to each peer.",
        ),
        (
            "raftpy_network_peer_received_bytes",
            "From",
            "bytes_received",
            "Bytes of peer frames received from each peer.",
        ),
        (
            "raftpy_network_peer_sent_messages",
            "To",
            "messages_sent",
            "Peer messages sent to each peer.",
        ),
        (
            "raftpy_network_peer_received_messages",
            "From",
            "messages_received",
            "Peer messages received from each peer.",
        ),
    ):
        family = CounterMetricFamily(name, doc, labels=[label])
        for peer, t in rows:
            family.add_metric([str(peer)], getattr(t, field))
        yield family


def _peer_histograms(
    name: str, doc: str, label: str, by_peer: dict[int, Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for peer, h in sorted(by_peer.items()):
        family.add_metric([str(peer)], _cumulative(h), h.sum)
    return family


def _clients(answered: dict[tuple[ClientOp, ResponseStatus], int]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "raftpy_client_requests",
        "Client requests answered by this node, by op and outcome.",
        labels=["op", "outcome"],
    )
    for (op, outcome), n in sorted(
        answered.items(), key=lambda kv: (kv[0][0].name, kv[0][1].value)
    ):
        family.add_metric([op.name.lower(), outcome.value], n)
    yield family


def registry_for(
    node: RaftNode, loop_lag: LoopLag | None = None, rtt: PeerRtt | None = None
) -> CollectorRegistry:
    """A registry of its own holding ``node``'s collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, loop_lag, rtt))
    return registry
