"""The key-value workload of the whole-stack simulation (:func:`raftpy.testing.stack_sim.run_kv`):
the replicated machine (:class:`SimKV`), the simulated clients that record a history
(:func:`kv_client`), and the checks of the replicas' final state beyond linearizability
(:meth:`SimKV.fingerprint`: the same commands applied; :func:`durability_problems`: no
acknowledged write lost, no write said to have failed applied)."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from typing import Any, BinaryIO, Final, Protocol

import msgspec

from raftpy.client import Client
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    SessionExpiredError,
)
from raftpy.testing.history import HistoryRecorder, Operation

__all__ = ["KEYS", "READS", "SimKV", "durability_problems", "kv_client"]


class _Cluster(Protocol):
    """What a client needs of the cluster (``StackCluster``)."""

    rng: random.Random

    def client(self) -> Client: ...


_COMMANDS: dict[bytes, Any] = {}
"""Commands :class:`SimKV` parsed lately, by their bytes."""


class SimKV:
    """The key-value machine :func:`run_kv` checks: ``["w", key, value]`` sets,
    ``["c", key, from, to]`` swaps when the value is ``from`` (answers ``1`` or ``0``); a
    query for ``key`` answers its value as JSON (``null``: absent).

    It also counts the commands it applied and chains their checksums (``applied`` and
    ``digest``, kept in its snapshots): replicas that end on the same values may still have
    applied different commands (the three keys are overwritten all the time), and Raft's State
    Machine Safety (§5.4.3) says they never do. ``run_kv`` compares all three."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.applied = 0
        self.digest = 0
        self.written: set[int] = set()
        """Every value a write or a successful compare-and-set stored (the workload's values
        are unique): :func:`durability_problems` checks that each acknowledged one is here, on every
        replica, and that no write the client was told failed is."""

    def apply(self, command: bytes) -> bytes:
        self.applied += 1
        self.digest = zlib.crc32(command, self.digest)
        # Every replica applies the same commands: parse each once (read only below).
        op = _COMMANDS.get(command)
        if op is None:
            if len(_COMMANDS) >= 4096:
                _COMMANDS.clear()
            op = _COMMANDS[command] = msgspec.json.decode(command)
        if op[0] == "w":
            self.data[op[1]] = op[2]
            self.written.add(op[2])
            return b""
        if self.data.get(op[1]) == op[2]:
            self.data[op[1]] = op[3]
            self.written.add(op[3])
            return b"1"
        return b"0"

    def query(self, query: bytes) -> bytes:
        return msgspec.json.encode(self.data.get(query.decode()))

    def fingerprint(self) -> str:
        """What replicas that applied the same commands share (compared after a run)."""
        return json.dumps(
            {"data": self.data, "applied": self.applied, "digest": self.digest}, sort_keys=True
        )

    def snapshot(self, out: BinaryIO) -> None:
        state = {
            "data": self.data,
            "applied": self.applied,
            "digest": self.digest,
            "written": sorted(self.written),
        }
        out.write(json.dumps(state, sort_keys=True).encode())

    def restore(self, inp: BinaryIO) -> None:
        state = json.loads(inp.read())
        self.data = state["data"]
        self.applied = state["applied"]
        self.digest = state["digest"]
        self.written = set(state["written"])


KEYS: Final = ("a", "b", "c")


READS: Final = ("linearizable", "lease", "mixed")
"""How ``run_kv``'s clients read: ReadIndex, the leader's lease, or either at random per
read (README.md, "Reads")."""


async def kv_client(
    cluster: _Cluster,
    cid: int,
    recorder: HistoryRecorder,
    until: float,
    reads: str,
    think: float,
    refused: set[int],
) -> None:
    """One simulated client of ``run_kv``; the values of its writes that definitely failed go
    into ``refused``."""
    loop = asyncio.get_running_loop()
    rng = random.Random(cluster.rng.getrandbits(64))
    seen: dict[str, list[int]] = {k: [] for k in KEYS}
    counter = 0
    async with cluster.client() as client:
        while loop.time() < until:
            key = rng.choice(KEYS)
            r = rng.random()
            if r < 0.4:
                h = recorder.invoke(cid, "read", key)
                level = reads if reads != "mixed" else rng.choice(READS[:2])
                try:
                    value = msgspec.json.decode(await client.query(key.encode(), consistency=level))
                except RaftError:
                    recorder.fail(h)  # a read that did not answer did nothing
                else:
                    recorder.complete(h, value)
                    if isinstance(value, int):
                        seen[key].append(value)
            else:
                counter += 1
                new = cid * 1_000_000 + counter
                if r < 0.75 or not seen[key]:
                    h = recorder.invoke(cid, "write", key, value=new)
                    command = ["w", key, new]
                else:
                    old = rng.choice(seen[key][-5:])
                    h = recorder.invoke(cid, "cas", key, from_=old, to=new)
                    command = ["c", key, old, new]
                try:
                    result = await client.propose(msgspec.json.encode(command))
                except (
                    ClusterUnavailableError,
                    NotLeaderError,
                    ProposalDropped,
                    SessionExpiredError,
                ):
                    recorder.fail(h)  # definite: not done (raftpy.errors)
                    refused.add(new)
                except IndeterminateError:
                    recorder.indeterminate(h)
                else:
                    recorder.complete(h, result == b"1" if command[0] == "c" else None)
                    seen[key].append(new)
            await asyncio.sleep(rng.uniform(0.0, think))


def durability_problems(
    history: list[Operation], refused: set[int], written: dict[int, set[int]]
) -> list[str]:
    """Writes acknowledged but missing from a replica (lost: Raft §5.3, an acknowledged entry
    is committed and stays), and writes the client was told definitely failed but that a
    replica applied (raftpy.errors: a definite failure did nothing). Checked on the replicas'
    final state, so a lost write shows even when a later write to its key hid it from reads."""
    acked = [
        (o.client, o.value if o.op == "write" else o.to)
        for o in history
        if not o.indeterminate and (o.op == "write" or (o.op == "cas" and o.ok))
    ]
    problems: list[str] = []
    for node_id, values in sorted(written.items()):
        lost = [f"{value} (client {client})" for client, value in acked if value not in values]
        if lost:
            problems.append(
                f"node {node_id} lacks {len(lost)} acknowledged write(s): {', '.join(lost[:5])}"
            )
        done = sorted(refused & values)
        if done:
            problems.append(
                f"node {node_id} applied {len(done)} write(s) the client was told definitely "
                f"failed: {done[:5]}"
            )
    return problems
