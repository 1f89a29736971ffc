"""SESSION entries in the core: proposed like commands (Raft Figure 2 knows one kind of client
entry; the node's session records are one more), and nothing else may be proposed."""

from __future__ import annotations

import pytest

from raftpy.core.messages import EntryKind
from tests.corehelpers import Network


def test_session_entries_replicate_and_commit_like_commands() -> None:
    net = Network.of((1, 2, 3))
    leader = net.elect(1)
    first, term = leader.propose_batch([b"a", b"b"], EntryKind.SESSION)
    leader.propose_batch([b"c"])
    net.stabilize()
    for node in (1, 2, 3):
        raft = net.nodes[node].raft
        entries = raft.log.entries(first, first + 3)
        assert [(e.kind, e.data, e.term) for e in entries] == [
            (EntryKind.SESSION, b"a", term),
            (EntryKind.SESSION, b"b", term),
            (EntryKind.COMMAND, b"c", term),
        ]
    assert leader.log.committed >= first + 2


@pytest.mark.parametrize("kind", [EntryKind.NOOP, EntryKind.CONFIG])
def test_only_commands_and_session_records_may_be_proposed(kind: EntryKind) -> None:
    leader = Network.of((1,)).elect(1)
    last = leader.log.last_index()
    with pytest.raises(ValueError, match="COMMAND or SESSION"):
        leader.propose_batch([b"x"], kind)
    assert leader.log.last_index() == last
