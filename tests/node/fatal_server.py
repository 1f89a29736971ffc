"""A hashmap server with a planted fault, for tests/node/test_fatal_exit_process.py (for tests).

    python -m tests.node.fatal_server server 1 1 127.0.0.1:7001 --data-dir D

Runs ``raftpy.examples.hashmap``'s server unchanged except for one hook: when a proposal whose
bytes hold :data:`CRASH` reaches the node's loop, the loop raises, as a broken internal invariant
would. The node must then end its process (exit status 70, a CRITICAL line), not live on.
"""

from __future__ import annotations

import sys

from raftpy.core.raft import Raft
from raftpy.examples import hashmap
from raftpy.node.node import RaftNode

CRASH = b"plant an internal error"

_append = RaftNode._append_proposals


def _append_or_crash(self: RaftNode, raft: Raft) -> None:
    # Every write is queued wrapped in its session record (raftpy.node.session_records).
    if any(CRASH in p.command for p in self._requests._queued):
        raise AssertionError("planted invariant failure")
    _append(self, raft)


if __name__ == "__main__":
    RaftNode._append_proposals = _append_or_crash  # type: ignore[method-assign]
    sys.exit(hashmap.main())
