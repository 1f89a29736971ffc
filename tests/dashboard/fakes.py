"""Fake node statuses for the dashboard's unit tests: real ``NodeStatus`` structs, and
duck-typed ones carrying fields that newer nodes report."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from raftpy.node.latency import Histogram
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus, PeerReplication


def addr(i: int) -> str:
    return f"127.0.0.1:{7000 + i}"


def peers(leader: int, n: int, last: int, lag: dict[int, int] | None = None) -> dict[int, Any]:
    lag = lag or {}
    return {
        i: PeerReplication(
            address=addr(i),
            match=last - lag.get(i, 0),
            next=last - lag.get(i, 0) + 1,
            state="replicate",
            lag=lag.get(i, 0),
            active=True,
        )
        for i in range(1, n + 1)
    }


def status(
    i: int,
    *,
    role: str = "follower",
    term: int = 1,
    leader: int | None = 1,
    commit: int = 10,
    n: int = 3,
    proposal: Histogram | None = None,
    lag: dict[int, int] | None = None,
) -> NodeStatus:
    stats = NodeStats()
    if proposal is not None:
        stats.proposal = proposal
    return NodeStatus(
        id=i,
        address=addr(i),
        running=True,
        role=role,
        term=term,
        leader=leader,
        leader_address=None if leader is None else addr(leader),
        commit=commit,
        applied=commit,
        last_index=commit,
        first_index=1,
        snapshot=None,
        members=tuple(range(1, n + 1)),
        peers=peers(i, n, commit, lag) if role == "leader" else {},
        disk_full=False,
        failed=None,
        stats=stats,
    )


def newer(st: NodeStatus, **fields: Any) -> Any:
    """``st`` with the fields of a newer node (transfers, elections, ...) added."""
    values = {f: getattr(st, f) for f in st.__struct_fields__}
    values.update(fields)
    return SimpleNamespace(**values)


def histogram(*durations: float) -> Histogram:
    h = Histogram()
    for d in durations:
        h.observe(d)
    return h
