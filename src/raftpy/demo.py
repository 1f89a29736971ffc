"""``python -m raftpy.demo``: the simulated tour under its former name; it lives in
:mod:`raftpy.demos.sim` now."""

import sys

from raftpy.demos.sim import DEFAULT_SEED, main

__all__ = ["DEFAULT_SEED", "main"]

if __name__ == "__main__":
    sys.exit(main())
