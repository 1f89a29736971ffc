"""A guided tour of Raft on a simulated 5-node cluster: ``python -m raftpy.demos.sim``
(``make demo-sim``).

The demo runs the real consensus core of five servers inside
:class:`~raftpy.testing.sim.SimCluster`: a simulated network and disk in *virtual* time, so the
whole story takes a fraction of a second and is the same every time for a given ``--seed``.
The same story with real server processes is :mod:`raftpy.demos.cluster` (``make demo``).

The story: an election; a few commands committing; a network partition that isolates the
leader, whose new commands can no longer commit; a new leader elected by the majority side in a
higher term; the partition healing; the old leader following the new one and every log
converging to the same entries.

The demo only *observes* the cluster: between short ``run_for`` steps of virtual time it polls
each node's role, term and commit index and prints what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftpy.core.messages import Entry, EntryKind
from raftpy.core.ready import Role
from raftpy.testing.sim import SimCluster

__all__ = ["DEFAULT_SEED", "main"]

DEFAULT_SEED = 1
N_NODES = 5
STEP = 0.01  # seconds of virtual time between two observations
_INDENT = " " * 10  # continuation lines line up under the event text


@dataclass
class _Proposal:
    """A command the demo proposed, followed until it commits or is discarded."""

    index: int
    term: int
    command: bytes
    node: int
    done: bool = False

    def is_done(self) -> bool:
        return self.done


@dataclass(frozen=True)
class _View:
    """What the demo shows of one node at one instant."""

    role: Role
    term: int
    leader: int | None


class _Demo:
    """Drives the cluster through the story and prints a timeline of what it observes."""

    def __init__(self, seed: int, out: Callable[[str], None]) -> None:
        self.seed = seed
        self.out = out
        self.c = SimCluster(n=N_NODES, seed=seed)
        self.views = [self._view(i) for i in range(N_NODES)]
        self.proposals: list[_Proposal] = []
        self.noted: set[str] = set()

    # -- output -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """One timeline line, stamped with the virtual time."""
        self.out(f"{self.c.now:7.3f}s  {text}")

    def note(self, text: str) -> None:
        """An explanation under the previous timeline line (each one is given only once)."""
        if text not in self.noted:
            self.noted.add(text)
            self.out(f"{_INDENT}  {text}")

    def heading(self, text: str) -> None:
        self.out("")
        self.out(f"-- {text} " + "-" * max(0, 76 - len(text)))

    # -- observation --------------------------------------------------------------------------

    def _view(self, i: int) -> _View:
        raft = self.c.raft(i)
        return _View(raft.role, raft.term, raft.lead)

    def step(self) -> None:
        """Advance virtual time a little and report what changed."""
        self.c.run_for(STEP)
        self._report_roles()
        self._report_proposals()

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Step for up to ``seconds``; stop early once ``until()`` holds. Returns whether it
        held (always ``True`` without a condition)."""
        deadline = self.c.now + seconds
        while self.c.now < deadline - 1e-9:
            self.step()
            if until is not None and until():
                return True
        return until is None

    def _report_roles(self) -> None:
        new = [self._view(i) for i in range(N_NODES)]
        followers: dict[tuple[int | None, int], list[int]] = {}
        for i, (old, cur) in enumerate(zip(self.views, new, strict=True)):
            if old == cur:
                continue
            if cur.role is Role.FOLLOWER and old.role is not Role.LEADER and cur.leader is not None:
                followers.setdefault((cur.leader, cur.term), []).append(i)
                continue
            self._report_role_change(i, old, cur)
        for (leader, term), ids in followers.items():
            self.say(
                f"{_nodes(ids)} now follow{'s' if len(ids) == 1 else ''} leader node "
                f"{leader} in term {term}"
            )
        self.views = new

    def _report_role_change(self, i: int, old: _View, cur: _View) -> None:
        match cur.role:
            case Role.LEADER:
                self.say(f"node {i} is LEADER of term {cur.term}: a majority voted for it")
                self.note("its first act: append an empty no-op entry of its term to commit it")
            case Role.CANDIDATE:
                self.say(f"node {i} is candidate for term {cur.term}: it asks for votes")
            case Role.PRE_CANDIDATE:
                self.say(
                    f"node {i} heard no leader for an election timeout: it asks 'could I win?'"
                )
                self.note(f"(PreVote: its term stays {cur.term} until a majority says yes)")
            case Role.FOLLOWER if old.role is Role.LEADER:
                if cur.term > old.term:
                    self.say(f"node {i} steps down: it saw the higher term {cur.term}")
                else:
                    self.say(
                        f"node {i} steps down: it heard from no majority for an election timeout"
                    )
                    self.note("(CheckQuorum: clients stop waiting on a leader that cannot commit)")
            case Role.FOLLOWER if cur.leader is None and old.role is not Role.FOLLOWER:
                why = f"it saw term {cur.term}" if cur.term > old.term else "it lost the vote"
                self.say(f"node {i} gives up its campaign: {why}")
            case Role.FOLLOWER:
                pass  # a follower that lost track of its leader: not worth a line

    def _report_proposals(self) -> None:
        for p in self.proposals:
            if p.done:
                continue
            verdict = self._fate(p)
            if verdict is None:
                continue
            p.done = True
            if verdict:
                stored = sum(self._holds(i, p.index, p.term) for i in range(N_NODES))
                applied = self.c.n_committed(p.index)[0]
                self.say(
                    f"index {p.index} {_cmd(p.command):9} COMMITTED: stored on "
                    f"{stored}/{N_NODES} nodes, applied on {applied}"
                )
            else:
                self.say(
                    f"index {p.index} {_cmd(p.command):9} DISCARDED: node {p.node} replaced it "
                    "with the leader's entry"
                )
                self.note("(it never committed, so no client was told it succeeded)")

    def _fate(self, p: _Proposal) -> bool | None:
        """``True`` once committed; ``False`` once the node it was proposed at replaced it with
        another leader's entry; ``None`` while undecided."""
        for i in range(N_NODES):
            log = self.c.raft(i).log
            if log.committed >= p.index and log.term(p.index) == p.term:
                return True
        if not self._holds(p.node, p.index, p.term):
            return False
        return None

    def _holds(self, i: int, index: int, term: int) -> bool:
        return self.c.raft(i).log.term(index) == term

    # -- actions ------------------------------------------------------------------------------

    def propose(self, node: int, command: bytes) -> _Proposal | None:
        index, term, ok = self.c.start(node, command)
        if not ok or index < 0:
            self.say(f"client -> node {node}: {_cmd(command)} refused (not the leader)")
            return None
        self.say(f"client -> node {node}: {_cmd(command):9} appended at index {index}, term {term}")
        p = _Proposal(index, term, command, node)
        self.proposals.append(p)
        return p

    def leader(self, among: Sequence[int]) -> int | None:
        for i in among:
            if self.c.raft(i).role is Role.LEADER:
                return i
        return None

    # -- the story ----------------------------------------------------------------------------

    def play(self) -> bool:
        c = self.c
        everyone = list(range(N_NODES))
        self.out(f"raftpy demo: {N_NODES} Raft servers in a simulated network, seed {self.seed}")
        self.out("Time is virtual (seconds since start). A command is COMMITTED once a majority")
        self.out(f"({N_NODES // 2 + 1} of {N_NODES}) stores it; committed commands are never lost.")

        self.heading("1. election")
        self.say(f"{N_NODES} nodes start as followers in term 0; no one leads yet")
        if not self.run(5.0, lambda: self.leader(everyone) is not None):
            self.say("no leader after 5 s: giving up")
            return False
        old = self.leader(everyone)
        assert old is not None

        self.heading("2. replication")
        for command in (b"x=1", b"y=2", b"z=3"):
            p = self.propose(old, command)
            if p is not None:
                self.run(1.0, p.is_done)

        self.heading(f"3. partition: node {old} (the leader) is cut off from the others")
        others = [i for i in everyone if i != old]
        c.partition([[old], others])
        self.say(f"network split: [{old}] | {others}")
        self.note(f"node {old} cannot reach a majority: its new entries stay uncommitted")
        stuck = [self.propose(old, command) for command in (b"x=10", b"y=20")]
        if not self.run(5.0, lambda: self.leader(others) is not None):
            self.say("the majority side elected no leader in 5 s")
            return False
        new = self.leader(others)
        assert new is not None
        p = self.propose(new, b"x=30")
        if p is not None:
            self.run(1.0, p.is_done)
        self.run(1.0, lambda: self.c.raft(old).role is not Role.LEADER)
        self.run(0.2)
        committed = c.raft(old).log.committed
        last = c.raft(old).log.last_index()
        pending = [q.index for q in stuck if q is not None and not q.done]
        self.say(f"node {old} still has commit index {committed} while its log ends at {last}:")
        self.note(f"its entries {_span(pending)} are not committed and never were applied")
        self._log_table("logs during the partition")

        self.heading("4. heal: the network is whole again")
        c.heal()
        self.say("network healed")
        converged = self.run(5.0, self._converged)
        if c.raft(new).role is Role.LEADER and c.raft(new).term == c.raft(old).term:
            self.say(
                f"node {new} is still the leader of term {c.raft(new).term}: node {old} "
                "rejoined without disrupting it"
            )
            self.note(f"(thanks to PreVote, node {old} never raised its term while cut off)")
        self._log_table("logs after healing")
        if converged:
            digest = _digest(self._entries(0))
            self.out(
                f"CONVERGED: all {N_NODES} logs are identical (digest {digest}) and every "
                f"node applied up to index {c.raft(0).log.applied}"
            )
        else:
            self.out("NOT CONVERGED after 5 s (this would be a bug)")
        return converged

    def _converged(self) -> bool:
        logs = [self._entries(i) for i in range(N_NODES)]
        applied = {self.c.raft(i).log.applied for i in range(N_NODES)}
        return all(log == logs[0] for log in logs) and applied == {len(logs[0])}

    def _entries(self, i: int) -> list[Entry]:
        log = self.c.raft(i).log
        return log.entries(1, log.last_index() + 1)

    def _log_table(self, title: str) -> None:
        self.say(f"{title}:")
        header = "node  role           term  commit  applied  log: term of each entry  digest"
        self.out(f"{_INDENT}  {header}")
        for i in range(N_NODES):
            raft = self.c.raft(i)
            entries = self._entries(i)
            terms = " ".join(str(e.term) for e in entries)
            self.out(
                f"{_INDENT}  {i:>4}  {raft.role.value:<13}  {raft.term:>4}  "
                f"{raft.log.committed:>6}  {raft.log.applied:>7}  {terms:<23}  {_digest(entries)}"
            )


def _cmd(command: bytes) -> str:
    return repr(command.decode("utf-8", "replace"))


def _nodes(ids: Sequence[int]) -> str:
    if len(ids) == 1:
        return f"node {ids[0]}"
    return "nodes " + ", ".join(str(i) for i in ids)


def _span(indexes: Sequence[int]) -> str:
    if not indexes:
        return "(none)"
    if len(indexes) == 1:
        return str(indexes[0])
    return f"{indexes[0]}-{indexes[-1]}"


def _digest(entries: Sequence[Entry]) -> str:
    """A short fingerprint of a log: equal logs have equal digests."""
    h = hashlib.sha256()
    for e in entries:
        kind = "noop" if e.kind is EntryKind.NOOP else str(int(e.kind))
        h.update(f"{e.index}/{e.term}/{kind}/".encode() + e.data + b"\n")
    return h.hexdigest()[:8]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (0: the story completed and logs converged)."""
    parser = argparse.ArgumentParser(
        prog="python -m raftpy.demos.sim",
        description="Watch a simulated 5-node Raft cluster elect a leader, replicate, survive "
        "a partition and converge (virtual time, deterministic from the seed).",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"simulation seed (default {DEFAULT_SEED})"
    )
    args = parser.parse_args(argv)
    demo = _Demo(args.seed, print)
    return 0 if demo.play() else 1


if __name__ == "__main__":
    sys.exit(main())
