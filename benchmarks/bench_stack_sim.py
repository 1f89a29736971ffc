"""Speed of the whole-stack simulation (``python -m benchmarks stack_sim``).

Runs :func:`raftpy.testing.stack_sim.run_kv` on a 3-node cluster (real nodes, file storage on
simulated disks, real clients on the in-memory network) under client load: 3 clients without
faults, then 3 clients with the default random fault mix, a few seeds each. Reported:

- ``virtual_per_wall``: virtual seconds simulated per wall-clock second, fault-free load (the
  target is ``TARGETS``; a measurement, never adjusted to meet it);
- ``virtual_per_wall_faults``: the same under faults;
- ``virtual_per_cpu_s``: as ``virtual_per_wall`` per second of this process's CPU time, the
  steadier number on a shared machine;
- ``ops_per_wall_s``: client operations recorded per wall-clock second (fault-free);
- ``seeds_per_min``: faulted 10-virtual-second seeds per wall-clock minute.

Wall time includes the linearizability check of each history.
"""

from __future__ import annotations

import logging
import time

from raftpy.testing.stack_sim import StackFaults, run_kv

TARGETS = {"virtual_per_wall": (">=", 20.0)}
SEEDS = 4
DURATION = 10.0


def run() -> dict[str, float]:
    logging.disable(logging.CRITICAL)
    try:
        virtual = wall = ops = 0.0
        cpu = time.process_time()
        for seed in range(SEEDS):
            r = run_kv(seed, duration=DURATION, faults=StackFaults.none())
            virtual += r.virtual_seconds
            wall += r.wall_seconds
            ops += len(r.history)
        cpu = time.process_time() - cpu
        fv = fw = 0.0
        for seed in range(SEEDS):
            r = run_kv(seed, duration=DURATION)
            fv += r.virtual_seconds
            fw += r.wall_seconds
    finally:
        logging.disable(logging.NOTSET)
    results = {
        "virtual_per_wall": virtual / wall,
        "virtual_per_wall_faults": fv / fw,
        "virtual_per_cpu_s": virtual / cpu,
        "ops_per_wall_s": ops / wall,
        "seeds_per_min": SEEDS / fw * 60,
    }
    for name, value in results.items():
        print(f"{name}: {value:.1f}")
    return results
