"""NodeConfig: the runtime settings of a RaftNode, validated. The consensus settings are the
core's own :class:`~raftpy.core.config.RaftConfig`, held in ``NodeConfig.raft``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from raftpy.core.config import RaftConfig
from raftpy.node.metrics_server import check_metrics_address
from raftpy.node.session_records import MAX_RESULTS_LIMIT, MAX_SESSIONS_LIMIT, MAX_TIMEOUT_MS
from raftpy.storage.wal import MIN_SEGMENT_SIZE
from raftpy.transport.codec import DEFAULT_MAX_FRAME_BYTES
from raftpy.transport.protocol import MIN_FRAME_BYTES
from raftpy.transport.tcp import (
    CLIENT_IDLE_TIMEOUT,
    MAX_CLIENT_CONNECTIONS,
    MAX_PEER_CONNECTIONS,
    PEER_IDLE_TIMEOUT,
)
from raftpy.transport.tls import TlsConfig

CLIENT_REQUEST_OVERHEAD = 64 << 10
"""Room for a client request around its command (its id, op, consistency and timeout), in
the default client frame limit."""

NODE_RAFT_DEFAULTS = RaftConfig(id=0, max_msg_bytes=256 << 10, max_inflight_bytes=2 << 20)
"""The consensus settings a node uses unless told otherwise: the core's defaults with smaller
appends (256 KiB of entries per AppendEntries) and a per-follower byte window (2 MiB
unacknowledged). The byte window bounds the work one acknowledgement can trigger: catching up
a follower that was down streams at most that much per round trip instead of encoding (and
queueing) hundreds of megabytes in one go, which would stall the event loop past the election
timeout. To change one setting, start from these:
``NodeConfig(raft=dataclasses.replace(NODE_RAFT_DEFAULTS, election_ticks=20))``.

``id`` is a placeholder: the node fills in its own id (:meth:`NodeConfig.raft_config`)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Settings for a :class:`~raftpy.node.RaftNode`.

    Time: the node ticks every ``tick_seconds``; a follower starts an election after a random
    ``[raft.election_ticks, 2 * raft.election_ticks)`` ticks without hearing from a leader; the
    leader sends heartbeats every ``raft.heartbeat_ticks``. The defaults (20 ms ticks,
    elections after 0.2-0.4 s, heartbeats every 20 ms) suit a LAN or loopback: Raft §5.6 and
    §9.3 of the extended Raft paper suggest election timeouts of 150-300 ms when the broadcast
    time is far below them, and a killed leader is then replaced in about 0.3 s (the failover
    figures of ``python -m benchmarks cluster``). The leader's heartbeats must never stall for
    an election timeout (a blocked event loop, an fsync that takes 0.2 s), or its followers
    elect another: on a slower disk or network, raise ``tick_seconds`` or
    ``raft.election_ticks``.

    - ``cluster_id``: peers and clients from another cluster are refused at the handshake.
    - ``raft``: the consensus core's settings (:class:`~raftpy.core.config.RaftConfig`:
      election and heartbeat ticks, PreVote, CheckQuorum, message and inflight limits,
      back-pressure), by default :data:`NODE_RAFT_DEFAULTS`. One ``raft`` serves every member:
      its ``id`` is ignored, the node sets its own (:meth:`raft_config`).
    - ``max_frame_bytes``: the largest frame accepted on a peer connection.
    - ``max_client_frame_bytes``: the largest frame accepted on a client connection (announced
      to clients in the handshake, so they refuse a larger request before sending it).
      ``None``: the largest command (``raft.max_entry_bytes``) plus 64 KiB for the request
      around it, at most ``max_frame_bytes``.
    - ``max_peer_connections`` / ``max_client_connections``: accepted connections of each kind
      at once; more are refused at the handshake, with a reason, and counted. At start the
      node lowers the client cap (with a warning) when the descriptor limit (``ulimit -n``)
      would not leave room for storage (docs/resource-limits.md).
    - ``peer_idle_timeout`` / ``client_idle_timeout``: seconds after which an accepted peer
      connection that carried no frame, or a client connection that sent nothing and waits
      for no answer, is closed (``None``: never). The peer timeout must be well above the
      election timeout: a leader's followers hear from it every heartbeat.
    - ``peer_queue_bytes``: bytes queued per peer before further messages to it are dropped
      (Raft retries them; memory never grows without bound).
    - ``request_timeout``: how long the node works on a client request that gave no timeout.
    - ``max_batch``: proposals folded into one append (one sync, one AppendEntries per peer).
    - ``segment_size``: the size of a write-ahead log file, at least 4096 bytes.
    - ``snapshot_entries`` / ``snapshot_bytes``: take a snapshot once this many entries (or
      command bytes) were applied since the last one (``None`` turns that trigger off; both
      ``None``: only operators take snapshots). The log is then compacted to the previous
      snapshot, so about one interval of entries stays for followers that lag a little.
    - ``snapshot_ratio``: besides, wait until the log written since the last snapshot is at
      least this many times that snapshot's size (Ongaro's thesis §5.1.2 sets the interval
      by the previous snapshot's size). A large state is then snapshotted less often, so the
      work of snapshots per write stays the same whatever the state's size: at most this
      ratio's inverse in bytes of snapshot per byte of log. The thesis finds a snapshot
      worthwhile once it is smaller than the log it replaces (many times smaller to make its
      disk bandwidth small); the default, 1, is the least ratio at which it is never larger,
      and keeps what a restart replays to about one state's size of log. (At 0.1 a 100 MB
      state was rewritten every 10 MB of log, and those writes slowed the log's fsyncs.) A
      larger ratio writes less but keeps more log on disk (up to twice this ratio times the
      state's size, the log being compacted to the previous snapshot), and a restart replays
      up to this ratio times the state's size in log. ``None``: the entry and byte triggers
      alone.
    - ``snapshot_chunk_bytes`` / ``snapshot_window_bytes``: a snapshot goes to a follower in
      chunks of this size, with at most this many bytes unacknowledged (bounds the leader's
      memory whatever the snapshot's size).
    - ``exit_on_fatal``: end the process with status 70 (``FATAL_EXIT_STATUS``) on a storage
      error the node cannot survive (an fsync failure: the kernel may have dropped the dirty
      pages) or an internal error in its loop, as it must in production so that a supervisor
      restarts it. Tests that run nodes in their own process turn it off to observe the failure
      (the node then refuses every request).
    - ``tls``: serve and dial with mutual TLS (:class:`~raftpy.transport.tls.TlsConfig`:
      this node's certificate, which names its node id, its key and the cluster CA). ``None``
      serves plain TCP: anyone who can reach the port and knows ``cluster_id`` can then act
      as a member (see README.md, Security), so plain TCP is allowed on a loopback address
      only, unless ``insecure`` is set.
    - ``insecure``: allow plain TCP on an address other machines can reach.
    - ``join_timeout``: how long a joining node keeps asking the cluster to add it (and
      promote it) before it gives up and says so (README.md, "Changing members").
    - ``session_timeout``: seconds of cluster time a client session lives without any request
      or keep-alive before it expires (README.md, "Sessions").
    - ``max_sessions``: sessions the cluster keeps; opening one more evicts the least
      recently active.
    - ``max_session_results``: results a session keeps until its client acknowledges them;
      further writes in that session are refused (ProposalDropped, retryable) meanwhile.
    - ``max_clock_drift``: how many seconds a member's clock may run ahead of the leader's
      over one election timeout (default 0.1). Lease reads (``consistency="lease"``) count
      on it: the leader's lease is the followers' election timeout, less a tick and less this
      drift (:meth:`lease_ticks`; the derivation is in :mod:`raftpy.core.lease`). A drift
      that leaves no whole tick (with the default and 20 ms ticks, an election timeout of
      0.12 s or less) turns the lease off: lease reads are then served as linearizable
      reads. With the defaults the lease is 10 - 1 - 5 = 4 ticks (80 ms), renewed by every
      heartbeat round (each tick).
    - ``max_fsync_p99``: seconds. A node whose fsync p99 over its last 100 syncs exceeds this,
      or whose disk is full, is unhealthy: it hands its leadership to a healthy voter and does
      not campaign until healthy again (docs/health.md). ``None`` turns the fsync check off
      (a full disk still counts).
    - ``metrics_address``: ``"host:port"`` where the node serves Prometheus metrics at
      ``/metrics`` while it runs (port 0: any free port, read back from
      ``RaftNode.metrics_address``); ``None`` serves none. Needs the optional package
      ``prometheus-client`` (``pip install 'raftpy[metrics]'``; docs/metrics.md).
    - ``unsafe_stale_reads``: TEST ONLY. A node that believes it leads answers linearizable
      reads from local state without confirming leadership, which breaks linearizability
      under partitions. It exists to prove that fault harnesses catch such a bug.
    """

    cluster_id: str = "raftpy"
    tick_seconds: float = 0.02
    raft: RaftConfig = NODE_RAFT_DEFAULTS
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_client_frame_bytes: int | None = None
    max_peer_connections: int = MAX_PEER_CONNECTIONS
    max_client_connections: int = MAX_CLIENT_CONNECTIONS
    peer_idle_timeout: float | None = PEER_IDLE_TIMEOUT
    client_idle_timeout: float | None = CLIENT_IDLE_TIMEOUT
    peer_queue_bytes: int = 64 << 20
    request_timeout: float = 5.0
    max_batch: int = 4096
    segment_size: int = 64 << 20
    snapshot_entries: int | None = 10_000
    snapshot_bytes: int | None = 64 << 20
    snapshot_ratio: float | None = 1.0
    snapshot_chunk_bytes: int = 1 << 20
    snapshot_window_bytes: int = 4 << 20
    exit_on_fatal: bool = True
    tls: TlsConfig | None = None
    insecure: bool = False
    join_timeout: float = 300.0
    max_clock_drift: float = 0.1
    unsafe_stale_reads: bool = False
    session_timeout: float = 120.0
    max_sessions: int = 10_000
    max_session_results: int = 1_000
    max_fsync_p99: float | None = 1.0
    metrics_address: str | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting (the consensus settings are
        checked by :meth:`RaftConfig.validate <raftpy.core.config.RaftConfig.validate>`)."""
        if not self.cluster_id:
            raise ValueError("cluster_id must not be empty")
        if self.tls is not None and self.insecure:
            raise ValueError("insecure (plain TCP) and tls exclude each other: choose one")
        if self.tick_seconds <= 0:
            raise ValueError(f"tick_seconds must be > 0, got {self.tick_seconds}")
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0, got {self.request_timeout}")
        if not self.join_timeout > 0:
            raise ValueError(f"join_timeout must be > 0, got {self.join_timeout}")
        if not 0 <= self.max_clock_drift < math.inf:
            raise ValueError(f"max_clock_drift must be a finite >= 0, got {self.max_clock_drift}")
        if self.max_fsync_p99 is not None and not 0 < self.max_fsync_p99 < math.inf:
            raise ValueError(
                f"max_fsync_p99 must be a finite number of seconds > 0 or None, "
                f"got {self.max_fsync_p99}"
            )
        self._validate_connections()
        self._validate_sessions()
        if self.metrics_address is not None:
            check_metrics_address(self.metrics_address)
        if self.segment_size < MIN_SEGMENT_SIZE:
            # The write-ahead log's own minimum: refused here, before a node is built.
            raise ValueError(
                f"segment_size {self.segment_size} is below the minimum of {MIN_SEGMENT_SIZE} bytes"
            )
        for name in ("snapshot_entries", "snapshot_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.snapshot_ratio is not None and not 0 <= self.snapshot_ratio < math.inf:
            raise ValueError(
                f"snapshot_ratio must be a finite number >= 0 or None, got {self.snapshot_ratio}"
            )
        if not 1 <= self.snapshot_chunk_bytes <= self.snapshot_window_bytes:
            raise ValueError(
                f"need 1 <= snapshot_chunk_bytes ({self.snapshot_chunk_bytes}) <= "
                f"snapshot_window_bytes ({self.snapshot_window_bytes})"
            )
        if self.snapshot_chunk_bytes + 4096 > self.max_frame_bytes:
            raise ValueError(
                f"snapshot_chunk_bytes ({self.snapshot_chunk_bytes}) must fit in a frame "
                f"(max_frame_bytes {self.max_frame_bytes})"
            )
        self.raft.validate()

    def _validate_sessions(self) -> None:
        """The client session limits (they travel in the log: README.md, "Sessions")."""
        if not 0.001 <= self.session_timeout <= MAX_TIMEOUT_MS / 1000:
            raise ValueError(
                f"session_timeout must be between 0.001 and {MAX_TIMEOUT_MS // 1000} s, "
                f"got {self.session_timeout}"
            )
        if not 1 <= self.max_sessions <= MAX_SESSIONS_LIMIT:
            raise ValueError(
                f"max_sessions must be between 1 and {MAX_SESSIONS_LIMIT}, got {self.max_sessions}"
            )
        if not 1 <= self.max_session_results <= MAX_RESULTS_LIMIT:
            raise ValueError(
                f"max_session_results must be between 1 and {MAX_RESULTS_LIMIT}, "
                f"got {self.max_session_results}"
            )

    def _validate_connections(self) -> None:
        """The network settings: frame limits, queues, connection caps and idle timeouts."""
        for name in ("max_frame_bytes", "max_client_frame_bytes"):
            value = getattr(self, name)
            if value is not None and value < MIN_FRAME_BYTES:
                raise ValueError(f"{name} must be >= {MIN_FRAME_BYTES}, got {value}")
        for name in (
            "peer_queue_bytes",
            "max_batch",
            "max_peer_connections",
            "max_client_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("peer_idle_timeout", "client_idle_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        election = 2 * self.raft.election_ticks * self.tick_seconds
        if self.peer_idle_timeout is not None and self.peer_idle_timeout <= election:
            raise ValueError(
                f"peer_idle_timeout ({self.peer_idle_timeout} s) must be well above the longest "
                f"election timeout ({election} s)"
            )

    def client_frame_limit(self) -> int:
        """The largest frame a client may send: :attr:`max_client_frame_bytes`, or by default
        the largest command plus room for the request around it (at most the peer limit)."""
        if self.max_client_frame_bytes is not None:
            return min(self.max_client_frame_bytes, self.max_frame_bytes)
        return min(self.raft.max_entry_bytes + CLIENT_REQUEST_OVERHEAD, self.max_frame_bytes)

    def lease_ticks(self) -> int:
        """How many ticks a leader's lease lasts (Thesis §6.4.1; 0: no lease reads):
        ``election_ticks - 1 - ceil(max_clock_drift / tick_seconds)``, the followers' shortest
        vote refusal after a heartbeat less the drift, in whole ticks (the derivation is in
        :mod:`raftpy.core.lease`). A ``raft.lease_ticks`` set by hand may only shorten it;
        without CheckQuorum there is no lease."""
        if not self.raft.check_quorum:
            return 0
        # The small epsilon keeps 0.1 / 0.05 from rounding up to 3 ticks.
        drift_ticks = math.ceil(self.max_clock_drift / self.tick_seconds - 1e-9)
        derived = max(0, self.raft.election_ticks - 1 - drift_ticks)
        return min(derived, self.raft.lease_ticks) if self.raft.lease_ticks else derived

    def raft_config(self, node_id: int) -> RaftConfig:
        """The core's settings for node ``node_id``: :attr:`raft` with its id filled in and
        ``lease_ticks`` derived (:meth:`lease_ticks`)."""
        return replace(self.raft, id=node_id, lease_ticks=self.lease_ticks())
