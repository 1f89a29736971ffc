"""Seeded generators of hostile wire input for the fuzz tests (for tests).

:class:`WireFuzzer` makes frame payloads for one of the three decoders a connection meets
(the handshake, peer messages, client frames), read from the schemas themselves with
:mod:`msgspec.inspect`, so a field added to a message is fuzzed without touching this module:

- valid encodings of every frame kind (which must decode and re-encode to themselves);
- the right shape with one field made hostile: huge or negative ints (2^63 - 1, 2^64 - 1,
  -2^63), wrong types, NaN and infinities, long strings and bytes, invalid UTF-8, nesting,
  missing, extra or unknown fields, unknown tags, a map where an array belongs;
- valid encodings cut short or with flipped bits, random bytes, empty payloads.

:meth:`WireFuzzer.frame` adds the length prefix, sometimes a wrong one (zero, 2^31, 2^32 - 1,
longer than what follows). Everything comes from one ``random.Random``, so a seed replays a run:
:func:`seed_from_env` reads ``RAFTPY_SEED`` (else picks one) and the tests print it.
"""

from __future__ import annotations

import enum
import os
import random
import struct
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from raftpy.core.messages import PeerMessage
from raftpy.transport.protocol import ClientFrame, HandshakeFrame

MAX_NESTING: Final = 3000
"""How deep generated nesting goes: past the ~1,000 levels at which msgspec raises
``RecursionError`` (every decoder must treat that as malformed input, see
``tests/transport/test_fuzz_codec.py::test_deep_nesting_is_a_protocol_error``)."""

HUGE_INTS: Final = (
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**32,
    2**31,
    -1,
    -(2**31),
    -(2**63),
)
SIZES: Final = (0, 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1)
"""Frame lengths worth announcing: zero, small, and the edges of signed and unsigned 32-bit."""


class Kind(enum.Enum):
    """Which decoder a payload is aimed at."""

    HANDSHAKE = "handshake"
    PEER = "peer"
    CLIENT = "client"


SCHEMAS: Final[dict[Kind, Any]] = {
    Kind.HANDSHAKE: HandshakeFrame,
    Kind.PEER: PeerMessage,
    Kind.CLIENT: ClientFrame,
}


def seed_from_env(name: str = "RAFTPY_SEED") -> int:
    """The seed to use: ``$RAFTPY_SEED`` if set, else a fresh one (printed by the caller)."""
    value = os.environ.get(name)
    return int(value) if value else random.SystemRandom().randrange(2**32)


def frames_from_env(default: int, name: str = "RAFTPY_FUZZ_FRAMES") -> int:
    """How many frames a fuzz run sends: ``$RAFTPY_FUZZ_FRAMES`` if set, else ``default``."""
    value = os.environ.get(name)
    return int(value) if value else default


class WireFuzzer:
    """Hostile and valid frame payloads from one seeded ``random.Random`` (for tests)."""

    def __init__(
        self, rng: random.Random, *, max_nesting: int = MAX_NESTING, strings: tuple[str, ...] = ()
    ) -> None:
        self.rng = rng
        self.max_nesting = max_nesting
        # Valid strings: some that mean nothing, and the target's own (its cluster id), so a
        # generated handshake is now and then accepted and what follows it is read.
        self._strings = ("", "raftpy", "a" * 100, "é\n", *strings, *strings)
        self._types = {kind: mi.type_info(schema) for kind, schema in SCHEMAS.items()}
        self._encode = msgspec.msgpack.Encoder().encode

    def encode(self, value: Any) -> bytes:
        """msgpack ``value`` (what :meth:`valid` and :meth:`mutated` return)."""
        return self._encode(value)

    # -- whole payloads ----------------------------------------------------------------------

    def payload(self, kind: Kind, *, src: int | None = None, dst: int | None = None) -> bytes:
        """One payload aimed at ``kind``'s decoder: valid, mutated, broken or random.

        ``src``/``dst`` pin a peer message's addressing fields (when it has them) so that a
        message can pass the transport's check that it comes from the handshaken peer."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            return self.random_bytes()
        if roll < 0.15:
            return b""
        if roll < 0.30:
            return self._encode(self.valid(kind, src=src, dst=dst))
        if roll < 0.75:
            return self._encode(self.mutated(kind, src=src, dst=dst))
        if roll < 0.85:
            other = rng.choice([k for k in Kind if k is not kind])
            return self._encode(self.mutated(other) if rng.random() < 0.5 else self.valid(other))
        if roll < 0.95:
            return self.damaged(self._encode(self.valid(kind, src=src, dst=dst)))
        return self._encode(self.nasty_value())

    def valid(self, kind: Kind, *, src: int | None = None, dst: int | None = None) -> Any:
        """A msgpack-ready value that decodes as one of ``kind``'s frames."""
        union = self._types[kind]
        struct_type = self.rng.choice(union.types)
        return self._struct(struct_type, pin={"src": src, "dst": dst})

    def mutated(self, kind: Kind, *, src: int | None = None, dst: int | None = None) -> Any:
        """The right shape for ``kind`` with one or a few things made hostile."""
        rng = self.rng
        union = self._types[kind]
        struct_type = rng.choice(union.types)
        pin = {"src": src, "dst": dst}
        fields = list(struct_type.fields)
        # No hostile field at all, now and then: only the shape is wrong (extra fields and
        # unknown keys are skipped by the decoder, which has paths of its own).
        count = min(len(fields), rng.choice((0, 1, 1, 1, 2, 3)))
        bad = {f.name for f in rng.sample(fields, k=count)}
        value = self._struct(struct_type, pin=pin, hostile=bad)
        roll = rng.random() * (0.35 if not bad else 1.0)
        if isinstance(value, list):
            if roll < 0.1 and value:
                value[0] = self.nasty_value()  # the tag
            elif roll < 0.2:
                del value[rng.randrange(len(value)) :]  # fields missing
            elif roll < 0.3:
                value.extend(self.nasty_value() for _ in range(rng.randint(1, 3)))  # extra
            elif roll < 0.35:
                value = {str(i): v for i, v in enumerate(value)}  # a map for an array
        elif isinstance(value, dict):
            keys = list(value)
            if roll < 0.1:
                value[struct_type.tag_field] = self.nasty_value()
            elif roll < 0.2 and keys:
                del value[rng.choice(keys)]
            elif roll < 0.3:
                value[self.nasty_str()] = self.nasty_value()
            elif roll < 0.35:
                value = list(value.values())  # an array for a map
        return value

    def damaged(self, data: bytes) -> bytes:
        """``data`` cut short, with bytes flipped, or with garbage appended."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.4 and data:
            return data[: rng.randrange(len(data))]
        if roll < 0.8 and data:
            out = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            return bytes(out)
        return data + self.random_bytes()

    def random_bytes(self) -> bytes:
        rng = self.rng
        n = rng.choice((rng.randint(0, 16), rng.randint(0, 256), rng.randint(0, 4096)))
        return rng.randbytes(n)

    # -- frames ------------------------------------------------------------------------------

    def frame(self, payload: bytes) -> bytes:
        """``payload`` with its length prefix, mostly right."""
        return struct.pack(">I", len(payload)) + payload

    def bad_ending(self) -> bytes:
        """A last frame a connection may end with: a length with too few bytes after it, or
        a header cut short. Sent before EOF (nothing valid can follow it)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.2:
            return rng.randbytes(rng.randint(1, 3))  # part of a header
        size = rng.choice((*SIZES, rng.randint(1, 1 << 20), rng.randint(1, 1 << 27)))
        body = rng.randbytes(min(size, rng.choice((0, 1, 10, 1000)))) if size else b""
        if size and len(body) >= size:
            body = body[: size - 1]
        return struct.pack(">I", size) + body

    # -- values ------------------------------------------------------------------------------

    def nasty_int(self) -> int:
        rng = self.rng
        return rng.choice(HUGE_INTS) if rng.random() < 0.7 else rng.randint(-(2**63), 2**64 - 1)

    def nasty_str(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return ""
        if roll < 0.6:
            return "".join(rng.choice("ab\n\r\x00\x1b[31m\u2028é\ud7ff") for _ in range(40))
        return "x" * rng.choice((255, 256, 65535, 65536, 200_000))

    def nasty_value(self, depth: int = 0) -> Any:
        """Any msgpack value, biased to edges: huge ints, NaN, long or invalid strings, deep
        nesting, big containers."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return self.nasty_int()
        if roll < 0.4:
            return rng.choice((float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324))
        if roll < 0.5:
            return self.nasty_str()
        if roll < 0.55:
            # A msgpack str that is not UTF-8 (the encoder cannot make one).
            return msgspec.Raw(b"\xa4\xff\xfe\xc0\x80")
        if roll < 0.65:
            return rng.randbytes(rng.choice((0, 1, 1000, 70_000)))
        if roll < 0.7:
            return rng.choice((None, True, False))
        if roll < 0.8:
            depth = rng.randint(1, self.max_nesting)
            inner = b"\xc0" if rng.random() < 0.5 else b"\x80"
            wrap = b"\x91" if rng.random() < 0.5 else b"\x81\x00"
            return msgspec.Raw(wrap * depth + inner)
        if roll < 0.85:
            # A container header announcing far more items than follow.
            return msgspec.Raw(rng.choice((b"\xdd\xff\xff\xff\xff", b"\xdf\x7f\xff\xff\xff")))
        if depth < 3 and roll < 0.95:
            n = rng.choice((0, 1, 3, 1000))
            return [self.nasty_value(depth + 1) for _ in range(min(n, 20))] + [0] * max(0, n - 20)
        if depth < 3:
            return {self.nasty_str(): self.nasty_value(depth + 1) for _ in range(rng.randint(0, 4))}
        return None

    def _value(self, t: Any, pin: dict[str, int | None], hostile: set[str], name: str) -> Any:
        """A valid value of msgspec type ``t`` (or a hostile one when ``name`` is in
        ``hostile``)."""
        if name in hostile:
            return self.nasty_value()
        rng = self.rng
        if isinstance(t, mi.IntType):
            lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
            hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**64 - 1)
            pinned = pin.get(name)
            if pinned is not None:
                return pinned
            if rng.random() < 0.7:
                return rng.randint(max(lo, 0), min(hi, max(lo, 0) + 10))
            return rng.choice([v for v in (lo, hi, 2**31, 2**63 - 1) if lo <= v <= hi] or [lo])
        if isinstance(t, mi.FloatType):
            if t.gt is not None or t.ge is not None:
                return rng.choice((0.001, 1.0, 30.0, 1e9))
            return rng.uniform(-1e6, 1e6)
        if isinstance(t, mi.BoolType):
            return rng.random() < 0.5
        if isinstance(t, mi.NoneType):
            return None
        if isinstance(t, mi.StrType):
            return rng.choice(self._strings)
        if isinstance(t, mi.BytesType):
            return rng.randbytes(rng.choice((0, 1, 8, 100, 3000)))
        if isinstance(t, mi.EnumType):
            return rng.choice(list(t.cls)).value
        if isinstance(t, mi.UnionType):
            return self._value(rng.choice(t.types), pin, hostile, "")
        if isinstance(t, (mi.VarTupleType, mi.ListType)):
            return [self._value(t.item_type, {}, set(), "") for _ in range(rng.randint(0, 4))]
        if isinstance(t, mi.StructType):
            return self._struct(t, pin={})
        raise AssertionError(f"wirefuzz has no generator for {t!r}")

    def _struct(
        self, t: mi.StructType, *, pin: dict[str, int | None], hostile: set[str] | None = None
    ) -> Any:
        rng = self.rng
        hostile = hostile or set()
        values: list[tuple[str, Any]] = []
        dropping = False
        for f in t.fields:
            # Optional fields are sometimes left out (trailing ones only, for arrays).
            if not f.required and (dropping or rng.random() < 0.3):
                dropping = t.array_like
                if f.name not in hostile:
                    continue
            values.append((f.encode_name, self._value(f.type, pin, hostile, f.name)))
        if t.array_like:
            body = [v for _, v in values]
            return [t.tag, *body] if t.tag is not None else body
        out: dict[Any, Any] = dict(values)
        if t.tag_field is not None:
            out = {t.tag_field: t.tag, **out}
        return out


def reference_frames(stream: bytes, limit: int) -> tuple[list[bytes], bool, int]:
    """What a correct frame parser makes of ``stream`` with frames up to ``limit`` bytes: the
    complete payloads, whether a header over the limit stopped it, and the bytes left over."""
    out: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 4:
        (size,) = struct.unpack_from(">I", stream, pos)
        if size > limit:
            return out, True, len(stream) - pos
        if len(stream) - pos - 4 < size:
            break
        out.append(stream[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out, False, len(stream) - pos
