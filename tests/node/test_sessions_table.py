"""The session table and its snapshot wrapper, as pure code: no node, no event loop."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from typing import BinaryIO

import msgspec
import pytest

from raftpy.core.messages import Entry, EntryKind
from raftpy.errors import (
    LocalProtocolError,
    ProposalDropped,
    RemoteProtocolError,
    SessionExpiredError,
)
from raftpy.node.config import NodeConfig
from raftpy.node.session_machine import (
    MARKER,
    ConcurrentSessionStateMachine,
    SessionStateMachine,
    with_sessions,
)
from raftpy.node.session_records import (
    CachedFailure,
    CloseSession,
    KeepAlive,
    OpenSession,
    SessionCommand,
    SessionRecord,
    decode_record,
    encode_command,
    encode_record,
)
from raftpy.node.session_table import Answer, ClusterClock, SessionTable
from raftpy.node.sessions import NodeSessions


class Counter:
    """Counts applies; ``boom`` raises (deterministically); keeps every command."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        if command == b"boom":
            raise ValueError("boom refused")
        self.commands.append(command)
        return len(self.commands).to_bytes(4, "big")

    def query(self, query: bytes) -> bytes:
        return len(self.commands).to_bytes(4, "big")

    def snapshot(self, out: BinaryIO) -> None:
        out.write(json.dumps([c.decode() for c in self.commands]).encode())

    def restore(self, inp: BinaryIO) -> None:
        self.commands = [c.encode() for c in json.loads(inp.read())]


class ConcurrentCounter(Counter):
    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        frozen = list(self.commands)

        def write(out: BinaryIO) -> None:
            out.write(json.dumps([c.decode() for c in frozen]).encode())

        return write


def opener(
    t: int, timeout_ms: int = 1000, max_results: int = 10, max_sessions: int = 100
) -> OpenSession:
    return OpenSession(t, timeout_ms, max_results, max_sessions)


class Replica:
    """A table plus a counter, applying records at consecutive indexes."""

    def __init__(self) -> None:
        self.sm = Counter()
        self.expired: list[tuple[int, int]] = []
        self.table = SessionTable(on_expire=lambda i, s: self.expired.append((i, s)))
        self.index = 0

    def do(self, record: SessionRecord) -> Answer:
        self.index += 1
        return self.table.apply(self.index, record, self.sm.apply)

    def open(self, t: int = 0, **kw: int) -> int:
        answer = self.do(opener(t, **kw))
        assert answer.failure is None
        return int.from_bytes(answer.result, "big")


def test_open_gives_the_entry_index_as_id() -> None:
    r = Replica()
    r.do(SessionCommand(0, 0, 0, 0, b"plain"))
    assert r.open() == 2
    assert 2 in r.table and len(r.table) == 1


def test_duplicate_is_answered_from_the_cache_without_applying() -> None:
    r = Replica()
    s = r.open()
    first = r.do(SessionCommand(1, s, 1, 1, b"a"))
    assert first.applied and first.failure is None
    again = r.do(SessionCommand(2, s, 1, 1, b"a"))
    assert again == Answer(first.result, None, False)
    assert r.sm.commands == [b"a"]


def test_plain_writes_apply_once_per_entry() -> None:
    r = Replica()
    r.do(SessionCommand(0, 0, 0, 0, b"x"))
    r.do(SessionCommand(0, 0, 0, 0, b"x"))
    assert r.sm.commands == [b"x", b"x"]


def test_unknown_session_is_refused_and_not_applied() -> None:
    r = Replica()
    answer = r.do(SessionCommand(0, 77, 1, 1, b"a"))
    assert isinstance(answer.failure, SessionExpiredError) and not answer.applied
    assert isinstance(r.do(KeepAlive(0, 77, 1)).failure, SessionExpiredError)
    assert isinstance(r.do(CloseSession(0, 77)).failure, SessionExpiredError)
    assert r.sm.commands == []


def test_ack_floor_discards_results_and_refuses_acknowledged_seqs() -> None:
    r = Replica()
    s = r.open()
    r.do(SessionCommand(1, s, 1, 1, b"a"))
    r.do(SessionCommand(1, s, 2, 1, b"b"))
    # seq 3 acknowledges 1 and 2: their results are gone, a resend is refused (never applied).
    r.do(SessionCommand(1, s, 3, 3, b"c"))
    for seq, cmd in ((1, b"a"), (2, b"b")):
        answer = r.do(SessionCommand(2, s, seq, seq, cmd))
        assert isinstance(answer.failure, SessionExpiredError) and not answer.applied
        assert "already acknowledged" in str(answer.failure)
    assert r.do(SessionCommand(2, s, 3, 3, b"c")).applied is False
    assert r.sm.commands == [b"a", b"b", b"c"]


def test_keep_alive_acknowledges_and_keeps_the_session() -> None:
    r = Replica()
    s = r.open(0, timeout_ms=100)
    r.do(SessionCommand(0, s, 1, 1, b"a"))
    for t in range(50, 500, 50):
        assert r.do(KeepAlive(t, s, 2)).failure is None
    assert s in r.table
    assert isinstance(r.do(SessionCommand(500, s, 1, 1, b"a")).failure, SessionExpiredError)
    assert r.sm.commands == [b"a"]


def test_results_per_session_are_bounded() -> None:
    r = Replica()
    s = r.open(max_results=3)
    for seq in (1, 2, 3):
        assert r.do(SessionCommand(0, s, seq, 1, b"%d" % seq)).applied
    refused = r.do(SessionCommand(0, s, 4, 1, b"4"))
    assert isinstance(refused, Answer) and isinstance(refused.failure, ProposalDropped)
    assert refused.failure.retryable and not refused.applied
    # Acknowledging makes room, and the same seq then applies.
    assert r.do(SessionCommand(0, s, 4, 3, b"4")).applied
    assert r.sm.commands == [b"1", b"2", b"3", b"4"]


def test_eviction_takes_the_least_recently_active_session() -> None:
    r = Replica()
    a = r.open(0, max_sessions=2)
    b = r.open(0, max_sessions=2)
    r.do(SessionCommand(1, a, 1, 1, b"a"))  # b is now the least recently active
    c = r.open(2, max_sessions=2)
    assert r.table.sessions() == [a, c]
    assert r.expired == [(r.index, b)]
    assert isinstance(r.do(SessionCommand(3, b, 1, 1, b"b")).failure, SessionExpiredError)


def test_expiry_follows_the_stamped_clock_never_backwards() -> None:
    r = Replica()
    s = r.open(1000, timeout_ms=100)
    r.do(SessionCommand(1100, 0, 0, 0, b"x"))  # idle exactly its timeout: still alive
    assert s in r.table
    r.do(SessionCommand(900, 0, 0, 0, b"x"))  # an older stamp (a new leader): clock stays
    assert r.table.clock_ms == 1100 and s in r.table
    r.do(SessionCommand(1101, 0, 0, 0, b"x"))
    assert s not in r.table and r.expired == [(r.index, s)]


def test_expiry_is_identical_on_replicas_applying_the_same_records() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    records: list[SessionRecord] = []
    t = 0
    open_ids: list[int] = []
    for index in range(1, 600):
        t += rng.choice((0, 1, 5, 40, 200))
        roll = rng.random()
        if roll < 0.1 or not open_ids:
            records.append(opener(t, timeout_ms=rng.choice((50, 300, 1000)), max_sessions=8))
            open_ids.append(index)
        elif roll < 0.2:
            records.append(KeepAlive(t, rng.choice(open_ids), 0))
        elif roll < 0.25:
            records.append(CloseSession(t, rng.choice(open_ids)))
        else:
            seq = rng.randrange(1, 20)
            records.append(SessionCommand(t, rng.choice(open_ids), seq, 0, b"c%d" % index))
    a, b = Replica(), Replica()
    for rec in records:
        answers = a.do(rec), b.do(rec)
        assert answers[0].result == answers[1].result
        assert repr(answers[0].failure) == repr(answers[1].failure)
    assert a.expired == b.expired and a.expired
    assert a.table.sessions() == b.table.sessions()
    # A third replica restored from a's snapshot halfway agrees from there on.
    assert a.sm.commands == b.sm.commands


def test_failures_are_cached_and_answered_again() -> None:
    r = Replica()
    s = r.open()
    first = r.do(SessionCommand(0, s, 1, 1, b"boom"))
    assert isinstance(first.failure, ValueError) and first.applied
    again = r.do(SessionCommand(0, s, 1, 1, b"boom"))
    assert isinstance(again.failure, CachedFailure) and not again.applied
    assert again.failure.error_type == "ValueError"
    assert again.failure.error_message == "boom refused"
    plain = r.do(SessionCommand(0, 0, 0, 0, b"boom"))
    assert isinstance(plain.failure, ValueError)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\x09\x00",  # unknown tag
        encode_record(SessionCommand(0, 0, 0, 0, b"x"))[:-1],
        msgspec.msgpack.encode([2, 0, 5, 0, 0, b"x"]),  # a session's command with seq 0
        msgspec.msgpack.encode([2, 0, 5, 1, 2, b"x"]),  # ack past its own seq
        msgspec.msgpack.encode([2, 0, 0, 3, 0, b"x"]),  # seq without a session
        msgspec.msgpack.encode([2, -1, 0, 0, 0, b"x"]),  # time before 0
        msgspec.msgpack.encode([1, 0, 0, 10, 10]),  # timeout 0
        msgspec.msgpack.encode([1, 0, 10, 10, 10**9]),  # too many sessions
        msgspec.msgpack.encode([3, 0, 0, 0]),  # keep-alive of session 0
        b"\x91" * 3000,  # deep nesting
    ],
)
def test_malformed_records_fail_their_request_and_change_nothing(data: bytes) -> None:
    r = Replica()
    s = r.open(5, timeout_ms=10)
    r.do(SessionCommand(5, s, 1, 1, b"a"))
    before = (r.table.clock_ms, r.table.sessions(), list(r.table.images()))
    with pytest.raises(RemoteProtocolError):
        decode_record(data)
    answer = r.table.apply_bytes(99, data, r.sm.apply)
    assert isinstance(answer.failure, RemoteProtocolError) and not answer.applied
    assert (r.table.clock_ms, r.table.sessions(), list(r.table.images())) == before
    assert r.sm.commands == [b"a"]


def test_records_round_trip() -> None:
    for rec in (
        opener(3),
        SessionCommand(4, 9, 2, 1, b"d"),
        KeepAlive(5, 9, 2),
        CloseSession(6, 9),
    ):
        assert decode_record(encode_record(rec)) == rec


def test_deadline_heap_stays_bounded_under_churn() -> None:
    r = Replica()
    for t in range(5000):
        r.open(t, timeout_ms=1_000_000, max_sessions=3)
    assert len(r.table) == 3
    assert len(r.table._deadlines) <= 2 * 3 + 64 + 1


def test_cluster_clock_starts_from_the_known_time_and_never_goes_back() -> None:
    clock = ClusterClock()
    with pytest.raises(RuntimeError):
        clock.stamp(0.0)
    clock.start(5000, now=100.0)
    assert clock.stamp(100.0) == 5000
    assert clock.stamp(100.25) == 5250
    clock.start(1000, now=7.0)  # a later term, knowing an older time: never backwards
    assert clock.stamp(7.0) == 5250
    assert clock.stamp(6.0) == 5250


# -- the snapshot wrapper ---------------------------------------------------------------------


def entry(index: int, record: SessionRecord) -> Entry:
    return Entry(1, index, EntryKind.SESSION, encode_record(record))


def filled(machine: SessionStateMachine) -> int:
    machine.apply_entry(entry(1, opener(10, max_results=5)))
    machine.apply_entry(entry(2, SessionCommand(11, 1, 1, 1, b"a")))
    machine.apply_entry(entry(3, SessionCommand(12, 1, 2, 1, b"boom")))
    machine.apply_entry(entry(4, opener(13)))
    machine.apply_entry(entry(5, KeepAlive(20, 4, 0)))
    return 5


@pytest.mark.parametrize("concurrent", [False, True])
def test_snapshot_round_trip_keeps_the_table_beside_the_user_state(concurrent: bool) -> None:
    machine = with_sessions(ConcurrentCounter() if concurrent else Counter())
    assert isinstance(machine, ConcurrentSessionStateMachine) == concurrent
    filled(machine)
    out = io.BytesIO()
    if isinstance(machine, ConcurrentSessionStateMachine):
        writer = machine.prepare_snapshot()
        # Applies after prepare_snapshot() are in neither the table nor the user's state.
        machine.apply_entry(entry(6, SessionCommand(30, 1, 3, 1, b"late")))
        machine.apply_entry(entry(7, opener(31)))
        writer(out)
    else:
        machine.snapshot(out)
    assert out.getvalue().startswith(MARKER)
    fresh = with_sessions(Counter())
    fresh.restore(io.BytesIO(out.getvalue()))
    assert fresh.user.commands == [b"a"]  # type: ignore[attr-defined]
    assert fresh.table.sessions() == [1, 4]
    assert fresh.table.clock_ms == 20
    # The restored table answers duplicates, failures included, without applying.
    dup = fresh.apply_entry(entry(8, SessionCommand(40, 1, 1, 1, b"a")))
    assert dup.result == (1).to_bytes(4, "big") and not dup.applied
    failed = fresh.apply_entry(entry(9, SessionCommand(40, 1, 2, 1, b"boom")))
    assert isinstance(failed.failure, CachedFailure)
    assert fresh.user.commands == [b"a"]  # type: ignore[attr-defined]


def test_a_restored_table_drops_acknowledged_results_as_the_original_does() -> None:
    # The table finds the oldest results to drop through a queue of their seqs beside the
    # results; a restore rebuilds it, or acknowledged results would stay and fill the session.
    machine = with_sessions(Counter())
    machine.apply_entry(entry(1, opener(10, max_results=3)))
    for seq in (1, 2, 3):
        assert machine.apply_entry(entry(1 + seq, SessionCommand(11, 1, seq, 1, b"%d" % seq)))[2]
    out = io.BytesIO()
    machine.snapshot(out)
    fresh = with_sessions(Counter())
    fresh.restore(io.BytesIO(out.getvalue()))
    # seq 4 acknowledges 1..3: room is made, it applies, and 2 is refused as acknowledged.
    assert fresh.apply_entry(entry(5, SessionCommand(12, 1, 4, 4, b"4"))).applied
    again = fresh.apply_entry(entry(6, SessionCommand(12, 1, 2, 2, b"2")))
    assert isinstance(again.failure, SessionExpiredError) and not again.applied
    # 6 overtakes 5: acknowledging 5 drops 4 and stops at 6 (the front); 7 drops both.
    assert fresh.apply_entry(entry(7, SessionCommand(13, 1, 6, 4, b"6"))).applied
    assert fresh.apply_entry(entry(8, SessionCommand(13, 1, 5, 5, b"5"))).applied
    assert fresh.apply_entry(entry(9, SessionCommand(14, 1, 7, 7, b"7"))).applied
    for seq in (4, 5, 6):
        late = fresh.apply_entry(entry(10, SessionCommand(15, 1, seq, seq, b"%d" % seq)))
        assert isinstance(late.failure, SessionExpiredError) and not late.applied, seq
    assert fresh.user.commands == [b"1", b"2", b"3", b"4", b"6", b"5", b"7"]  # type: ignore[attr-defined]


def test_old_snapshot_without_marker_restores_with_an_empty_table() -> None:
    old = Counter()
    old.apply(b"a")
    old.apply(b"b")
    body = io.BytesIO()
    old.snapshot(body)  # what a node wrote before sessions existed
    machine = with_sessions(Counter())
    filled(machine)
    machine.restore(io.BytesIO(body.getvalue()))
    assert machine.user.commands == [b"a", b"b"]  # type: ignore[attr-defined]
    assert len(machine.table) == 0 and machine.table.clock_ms == 0


def test_old_snapshot_shorter_than_the_marker_restores() -> None:
    class Tiny(Counter):
        def snapshot(self, out: BinaryIO) -> None:
            out.write(b"[]")

    body = io.BytesIO()
    Tiny().snapshot(body)
    machine = with_sessions(Counter())
    machine.restore(io.BytesIO(body.getvalue()))
    assert machine.user.commands == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("cut", [len(MARKER) + 2, len(MARKER) + 6, -3])
def test_damaged_table_image_raises_and_keeps_the_table(cut: int) -> None:
    machine = with_sessions(Counter())
    filled(machine)
    out = io.BytesIO()
    machine.snapshot(out)
    data = out.getvalue()
    image_end = data.index(b'["a"]')
    damaged = data[:cut] if cut > 0 else data[: image_end + cut]
    target = with_sessions(Counter())
    target.apply_entry(entry(1, opener(0)))
    with pytest.raises(ValueError, match="damaged session table"):
        target.restore(io.BytesIO(damaged))
    assert target.table.sessions() == [1]


@pytest.mark.parametrize(
    ("session", "seq", "ack", "data"),
    [(0, 0, 0, b""), (1, 1, 0, b"x"), (2**40, 2**62, 2**61, b"\xc1" * 300)],
)
def test_command_bytes_are_those_of_the_record(
    session: int, seq: int, ack: int, data: bytes
) -> None:
    """The node encodes every write from a tuple (encode_command), without the Struct: the
    bytes must be exactly the record's, and decode back to it."""
    record = SessionCommand(12_345, session, seq, ack, data)
    raw = encode_command(12_345, session, seq, ack, data)
    assert raw == encode_record(record)
    assert decode_record(raw) == record


@pytest.mark.parametrize(
    ("session", "seq", "ack"),
    [(0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 2, 3), (-1, 1, 0), (1, 2**63, 0), (2**63, 1, 0)],
)
def test_the_node_refuses_session_fields_that_break_the_record_rules(
    session: int, seq: int, ack: int
) -> None:
    sessions = NodeSessions(Counter(), NodeConfig())
    sessions.on_leader(0.0)
    with pytest.raises(LocalProtocolError):
        sessions.command(b"x", session, seq, ack, 1.0)
