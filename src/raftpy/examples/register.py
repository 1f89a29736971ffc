"""A replicated register: one string, initially empty.

    M="1 127.0.0.1:8080 2 127.0.0.1:8081 3 127.0.0.1:8082"
    A="127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082"
    python -m raftpy.examples.register server 1 $M &   # and servers 2 and 3
    python -m raftpy.examples.register put hello $A        # prints the previous value
    python -m raftpy.examples.register get $A              # prints hello
    python -m raftpy.examples.register cas hello world $A  # prints hello (and swaps)

Every command prints raw text: the value followed by one newline. Give every member's address
(fail-over) and ``-`` for a value to read it from stdin, as README.md, "Run a cluster", says.

``put`` and ``cas`` print the previous value whatever happened; ``cas`` swaps only if the
value equals the expected one. Reads are linearizable. From Python: :class:`RegisterClient`
(blocking) and :class:`AsyncRegisterClient`.

Writes are exactly-once: the clients use a client session (README.md, "Sessions"), so a write
whose answer was lost (a leader killed mid-write, a broken connection) is resent until the
deadline and applied once. Each command-line invocation that writes opens one session, writes
and closes it. The outcome is still unknown (exit status 3) when the deadline passes while a
sent write has no answer yet, e.g. with no leader for the whole ``--timeout``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO

import msgspec

from raftpy.client import Client, SyncClient
from raftpy.core.messages import DECODE_ERRORS
from raftpy.examples.service import ClientCommand, ClientOptions
from raftpy.examples.service import main as service_main
from raftpy.transport.tls import TlsConfig

_QUERY_GET = b"get"


# Built once: ``msgspec.msgpack.decode(..., type=...)`` works out the type's decoding plan on
# every call, which costs more than the decoding itself (every replica applies every write).
_command_decoder = msgspec.msgpack.Decoder(tuple[str, ...])


class RegisterStateMachine:
    """Holds one string. Commands are msgpack arrays: ``["put", new]`` or
    ``["cas", expected, new]``; both return the previous value (UTF-8). Any query returns the
    value (its bytes are ignored). A malformed command raises ``ValueError`` saying so: the
    node fails that one proposal with that message and serves on (README.md, "Failures")."""

    def __init__(self) -> None:
        self.value = ""

    def apply(self, command: bytes) -> bytes:
        try:
            op = _command_decoder.decode(command)
        except DECODE_ERRORS:
            raise ValueError("malformed register command") from None
        if not op:
            raise ValueError("malformed register command: empty")
        previous = self.value
        if op[0] == "put" and len(op) == 2:
            self.value = op[1]
        elif op[0] == "cas" and len(op) == 3:
            if self.value == op[1]:
                self.value = op[2]
        else:
            raise ValueError(f"unknown register command {op[0]!r}")
        return previous.encode()

    def query(self, query: bytes) -> bytes:
        return self.value.encode()

    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        value = self.value.encode()  # the state as of now (later applies rebind self.value)

        def write(out: BinaryIO) -> None:
            out.write(value)

        return write

    def snapshot(self, out: BinaryIO) -> None:
        out.write(self.value.encode())

    def restore(self, inp: BinaryIO) -> None:
        self.value = inp.read().decode()


class AsyncRegisterClient:
    """The register's client for asyncio code. Errors are raftpy's typed errors
    (:mod:`raftpy.errors`). Writes go through one client session, opened on the first write
    and closed by :meth:`close` (``sessions=False``: none, and a write with a lost answer is
    not resent)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        timeout: float = 10.0,
        tls: TlsConfig | None = None,
        sessions: bool = True,
    ) -> None:
        self._client = Client(list(addresses), timeout=timeout, tls=tls, sessions=sessions)

    async def get(self) -> str:
        return (await self._client.query(_QUERY_GET)).decode()

    async def put(self, value: str) -> str:
        """Set the value; return the previous one."""
        return (await self._client.propose(msgspec.msgpack.encode(("put", value)))).decode()

    async def cas(self, expected: str, new: str) -> str:
        """Set ``new`` if the value is ``expected``; return the previous value either way."""
        cmd = msgspec.msgpack.encode(("cas", expected, new))
        return (await self._client.propose(cmd)).decode()

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncRegisterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RegisterClient:
    """The register's blocking client, for code without an event loop (sessions as
    :class:`AsyncRegisterClient`)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        timeout: float = 10.0,
        tls: TlsConfig | None = None,
        sessions: bool = True,
    ) -> None:
        self._client = SyncClient(list(addresses), timeout=timeout, tls=tls, sessions=sessions)

    def get(self) -> str:
        return self._client.query(_QUERY_GET).decode()

    def put(self, value: str) -> str:
        return self._client.propose(msgspec.msgpack.encode(("put", value))).decode()

    def cas(self, expected: str, new: str) -> str:
        return self._client.propose(msgspec.msgpack.encode(("cas", expected, new))).decode()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegisterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _get(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    async with AsyncRegisterClient(addresses, timeout=options.timeout, tls=options.tls) as client:
        return await client.get()


async def _put(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    async with AsyncRegisterClient(addresses, timeout=options.timeout, tls=options.tls) as client:
        return await client.put(args[0])


async def _cas(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    async with AsyncRegisterClient(addresses, timeout=options.timeout, tls=options.tls) as client:
        return await client.cas(args[0], args[1])


COMMANDS = (
    ClientCommand("get", (), "print the value", _get),
    ClientCommand("put", ("new-value",), "set the value; print the previous one", _put),
    ClientCommand(
        "cas", ("expected-value", "new-value"), "swap if equal; print the previous value", _cas
    ),
)


def main(argv: list[str] | None = None) -> int:
    return service_main(
        "raftpy.examples.register", "register", argv, RegisterStateMachine, COMMANDS
    )


if __name__ == "__main__":
    sys.exit(main())
