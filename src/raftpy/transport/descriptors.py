"""Fitting the transport's connection caps into the process's file descriptor limit.

Every connection is a descriptor, and so is every file the node's storage opens (the
write-ahead log's segments, snapshot files, directories it syncs). If connections could use up
the descriptor limit (``RLIMIT_NOFILE``), the next WAL segment would fail to open and the node
would stop serving. So at construction the transport checks that its caps (peer connections,
client connections, connections still shaking hands, and its own outbound connections to peers)
fit in what the limit leaves after the descriptors already open plus a reserve for storage.

The choice, documented in docs/resource-limits.md: when they do not fit, the caps are
**lowered** (client connections first, then pending handshakes, then peer connections down
to what the members can use) and a warning says so and how
to raise the limit (``ulimit -n``); start-up fails only when not even the peers and a handful
of clients fit, with an error saying what is needed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Final

log = logging.getLogger("raftpy.transport")

STORAGE_DESCRIPTORS: Final = 64
"""Descriptors kept free for the node's storage and everything else in the process that is
not a connection (WAL segments being written and preallocated, snapshots being written, read
or sent, directory syncs, log files)."""
MIN_CLIENT_CONNECTIONS: Final = 8
"""Below this many client connections a node is not worth starting: fail instead."""
MIN_HANDSHAKES: Final = 8


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """How many connections of each kind the transport accepts at once."""

    peers: int
    clients: int
    handshakes: int


def open_descriptors() -> int | None:
    """How many descriptors the process has open now (``None`` when it cannot tell)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path))
        except OSError:
            continue
    return None


def descriptor_limit() -> int | None:
    """The soft ``RLIMIT_NOFILE``, or ``None`` when there is none (or no ``resource``)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return int(soft)


def fit_caps(
    wanted: ConnectionCaps,
    outbound: int,
    *,
    limit: int | None,
    in_use: int | None,
) -> ConnectionCaps:
    """``wanted``, lowered to fit in ``limit`` descriptors of which ``in_use`` are open, with
    ``outbound`` more for our own peer connections and :data:`STORAGE_DESCRIPTORS` kept free.
    Raises ``ValueError`` when not even the peers and :data:`MIN_CLIENT_CONNECTIONS` clients
    fit. ``limit`` ``None``: no limit, nothing to lower."""
    if limit is None:
        return wanted
    room = limit - (in_use or 0) - outbound - STORAGE_DESCRIPTORS
    if wanted.peers + wanted.clients + wanted.handshakes <= room:
        return wanted
    # Each member keeps one inbound connection (a reconnect briefly makes two), so twice the
    # members we dial, plus a little, is all the peers ever need at once.
    peers_floor = min(wanted.peers, 2 * outbound + 2)
    floor = peers_floor + min(wanted.clients, MIN_CLIENT_CONNECTIONS)
    floor += min(wanted.handshakes, MIN_HANDSHAKES)
    if room < floor:
        raise ValueError(
            f"the file descriptor limit ({limit}, {in_use} open) leaves room for {max(room, 0)} "
            f"connections after {outbound} outbound and {STORAGE_DESCRIPTORS} kept for storage; "
            f"at least {floor} are needed ({peers_floor} peers and a few clients): raise it "
            f"(ulimit -n) or lower max_peer_connections"
        )
    # Clients and pending handshakes are lowered first; peers only when the minimum of those
    # would not fit beside the wanted peer cap.
    least_others = floor - peers_floor
    peers = wanted.peers if wanted.peers + least_others <= room else room - least_others
    spare = room - peers
    handshakes = max(min(wanted.handshakes, spare // 4), min(wanted.handshakes, MIN_HANDSHAKES))
    clients = min(wanted.clients, spare - handshakes)
    fitted = ConnectionCaps(peers, clients, handshakes)
    log.warning(
        "the file descriptor limit (%d, %s open) is too low for %d peer and %d client "
        "connections and %d pending handshakes; accepting at most %d, %d and %d (raise it "
        "with ulimit -n)",
        limit,
        in_use,
        wanted.peers,
        wanted.clients,
        wanted.handshakes,
        fitted.peers,
        fitted.clients,
        fitted.handshakes,
    )
    return fitted


def fit_to_this_process(wanted: ConnectionCaps, outbound: int) -> ConnectionCaps:
    """:func:`fit_caps` with this process's limit and open descriptors."""
    return fit_caps(wanted, outbound, limit=descriptor_limit(), in_use=open_descriptors())
