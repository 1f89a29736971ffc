"""The fault harness' own speed: operations a fault-free 3-node run records per second.

A Jepsen-style run is only as good as the history it records: too few operations per second
and races between clients are rare. This runs ``raftpy jepsen`` with 3 server processes, 10
clients and no faults for 10 s (seed 5) and reports:

- ``recorded_per_s``: operations recorded per second (target >= 1,000);
- ``valid``: 1 when every check of the run passed (the run must also be correct).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from raftpy.testing.nemesis import JepsenConfig, run_jepsen

TARGETS = {"recorded_per_s": (">=", 1000.0), "valid": (">=", 1.0)}


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="raftpy-bench-jepsen-") as out:
        config = JepsenConfig(
            nodes=3, clients=10, seconds=10, nemesis="none", seed=5, out_dir=Path(out)
        )
        result = asyncio.run(run_jepsen(config))
    print(result.summary)
    return {"recorded_per_s": result.recorded_per_second, "valid": float(result.valid)}
