"""What a node opens when it starts, from its configuration: its log, its snapshot store and
its default transport (:meth:`raftpy.node.RaftNode.start` wires them together).

Without a data dir, the log and the snapshot files live in memory (tests, demos); with one,
the log is a :class:`~raftpy.storage.wal.FileStorage` and snapshots sit in ``snapshots/``
beside it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence

from raftpy.core.messages import PeerMessage
from raftpy.node.config import NodeConfig
from raftpy.storage.base import LogStore
from raftpy.storage.fs import FileSystem, MemoryFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.peers import PeerIncarnations
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage
from raftpy.transport.base import ClientConnectionLike, Transport
from raftpy.transport.protocol import ClientRequest


def open_log(
    node_id: int,
    data_dir: str | None,
    voters: Sequence[int],
    addresses: Mapping[int, str],
    config: NodeConfig,
    fs: FileSystem | None = None,
) -> LogStore:
    """The node's log: recovered from ``data_dir`` (bootstrapped with ``voters`` when new), or
    in memory without one."""
    if data_dir is None:
        return MemoryStorage(voters, addresses=addresses)
    return FileStorage(
        data_dir,
        voters,
        fs=fs,
        segment_size=config.segment_size,
        cluster_id=config.cluster_id,
        node_id=node_id,
        addresses=addresses,
    )


def open_snapshot_store(data_dir: str | None, fs: FileSystem | None = None) -> SnapshotStore:
    """The node's snapshot files: ``DATA_DIR/snapshots`` (on ``fs``, the real file system by
    default), or an in-memory file system like the log's without a data dir."""
    if data_dir is None:
        return SnapshotStore("/snapshots", fs=MemoryFileSystem())
    return SnapshotStore(os.path.join(data_dir, "snapshots"), fs=fs)


def tcp_transport(
    node_id: int,
    address: str,
    peers: Mapping[int, str],
    config: NodeConfig,
    incarnations: PeerIncarnations,
    rng: random.Random,
    on_message: Callable[[PeerMessage], None],
    on_client: Callable[[ClientConnectionLike, ClientRequest], None],
) -> Transport:
    """The TCP (or TLS) transport with every limit from ``config``: what a node serves on
    unless a test gives it another transport."""
    from raftpy.transport.tcp import TcpTransport

    return TcpTransport(
        node_id,
        address,
        peers,
        cluster_id=config.cluster_id,
        on_message=on_message,
        on_client_request=on_client,
        max_frame_bytes=config.max_frame_bytes,
        max_client_frame_bytes=config.client_frame_limit(),
        max_peer_connections=config.max_peer_connections,
        max_client_connections=config.max_client_connections,
        peer_idle_timeout=config.peer_idle_timeout,
        client_idle_timeout=config.client_idle_timeout,
        peer_queue_bytes=config.peer_queue_bytes,
        rng=rng,
        tls=config.tls,
        insecure=config.insecure,
        incarnations=incarnations,
    )
