"""A replicated hash map from string keys to JSON values.

    M="1 127.0.0.1:8080 2 127.0.0.1:8081 3 127.0.0.1:8082"
    A="127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082"
    python -m raftpy.examples.hashmap server 1 $M &   # and servers 2 and 3
    python -m raftpy.examples.hashmap put color blue $A      # prints null
    python -m raftpy.examples.hashmap get color $A           # prints "blue"
    python -m raftpy.examples.hashmap cas color blue red $A  # prints true

Give a client command every member's address: it then fails over past a member that is down
(with only that member's address it would wait out ``--timeout`` and fail). A value given as
``-`` is read from stdin, bytes exact.

Command-line values are JSON strings (``blue`` is stored as ``"blue"``). ``get`` prints JSON
(``null`` when absent); ``put`` prints the previous value as JSON; ``cas`` prints ``true`` or
``false`` (a missing key gives ``false``). Reads are linearizable. From Python:
:class:`HashMapClient` (blocking) and :class:`AsyncHashMapClient`, whose values are any JSON
values.

Writes are exactly-once: the clients use a client session (README.md, "Sessions"), so a write
whose answer was lost (a leader killed mid-write, a broken connection) is resent until the
deadline and applied once. Each command-line invocation that writes opens one session, writes
and closes it. The outcome is still unknown (exit status 3) when the deadline passes while a
sent write has no answer yet, e.g. with no leader for the whole ``--timeout``.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any, BinaryIO

import msgspec

from raftpy.client import Client, SyncClient
from raftpy.core.messages import DECODE_ERRORS
from raftpy.examples.service import ClientCommand, ClientOptions
from raftpy.examples.service import main as service_main
from raftpy.examples.versioned_map import VersionedMap
from raftpy.transport.tls import TlsConfig

# Built once: ``msgspec.msgpack.decode(..., type=...)`` works out the type's decoding plan on
# every call, which costs more than the decoding itself (every replica applies every write).
_command_decoder = msgspec.msgpack.Decoder(tuple[str, ...])


class HashMapStateMachine:
    """Keys to JSON-encoded values (kept as their canonical JSON text, so any JSON value
    round-trips). Commands are msgpack arrays: ``["put", key, json]`` returns the previous
    JSON (``null`` when absent); ``["cas", key, expected_json, new_json]`` returns ``true`` or
    ``false``; ``["add", key, element_json]`` appends the element to the JSON list at ``key``
    (a missing key is an empty list) and returns the list's new length. A query is the key
    (UTF-8); it returns the JSON value or ``null``.

    Malformed bytes (a command that is not one of these, a key that is not UTF-8) raise
    ``ValueError`` saying so: the node fails that one request with that message and serves on
    (README.md, "Failures")."""

    def __init__(self) -> None:
        # A snapshot reads a frozen view of it while applies go on (raftpy.examples.versioned_map).
        self.data: VersionedMap[str, str] = VersionedMap()

    def apply(self, command: bytes) -> bytes:
        try:
            op = _command_decoder.decode(command)
        except DECODE_ERRORS:
            raise ValueError("malformed hashmap command") from None
        if not op:
            raise ValueError("malformed hashmap command: empty")
        data = self.data
        if op[0] == "put" and len(op) == 3:
            previous = data.get(op[1], "null")
            data[op[1]] = op[2]
            return previous.encode()
        if op[0] == "cas" and len(op) == 4:
            current = data.get(op[1])
            # A missing key never matches: cas on a missing key answers false.
            if current is not None and current == op[2]:
                data[op[1]] = op[3]
                return b"true"
            return b"false"
        if op[0] == "add" and len(op) == 3:
            return self._add(op[1], op[2])
        raise ValueError(f"unknown hashmap command {op[0]!r}")

    def _add(self, key: str, element: str) -> bytes:
        # Appending, unlike put, is not idempotent: applied twice, it shows (the Jepsen
        # harness's set workload counts on that to catch a write applied twice).
        try:
            items = json.loads(self.data.get(key, "[]"))
            value = json.loads(element)
        except ValueError:
            raise ValueError("malformed hashmap add: not JSON") from None
        if not isinstance(items, list):
            raise ValueError(f"hashmap add: the value at {key!r} is not a list")
        items.append(value)
        self.data[key] = _canonical(items)
        return str(len(items)).encode()

    def query(self, query: bytes) -> bytes:
        try:
            key = query.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"malformed hashmap key: not UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        return self.data.get(key, "null").encode()

    # Snapshot format: the u32 _FORMAT_2, then batches of at most _BATCH keys, each a u32
    # length and a msgpack array of two arrays (the keys, their values); a zero length ends
    # it. Streamed both ways: neither side builds the whole state as one bytes object. The
    # first format (before 2026-12-07) had no marker and (key, value) pairs; it still restores.

    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        # A frozen view instead of a copy: nothing to do on the event loop but start a layer.
        view = self.data.freeze()

        def write(out: BinaryIO) -> None:
            try:
                _write_batches(out, view.data)
            finally:
                view.release()

        return write

    def snapshot(self, out: BinaryIO) -> None:
        self.prepare_snapshot()(out)

    def restore(self, inp: BinaryIO) -> None:
        data: dict[str, str] = {}
        head = _read_exact(inp, 4)
        paired = head != _FORMAT_2
        if paired:
            (size,) = struct.unpack(">I", head)
        else:
            (size,) = struct.unpack(">I", _read_exact(inp, 4))
        while size:
            raw = _read_exact(inp, size)
            keys: list[str] = []
            values: list[str] = []
            try:
                if paired:
                    data.update(_pairs_decoder.decode(raw))
                else:
                    keys, values = _columns_decoder.decode(raw)
            except DECODE_ERRORS as exc:
                raise ValueError(f"malformed hashmap snapshot: {exc}") from None
            if len(keys) != len(values):
                raise ValueError(
                    f"malformed hashmap snapshot: a batch of {len(keys)} keys and "
                    f"{len(values)} values"
                )
            data.update(zip(keys, values, strict=True))
            (size,) = struct.unpack(">I", _read_exact(inp, 4))
        self.data = VersionedMap(data)


_BATCH = 4096
_FORMAT_2 = b"\xff\xff\xff\xff"  # no batch of the first format is that long
_pairs_decoder = msgspec.msgpack.Decoder(list[tuple[str, str]])
_columns_decoder = msgspec.msgpack.Decoder(tuple[list[str], list[str]])


def _write_batches(out: BinaryIO, data: Mapping[str, str]) -> None:
    # Two arrays per batch rather than a (key, value) tuple per key: no tuple is made per key,
    # a third of the time of the first format (the thread holds the GIL while it encodes).
    keys = iter(data.keys())
    values = iter(data.values())
    encode = msgspec.msgpack.encode
    out.write(_FORMAT_2)
    while batch := list(islice(keys, _BATCH)):
        payload = encode((batch, list(islice(values, _BATCH))))
        out.write(struct.pack(">I", len(payload)))
        out.write(payload)
    out.write(struct.pack(">I", 0))


def _read_exact(inp: BinaryIO, n: int) -> bytes:
    data = inp.read(n)
    if len(data) != n:
        raise ValueError(f"hashmap snapshot ends early: wanted {n} bytes, got {len(data)}")
    return data


def _canonical(value: Any) -> str:
    """One JSON text per value, so equal values compare equal in cas."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AsyncHashMapClient:
    """The hash map's client for asyncio code. Values are JSON values (str, int, list, ...).
    Writes go through one client session, opened on the first write and closed by
    :meth:`close` (``sessions=False``: none, and a write with a lost answer is not resent)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        timeout: float = 10.0,
        tls: TlsConfig | None = None,
        sessions: bool = True,
    ) -> None:
        self._client = Client(list(addresses), timeout=timeout, tls=tls, sessions=sessions)

    async def get(self, key: str) -> Any:
        """The value at ``key``, or ``None`` when absent."""
        return json.loads(await self._client.query(key.encode()))

    async def put(self, key: str, value: Any) -> Any:
        """Set ``key``; return the previous value (``None`` when absent)."""
        cmd = msgspec.msgpack.encode(("put", key, _canonical(value)))
        return json.loads(await self._client.propose(cmd))

    async def cas(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected``; a missing key never matches."""
        cmd = msgspec.msgpack.encode(("cas", key, _canonical(expected), _canonical(new)))
        return bool(json.loads(await self._client.propose(cmd)))

    async def add(self, key: str, element: Any) -> int:
        """Append ``element`` to the list at ``key`` (a missing key is an empty list); return
        the list's new length. Not idempotent: applied twice, the element is there twice."""
        cmd = msgspec.msgpack.encode(("add", key, _canonical(element)))
        return int(json.loads(await self._client.propose(cmd)))

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncHashMapClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class HashMapClient:
    """The hash map's blocking client, for code without an event loop (sessions as
    :class:`AsyncHashMapClient`)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        timeout: float = 10.0,
        tls: TlsConfig | None = None,
        sessions: bool = True,
    ) -> None:
        self._client = SyncClient(list(addresses), timeout=timeout, tls=tls, sessions=sessions)

    def get(self, key: str) -> Any:
        return json.loads(self._client.query(key.encode()))

    def put(self, key: str, value: Any) -> Any:
        return json.loads(
            self._client.propose(msgspec.msgpack.encode(("put", key, _canonical(value))))
        )

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        cmd = msgspec.msgpack.encode(("cas", key, _canonical(expected), _canonical(new)))
        return bool(json.loads(self._client.propose(cmd)))

    def add(self, key: str, element: Any) -> int:
        cmd = msgspec.msgpack.encode(("add", key, _canonical(element)))
        return int(json.loads(self._client.propose(cmd)))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HashMapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _get(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    async with AsyncHashMapClient(addresses, timeout=options.timeout, tls=options.tls) as client:
        return _canonical(await client.get(args[0]))


async def _put(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    async with AsyncHashMapClient(addresses, timeout=options.timeout, tls=options.tls) as client:
        return _canonical(await client.put(args[0], args[1]))


async def _cas(args: list[str], addresses: list[str], options: ClientOptions) -> str:
    async with AsyncHashMapClient(addresses, timeout=options.timeout, tls=options.tls) as client:
        return "true" if await client.cas(args[0], args[1], args[2]) else "false"


COMMANDS = (
    ClientCommand("get", ("key",), "print the value as JSON (null when absent)", _get),
    ClientCommand("put", ("key", "new-value"), "set; print the previous value as JSON", _put),
    ClientCommand(
        "cas",
        ("key", "expected-value", "new-value"),
        "swap if equal; print true or false",
        _cas,
    ),
)


def main(argv: list[str] | None = None) -> int:
    return service_main("raftpy.examples.hashmap", "hashmap", argv, HashMapStateMachine, COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
