"""How a client connection writes its requests: a lone writer's request at once, the
requests of one loop pass together in one write. A Connection over a recording transport
(a fake, for tests)."""

from __future__ import annotations

import asyncio
import math

from raftpy.client.connection import Connection
from raftpy.transport.codec import FrameDecoder, encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    HelloReply,
    ResponseStatus,
    client_decoder,
    encode_frame_payload,
)


class Recorder:
    """A transport that keeps what is written (the requests of each write call)."""

    def __init__(self) -> None:
        self.writes: list[list[ClientRequest]] = []
        self._decoder = FrameDecoder()

    def write(self, data: bytes) -> None:
        frames = [client_decoder.decode(p) for p in self._decoder.feed(data)]
        self.writes.append([f for f in frames if isinstance(f, ClientRequest)])

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


def connected(loop: asyncio.AbstractEventLoop) -> tuple[Connection, Recorder]:
    conn = Connection("127.0.0.1:1", loop, 1 << 20)
    transport = Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(encode_frame(encode_frame_payload(HelloReply(True, 1))))
    return conn, transport


def answer(conn: Connection, request: ClientRequest) -> None:
    response = ClientResponse(request.id, ResponseStatus.OK, b"ok")
    conn.data_received(encode_frame(encode_frame_payload(response)))


def send(conn: Connection, data: bytes) -> asyncio.Future[ClientResponse]:
    return conn.send(ClientOp.PROPOSE, data, Consistency.LINEARIZABLE, math.inf).future


def test_a_lone_writer_is_written_at_once_and_a_burst_in_one_write() -> None:
    async def scenario() -> None:
        conn, transport = connected(asyncio.get_running_loop())
        # One request, nothing else outstanding: written before submit returns.
        first = send(conn, b"a")
        assert [[r.data for r in w] for w in transport.writes] == [[b"a"]]
        answer(conn, transport.writes[0][0])
        assert (await first).status is ResponseStatus.OK
        # Still alone: again at once.
        second = send(conn, b"b")
        assert len(transport.writes) == 2
        # Three more while "b" is outstanding: queued, and written together on the next
        # loop pass.
        burst = [send(conn, d) for d in (b"c", b"d", b"e")]
        assert len(transport.writes) == 2
        await asyncio.sleep(0)
        assert [r.data for r in transport.writes[2]] == [b"c", b"d", b"e"]
        for request in [transport.writes[1][0], *transport.writes[2]]:
            answer(conn, request)
        await asyncio.gather(second, *burst)
        # The last write carried several: a connection under load keeps batching, even the
        # first request of the next pass (the others of that pass follow in the same loop
        # pass), so a lone request goes out at once only once the load is gone.
        after = [send(conn, d) for d in (b"f", b"g")]
        assert len(transport.writes) == 3
        await asyncio.sleep(0)
        assert [r.data for r in transport.writes[3]] == [b"f", b"g"]
        for request in transport.writes[3]:
            answer(conn, request)
        await asyncio.gather(*after)

    asyncio.run(scenario())
