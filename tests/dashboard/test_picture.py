"""The dashboard's poller and the JSON picture it serves, against fake statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from raftpy.dashboard.picture import MAX_ELECTIONS, cluster_picture
from raftpy.dashboard.poller import Poller
from raftpy.errors import ClusterUnavailableError
from tests.dashboard.fakes import addr, histogram, newer, status

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fetcher(answers: dict[str, Callable[[], Any]]) -> Callable[[str, float], Any]:
    async def fetch(address: str, timeout: float) -> Any:
        answer = answers[address]()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return fetch


def poll_all(poller: Poller) -> None:
    async def run() -> None:
        await asyncio.gather(*(poller.poll_once(a) for a in list(poller.views)))

    asyncio.run(run())


def picture(poller: Poller) -> dict[str, Any]:
    doc = cluster_picture(poller)
    return json.loads(json.dumps(doc, allow_nan=False))  # what the page gets


def test_three_members_leader_and_replication() -> None:
    clock = Clock()
    answers = {
        addr(1): lambda: status(1, role="leader", commit=100, lag={3: 7}),
        addr(2): lambda: status(2, commit=100),
        addr(3): lambda: status(3, commit=93),
    }
    poller = Poller([addr(1), addr(2), addr(3)], fetcher(answers), clock=clock)
    poll_all(poller)
    doc = picture(poller)
    assert doc["leader"] == 1 and doc["leader_address"] == addr(1) and doc["term"] == 1
    assert doc["members"] == {"voters": [1, 2, 3], "learners": [], "voters_outgoing": []}
    assert [(n["id"], n["alive"], n["role"]) for n in doc["nodes"]] == [
        (1, True, "leader"),
        (2, True, "follower"),
        (3, True, "follower"),
    ]
    rows = {r["id"]: r for r in doc["replication"]}
    assert rows[3]["lag"] == 7 and rows[3]["match"] == 93 and rows[3]["next"] == 94
    assert rows[1]["is_leader"] and not rows[2]["is_leader"]
    # What a node does not report is null, not missing and not an error.
    assert rows[2]["lag_seconds"] is None and rows[2]["last_contact"] is None
    assert doc["transfers"] == [] and doc["elections"] == []
    assert doc["nodes"][0]["healthy"] is True and doc["nodes"][0]["last_error"] is None


def test_a_member_that_stops_answering_is_shown_dead_with_its_last_picture() -> None:
    clock = Clock()
    down = {"now": False}

    def node2() -> Any:
        return ClusterUnavailableError("connection refused") if down["now"] else status(2)

    answers = {addr(1): lambda: status(1, role="leader"), addr(2): node2}
    poller = Poller([addr(1), addr(2)], fetcher(answers), clock=clock)
    poll_all(poller)
    down["now"] = True
    clock.now += 1
    poll_all(poller)
    node = picture(poller)["nodes"][1]
    assert (node["id"], node["alive"], node["role"]) == (2, False, "follower")
    assert node["error"] == "connection refused" and node["age"] == 1.0


def test_the_newer_term_wins_when_two_say_they_lead() -> None:
    answers = {
        addr(1): lambda: status(1, role="leader", term=3, leader=1),
        addr(2): lambda: status(2, role="leader", term=4, leader=2),
    }
    poller = Poller([addr(1), addr(2)], fetcher(answers), clock=Clock())
    poll_all(poller)
    doc = picture(poller)
    assert (doc["leader"], doc["term"]) == (2, 4)


def test_members_the_leader_names_are_found_and_polled() -> None:
    answers = {
        a: (lambda i=i: status(i, role="leader" if i == 1 else "follower"))
        for i, a in ((i, addr(i)) for i in range(1, 6))
    }
    poller = Poller([addr(1)], fetcher(answers), clock=Clock(), max_nodes=3)
    poll_all(poller)
    assert list(poller.views) == [addr(1), addr(2), addr(3)]  # capped at max_nodes
    assert poller.views[addr(2)].discovered and not poller.views[addr(1)].discovered
    poll_all(poller)
    assert [n["alive"] for n in picture(poller)["nodes"]] == [True, True, True]


def test_transfers_and_elections_of_newer_nodes() -> None:
    clock = Clock()
    elections = [
        {"time": 990.0 + k, "term": k, "role": "leader", "leader": 1, "reason": "election timeout"}
        for k in range(MAX_ELECTIONS + 5)
    ]
    transfer = {
        "peer": 3,
        "direction": "send",
        "index": 500,
        "bytes_done": 256,
        "size": 1024,
        "started": 995.0,
    }

    def leader() -> Any:
        from types import SimpleNamespace

        return newer(
            status(1, role="leader"),
            transfers=(SimpleNamespace(**transfer),),
            elections=tuple(SimpleNamespace(**e) for e in elections),
            healthy=False,
            unhealthy_reason="fsync p99 2.1 s over 1 s",
            last_error="disk full",
            last_error_time=998.5,
            fsync_p99=0.004,
        )

    follower_elections = (newer(status(2), **elections[-1]),)  # the same event seen twice
    answers = {
        addr(1): leader,
        addr(2): lambda: newer(status(2), elections=follower_elections),
    }
    poller = Poller([addr(1), addr(2)], fetcher(answers), clock=clock)
    poll_all(poller)
    doc = picture(poller)
    assert doc["transfers"] == [
        {
            "node": 1,
            "peer": 3,
            "direction": "send",
            "index": 500,
            "bytes_done": 256,
            "size": 1024,
            "progress": 0.25,
            "seconds": 5.0,
        }
    ]
    got = doc["elections"]
    assert len(got) == MAX_ELECTIONS
    assert got[0]["time"] == elections[-1]["time"] and got[0]["reason"] == "election timeout"
    assert [e["time"] for e in got] == sorted((e["time"] for e in got), reverse=True)
    n1 = doc["nodes"][0]
    assert (n1["healthy"], n1["unhealthy_reason"]) == (False, "fsync p99 2.1 s over 1 s")
    assert (n1["last_error"], n1["last_error_time"], n1["fsync_p99"]) == ("disk full", 998.5, 0.004)


def test_a_node_sending_odd_values_does_not_break_the_picture() -> None:
    from types import SimpleNamespace

    odd = newer(
        status(1, role="leader"),
        transfers=(SimpleNamespace(peer="x", size=0, bytes_done=None, started=float("nan")),),
        elections=(SimpleNamespace(time="soon"),),
        fsync_p99="fast",
        last_error_time=float("nan"),
    )
    poller = Poller([addr(1)], fetcher({addr(1): lambda: odd}), clock=Clock())
    poll_all(poller)
    doc = picture(poller)  # allow_nan=False: no NaN reaches the page
    assert doc["transfers"][0]["progress"] is None and doc["transfers"][0]["peer"] is None
    assert doc["elections"][0]["time"] is None and doc["nodes"][0]["fsync_p99"] is None
    assert doc["nodes"][0]["last_error_time"] is None


def test_write_rate_and_latency_from_successive_answers() -> None:
    clock = Clock()
    state = {"commit": 100, "done": 0}

    def leader() -> Any:
        return status(
            1, role="leader", commit=state["commit"], proposal=histogram(*[0.002] * state["done"])
        )

    poller = Poller([addr(1)], fetcher({addr(1): leader}), clock=clock)
    for _ in range(12):
        poll_all(poller)
        clock.now += 1
        state["commit"] += 40
        state["done"] += 40
    clock.now -= 1
    doc = picture(poller)
    assert doc["write_rate"] == pytest.approx(40.0)
    assert doc["latency"]["p50"] == pytest.approx(0.0032) and doc["latency"]["count"] == 400
    assert doc["latency_reported"] is True
    s = doc["series"]
    assert len(s["time"]) == 600 and s["step"] == 1.0
    assert s["write_rate"][-1] == pytest.approx(40.0) and s["write_rate"][0] is None
    assert s["latency_p99"][-1] == pytest.approx(0.0032)


def test_a_hung_member_costs_its_own_loop_only() -> None:
    """One address that never answers is bounded by the timeout and delays no other."""
    asked: dict[str, int] = {addr(1): 0, addr(2): 0}

    async def fetch(address: str, timeout: float) -> Any:
        asked[address] += 1
        if address == addr(2):
            await asyncio.sleep(3600)
        return status(1, role="leader")

    async def run() -> Poller:
        poller = Poller([addr(1), addr(2)], fetch, interval=0.05, timeout=0.3)
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.7)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return poller

    poller = asyncio.run(run())
    assert asked[addr(1)] >= 8  # every 50 ms, never waiting for node 2
    assert 2 <= asked[addr(2)] <= 4  # asked again after each 0.3 s timeout
    assert poller.views[addr(2)].error is not None and not poller.views[addr(2)].alive


def test_bad_settings_are_refused() -> None:
    fetch = fetcher({})
    with pytest.raises(ValueError, match="address"):
        Poller([], fetch)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="interval"):
            Poller([addr(1)], fetch, interval=bad)


def test_the_status_fields_as_a_node_sends_them() -> None:
    """Real LeadershipEvent and TransferStatus structs, through the wire encoding."""
    import msgspec

    from raftpy.node.leadership import LeadershipEvent
    from raftpy.node.status import TransferStatus, decode_status

    sent = msgspec.structs.replace(
        status(1, role="leader", term=2),
        elections=(
            LeadershipEvent(time=990.0, term=1, role="follower", leader=None, reason="start"),
            LeadershipEvent(time=995.0, term=2, role="leader", leader=1, reason="leader transfer"),
        ),
        transfers=(
            TransferStatus(peer=3, direction="send", index=40, bytes_done=0, size=0, started=999.0),
        ),
        last_error="fsync took 1.2 s",
        last_error_time=998.0,
        fsync_p99=0.25,
    )
    got = decode_status(msgspec.msgpack.encode(sent))
    poller = Poller([addr(1)], fetcher({addr(1): lambda: got}), clock=Clock())
    poll_all(poller)
    doc = picture(poller)
    assert [(e["term"], e["role"], e["reason"]) for e in doc["elections"]] == [
        (2, "leader", "leader transfer"),
        (1, "follower", "start"),
    ]
    assert doc["transfers"][0]["progress"] is None  # an empty snapshot: no division by zero
    assert doc["transfers"][0]["seconds"] == 1.0
    assert doc["nodes"][0]["last_error"] == "fsync took 1.2 s"
    rows = {r["id"]: r for r in doc["replication"]}
    assert rows[1]["lag_seconds"] is None  # the fake peers report no lag in seconds
