"""The set workload: concurrent clients add elements no one else adds to a few set keys of the
hash map example (its ``add`` command appends to a JSON list), so that a final read of every
set shows whether each add took effect exactly once (:mod:`raftpy.testing.jepsen.set_checks`).

Each add is one client call under the call's deadline (``op_timeout``), through every fault:
with its session (``Client(sessions=True)``) the client resends it through timeouts, lost
connections, redirects and leader changes, and the cluster applies it once; the add ends
acknowledged, failed definitely, or unknown (only when the deadline passes while an attempt
may have been appended). Clients live on nodes as in the register workload
(:mod:`raftpy.testing.jepsen.workload`); after a failure a worker opens a fresh client (and
session) and goes on with a new element.

``unsafe_resend`` (TEST ONLY) drops the clients' sessions and makes the workload itself resend
an add whose outcome is unknown, within the same deadline, as a new call: without a session
the cluster cannot tell such a resend from a new write, so an add that had been applied is
applied again, and the checker must find the duplicates (README.md, "Jepsen-style fault
harness").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence

import msgspec

from raftpy.client import Client
from raftpy.errors import IndeterminateError
from raftpy.testing.jepsen.config import JepsenConfig
from raftpy.testing.jepsen.processes import Cluster
from raftpy.testing.jepsen.set_checks import SetAdd
from raftpy.testing.jepsen.workload import DEFINITE, KeySpace, Outcome, Sample, make_client

__all__ = ["RECOVERY_SET", "SetWorkload"]

RECOVERY_SET = "recovery"
"""The set the recovery write adds to after healing."""


class SetWorkload:
    """``config.clients`` workers adding elements until a deadline (:meth:`run`), then the
    recovery add and the final reads. :attr:`adds` holds every add, :attr:`samples` every
    call (as the register workload's, for the report)."""

    def __init__(self, config: JepsenConfig, cluster: Cluster, seed: int) -> None:
        self.config = config
        self.cluster = cluster
        self.keys = KeySpace(config.keys, config.ops_per_key)
        self.adds: list[SetAdd] = []
        self.samples: list[Sample] = []
        self.next_client = config.clients
        self._seed = seed
        self._key_rng = random.Random(seed ^ 0x5E7)

    def _client(self, addresses: list[str], rng: random.Random, timeout: float) -> Client:
        # Sessions make the client's resends safe; the unsafe mode resends without one.
        return make_client(
            addresses,
            timeout,
            rng,
            self.cluster.cluster_id,
            sessions=not self.config.unsafe_resend,
        )

    async def run(self, stop_at: float) -> None:
        await asyncio.gather(*(self._worker(w, stop_at) for w in range(self.config.clients)))

    async def _worker(self, w: int, stop_at: float) -> None:
        cfg = self.config
        rng = random.Random(self._seed * 1000 + w)
        ids = self.cluster.ids
        home = ids[w % len(ids)] if cfg.client_routing == "home" else None
        addresses = self.cluster.client_addresses(home)
        client = self._client(addresses, rng, cfg.op_timeout)
        loop = asyncio.get_running_loop()
        n = 0
        try:
            while loop.time() < stop_at:
                key = self.keys.pick(self._key_rng)
                n += 1
                outcome = await self.add(client, w, key, f"{w}-{n}", cfg.op_timeout, home)
                if outcome != "ok":  # look for the leader afresh
                    await _close(client)
                    client = self._client(addresses, rng, cfg.op_timeout)
        finally:
            await _close(client)

    async def add(
        self,
        client: Client,
        client_id: int,
        key: str,
        element: str,
        timeout: float,
        home: int | None = None,
    ) -> Outcome:
        """Add ``element`` to the set ``key`` within ``timeout`` seconds for a worker living on
        node ``home``; record how it ended."""
        loop = asyncio.get_running_loop()
        command = msgspec.msgpack.encode(("add", key, json.dumps(element)))
        call = time.monotonic_ns()
        deadline = loop.time() + timeout
        resent = False
        outcome: Outcome
        try:
            # The client keeps its own deadline; this bound only guards against a hang.
            async with asyncio.timeout(timeout + 5.0):
                while True:
                    try:
                        raw = await client.propose(
                            command, timeout=max(0.01, deadline - loop.time())
                        )
                        break
                    except IndeterminateError:
                        if not self.config.unsafe_resend or loop.time() >= deadline:
                            raise
                        # UNSAFE on purpose: a resend the cluster cannot recognise as one.
                        resent = True
            if not raw.isdigit():
                raise ValueError(f"an add answered {raw!r}")
        except DEFINITE:
            # A definite failure after a resend does not undo the earlier unknown attempt.
            outcome = "unknown" if resent else "failed"
        except Exception:
            outcome = "unknown"
        else:
            outcome = "ok"
        ret = time.monotonic_ns()
        self.adds.append(SetAdd(client_id, key, element, outcome, call, ret))
        self.samples.append(Sample("add", call, ret, outcome, home))
        return outcome

    async def recovery_write(
        self, heal_started: float, limit: float, client_id: int, rng: random.Random
    ) -> tuple[bool, float]:
        """Add to :data:`RECOVERY_SET` until one add succeeds or ``limit`` seconds since
        ``heal_started`` (loop time) pass. Returns (succeeded, seconds from heal_started to
        the success)."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            remaining = heal_started + limit - loop.time()
            if remaining <= 0.01:
                return False, loop.time() - heal_started
            attempt += 1
            timeout = min(1.0, remaining)
            client = self._client(self.cluster.addresses, rng, timeout)
            try:
                outcome = await self.add(
                    client, client_id, RECOVERY_SET, f"recovery-{attempt}", timeout
                )
            finally:
                await _close(client)
            if outcome == "ok":
                return True, loop.time() - heal_started
            await asyncio.sleep(0.05)

    async def final_reads(
        self, keys: Sequence[str], rng: random.Random, budget: float
    ) -> dict[str, object]:
        """A linearizable read of every set, retried until ``budget`` seconds pass: each
        key's decoded value (``None`` when absent). Keys that could not be read are left out
        (once the budget is spent, the rest are not tried)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        found: dict[str, object] = {}
        client = self._client(self.cluster.addresses, rng, 2.0)
        try:
            for key in keys:
                while loop.time() < deadline:
                    try:
                        async with asyncio.timeout(7.0):
                            raw = await client.query(key.encode())
                    except Exception:
                        await _close(client)
                        client = self._client(self.cluster.addresses, rng, 2.0)
                        await asyncio.sleep(0.1)
                        continue
                    try:
                        found[key] = json.loads(raw)
                    except ValueError:
                        found[key] = "unreadable: " + raw.decode(errors="replace")
                    break
        finally:
            await _close(client)
        return found


async def _close(client: Client) -> None:
    with contextlib.suppress(Exception):
        await client.close()
