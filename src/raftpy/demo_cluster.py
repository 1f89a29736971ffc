"""``python -m raftpy.demo_cluster``: the real-process tour under its former name; it lives in
:mod:`raftpy.demos.cluster` now."""

import sys

from raftpy.demos.cluster import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
