"""When the node writes its answers to a client: at once when the client awaits nothing
else on that connection, else together at the end of the loop pass. A ClientConnection
over fakes of its transport, owner and reader (for tests)."""

from __future__ import annotations

from typing import Any, cast

from raftpy.transport.clients import ClientConnection
from raftpy.transport.codec import FrameDecoder
from raftpy.transport.protocol import ClientResponse, ResponseStatus, client_decoder
from raftpy.transport.stats import TransportStats


class Wire:
    """The socket: the answers of each write call."""

    def __init__(self) -> None:
        self.writes: list[list[int]] = []
        self._decoder = FrameDecoder()

    def write(self, data: bytes) -> None:
        frames = [client_decoder.decode(p) for p in self._decoder.feed(bytes(data))]
        self.writes.append([f.id for f in frames if isinstance(f, ClientResponse)])

    def is_closing(self) -> bool:
        return False


class Owner:
    """The transport: flushes the connections marked dirty when told (end of loop pass)."""

    def __init__(self) -> None:
        self._stats = TransportStats()
        self.dirty: list[ClientConnection] = []

    def _mark_dirty(self, conn: ClientConnection) -> None:
        self.dirty.append(conn)

    def end_of_pass(self) -> None:
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn._flush()


class Reader:
    _name = "127.0.0.1:5"


def test_answers_go_out_at_once_when_nothing_else_is_awaited() -> None:
    owner, wire = Owner(), Wire()
    conn = ClientConnection(cast(Any, owner), cast(Any, Reader()), cast(Any, wire))

    def ok(rid: int) -> ClientResponse:
        return ClientResponse(rid, ResponseStatus.OK, b"")

    # A single writer: its answer is written by respond() itself.
    conn._outstanding = 1
    conn.respond(ok(1))
    assert wire.writes == [[1]]
    # Three outstanding: the first two wait for the end of the pass, the last one answered
    # takes them all out in one write.
    conn._outstanding = 3
    conn.respond(ok(2))
    conn.respond(ok(3))
    assert wire.writes == [[1]]
    conn.respond(ok(4))
    assert wire.writes == [[1], [2, 3, 4]]
    owner.end_of_pass()  # nothing left to write
    assert wire.writes == [[1], [2, 3, 4]]
    # Answers while others are still awaited are written at the end of the pass.
    conn._outstanding = 2
    conn.respond(ok(5))
    owner.end_of_pass()
    assert wire.writes == [[1], [2, 3, 4], [5]]
