"""Speed of the whole-stack simulation (``python -m benchmarks stack_sim``).

Runs :func:`raftpy.testing.stack_sim.run_kv` on a 3-node cluster (real nodes, file storage on
simulated disks, real clients on the in-memory network), ``SEEDS`` seeds of ``DURATION``
virtual seconds each, under the load the clients offer: each client runs one operation at a
time (40% reads, linearizable or lease; 60% writes or compare-and-set) and waits a random 0
to ``THINK`` virtual seconds after each. Reported (virtual seconds simulated per second):

- ``virtual_per_wall``: per wall-clock second, 3 clients, no faults (the target is
  ``TARGETS``; a measurement, never adjusted to meet it);
- ``virtual_per_wall_1_client``: the same with one client, a third of the load, to show what
  the speed depends on;
- ``virtual_per_cpu_s``: 3 clients, per second of this process's CPU time, the steadier
  number on a shared machine;
- ``ops_per_virtual_s``: the operations the 3 clients completed per virtual second (the load
  actually carried), and ``cpu_ms_per_op``: CPU milliseconds per operation, all three nodes
  and the client included;
- ``virtual_per_wall_faults``: 3 clients under the default random fault mix;
- ``seeds_per_min``: seeds of the CI sweep (2 virtual seconds, a fault every 0.5 s on
  average) per wall-clock minute;
- ``cpu_reference_mops``: how fast this CPU ran a fixed Python loop just before
  (:func:`benchmarks.machine.cpu_reference`). The same code's speed differs by up to 1.6 times
  from one day to another on this virtual machine; compare figures across days next to it.

Wall time includes the linearizability check of each history. Where the time goes (sampled
profile of 3 clients, no faults, each sample given to the innermost raftpy file it was in, so
C code counts where it was called from): the node ~28%, its core ~22%, its storage with the
simulated disk ~12%, the client ~7%, the transport's codec ~2%; the virtual-time loop with
asyncio's tasks and futures ~16%, the network ~7%, the workload (the key-value machine, the
simulated clients) ~3%, the history and its check ~2%. Each operation costs about 17 loop
callbacks, 5 of them passes of a node's loop (a write: the leader's, each follower's append,
the leader's commit). Instructions per 10 virtual seconds (valgrind, seed 0, imports
subtracted): 1,385M on 2026-12-06, 1,192M on 2026-12-07. On 2026-12-07 at 08:35 UTC, CPU
reference 2.6-2.7: ``virtual_per_wall`` 25.4-26.4, ``cpu_ms_per_op`` 0.43 (the same code gave
14-15 the day before, at a moment with no reference figure).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from benchmarks.machine import cpu_reference
from raftpy.testing.stack_sim import StackFaults, run_kv

TARGETS = {"virtual_per_wall": (">=", 20.0)}
SEEDS = 3
DURATION = 10.0
THINK = 0.05


def _load(clients: int, faults: StackFaults) -> tuple[float, float, float, int]:
    """Virtual seconds, wall seconds, CPU seconds and operations of ``SEEDS`` runs."""
    virtual = wall = 0.0
    ops = 0
    cpu = time.process_time()
    for seed in range(SEEDS):
        r = run_kv(seed, duration=DURATION, clients=clients, faults=faults, think=THINK)
        virtual += r.virtual_seconds
        wall += r.wall_seconds
        ops += len(r.history)
    return virtual, wall, time.process_time() - cpu, ops


def run() -> dict[str, float]:
    logging.disable(logging.CRITICAL)
    reference = cpu_reference()
    try:
        v3, w3, c3, ops3 = _load(3, StackFaults.none())
        v1, w1, _, _ = _load(1, StackFaults.none())
        vf, wf, _, _ = _load(3, StackFaults())
        sweep = replace(StackFaults(), interval=0.5)
        began = time.perf_counter()
        for seed in range(10):
            run_kv(seed, duration=2.0, faults=sweep)
        sweep_wall = time.perf_counter() - began
    finally:
        logging.disable(logging.NOTSET)
    results = {
        "virtual_per_wall": v3 / w3,
        "virtual_per_wall_1_client": v1 / w1,
        "virtual_per_cpu_s": v3 / c3,
        "ops_per_virtual_s": ops3 / v3,
        "cpu_ms_per_op": 1000 * c3 / ops3,
        "virtual_per_wall_faults": vf / wf,
        "seeds_per_min": 10 / sweep_wall * 60,
        "cpu_reference_mops": reference,
    }
    for name, value in results.items():
        print(f"{name}: {value:.2f}")
    return results
