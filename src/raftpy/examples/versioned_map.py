"""VersionedMap: a dict whose state at one moment a worker thread can read while writes go on.

A node writes a snapshot in a worker thread while the event loop keeps applying
(``prepare_snapshot`` in :mod:`raftpy.statemachine`), so the thread must see the state as of
the moment the snapshot was prepared. Copying the whole dict does that, but the copy runs on
the event loop: 30 to 120 ms for a million keys on the project's test machine, a pause every
client of the node waits out at each snapshot. This map instead *freezes* its dict: the
thread reads that dict, which nothing changes until the thread says it is done; writes made
meanwhile go to a second, small dict laid over it, and are folded into the first once the
thread is done. Copy-on-write by layers, as LSM trees and etcd's MVCC store do it in their
own ways.

One writer thread of the map's owner (the event loop) writes; a frozen view may be read by one
other thread. Keys are never deleted (the examples' commands only put); a deleting map would
need tombstones in the top layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar, overload

__all__ = ["Frozen", "VersionedMap"]

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class Frozen(Generic[K, V]):
    """The map as it was when :meth:`VersionedMap.freeze` returned this: ``data`` stays
    unchanged until :meth:`release`, which the reader calls when it is done (from any thread)."""

    __slots__ = ("data", "released")

    def __init__(self, data: dict[K, V]) -> None:
        self.data: Mapping[K, V] = data
        self.released = False

    def release(self) -> None:
        # A plain attribute store is atomic in CPython: the owner reads it between two writes.
        self.released = True


class VersionedMap(Generic[K, V]):
    """A mapping that can hand out a consistent frozen view without copying (module
    docstring). ``get``, ``in``, ``len``, ``[k] = v`` and ``items`` behave as a dict's."""

    __slots__ = ("_base", "_frozen", "_top")

    def __init__(self, data: dict[K, V] | None = None) -> None:
        self._base: dict[K, V] = {} if data is None else data
        # While a reader holds ``_base`` (``_frozen`` is its view), writes go to ``_top``.
        self._top: dict[K, V] | None = None
        self._frozen: Frozen[K, V] | None = None

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: V) -> V: ...

    def get(self, key: K, default: V | None = None) -> V | None:
        top = self._top
        if top is not None:
            value = top.get(key, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[return-value]
        return self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        top = self._top
        return (top is not None and key in top) or key in self._base

    def __setitem__(self, key: K, value: V) -> None:
        frozen = self._frozen
        if frozen is None:
            self._base[key] = value
            return
        if frozen.released:
            self._fold()
            self._base[key] = value
            return
        assert self._top is not None
        self._top[key] = value

    def __len__(self) -> int:
        top = self._top
        if not top:
            return len(self._base)
        return len(self._base) + sum(1 for k in top if k not in self._base)

    def items(self) -> Iterator[tuple[K, V]]:
        """Every pair as of now (the top layer's value where a key is in both)."""
        top = self._top
        if not top:
            yield from self._base.items()
            return
        for key, value in self._base.items():
            yield key, top.get(key, value)
        for key, value in top.items():
            if key not in self._base:
                yield key, value

    def freeze(self) -> Frozen[K, V]:
        """A view of the map as of now, for one reader in another thread; its ``release()``
        must be called once it is read. Until then the map keeps later writes apart."""
        frozen = self._frozen
        if frozen is not None:
            if frozen.released:
                self._fold()
            else:
                # The last view was never released (its reader failed before it began, or is
                # still reading): leave its dict alone for good and go on from a copy, once.
                merged = dict(self._base)
                assert self._top is not None
                merged.update(self._top)
                self._base = merged
                self._top = None
                self._frozen = None
        self._top = {}
        view = self._frozen = Frozen(self._base)
        return view

    def _fold(self) -> None:
        """The reader is done with ``_base``: move the writes made meanwhile into it."""
        assert self._top is not None
        self._base.update(self._top)
        self._top = None
        self._frozen = None
