"""The replicated table of client sessions (Thesis §6.3) and the cluster clock that expires
them. Pure: no asyncio, no clocks, no I/O; the node and the simulator apply the same records
to it in log order, so every replica holds the same table at the same index.

A session remembers, per sequence number, the result the state machine gave until the client
acknowledges it; a duplicate of a command already applied (a client resending through a
timeout or a leader change) is answered from that memory and never applied twice. Every
record first advances the table's clock to the leader's stamp (never backwards) and expires
the sessions idle longer than their timeout, in session-id order: expiry depends only on the
log, never on a replica's own clock. What the table keeps is bounded: sessions by
``max_sessions`` (least recently active evicted), results per session by ``max_results``
(further commands are refused until the client acknowledges some).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from raftpy.errors import ProposalDropped, RemoteProtocolError, SessionExpiredError
from raftpy.node.session_records import (
    CachedFailure,
    CachedResult,
    CloseSession,
    KeepAlive,
    OpenSession,
    SessionCommand,
    SessionImage,
    SessionRecord,
    TableHead,
    decode_record,
    failure_of,
)

__all__ = ["Answer", "ClusterClock", "SessionTable"]


class Answer(NamedTuple):
    """What applying one record gave: ``result`` for its proposer, or ``failure`` (the
    exception the state machine raised, or the table's refusal). ``applied`` says whether the
    user's state machine ran ``apply`` for it."""

    result: bytes
    failure: Exception | None
    applied: bool


_EMPTY = Answer(b"", None, False)


def _applied(result: bytes, _new: Callable[..., Answer] = tuple.__new__) -> Answer:
    """``Answer(result, None, True)``, built as a tuple: a NamedTuple's own constructor is a
    Python function, about 0.3 us of the ~3 us every replica spends per write."""
    return _new(Answer, (result, None, True))


@dataclass(slots=True)
class _Session:
    id: int
    timeout_ms: int
    max_results: int
    last_ms: int  # cluster time of its last request
    floor: int = 1  # every seq below it is acknowledged: its result is gone
    results: dict[int, CachedResult] = field(default_factory=dict)
    # The keys of ``results`` in its order, to find its front in O(1): ``next(iter(dict))``
    # walks over the holes its deletions at the front leave until the dict is rebuilt, about
    # as many as the results kept (0.5 us per write at 256 outstanding, 3 us at 2,000).
    order: deque[int] = field(default_factory=deque)

    @property
    def deadline(self) -> int:
        return self.last_ms + self.timeout_ms


def _answer_of(cached: CachedResult) -> Answer:
    if cached.error_type:
        return Answer(b"", CachedFailure(cached.error_type, cached.error_message), False)
    return Answer(cached.result, None, False)


class SessionTable:
    """Every open session, as of the last record applied.

    ``on_expire(index, session)`` (optional) hears of each session expired or evicted while
    applying the record at ``index`` (tests compare replicas with it).
    """

    def __init__(self, on_expire: Callable[[int, int], None] | None = None) -> None:
        self.clock_ms = 0
        """Cluster time: the newest leader stamp applied (never decreases)."""
        self.on_expire = on_expire
        # Least recently active first: activity times never decrease, so this order is also
        # the order of last_ms, and eviction takes the first.
        self._sessions: OrderedDict[int, _Session] = OrderedDict()
        # (deadline, id), at most one per live session; a key may be older than the session's
        # real deadline (it was active since), which is checked when it is popped.
        self._deadlines: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session: int) -> bool:
        return session in self._sessions

    def sessions(self) -> list[int]:
        """Open session ids, least recently active first."""
        return list(self._sessions)

    # -- applying -------------------------------------------------------------------------------

    def apply_bytes(self, index: int, data: bytes, apply: Callable[[bytes], bytes]) -> Answer:
        """Apply the SESSION entry at ``index`` holding ``data``; ``apply`` is the user's state
        machine. Bytes that are not a well-formed record change nothing (on every replica
        alike) and fail that request."""
        try:
            record = decode_record(data)
        except RemoteProtocolError as exc:
            return Answer(b"", exc, False)
        return self.apply(index, record, apply)

    def apply(self, index: int, record: SessionRecord, apply: Callable[[bytes], bytes]) -> Answer:
        """Apply ``record``, the content of the entry at ``index`` (see the module)."""
        # Thesis §6.3: expiry by log time, so every replica expires alike. The clock never
        # goes back (a new leader may stamp older times than its predecessor did).
        if record.time_ms > self.clock_ms:
            self.clock_ms = record.time_ms
        heap = self._deadlines
        if heap and heap[0][0] < self.clock_ms:
            self._expire(index)
        if type(record) is SessionCommand:
            if record.session == 0:  # a plain write: once per entry, as without sessions
                try:
                    return _applied(apply(record.data))
                except Exception as exc:
                    return Answer(b"", exc, True)
            return self._command(record, apply)
        if isinstance(record, OpenSession):
            return self._open(index, record)
        if isinstance(record, KeepAlive):
            s = self._touch(record.session)
            if s is None:
                return Answer(b"", _expired(record.session), False)
            self._acknowledge(s, record.ack)
            return _EMPTY
        assert isinstance(record, CloseSession)
        s = self._sessions.pop(record.session, None)
        if s is None:
            return Answer(b"", _expired(record.session), False)
        return _EMPTY

    def _expire(self, index: int) -> None:
        """Expire every session idle for longer than its timeout, in id order."""
        now = self.clock_ms
        heap = self._deadlines
        expired: list[int] = []
        while heap and heap[0][0] < now:
            _, sid = heapq.heappop(heap)
            s = self._sessions.get(sid)
            if s is None:
                continue  # closed or evicted earlier
            if s.deadline < now:
                expired.append(sid)
            else:
                heapq.heappush(heap, (s.deadline, sid))  # active since that key was pushed
        for sid in sorted(expired):
            del self._sessions[sid]
            if self.on_expire is not None:
                self.on_expire(index, sid)

    def _open(self, index: int, record: OpenSession) -> Answer:
        while len(self._sessions) >= record.max_sessions:
            sid, _ = self._sessions.popitem(last=False)  # the least recently active
            if self.on_expire is not None:
                self.on_expire(index, sid)
        s = _Session(index, record.timeout_ms, record.max_results, self.clock_ms)
        self._sessions[index] = s
        self._push(s)
        return Answer(index.to_bytes(8, "big"), None, False)

    def _touch(self, sid: int) -> _Session | None:
        s = self._sessions.get(sid)
        if s is not None:
            s.last_ms = self.clock_ms
            self._sessions.move_to_end(sid)
        return s

    def _push(self, s: _Session) -> None:
        heap = self._deadlines
        heapq.heappush(heap, (s.deadline, s.id))
        if len(heap) > 2 * len(self._sessions) + 64:
            # Keys of closed and evicted sessions pile up only this far.
            self._deadlines = [(x.deadline, x.id) for x in self._sessions.values()]
            heapq.heapify(self._deadlines)

    @staticmethod
    def _acknowledge(s: _Session, ack: int) -> None:
        if ack > s.floor:
            s.floor = ack
            # Results are kept in the order their writes were applied, which is seq order
            # but for writes that overtook each other: drop from the front, so the cost is
            # the results dropped, not the results kept. One that overtook stays behind a
            # newer one until that goes (still answered right, and still bounded).
            results = s.results
            order = s.order
            while order:
                seq = order[0]
                if seq >= ack:
                    break
                order.popleft()
                del results[seq]

    def _command(self, record: SessionCommand, apply: Callable[[bytes], bytes]) -> Answer:
        # Every write of a session comes here, on every replica: the common case (a new seq,
        # the ack one step further) runs without helper calls.
        sid = record.session
        s = self._sessions.get(sid)
        if s is None:
            return Answer(b"", _expired(sid), False)
        s.last_ms = self.clock_ms
        self._sessions.move_to_end(sid)
        seq = record.seq
        results = s.results
        cached = results.get(seq)
        if cached is not None:
            # A duplicate (Thesis §6.3): answer from memory, never apply twice.
            if record.ack > s.floor:
                self._acknowledge(s, record.ack)
            return _answer_of(cached)
        if seq < s.floor:
            # Applied once and acknowledged since: its result is gone, and applying it again
            # would be the duplicate sessions exist to prevent.
            return Answer(
                b"",
                SessionExpiredError(
                    f"session {s.id}: sequence {seq} was already acknowledged; not applied"
                ),
                False,
            )
        if record.ack > s.floor:
            self._acknowledge(s, record.ack)
        if len(results) >= s.max_results:
            return Answer(
                b"",
                ProposalDropped(
                    f"session {s.id} holds {len(results)} unacknowledged results (the "
                    "most it may); not applied: retry once earlier writes are acknowledged"
                ),
                False,
            )
        try:
            result = apply(record.data)
        except Exception as exc:
            # A deterministic state machine fails alike on every replica; the proposer gets
            # the exception, and a duplicate gets it again from the cache.
            f = failure_of(exc)
            results[seq] = CachedResult(seq, b"", f.error_type, f.error_message)
            s.order.append(seq)
            return Answer(b"", exc, True)
        results[seq] = CachedResult(seq, result)
        s.order.append(seq)
        return _applied(result)

    # -- snapshots ------------------------------------------------------------------------------

    def head(self) -> TableHead:
        return TableHead(self.clock_ms, len(self._sessions))

    def images(self) -> Iterator[SessionImage]:
        """Every session, least recently active first (the order a restore rebuilds)."""
        for s in self._sessions.values():
            yield SessionImage(
                s.id, s.timeout_ms, s.max_results, s.last_ms, s.floor, tuple(s.results.values())
            )

    def load(self, head: TableHead, images: list[SessionImage]) -> None:
        """Replace the whole table with a snapshot's image (in :meth:`images` order)."""
        if len(images) != head.sessions:
            raise ValueError(f"session table image holds {len(images)} of {head.sessions}")
        sessions: OrderedDict[int, _Session] = OrderedDict()
        for im in images:
            if im.id in sessions:
                raise ValueError(f"session table image holds session {im.id} twice")
            results = {r.seq: r for r in im.results}
            sessions[im.id] = _Session(
                im.id, im.timeout_ms, im.max_results, im.last_ms, im.floor, results, deque(results)
            )
        self.clock_ms = head.clock_ms
        self._sessions = sessions
        self._deadlines = [(s.deadline, s.id) for s in sessions.values()]
        heapq.heapify(self._deadlines)


def _expired(session: int) -> SessionExpiredError:
    return SessionExpiredError(
        f"session {session} is unknown (expired, evicted or closed); not applied: "
        "open a new session"
    )


class ClusterClock:
    """The leader's cluster clock (LogCabin's): milliseconds stamped into every SESSION
    record it appends. A new leader starts from the newest time it knows (its table's clock)
    and advances with its own monotonic clock; stamps it hands out never decrease. Pure: the
    caller passes ``now`` (seconds of a monotonic clock)."""

    def __init__(self) -> None:
        self._base_ms = 0
        self._started: float | None = None
        self._last_ms = 0

    def start(self, known_ms: int, now: float) -> None:
        """This node became leader knowing cluster time ``known_ms``, at ``now``."""
        self._base_ms = max(known_ms, self._last_ms)
        self._started = now

    def stamp(self, now: float) -> int:
        """The cluster time for a record accepted at ``now``."""
        started = self._started
        if started is None:
            raise RuntimeError("the cluster clock runs only on a leader (start() first)")
        t = self._base_ms + int((now - started) * 1000)
        if t > self._last_ms:
            self._last_ms = t
        return self._last_ms
