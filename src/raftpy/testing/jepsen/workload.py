"""The workload: concurrent clients doing read / write / cas on a few keys of the hash map
example, each call recorded in a :class:`~raftpy.testing.history.HistoryRecorder`.

Clients live on nodes, as in Jepsen: worker *w* has home node ``w % nodes + 1``; it reaches its
home node directly and the other nodes through the proxy links of its home node, so a partition
cuts clients off along with their node (``client_routing="direct"`` connects every client to
every node directly instead). A definite failure (``ClusterUnavailableError``,
``NotLeaderError``, ``ProposalDropped``; or any failed read, which changes nothing) is dropped
from the history; any other failure of a write or cas is indeterminate (``"unknown": true``),
after which the worker continues under a new client id, as a Jepsen process does after a crash.
After any failure the worker also opens a fresh client connection, so that it looks for the
leader again instead of insisting on a node that stopped answering.

Keys are retired after ``ops_per_key`` operations and replaced by fresh ones (Jepsen's
"independent keys"), which keeps each key's history small enough for the checker even when
faults leave many operations indeterminate.

After healing, the same recorded operations make the recovery write and the final reads of
every key that the checks need (:mod:`raftpy.testing.jepsen.checks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import msgspec

from raftpy.client import Client
from raftpy.errors import (
    ClusterUnavailableError,
    NotLeaderError,
    ProposalDropped,
    SessionExpiredError,
)
from raftpy.testing.history import HistoryRecorder, OpKind, Value
from raftpy.testing.jepsen.config import JepsenConfig
from raftpy.testing.jepsen.processes import Cluster

__all__ = ["DEFINITE", "KeySpace", "Outcome", "Sample", "SampleKind", "Workload", "make_client"]

Outcome: TypeAlias = Literal["ok", "failed", "unknown"]
SampleKind: TypeAlias = Literal["read", "write", "cas", "add"]


@dataclass(frozen=True)
class Sample:
    """One client call, whatever its outcome (the history drops definite failures).
    ``home``: the node the calling worker lives on (``None``: clients reach every node
    directly, or the recovery write and the final reads)."""

    kind: SampleKind
    call: int
    ret: int
    outcome: Outcome
    home: int | None = None


class KeySpace:
    """``k`` active keys; a key is retired after ``ops_per_key`` operations (0: never)."""

    def __init__(self, k: int, ops_per_key: int) -> None:
        self.active = [f"k{i}" for i in range(k)]
        self.used: list[str] = list(self.active)
        self._count = dict.fromkeys(self.active, 0)
        self._next = k
        self._limit = ops_per_key

    def pick(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self.active))
        key = self.active[slot]
        self._count[key] += 1
        if self._limit and self._count[key] >= self._limit:
            fresh = f"k{self._next}"
            self._next += 1
            self.active[slot] = fresh
            self.used.append(fresh)
            self._count[fresh] = 0
        return key


DEFINITE = (ClusterUnavailableError, NotLeaderError, ProposalDropped, SessionExpiredError)
"""The failures of a write that say it was not applied."""


def make_client(
    addresses: list[str],
    timeout: float,
    rng: random.Random,
    cluster_id: str | None,
    *,
    sessions: bool = True,
) -> Client:
    """A client for the workloads: deadline ``timeout`` per call, quick to move on from a node
    that does not answer; with ``sessions`` (the default) it resends a write through the
    faults, and the cluster applies it once."""
    return Client(
        addresses,
        cluster_id=cluster_id,
        timeout=timeout,
        sessions=sessions,
        connect_timeout=min(0.5, timeout),
        attempt_timeout=max(0.05, timeout / 3),
        backoff_initial=0.01,
        backoff_max=0.2,
        rng=rng,
    )


class _KvSession:
    """The hash map's wire protocol on a :class:`~raftpy.client.Client` (see
    :class:`raftpy.examples.hashmap.HashMapStateMachine`), with a per-call consistency."""

    def __init__(
        self,
        addresses: list[str],
        timeout: float,
        consistency: str,
        rng: random.Random,
        cluster_id: str | None,
    ) -> None:
        self.timeout = timeout
        self.consistency = consistency
        self.client = make_client(addresses, timeout, rng, cluster_id)

    async def read(self, key: str) -> Value:
        raw = await self.client.query(key.encode(), consistency=self.consistency)
        try:
            value = json.loads(raw)
        except ValueError:
            value = ...
        if value is None or (isinstance(value, int | str) and not isinstance(value, bool)):
            return value
        # Not a value anyone wrote: record the raw answer, so the checker flags it.
        return "unreadable: " + raw.decode(errors="replace")

    async def write(self, key: str, value: int) -> None:
        await self.client.propose(msgspec.msgpack.encode(("put", key, json.dumps(value))))

    async def cas(self, key: str, expected: int, new: int) -> bool:
        cmd = msgspec.msgpack.encode(("cas", key, json.dumps(expected), json.dumps(new)))
        raw = await self.client.propose(cmd)
        if raw not in (b"true", b"false"):
            raise ValueError(f"a cas answered {raw!r}")
        return raw == b"true"

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


class Workload:
    """``config.clients`` workers running recorded operations on ``cluster`` until a deadline
    (:meth:`run`), then the recovery write and the final reads; :attr:`samples` holds every
    call, whatever its outcome."""

    def __init__(
        self,
        config: JepsenConfig,
        cluster: Cluster,
        recorder: HistoryRecorder,
        seed: int,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.recorder = recorder
        self.keys = KeySpace(config.keys, config.ops_per_key)
        self.samples: list[Sample] = []
        self.next_client = config.clients  # fresh ids after indeterminate operations
        self._seed = seed
        self._key_rng = random.Random(seed ^ 0x5EED)

    def _session(self, home: int | None, rng: random.Random) -> _KvSession:
        addresses = self.cluster.client_addresses(home)
        return _KvSession(
            addresses,
            self.config.op_timeout,
            self.config.read_consistency,
            rng,
            self.cluster.cluster_id,
        )

    async def run(self, stop_at: float) -> None:
        await asyncio.gather(*(self._worker(w, stop_at) for w in range(self.config.clients)))

    async def _worker(self, w: int, stop_at: float) -> None:
        cfg = self.config
        rng = random.Random(self._seed * 1000 + w)
        ids = self.cluster.ids
        home = ids[w % len(ids)] if cfg.client_routing == "home" else None
        session = self._session(home, rng)
        client_id = w
        loop = asyncio.get_running_loop()
        try:
            while loop.time() < stop_at:
                key = self.keys.pick(self._key_rng)
                outcome = await self.operation(session, client_id, key, rng, home=home)
                if outcome != "ok":
                    # Look for the leader afresh; after an unknown outcome, a new identity.
                    await session.close()
                    session = self._session(home, rng)
                    if outcome == "unknown":
                        client_id = self.next_client
                        self.next_client += 1
        finally:
            await session.close()

    async def operation(
        self,
        session: _KvSession,
        client_id: int,
        key: str,
        rng: random.Random,
        kind: OpKind | None = None,
        value: int | None = None,
        home: int | None = None,
    ) -> Outcome:
        """Run one recorded operation (random unless ``kind`` is given) for a worker living on
        node ``home``."""
        cfg = self.config
        if kind is None:
            if rng.random() < cfg.read_fraction:
                kind = "read"
            elif rng.random() < 0.5:
                kind = "write"
            else:
                kind = "cas"
        rec = self.recorder
        result: Value | bool = None
        expected = new = 0
        if kind == "read":
            handle = rec.invoke(client_id, "read", key)
        elif kind == "write":
            value = rng.randrange(cfg.values) if value is None else value
            handle = rec.invoke(client_id, "write", key, value=value)
        else:
            expected, new = rng.randrange(cfg.values), rng.randrange(cfg.values)
            handle = rec.invoke(client_id, "cas", key, from_=expected, to=new)
        call = time.monotonic_ns()
        outcome: Outcome
        try:
            # The client keeps its own deadline; this bound only guards against a hang.
            async with asyncio.timeout(cfg.op_timeout + 5.0):
                if kind == "read":
                    result = await session.read(key)
                elif kind == "write":
                    assert value is not None
                    await session.write(key, value)
                else:
                    result = await session.cas(key, expected, new)
        except DEFINITE:
            rec.fail(handle)
            outcome = "failed"
        except Exception:
            if kind == "read":  # a read changes nothing: its failure is definite
                rec.fail(handle)
                outcome = "failed"
            else:
                rec.indeterminate(handle)
                outcome = "unknown"
        else:
            rec.complete(handle, result)
            outcome = "ok"
        self.samples.append(Sample(kind, call, time.monotonic_ns(), outcome, home))
        return outcome

    async def recovery_write(
        self, heal_started: float, limit: float, client_id: int, rng: random.Random
    ) -> tuple[bool, float]:
        """Write until one write succeeds or ``limit`` seconds since ``heal_started`` (loop
        time) pass. Returns (succeeded, seconds from heal_started to the success)."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            remaining = heal_started + limit - loop.time()
            if remaining <= 0.01:
                return False, loop.time() - heal_started
            session = _KvSession(
                self.cluster.addresses,
                min(1.0, remaining),
                "linearizable",
                rng,
                self.cluster.cluster_id,
            )
            try:
                attempt += 1
                outcome = await self.operation(
                    session, client_id + attempt, "recovery", rng, kind="write", value=attempt
                )
            finally:
                await session.close()
            if outcome == "ok":
                return True, loop.time() - heal_started
            await asyncio.sleep(0.05)

    async def final_reads(
        self, keys: Sequence[str], client_id: int, rng: random.Random, budget: float
    ) -> list[str]:
        """A linearizable read of every key (through the leader), retried until ``budget``
        seconds pass; returns the keys that could not be read (once the budget is spent, the
        keys not read yet are not tried: a cluster that lost its quorum must not cost one
        timed-out read per key)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        session = _KvSession(
            self.cluster.addresses, 2.0, "linearizable", rng, self.cluster.cluster_id
        )
        missing: list[str] = []
        try:
            for n, key in enumerate(keys):
                if loop.time() >= deadline:
                    missing.extend(keys[n:])
                    break
                while True:
                    outcome = await self.operation(session, client_id, key, rng, kind="read")
                    if outcome == "ok":
                        break
                    if loop.time() >= deadline:
                        missing.append(key)
                        break
                    await session.close()
                    session = _KvSession(
                        self.cluster.addresses, 2.0, "linearizable", rng, self.cluster.cluster_id
                    )
                    await asyncio.sleep(0.1)
        finally:
            await session.close()
        return missing
