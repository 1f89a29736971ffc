"""Histories of key-value operations, in the JSON-lines format of docs/history-format.md.

A history is what a set of clients saw while using a key-value store: for every operation, who
issued it (``client``), what it was (``read``, ``write`` or ``cas`` on a ``key``), when it was
called and when it returned (integer nanoseconds from a monotonic clock), and its result. An
operation whose outcome the client never learned (a timeout after the request may have been
delivered) is *indeterminate*: ``"unknown": true``, or no ``return`` at all. Such an operation
may have taken effect at any moment after its call, or never.

One JSON object per line, for example::

    {"client": 1, "op": "write", "key": "x", "call": 10, "return": 25, "value": 3}
    {"client": 2, "op": "read", "key": "x", "call": 12, "return": 30, "value": null}
    {"client": 3, "op": "cas", "key": "x", "call": 40, "return": 51, "from": 3, "to": 4, "ok": true}
    {"client": 4, "op": "write", "key": "y", "call": 41, "value": "a", "unknown": true}

Values are JSON strings or integers and are compared exactly as given (``"1"`` is not ``1``);
a read's ``null`` means the key was absent. The parser is strict: an unknown field, a missing
field, a value of the wrong type or a return before the call is a :class:`HistoryFormatError`
naming the line, because a silently misread history would make the checker's verdict
meaningless. For an indeterminate operation the result fields (a read's ``value``, a cas's
``ok``) are optional and ignored.

:func:`load_history` / :func:`parse_history` read histories; :class:`HistoryRecorder` records
one while a test runs, and :func:`dump_history` / :func:`write_history` write the format.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias

import msgspec

from raftpy.core.messages import DECODE_ERRORS

__all__ = [
    "HistoryFormatError",
    "HistoryRecorder",
    "OpKind",
    "Operation",
    "Value",
    "dump_history",
    "load_history",
    "parse_history",
    "validate_operation",
    "write_history",
]

Value: TypeAlias = str | int | None
"""A register value: a JSON string or integer; ``None`` means absent."""

OpKind: TypeAlias = Literal["read", "write", "cas"]


class HistoryFormatError(ValueError):
    """A history is malformed.

    Raised by :func:`parse_history` and :func:`load_history` (with the 1-based ``line`` and the
    ``source`` file name when known) and by :func:`validate_operation`. Retrying cannot help:
    the history itself must be fixed.
    """

    def __init__(self, reason: str, *, line: int | None = None, source: str | None = None):
        self.reason = reason
        self.line = line
        self.source = source
        where = ""
        if source is not None and line is not None:
            where = f"{source}:{line}: "
        elif source is not None:
            where = f"{source}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(f"{where}{reason}")


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One operation of a history, as a client saw it.

    ``call`` and ``ret`` are integer nanoseconds from one monotonic clock; ``ret is None``
    means the operation never returned. ``value`` is the value written (write) or read (read;
    ``None`` = the key was absent). A cas has ``from_`` (the expected value), ``to`` (the new
    one) and ``ok`` (``False``: it completed without swapping because the key did not hold
    ``from_``). ``unknown`` marks an indeterminate operation, as does ``ret is None``.
    """

    client: int
    op: OpKind
    key: str
    call: int
    ret: int | None = None
    value: Value = None
    from_: Value = None
    to: Value = None
    ok: bool | None = None
    unknown: bool = False

    @property
    def indeterminate(self) -> bool:
        """Whether the outcome is unknown: it may have taken effect after ``call``, or never."""
        return self.unknown or self.ret is None


_UnsetValue: TypeAlias = str | int | msgspec.UnsetType | None


class _WireOperation(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The JSON object of one history line, with absent fields kept distinct from null."""

    client: int
    op: OpKind
    key: str
    call: int
    ret: int | msgspec.UnsetType | None = msgspec.field(default=msgspec.UNSET, name="return")
    value: _UnsetValue = msgspec.UNSET
    from_: _UnsetValue = msgspec.field(default=msgspec.UNSET, name="from")
    to: _UnsetValue = msgspec.UNSET
    ok: bool | msgspec.UnsetType = msgspec.UNSET
    unknown: bool = False


_DECODER = msgspec.json.Decoder(_WireOperation)


def _from_wire(w: _WireOperation) -> Operation:
    """Check the per-kind rules of the format on a decoded line and build the Operation."""
    ret = None if w.ret is msgspec.UNSET else w.ret
    if ret is not None and ret < w.call:
        raise HistoryFormatError(f"`return` ({ret}) is before `call` ({w.call})")
    indeterminate = w.unknown or ret is None
    value = None if w.value is msgspec.UNSET else w.value
    from_ = None if w.from_ is msgspec.UNSET else w.from_
    to = None if w.to is msgspec.UNSET else w.to
    ok = None if w.ok is msgspec.UNSET else w.ok
    if w.op == "cas":
        if w.value is not msgspec.UNSET:
            raise HistoryFormatError("a cas has `from` and `to`, not `value`")
        if from_ is None or to is None:
            raise HistoryFormatError("a cas needs `from` and `to` (strings or integers)")
        if ok is None and not indeterminate:
            raise HistoryFormatError("a completed cas needs `ok` (true or false)")
        if indeterminate:
            ok = None
    else:
        for name, field in (("from", w.from_), ("to", w.to), ("ok", w.ok)):
            if field is not msgspec.UNSET:
                raise HistoryFormatError(f"a {w.op} has no `{name}` (only a cas has)")
        if w.op == "write" and value is None:
            raise HistoryFormatError("a write needs `value` (a string or an integer)")
        if w.op == "read" and w.value is msgspec.UNSET and not indeterminate:
            raise HistoryFormatError("a completed read needs `value` (null if the key was absent)")
        if w.op == "read" and indeterminate:
            value = None
    return Operation(
        client=w.client,
        op=w.op,
        key=w.key,
        call=w.call,
        ret=ret,
        value=value,
        from_=from_,
        to=to,
        ok=ok,
        unknown=w.unknown,
    )


def parse_history(data: str | bytes, *, source: str | None = None) -> list[Operation]:
    """Parse a history (one JSON object per line; blank lines are skipped).

    Returns the operations in file order. Raises :class:`HistoryFormatError` with the line
    number (and ``source``, a name for messages) on the first malformed line.
    """
    raw = data.encode() if isinstance(data, str) else data
    ops: list[Operation] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            wire = _DECODER.decode(line)
        except msgspec.ValidationError as e:
            raise HistoryFormatError(str(e), line=number, source=source) from None
        except DECODE_ERRORS as e:
            reason = f"not a JSON object: {e}"
            raise HistoryFormatError(reason, line=number, source=source) from None
        try:
            ops.append(_from_wire(wire))
        except HistoryFormatError as e:
            raise HistoryFormatError(e.reason, line=number, source=source) from None
    return ops


def load_history(path: str | os.PathLike[str]) -> list[Operation]:
    """Read and parse the history file at ``path``.

    Raises :class:`OSError` if the file cannot be read and :class:`HistoryFormatError`
    (naming the file and line) if it is malformed.
    """
    with open(path, "rb") as f:
        data = f.read()
    return parse_history(data, source=os.fspath(path))


def validate_operation(op: Operation) -> None:
    """Check one in-memory :class:`Operation` against the rules the parser enforces.

    Raises :class:`HistoryFormatError` (without a line number) if it breaks one.
    """
    if op.op not in ("read", "write", "cas"):
        raise HistoryFormatError(f"unknown op {op.op!r}")
    for name, v in (("value", op.value), ("from", op.from_), ("to", op.to)):
        if isinstance(v, bool) or not isinstance(v, str | int | None):
            raise HistoryFormatError(f"`{name}` must be a string, an integer or null: {v!r}")
    if op.ret is not None and op.ret < op.call:
        raise HistoryFormatError(f"`return` ({op.ret}) is before `call` ({op.call})")
    if op.op == "cas":
        if op.value is not None:
            raise HistoryFormatError("a cas has `from` and `to`, not `value`")
        if op.from_ is None or op.to is None:
            raise HistoryFormatError("a cas needs `from` and `to` (strings or integers)")
        if op.ok is None and not op.indeterminate:
            raise HistoryFormatError("a completed cas needs `ok` (true or false)")
        return
    if op.from_ is not None or op.to is not None or op.ok is not None:
        raise HistoryFormatError(f"a {op.op} has no `from`, `to` or `ok` (only a cas has)")
    if op.op == "write" and op.value is None:
        raise HistoryFormatError("a write needs `value` (a string or an integer)")


def _to_json_object(op: Operation) -> dict[str, object]:
    """The JSON object of one operation (fields in the order of docs/history-format.md)."""
    obj: dict[str, object] = {"client": op.client, "op": op.op, "key": op.key, "call": op.call}
    if op.ret is not None:
        obj["return"] = op.ret
    if op.op == "cas":
        obj["from"] = op.from_
        obj["to"] = op.to
        if op.ok is not None:
            obj["ok"] = op.ok
    elif op.op == "write" or not op.indeterminate:
        obj["value"] = op.value
    if op.unknown:
        obj["unknown"] = True
    return obj


def dump_history(ops: Iterable[Operation]) -> bytes:
    """Encode operations as JSON lines (each line ends with a newline)."""
    encode = msgspec.json.encode
    return b"".join(encode(_to_json_object(op)) + b"\n" for op in ops)


def write_history(path: str | os.PathLike[str], ops: Iterable[Operation]) -> None:
    """Write operations to ``path`` as a history file (replacing the file)."""
    data = dump_history(ops)
    with open(path, "wb") as f:
        f.write(data)


class _Pending(msgspec.Struct, kw_only=True):
    """An invoked operation whose outcome has not been recorded yet."""

    client: int
    op: OpKind
    key: str
    call: int
    value: Value
    from_: Value
    to: Value


class HistoryRecorder:
    """Records a history while clients run, for :mod:`raftpy.testing.linearizability`.

    Call :meth:`invoke` just before a client sends an operation and then exactly one of
    :meth:`complete` (the result is known), :meth:`indeterminate` (it may or may not have
    happened, e.g. a timeout after sending) or :meth:`fail` (it definitely did not happen, e.g.
    rejected before it reached the log; it is dropped from the history). Operations still open
    when :meth:`operations` is called are recorded as indeterminate. Times come from ``clock``
    (integer nanoseconds; ``time.monotonic_ns`` by default; a simulator passes its virtual
    clock). The recorder is safe to use from several threads.
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next_handle = 0
        self._open: dict[int, _Pending] = {}
        # Finished operations by handle (handles count invocations and appends).
        self._done: dict[int, Operation] = {}

    def invoke(
        self,
        client: int,
        op: OpKind,
        key: str,
        *,
        value: Value = None,
        from_: Value = None,
        to: Value = None,
    ) -> int:
        """Record the call of an operation now and return a handle for its outcome.

        A write passes ``value``; a cas passes ``from_`` and ``to``; a read passes neither.
        """
        if op == "write" and value is None:
            raise ValueError("a write needs a value")
        if op == "cas" and (from_ is None or to is None):
            raise ValueError("a cas needs from_ and to")
        if op not in ("read", "write", "cas"):
            raise ValueError(f"unknown op {op!r}")
        with self._lock:
            handle = self._next_handle
            self._next_handle += 1
            self._open[handle] = _Pending(
                client=client,
                op=op,
                key=key,
                call=self._clock(),
                value=value if op == "write" else None,
                from_=from_,
                to=to,
            )
        return handle

    def complete(self, handle: int, result: Value | bool = None) -> Operation:
        """Record that operation ``handle`` returned now with ``result``.

        ``result`` is the value read for a read (``None``: absent), ``True``/``False`` for a
        cas (whether it swapped), and is ignored for a write.
        """
        with self._lock:
            p = self._take(handle)
            ret = self._clock()
            if p.op == "cas":
                if not isinstance(result, bool):
                    raise ValueError("a cas completes with True or False")
                op = self._build(p, ret=ret, ok=result)
            elif p.op == "read":
                if isinstance(result, bool):
                    raise ValueError("a read result is a string, an integer or None")
                op = self._build(p, ret=ret, value=result)
            else:
                op = self._build(p, ret=ret, value=p.value)
            self._done[handle] = op
            return op

    def indeterminate(self, handle: int) -> Operation:
        """Record that operation ``handle`` ended with an unknown outcome (now)."""
        with self._lock:
            p = self._take(handle)
            op = self._build(p, ret=self._clock(), value=p.value, unknown=True)
            self._done[handle] = op
            return op

    def fail(self, handle: int) -> None:
        """Record that operation ``handle`` definitely did not take effect: drop it."""
        with self._lock:
            self._take(handle)

    def append(self, op: Operation) -> None:
        """Add an already finished operation (validated; see :func:`validate_operation`)."""
        validate_operation(op)
        with self._lock:
            handle = self._next_handle
            self._next_handle += 1
            self._done[handle] = op

    def operations(self) -> list[Operation]:
        """The history so far in call order; open operations appear as indeterminate."""
        with self._lock:
            items: list[tuple[int, Operation]] = list(self._done.items())
            items.extend(
                (h, self._build(p, ret=None, value=p.value)) for h, p in self._open.items()
            )
        items.sort(key=lambda item: (item[1].call, item[0]))
        return [op for _, op in items]

    def dumps(self) -> bytes:
        """The history so far as JSON lines."""
        return dump_history(self.operations())

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the history so far to ``path`` (see :func:`write_history`)."""
        write_history(path, self.operations())

    def _take(self, handle: int) -> _Pending:
        try:
            return self._open.pop(handle)
        except KeyError:
            raise ValueError(f"operation {handle} is not open") from None

    @staticmethod
    def _build(
        p: _Pending,
        *,
        ret: int | None,
        value: Value = None,
        ok: bool | None = None,
        unknown: bool = False,
    ) -> Operation:
        return Operation(
            client=p.client,
            op=p.op,
            key=p.key,
            call=p.call,
            ret=ret,
            value=value,
            from_=p.from_ if p.op == "cas" else None,
            to=p.to if p.op == "cas" else None,
            ok=ok,
            unknown=unknown,
        )
