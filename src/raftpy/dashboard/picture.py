"""The dashboard's picture of the cluster: the JSON served at ``/api/cluster`` (docs/dashboard.md
describes every field).

Built from the poller's last answers of each member. Fields that newer nodes report (lag in
seconds, the inflight window, snapshot transfers, recent elections, health, the last error,
fsync p99, write latency) are read by name and tolerated when absent, so the page works
against a cluster of any version: what a node does not report is ``null`` or empty.
Strings a node sends are passed on as data; the page shows them as text, never as markup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from raftpy.dashboard.poller import NodeView, Poller
from raftpy.dashboard.samples import series, window_latency, window_rate

__all__ = ["MAX_ELECTIONS", "RATE_WINDOW", "SERIES_STEP", "cluster_picture"]

SERIES_STEP = 1.0
"""Seconds per point of the charts."""
RATE_WINDOW = 3.0
"""The headline write rate is that of the last this many seconds."""
LATENCY_WINDOW = 10.0
"""The headline write latency is that of the writes of the last this many seconds."""
MAX_ELECTIONS = 40
"""Recent role changes shown, newest first, over all members."""


def _num(value: Any) -> float | None:
    """A finite number, else ``None`` (NaN and infinities are not JSON)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    return [i for i in value if isinstance(i, int)] if isinstance(value, Iterable) else []


def _node(view: NodeView, now: float) -> dict[str, Any]:
    st = view.status
    stats = getattr(st, "stats", None)
    snap = getattr(st, "snapshot", None)
    return {
        "address": view.address,
        "id": _int(getattr(st, "id", None)),
        "alive": view.alive,
        "error": view.error,
        "discovered": view.discovered,
        "age": None if view.answered is None else round(max(0.0, now - view.answered), 3),
        "running": getattr(st, "running", None),
        "role": _str(getattr(st, "role", None)),
        "term": _int(getattr(st, "term", None)),
        "leader": _int(getattr(st, "leader", None)),
        "commit": _int(getattr(st, "commit", None)),
        "applied": _int(getattr(st, "applied", None)),
        "last_index": _int(getattr(st, "last_index", None)),
        "first_index": _int(getattr(st, "first_index", None)),
        "snapshot_index": _int(getattr(snap, "index", None)),
        "member": getattr(st, "member", None),
        "disk_full": getattr(st, "disk_full", None),
        "failed": _str(getattr(st, "failed", None)),
        "healthy": getattr(st, "healthy", None),
        "unhealthy_reason": _str(getattr(st, "unhealthy_reason", None)),
        "last_error": _str(getattr(st, "last_error", None)),
        "last_error_time": _num(getattr(st, "last_error_time", None)),
        "fsync_p99": _num(getattr(st, "fsync_p99", None)),
        "sessions": _int(getattr(st, "sessions", None)),
        "leader_changes": _int(getattr(stats, "leader_changes", None)),
    }


def _leader(views: list[NodeView]) -> NodeView | None:
    """The live member that leads in the highest term (two may say they lead for a moment
    after a change; the newer term wins, Raft §5.1)."""
    leading = [v for v in views if v.alive and v.status is not None and v.status.role == "leader"]
    return max(leading, key=lambda v: v.status.term or 0 if v.status else 0, default=None)


def _replication(leader: NodeView | None) -> list[dict[str, Any]]:
    st = leader.status if leader is not None else None
    if st is None:
        return []
    rows = []
    for node, p in sorted((st.peers or {}).items()):
        rows.append(
            {
                "id": node,
                "address": _str(getattr(p, "address", None)),
                "match": _int(getattr(p, "match", None)),
                "next": _int(getattr(p, "next", None)),
                "state": _str(getattr(p, "state", None)),
                "lag": _int(getattr(p, "lag", None)),
                "lag_seconds": _num(getattr(p, "lag_seconds", None)),
                "inflight": _int(getattr(p, "inflight", None)),
                "active": getattr(p, "active", None),
                "last_contact": _num(getattr(p, "last_contact", None)),
                "lost_entries": _int(getattr(p, "lost_entries", None)),
                "is_leader": node == st.id,
            }
        )
    return rows


def _transfers(views: list[NodeView], now: float) -> list[dict[str, Any]]:
    rows = []
    for v in views:
        if not v.alive or v.status is None:
            continue
        for t in getattr(v.status, "transfers", None) or ():
            size = _int(getattr(t, "size", None))
            done = _int(getattr(t, "bytes_done", None))
            started = _num(getattr(t, "started", None))
            rows.append(
                {
                    "node": v.status.id,
                    "peer": _int(getattr(t, "peer", None)),
                    "direction": _str(getattr(t, "direction", None)),
                    "index": _int(getattr(t, "index", None)),
                    "bytes_done": done,
                    "size": size,
                    "progress": (min(1.0, done / size) if done is not None and size else None),
                    "seconds": None if started is None else round(max(0.0, now - started), 1),
                }
            )
    return rows


def _elections(views: list[NodeView]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    rows: list[dict[str, Any]] = []
    for v in views:
        if v.status is None:
            continue
        for e in getattr(v.status, "elections", None) or ():
            row = {
                "node": v.status.id,
                "time": _num(getattr(e, "time", None)),
                "term": _int(getattr(e, "term", None)),
                "role": _str(getattr(e, "role", None)),
                "leader": _int(getattr(e, "leader", None)),
                "reason": _str(getattr(e, "reason", None)),
            }
            key = tuple(row.values())
            if key not in seen:
                seen.add(key)
                rows.append(row)
    rows.sort(key=lambda r: (r["time"] or 0.0, r["term"] or 0), reverse=True)
    return rows[:MAX_ELECTIONS]


def _members(leader: NodeView | None, views: list[NodeView]) -> dict[str, list[int]]:
    """The membership as the leader sees it (else as the newest-term live member does)."""
    source = leader
    if source is None:
        live = [v for v in views if v.alive and v.status is not None]
        source = max(live, key=lambda v: v.status.term or 0 if v.status else 0, default=None)
    st = source.status if source is not None else None
    return {
        "voters": _ids(getattr(st, "members", None)),
        "learners": _ids(getattr(st, "learners", None)),
        "voters_outgoing": _ids(getattr(st, "voters_outgoing", None)),
    }


def cluster_picture(poller: Poller, now: float | None = None) -> dict[str, Any]:
    """The JSON document of ``/api/cluster`` for what ``poller`` knows at ``now``."""
    now = poller.clock() if now is None else now
    views = list(poller.views.values())
    leader = _leader(views)
    histories = poller.histories
    terms = [v.status.term for v in views if v.alive and v.status and v.status.term is not None]
    latency = window_latency(histories, now - LATENCY_WINDOW, now)
    rate = window_rate(histories, now - RATE_WINDOW, now)
    return {
        "now": now,
        "interval": poller.interval,
        "window": poller.window,
        "leader": leader.status.id if leader is not None and leader.status else None,
        "leader_address": leader.address if leader is not None else None,
        "term": max(terms) if terms else None,
        "members": _members(leader, views),
        "nodes": [_node(v, now) for v in views],
        "replication": _replication(leader),
        "transfers": _transfers(views, now),
        "elections": _elections(views),
        "write_rate": None if rate is None else round(rate, 3),
        "latency": latency,
        "latency_reported": any(
            (s := v.history.latest) is not None and s.proposal is not None for v in views
        ),
        "series": {
            "step": SERIES_STEP,
            **series(histories, now, poller.window, SERIES_STEP),
        },
    }
