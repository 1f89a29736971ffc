"""The report of an offline data directory inspection (:mod:`raftpy.storage.inspect`): what
``raftpy doctor`` prints, and, encoded as is, the JSON of ``raftpy doctor --json`` (its keys are
the field names below, documented in docs/doctor.md; fields are only ever added)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DataDirReport",
    "Finding",
    "HardStateReport",
    "IdentityReport",
    "LogReport",
    "MembershipReport",
    "Repair",
    "Role",
    "SegmentReport",
    "Severity",
    "SnapshotReport",
    "TermRange",
]

Severity = Literal["ok", "warning", "damaged"]
"""``ok``: a fact worth knowing; ``warning``: the node handles it at start (nothing
acknowledged is lost); ``damaged``: the node refuses to start."""


Role = Literal["restored", "log", "unvouched", "old", "unknown"]
"""What the node does with a snapshot file at start-up (:attr:`SnapshotReport.role`)."""


class IdentityReport(msgspec.Struct, kw_only=True):
    """The identity file: whose data directory this is (``None``: not recorded)."""

    node_id: int | None
    cluster_id: str | None
    incarnation: str | None


class HardStateReport(msgspec.Struct, kw_only=True):
    """The last hard state the log records (Raft Figure 2: term, vote, commit)."""

    term: int
    vote: int | None
    commit: int


class SegmentReport(msgspec.Struct, kw_only=True):
    """One write-ahead log segment, as :func:`~raftpy.storage.segments.scan_segment` read it."""

    file: str
    """The file name, inside the data directory."""
    number: int
    version: int | None
    """The format version (``None``: the header could not be read)."""
    first_index: int | None
    """The first entry index written in this segment (``None``: none)."""
    last_index: int | None
    records: int
    """Records in the segment's complete batches (each batch's end marker not counted)."""
    bytes: int
    """Where the complete batches end: header and records, in bytes."""
    size: int
    """The file's size in bytes."""
    preallocated: int
    """The size the segment was created with (0 for format 1, which does not say)."""
    sealed: bool
    """The log continues in the next segment (a SEAL record follows the end marker)."""
    damage: str | None
    """The first damage in the segment (``"checksum mismatch at offset 1234"``), or ``None``."""


class TermRange(msgspec.Struct, kw_only=True):
    """Entries ``first..last`` of the log, all of term ``term``."""

    term: int
    first: int
    last: int


class LogReport(msgspec.Struct, kw_only=True):
    """The log as recovery rebuilt it: the snapshot it starts after and its entries."""

    snapshot_index: int
    snapshot_term: int
    first_index: int
    """The first entry in the log (``snapshot_index + 1``)."""
    last_index: int
    """The last entry (``snapshot_index`` when the log holds none after the snapshot)."""
    terms: list[TermRange]
    """The entries' terms, as runs, oldest first."""
    bytes: int
    """Bytes of records held in the segments."""
    vouches_for_tail: bool
    """Whether the last segment can tell a cut-off end from a clean one (format 2)."""


class MembershipReport(msgspec.Struct, kw_only=True):
    """The membership at the end of the log (its last configuration entry, else the
    snapshot's)."""

    voters: list[int]
    learners: list[int]
    voters_outgoing: list[int]
    """Non-empty while a joint-consensus change is in progress (Thesis §4.3)."""
    addresses: dict[int, str]


class SnapshotReport(msgspec.Struct, kw_only=True):
    """One snapshot file and what the node does with it at start-up."""

    file: str
    """The file name, inside ``snapshots/``."""
    index: int
    term: int
    size: int
    checksum_ok: bool
    """Header, trailer and CRC over every byte all check out."""
    problem: str | None
    """What is wrong with the file (``None`` when ``checksum_ok``)."""
    role: Role
    """``restored``: the newest snapshot the log vouches for, restored at start; ``log``: the
    snapshot the log was compacted to, kept beside a newer restored one; ``unvouched``: newer
    than what the log vouches for, deleted at start with a warning; ``old``: older than the
    log's snapshot, deleted at start; ``unknown``: the log could not be read."""


class Finding(msgspec.Struct, kw_only=True):
    """One thing the inspection found, and what it means for the node."""

    severity: Severity
    code: str
    """A stable name for the kind of finding (docs/doctor.md lists them)."""
    file: str | None
    """The file concerned (a full path), or ``None``."""
    offset: int | None
    """The byte offset in ``file``, or ``None``."""
    what: str
    """What was found."""
    meaning: str
    """What it means for the node, and what to do."""


class Repair(msgspec.Struct, kw_only=True):
    """A cut recovery decided: bytes ``[offset, end)`` of ``file`` are cleared (zeros, an end
    marker written at ``offset``). Never synced data only (see
    :meth:`raftpy.storage.inspect.Inspection.repair`)."""

    file: str
    offset: int
    end: int
    bytes: int
    records: int
    """Records, whole or partial, in the cut (0: only an end marker is written)."""


class DataDirReport(msgspec.Struct, kw_only=True):
    """What :func:`~raftpy.storage.inspect.inspect_data_dir` found (the JSON of
    ``raftpy doctor --json``)."""

    data_dir: str
    verdict: Literal["healthy", "damaged"]
    """``damaged``: the node refuses to start on this directory (a ``damaged`` finding)."""
    identity: IdentityReport | None
    hard_state: HardStateReport | None
    log: LogReport | None
    """``None`` when recovery could not rebuild the log (see the findings)."""
    membership: MembershipReport | None
    segments: list[SegmentReport]
    snapshots: list[SnapshotReport]
    restored_snapshot: str | None
    """The file of the snapshot the node restores its state machine from (``None``: none)."""
    pinned_peers: dict[int, str]
    """The incarnation pinned for each peer (``PEERS``)."""
    findings: list[Finding]
    repairs: list[Repair]
    """What ``--repair`` (and the node, at its first write) would cut."""

    @property
    def damaged(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "damaged"]
