"""The fuzz's swarm schedule (``run_fuzz(..., schedule="swarm")``, see :mod:`raftpy.testing.fuzz`):
each seed enables a random subset of fault kinds with random weights (swarm testing), and
three seeds in four concentrate on one theme (``churn``, ``storm``, ``reconfig``). The steps
that watch the cluster in fine slices and strike at a moment (a leader just appended, a node
just voted, a change is half done) live here; what both schedules share is in
:mod:`raftpy.testing.fuzz_workload`."""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable

from raftpy.storage.fs import CrashMode, SimulatedCrash
from raftpy.testing.fuzz_workload import (
    Stats,
    command,
    members_step,
    propose,
    random_groups,
    repair_and_check,
    run_with_reads,
)
from raftpy.testing.sim import SimCluster

__all__ = ["run_swarm"]


_CRASH_MODES: tuple[CrashMode, ...] = ("drop", "torn", "partial", "keep")

# Fault kinds a swarm run may enable; each enabled one gets a random weight.
_KINDS = (
    "partition",  # a random split into two or three groups
    "heal",
    "disconnect",
    "connect",
    "crash",  # a random node goes down
    "restart",  # a down node comes back
    "bounce",  # crash and come straight back
    "unreliable",  # toggle 10% loss and 0-26 ms delays
    "reorder",  # toggle long-delayed replies
    "duplicate",  # set a duplication rate
    "isolate_leader",  # the leader appends, a moment later it is cut off (alone or with others)
    "crash_leader",  # the leader appends, a moment later it crashes
    "crash_follower",  # the leader appends, a moment later a follower crashes
    "leader_churn",  # for a while, every new leader is cut off or restarted moments after winning
    "crash_after_write",  # for a while, nodes crash right after their term, vote or log changed
    "sync_crash",  # file storage: a node loses power in the middle of an fsync
    "slow_apply",  # a node's state machine holds committed entries back, or catches up
    "members",  # add, promote or remove a member (the leader too), under the other faults
    "reconfig",  # changes back to back, each cut short by a leader change or crash
    "election_storm",  # the leader is cut off; a voter's disk fails in its next fsync
)
_TICK_SECONDS = 0.01  # SimCluster's default tick

_FOCUSED = 0.75  # the share of swarm seeds that concentrate on one theme
# Themes: a focused seed enables all kinds of the first tuple and a few of the second.
_THEMES = ("churn", "storm", "reconfig")
_THEME_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Leaders change while entries are partly replicated, with small messages (Raft §5.4.2
    # Figure 8, and §5.3's rules for a follower's stale suffix).
    "churn": (
        ("leader_churn",),
        ("isolate_leader", "crash_leader", "crash_follower", "partition", "reorder"),
    ),
    # Elections without PreVote on short timeouts, crashes at the writes and fsyncs of terms
    # and votes (Raft §5.2, Figure 2: persist before answering).
    "storm": (
        ("election_storm", "crash_after_write"),
        ("sync_crash", "partition", "bounce", "unreliable"),
    ),
    # Membership changes one after another while leadership moves (Thesis §4.1-4.3).
    "reconfig": (
        ("reconfig",),
        ("leader_churn", "isolate_leader", "crash_leader", "members", "partition"),
    ),
}


@dataclasses.dataclass
class _Run:
    """What a swarm run's steps share."""

    c: SimCluster
    rng: random.Random
    seed: int
    st: Stats
    pad: int  # commands are padded with up to this many bytes
    file: bool  # the nodes run on the write-ahead log over fault-injecting disks
    armed: int | None = None  # the node whose disk crashes in its next fsync
    split: bool = False  # storms are mostly split votes (``_split_vote``)

    def propose(self, k: int) -> None:
        propose(self.c, self.rng, self.seed, self.st, k, self.pad)

    def batch(self, leader: int, size: int) -> None:
        """The leader appends ``size`` new commands (if it still takes them)."""
        n, seq = self.c.n, self.st.proposals
        batch = [command(n, self.seed, seq + j, self.rng, self.pad) for j in range(size)]
        if self.c.start_batch(leader, batch) >= 0:
            self.st.proposals += size


def run_swarm(n: int, seed: int, reads: bool) -> None:
    rng = random.Random(seed * 1_000_003 + n + 1_700_000)  # its own stream: classic unchanged
    read_rng = random.Random(seed * 1_000_003 + n + 2_500_000)
    read_terms: set[tuple[int, int]] = set()
    # Most seeds concentrate on one theme (one or two of its fault kinds, with the
    # settings that make them dangerous); the others draw from every kind.
    theme = rng.choice(_THEMES) if rng.random() < _FOCUSED else None
    file = theme == "storm" or (theme is None and rng.random() < 0.4)
    # Swarm testing: each seed enables a random number of fault kinds, often only a few, so
    # that some runs concentrate on one kind of trouble (say, leaders cut off moments after
    # winning, or crashes right after writes) far more than a uniform mix ever would.
    if theme is None:
        pool = [k for k in _KINDS if file or k != "sync_crash"]
        count = min(len(pool), rng.choice((1, 2, 3, 4, 6, 9, len(pool))))
        enabled = rng.sample(pool, count)
    else:
        main, extra = _THEME_KINDS[theme]
        enabled = [*main, *rng.sample(extra, rng.choice((0, 1, 1, 2)))]
    weights = [rng.uniform(0.1, 1.0) for _ in enabled]
    pre_vote, check_quorum = rng.random() < 0.6, rng.random() < 0.6
    if theme == "storm":
        # Every timed-out node campaigns, in the same term as others; mostly without
        # CheckQuorum, whose quiet period after a boot would make a rebooted voter sit out
        # the election it was voting in.
        pre_vote, check_quorum = False, rng.random() < 0.25
    split = _split_settings(seed, n) if theme == "storm" else None
    if split is not None:
        pre_vote, check_quorum = split.pre_vote, split.check_quorum
        # The election storms dominate: a cluster whose leader keeps stalling.
        weights[enabled.index("election_storm")] *= 4
    tiny = theme == "churn" or rng.random() < 0.5
    if any(k in enabled for k in ("members", "reconfig")) and not (pre_vote or check_quorum):
        # With neither, a removed server that never learned of its removal raises the
        # others' terms for ever (Thesis §4.2.3): no membership rule prevents that.
        pre_vote = True
    if theme == "storm":
        # Short timeouts in few distinct ticks: timed-out followers often collide.
        election_ticks, heartbeat_ticks = rng.choice((3, 4, 5)), 1
        if split is not None:
            election_ticks = split.election_ticks
    else:
        election_ticks = rng.choice((10, 10, 5, 20))
        heartbeat_ticks = rng.choice((1, 1, 2, 3))
    # Commands of varied sizes (padding up to ``pad`` bytes), so pieces hold one entry or
    # several, and their boundaries move from one append to the next.
    pad = rng.choice((0, 0, 24, 64, 160)) if tiny else 0
    c = SimCluster(
        n=n,
        seed=seed + 7_000_000,
        election_ticks=election_ticks,
        heartbeat_ticks=heartbeat_ticks,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        # One entry per message (64 bytes) with a window of 256 would cost hundreds of
        # thousands of messages per virtual second on a long log: tiny messages get a
        # small window.
        max_inflight_msgs=rng.choice((4, 1, 16)) if tiny else rng.choice((256, 4, 1)),
        # Small limits split an append into pieces, so a follower may hold a stale suffix
        # past the entries of the piece it got (Raft Figure 2, AppendEntries rule 5).
        max_msg_bytes=rng.choice((64, 64, 128, 256)) if tiny else 1 << 20,
        snapshot_every=rng.choice((None, None, 2, 5, 20)),
        # 64-byte chunks over a reordering network: a snapshot of padded commands arrives
        # in hundreds of chunks out of order (the transfer's crawl and livelock the fuzz
        # found here were fixed with held-aside chunks and transfer ids, docs/mutants.md).
        snapshot_chunk_bytes=rng.choice((64, 1024)),
        storage="file" if file else "memory",
    )
    quiet = rng.uniform(0.0, 0.6)  # the share of steps without any fault
    reads = reads or rng.random() < 0.3
    # Steps: classic coarse waits, fine ones (a fraction of a message delay), or a mix.
    fine = rng.choice((0.0, 0.3, 0.8))
    max_clients = rng.choice((1, 3, 6))
    # Longer runs on the larger clusters: more elections among more partial replicas.
    duration = rng.uniform(2.0, 4.0) if n == 3 else rng.uniform(3.0, 7.0)
    # A node that loses power mid-fsync comes back at once (as a fast reboot would) in
    # some seeds, so it can answer the requests of the election it was voting in.
    reboot = 0.0 if theme is None else rng.choice((0.5, 0.9))
    if theme == "storm":
        _storm_network(c, rng, split)
    st = Stats()
    run = _Run(c, rng, seed, st, pad, file, split=split is not None)
    while c.now < duration:
        try:
            if enabled and rng.random() >= quiet:
                kind = rng.choices(enabled, weights)[0]
                _swarm_step(run, kind)
            propose(c, rng, seed, st, rng.randrange(max_clients + 1), pad)
            if rng.random() < fine:
                wait_us = rng.randrange(50, 3_000)
            else:
                wait_us = rng.randrange(5_000, 300_000)
            if reads:
                run_with_reads(c, read_rng, wait_us, read_terms)
            else:
                c.run_until_us(c.now_us + wait_us)
        except SimulatedCrash:
            # The armed node lost power mid-fsync (its disk is already crashed): the node
            # goes down with it, and comes back later, at once, or at the repair.
            armed = run.armed
            assert armed is not None
            c.crash(armed)
            st.sync_crashes += 1
            run.armed = None
            if rng.random() < reboot:
                c.restart(armed, keep_in_flight=rng.random() < 0.7)
                st.restarts += 1
    if run.armed is not None:
        c.crash(run.armed)  # disarms it
    repair_and_check(c, seed, reads, st, catch_up=60.0)


@dataclasses.dataclass(frozen=True)
class _SplitSettings:
    pre_vote: bool
    check_quorum: bool
    election_ticks: int
    jitter: float  # the largest message delay, in seconds


def _split_settings(seed: int, n: int) -> _SplitSettings | None:
    """Whether this storm seed runs split votes (:func:`_split_vote`; half of them do), and
    with which settings. Drawn from a stream of their own, so that the other storm seeds run
    exactly as before. Under PreVote or CheckQuorum (or both), a node at a newer term
    answers a stale leader's heartbeat and a pre-vote with its term. Large delay jitter,
    without loss, so a request may arrive behind the answer to a message sent after it;
    but Raft §5.6 wants broadcast times well below the election timeout, so at most about
    a third of it, on timeouts of 5-10 ticks (or candidates would time out before their
    votes come back)."""
    split_rng = random.Random(seed * 1_000_003 + n + 3_300_000)
    if split_rng.random() >= 0.5:
        return None
    pre_vote, check_quorum = split_rng.choice(((True, False), (True, True), (False, True)))
    election_ticks = split_rng.choice((5, 8, 10))
    jitter = split_rng.choice((0.2, 0.35)) * election_ticks * _TICK_SECONDS
    return _SplitSettings(pre_vote, check_quorum, election_ticks, jitter)


def _storm_network(c: SimCluster, rng: random.Random, split: _SplitSettings | None) -> None:
    if rng.random() < 0.5 and split is None:
        c.set_unreliable(True)  # delays and losses: candidates learn of each other late
    if split is not None:
        c.set_jitter(split.jitter)


def _swarm_step(run: _Run, kind: str) -> None:
    c, rng, st = run.c, run.rng, run.st
    node = rng.randrange(c.n)
    if kind in _NETWORK_KINDS:
        _network_step(c, rng, kind, node, st)
    elif kind == "crash":
        if c.is_up(node) and node != run.armed:
            c.crash(node)
            st.crashes += 1
    elif kind == "restart":
        if not c.is_up(node):
            c.restart(node)
            st.restarts += 1
    elif kind == "bounce":
        if node != run.armed:
            c.restart(node)
            st.restarts += 1
    elif kind == "sync_crash":
        if run.armed is None and c.is_up(node):
            c.disk(node).crash_on_next_sync(rng.choice(_CRASH_MODES), after=rng.randrange(4))
            run.armed = node
    elif kind == "slow_apply":
        c.hold_applies(node, rng.random() < 0.6)
    elif kind == "members":
        members_step(c, rng, st)
    elif kind in _RUN_STEPS:
        _RUN_STEPS[kind](run)
    else:
        _after_append(run, kind)


_NETWORK_KINDS = frozenset(
    ("partition", "heal", "disconnect", "connect", "unreliable", "reorder", "duplicate")
)


def _network_step(c: SimCluster, rng: random.Random, kind: str, node: int, st: Stats) -> None:
    if kind == "partition":
        c.partition(random_groups(rng, c.n))
        st.partitions += 1
    elif kind == "heal":
        c.heal()
    elif kind == "disconnect":
        c.disconnect(node)
        if rng.random() < 0.3:
            _watch_isolated(c, node, st)
    elif kind == "connect":
        c.connect(node)
    elif kind == "unreliable":
        c.set_unreliable(rng.random() < 0.5)
    elif kind == "reorder":
        c.set_long_reordering(rng.random() < 0.5)
    else:
        c.set_duplication(rng.choice((0.0, 0.1, 0.3)))


def _after_append(run: _Run, kind: str) -> None:
    """The leader appends; after a moment (up to about one message delay, so the entries
    reached some followers and not others) a fault hits the leader or a follower: the next
    leader then holds some of them and must settle what the others hold (Raft §5.3-5.4)."""
    c, rng, st = run.c, run.rng, run.st
    leader = c.leader()
    if leader is None:
        return
    n = c.n
    run.batch(leader, rng.randrange(1, 4))
    c.run_until_us(c.now_us + rng.randrange(0, 1_500))
    st.leader_cuts += 1
    if kind == "isolate_leader":
        if rng.random() < 0.5:
            c.disconnect(leader)
            if rng.random() < 0.3:
                _watch_isolated(c, leader, st)
        else:
            # The leader keeps a minority (which may hold the new entries) on its side.
            others = [i for i in range(n) if i != leader]
            rng.shuffle(others)
            k = rng.randrange(0, (n - 1) // 2 + 1) if n > 2 else 0
            c.partition([[leader, *others[:k]], others[k:]])
    elif kind == "crash_leader":
        if leader != run.armed and c.is_up(leader):
            c.crash(leader)
            st.crashes += 1
    else:  # crash_follower
        followers = [i for i in range(n) if i != leader and i != run.armed and c.is_up(i)]
        if followers:
            victim = rng.choice(followers)
            if rng.random() < 0.5:
                c.restart(victim)
                st.restarts += 1
            else:
                c.crash(victim)
                st.crashes += 1


def _leader_churn(run: _Run) -> None:
    """Leadership flaps: for up to half a second, each new leader is cut off (or restarted)
    within a few milliseconds of winning, while clients keep proposing; the previous victim
    comes back as the next is cut, so a majority stays available. New leaders then start
    from logs that hold earlier terms' entries on some nodes only, and cut leaders leave
    their own entries partly replicated: the states of Raft §5.4.2's Figure 8."""
    c, rng, st = run.c, run.rng, run.st
    end = c.now_us + rng.randrange(100_000, 500_000)
    delay = rng.choice((300, 1_000, 3_000, 10_000))  # how long a new leader lives, at most
    seen: set[tuple[int, int]] = set()
    victim: int | None = None
    cut_at: int | None = None
    while c.now_us < end:
        c.run_until_us(c.now_us + rng.randrange(100, 600))
        leader = c.leader()
        if leader is not None:
            term = c.state(leader)[0]
            if (leader, term) not in seen:
                seen.add((leader, term))
                cut_at = c.now_us + rng.randrange(0, delay)
            if rng.random() < 0.3:
                run.propose(1)
            if cut_at is not None and c.now_us >= cut_at and leader != run.armed:
                cut_at = None
                st.leader_cuts += 1
                if victim is not None:
                    c.connect(victim)
                if rng.random() < 0.5:
                    c.disconnect(leader)
                    victim = leader
                else:
                    c.restart(leader)  # comes back at once, as a follower
                    st.restarts += 1
                    victim = None
    if victim is not None and rng.random() < 0.5:
        c.connect(victim)


def _crash_after_write(run: _Run) -> None:
    """For up to 300 ms, watch every node's term, vote and last log index in slices of a
    fraction of a message delay, and crash a node (sometimes) right after one of them
    changed: before its next write, so in file mode whatever it did not sync is lost, torn
    or partly kept. The previous victim restarts when the next one falls, so a majority
    stays up."""
    c, rng, st = run.c, run.rng, run.st
    end = c.now_us + rng.randrange(50_000, 300_000)
    p = rng.choice((0.05, 0.2, 0.5))
    last: dict[int, tuple[int, int | None, int]] = {}
    down: int | None = None
    # On 5 and 7 nodes, sometimes voters lose power together (a rack goes dark): once two
    # or three nodes voted for others in one term, all of them at once.
    rack = c.n >= 5 and rng.random() < 0.5
    size = rng.randrange(2, max(3, c.n - 1))
    voted: dict[int, list[int]] = {}  # term -> the nodes that voted in it, in order
    while c.now_us < end:
        c.run_until_us(c.now_us + rng.randrange(20 if rack else 50, 500))
        for i in range(c.n):
            if not c.is_up(i):
                continue
            raft = c.raft(i)
            now = (raft.term, raft.vote, raft.log.last_index())
            if rack and i in last and now[:2] != last[i][:2] and raft.vote not in (None, i):
                group = voted.setdefault(raft.term, [])
                group.append(i)
                if len(group) >= size and run.armed not in group:
                    voted.clear()
                    last.clear()
                    _power_loss(run, group)
                    break
            if i in last and last[i] != now and i != run.armed and rng.random() < p:
                if down is not None and not c.is_up(down):
                    c.restart(down)
                    st.restarts += 1
                c.crash(i)
                st.crashes += 1
                down = i
                if rng.random() < 0.5:
                    # A fast reboot: requests already sent to it (those of other candidates
                    # in the term it just voted in, say) may still arrive.
                    c.restart(i, keep_in_flight=rng.random() < 0.5)
                    st.restarts += 1
                    down = None
                last.pop(i, None)
                break
            last[i] = now


def _election_storm(run: _Run) -> None:
    """Take the leader (or, with none, a random node) away for a moment, so the others elect
    a new one, several at once on short timeouts; in file mode one voter's disk fails in its
    next fsync (usually the one of its vote: nothing else syncs without a leader), so a
    crash lands between a vote's write and its durability. The leader is cut off, or
    crashed and restarted a fraction of an election timeout later: then it campaigns too,
    in the term the others are voting in, and a voter that forgot its vote may give it
    twice (Raft §5.2). In the split-vote seeds (:func:`_split_settings`), most storms are
    a run of split votes instead (:func:`_split_vote`)."""
    c, rng, st = run.c, run.rng, run.st
    if run.split and rng.random() < 0.7:
        # A leader that keeps stalling (a recurring pause): one split vote after another.
        for _ in range(rng.randrange(2, 9)):
            _split_vote(run)
        return
    leader = c.leader()
    cut = leader if leader is not None else rng.randrange(c.n)
    others = [i for i in range(c.n) if i != cut and c.is_up(i) and i != run.armed]
    if not others or cut == run.armed:
        return
    if run.file and run.armed is None and rng.random() < 0.9:
        voter = rng.choice(others)
        c.disk(voter).crash_on_next_sync(rng.choice(("drop", "drop", "torn", "partial")))
        run.armed = voter
    timeout_us = c.raft(others[0]).config.election_ticks * 10_000
    if leader is not None and rng.random() < 0.7:
        # It dies mid-replication: the followers' logs differ, so some candidates of the
        # next term are refused as behind (Raft §5.4.1) by voters that grant a later one.
        run.batch(leader, rng.randrange(1, 4))
        c.run_until_us(c.now_us + rng.randrange(0, 1_500))
    st.leader_cuts += 1
    if rng.random() < 0.7:
        c.crash(cut)
        st.crashes += 1
        _watch_votes(run, rng.randrange(timeout_us // 4, 2 * timeout_us))
        c.restart(cut, keep_in_flight=rng.random() < 0.5)
        st.restarts += 1
    else:
        c.disconnect(cut)
        try:
            _watch_votes(run, rng.randrange(timeout_us // 2, 3 * timeout_us))
        finally:
            c.connect(cut)


def _watch_votes(
    run: _Run, duration_us: int, events: list[tuple[int, Callable[[], None]]] | None = None
) -> None:
    """Run ``duration_us`` in slices of a fraction of a message delay; a node that just
    voted (sometimes) loses power at once and reboots, with the other candidates' requests
    still on their way to it: a vote that was not durable is forgotten and may be given
    again in the same term (Raft §5.2, Figure 2). On 5 and 7 nodes, in half the storms the
    power loss is correlated (a rack goes dark): once two or three nodes voted in the same
    term, all of them lose power together and reboot at once, so one election may meet
    several voters that forgot their votes. ``events``: ``(time_us, fn)`` in time order,
    each called once when the watch reaches its time."""
    c, rng, st = run.c, run.rng, run.st
    end = c.now_us + duration_us
    events = list(events or ())
    p = rng.choice((0.7, 1.0) if run.split else (0.3, 0.7))
    votes = {i: c.raft(i).vote for i in range(c.n) if c.is_up(i)}
    budget = rng.randrange(1, 3)
    rack = c.n >= 5 and rng.random() < 0.5
    size = rng.choice((2, 2, 3))
    voted: dict[int, list[int]] = {}  # term -> the nodes that voted in it, in order
    while c.now_us < end:
        until = min(end, c.now_us + rng.randrange(20 if rack else 50, 500))
        if events and events[0][0] <= until:
            until = max(c.now_us, events[0][0])
            c.run_until_us(until)
            events.pop(0)[1]()
        else:
            c.run_until_us(until)
        for i in range(c.n):
            if not c.is_up(i):
                votes.pop(i, None)
                continue
            vote = c.raft(i).vote
            changed = i in votes and vote is not None and vote != votes[i] and vote != i
            votes[i] = vote
            if not changed or not budget or i == run.armed:
                continue
            if rack:
                group = voted.setdefault(c.raft(i).term, [])
                group.append(i)
                if len(group) >= size:
                    budget = 0
                    _power_loss(run, group)
                    if rng.random() < 0.5:
                        return  # the old leader comes back at once, to campaign in the term
            elif rng.random() < p:
                budget -= 1
                if run.split:
                    # Split storms: the power loss loses what was not synced, and the
                    # reboot is fast enough for senders to keep their requests.
                    c.crash(i, rng.choice(("drop", "drop", "torn", "partial")))
                    c.restart(i, keep_in_flight=True)
                else:
                    c.crash(i)
                    c.restart(i, keep_in_flight=rng.random() < 0.8)
                st.crashes += 1
                st.restarts += 1
                votes[i] = c.raft(i).vote


def _split_vote(run: _Run) -> None:
    """A split vote, as real clusters meet them (Raft §5.2): the leader stalls (a pause, a
    stuck send queue: what it sends waits), or without one the followers just time out;
    having heard the same last heartbeat, two or more fire in the same tick
    (:meth:`~raftpy.testing.sim.SimCluster.campaign`), the others a fraction of a message
    delay later, so several campaign in one term, each voting for itself. Then the stalled
    leader's queued heartbeats go out: a node at the new term answers them with its term
    (under PreVote or CheckQuorum), so the old leader becomes a follower of the term with
    no vote, as does a late pre-candidate whose pre-vote a candidate refuses; with the
    jittered delays of these seeds (:func:`_split_settings`), the candidates' requests may
    reach these nodes only after that, to be granted in a term they already held. A voter
    that just voted may lose power and reboot behind senders that kept their requests
    (:func:`_watch_votes`): a vote it did not make durable would go to a second candidate
    of the same term."""
    c, rng, st = run.c, run.rng, run.st
    leader = c.leader()
    voters = [i for i in range(c.n) if i != leader and c.is_up(i)]
    if len(voters) < 2 or leader == run.armed:
        return
    timeout_us = c.raft(voters[0]).config.election_ticks * 10_000
    stalled = leader if leader is not None and rng.random() < 0.8 else None
    if stalled is not None:
        for i in range(c.n):
            if i != stalled:
                c.hold(stalled, i)
    st.leader_cuts += 1
    rng.shuffle(voters)
    k = rng.randrange(2, len(voters) + 1)
    # Silence for most of an election timeout (followers' own timers fire from one timeout
    # on), then the first group in one tick, the others spread over a few milliseconds.
    t = c.now_us + rng.randrange(timeout_us // 2, timeout_us)
    events: list[tuple[int, Callable[[], None]]] = [(t, lambda: c.campaign(*voters[:k]))]
    for i in voters[k:]:
        if rng.random() < 0.7:
            events.append((t + rng.randrange(0, 3_000), functools.partial(c.campaign, i)))
    if stalled is not None:
        # It comes back in the middle of the election: often within a message delay of
        # the first candidates (so its heartbeats may be answered before their requests
        # reach it), else any time in the next election timeout.
        resume = t + rng.randrange(0, timeout_us // (4 if rng.random() < 0.5 else 1))

        def release() -> None:
            for i in range(c.n):
                if i != stalled:
                    c.release(stalled, i)

        events.append((resume, release))
    events.sort(key=lambda e: e[0])
    try:
        _watch_votes(run, t - c.now_us + rng.randrange(timeout_us, 3 * timeout_us), events)
    finally:
        if stalled is not None:
            for i in range(c.n):
                if i != stalled:
                    c.release(stalled, i)


def _power_loss(run: _Run, nodes: list[int]) -> None:
    """``nodes`` lose power together (unsynced writes dropped, torn or partly kept), in half
    the cases with the node they voted for (its rack too), and boot again at once behind
    senders that kept their requests."""
    c, rng, st = run.c, run.rng, run.st
    down = [i for i in nodes if c.is_up(i)]
    chosen = c.raft(down[-1]).vote if down else None
    if chosen is not None and chosen not in down and chosen != run.armed and rng.random() < 0.5:
        down.append(chosen)
    down = [i for i in down if c.is_up(i)]
    for i in down:
        c.crash(i, rng.choice(("drop", "drop", "torn", "partial")))
        st.crashes += 1
    for i in down:
        c.restart(i, keep_in_flight=True)
        st.restarts += 1


def _reconfig(run: _Run) -> None:
    """Two to four membership changes back to back, each given a moment only (often less
    than it takes to commit) before the next is tried; between them the leader may be cut
    off or restarted, so a change is left uncommitted at a deposed leader while its
    successor, holding it or not, makes the next. Some changes swap two voters at once
    through joint consensus. A leader must adopt a configuration when it appends it and
    start no second change before the first committed (Thesis §4.1, §4.3)."""
    c, rng, st = run.c, run.rng, run.st
    victim: int | None = None
    for _ in range(rng.randrange(2, 5)):
        members_step(c, rng, st, timeout=rng.choice((0.01, 0.03, 0.1, 0.5)), joint=0.3)
        leader = c.leader()
        if victim is not None:
            c.connect(victim)
            victim = None
        if leader is None or leader == run.armed or rng.random() < 0.4:
            continue
        st.leader_cuts += 1
        if rng.random() < 0.5:
            c.disconnect(leader)
            victim = leader
        else:
            c.restart(leader)
            st.restarts += 1
    if victim is not None:
        c.connect(victim)


# The kinds that run for a while on their own.
_RUN_STEPS = {
    "reconfig": _reconfig,
    "leader_churn": _leader_churn,
    "crash_after_write": _crash_after_write,
    "election_storm": _election_storm,
}


def _watch_isolated(c: SimCluster, node: int, st: Stats) -> None:
    """Node ``node`` was just cut off from everyone: for three election timeouts, it must not
    raise its term under PreVote (Thesis §9.6: a pre-candidate that cannot win never
    increments its term), and a leader must step down under CheckQuorum (Thesis §6.2)."""
    if not c.is_up(node):
        return
    raft = c.raft(node)
    conf = raft.conf_state()
    if len(conf.voters) < 2 or conf.voters_outgoing or node not in conf.voters:
        return  # alone it may legitimately win; joint or removed: out of scope here
    cfg = raft.config
    term0 = c.state(node)[0]
    st.watched += 1
    c.run_for(3 * (cfg.election_ticks + 1) * _TICK_SECONDS)
    if not c.is_up(node):
        return
    term, leads = c.state(node)
    where = f"[seed={c.seed} n={c.n}] node {node}, cut off at term {term0}"
    if cfg.check_quorum:
        assert not leads, f"{where}, still leads at term {term} (CheckQuorum, Thesis §6.2)"
    if cfg.pre_vote:
        assert term == term0, f"{where}, moved to term {term} under PreVote (Thesis §9.6)"
