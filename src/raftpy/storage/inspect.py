"""An offline, read-only inspection of a stopped node's data directory: what ``raftpy doctor``
reports (docs/doctor.md), and the one repair it may make.

Nothing here parses the formats a second time. The verdict comes from the very recovery a
node runs at start-up: :class:`~raftpy.storage.wal.FileStorage` opened on a file system that
refuses every write (:class:`ReadOnlyFileSystem`), so whatever would stop the node
(:class:`~raftpy.storage.errors.DataLossError`, a damaged identity or peer file, an
unsupported format) is reported with the file and byte offset the node would name, and the
torn tail the node would cut is listed, byte for byte, as recovery decided it. The segment
table reads each segment with :func:`~raftpy.storage.segments.scan_segment`, the snapshot
table checks each file with :class:`~raftpy.storage.snapshots.SnapshotStore`, and the choice
of the snapshot the node restores from follows the node's start-up rule (README.md,
"Snapshots").

**The lock.** A running node holds ``LOCK`` (an ``flock``): the inspection takes it too, so it
never reads a log being written, and refuses with
:class:`~raftpy.storage.errors.DataDirLockedError` while a node runs. The kernel drops an
``flock`` when its process dies, so a lock is never stale: a ``LOCK`` file left by a crashed
node does not stop the inspection.

**The repair** (:meth:`Inspection.repair`) carries out exactly the cuts recovery decided
(``FileStorage._repairs``: the torn last batch of the last segment, never synced, and leftovers
after its end marker), with recovery's own code (``FileStorage._clear``), while the lock is
still held. It refuses when anything is damaged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from types import TracebackType

from raftpy.core.messages import DECODE_ERRORS, ConfState
from raftpy.errors import LocalProtocolError
from raftpy.storage.data_dir_report import (
    DataDirReport,
    Finding,
    HardStateReport,
    IdentityReport,
    LogReport,
    MembershipReport,
    Repair,
    Role,
    SegmentReport,
    Severity,
    SnapshotReport,
    TermRange,
)
from raftpy.storage.errors import (
    CorruptLogError,
    CorruptSnapshotError,
    DataDirError,
    DataDirLockedError,
    DataLossError,
    StorageError,
    UnsupportedFormatError,
)
from raftpy.storage.fs import FileSystem, Lock, OsFileSystem, ReadOnlyFileSystem
from raftpy.storage.identity import IDENTITY, read_identity
from raftpy.storage.peers import PEERS, PeerIncarnations
from raftpy.storage.segments import (
    _REC,
    _RH,
    ENTRIES,
    HARD_STATE,
    SegmentScan,
    _dec_entries,
    _dec_hard,
    scan_segment,
    segment_name,
    segment_numbers,
)
from raftpy.storage.snapshot_choice import choose_snapshot
from raftpy.storage.snapshots import SnapshotStore, _file_name
from raftpy.storage.wal import MIN_SEGMENT_SIZE, FileStorage

__all__ = [
    "REPLACE_MEMBER",
    "SNAPSHOTS",
    "DataDirReport",
    "Finding",
    "HardStateReport",
    "IdentityReport",
    "Inspection",
    "LogReport",
    "MembershipReport",
    "NotADataDirError",
    "Repair",
    "RepairRefused",
    "Role",
    "SegmentReport",
    "Severity",
    "SnapshotReport",
    "TermRange",
    "inspect_data_dir",
]

SNAPSHOTS = "snapshots"
"""The snapshot directory's name inside a node's data directory."""


REPLACE_MEMBER = (
    "Replace this member: remove it from the cluster and add it back with an empty data dir "
    '(README.md, "Changing members")'
)
"""What to do when a member's synced state is gone (Thesis §4.1: a server that lost its state
rejoins as a new one, through a membership change)."""


class NotADataDirError(DataDirError):
    """Raised when the path given is not a node's data directory (missing, not a directory,
    or holding none of a data directory's files): the caller's mistake, nothing was read."""


class RepairRefused(StorageError):
    """Raised by :meth:`Inspection.repair` when the data dir holds more than a torn tail:
    nothing was changed."""


class _ReadOnlyLog(FileStorage):
    """FileStorage whose opening only reads (it does anyway; here the probe that the directory
    is writable is skipped) and that refuses every write call: recovery as the node runs it,
    on a :class:`ReadOnlyFileSystem`."""

    def _check_writable(self) -> None:
        pass  # the inspection writes nothing, so whether it could is beside the point

    def _check_usable(self) -> None:
        raise LocalProtocolError(f"storage in {self._dir} is open read-only for inspection")

    def cut(self, writable: FileSystem) -> None:
        """Carry out recovery's cuts (``_repairs``) with recovery's own code, on segment files
        opened through ``writable``."""
        for seq, start, end in self._repairs:
            f = self._files[seq]
            self._files[seq] = writable.open(self._seg_path(seq))
            f.close()
            self._clear(seq, start, end)
        self._repairs = []


# -- the inspection -----------------------------------------------------------------------------


_DATA_DIR_MARKS = ("LOCK", IDENTITY, PEERS, SNAPSHOTS)


def _check_data_dir(fs: FileSystem, data_dir: str) -> list[str]:
    if not fs.exists(data_dir):
        raise NotADataDirError(f"{data_dir} does not exist")
    try:
        names = fs.listdir(data_dir)
    except NotADirectoryError:
        raise NotADataDirError(f"{data_dir} is not a directory") from None
    except OSError as exc:
        raise DataDirError(f"cannot read {data_dir}: {exc}") from exc
    if not segment_numbers(names) and not any(n in names for n in _DATA_DIR_MARKS):
        raise NotADataDirError(
            f"{data_dir} is not a raftpy data dir: it holds no write-ahead log segment "
            "(*.wal), no IDENTITY, no LOCK and no snapshots/ directory"
        )
    return names


def _damage_text(scan: SegmentScan) -> str | None:
    if scan.damage is not None:
        return f"{scan.damage.reason} at offset {scan.damage.offset}"
    if scan.version >= 2 and scan.tail is None:
        return f"no end marker at offset {scan.end}"
    if scan.leftover is not None:
        return f"leftover bytes after the end marker at offset {scan.leftover}"
    return None


def _records_between(data: bytes, start: int, stop: int) -> int:
    """How many records start in ``[start, stop)`` of a segment whose records there were
    checked intact by :func:`scan_segment` (their headers can be walked)."""
    n = 0
    pos = start
    while pos < stop and pos + _RH <= len(data):
        length = _REC.unpack_from(data, pos)[2]
        pos += _RH + length
        n += 1
    return n


class Inspection:
    """An open inspection of a stopped node's data directory: holds its lock (so the node
    cannot start meanwhile) until :meth:`close`. :attr:`report` is what was found;
    :meth:`repair` cuts a torn tail. A context manager.

    Raises :class:`NotADataDirError` for a path that is no data directory and
    :class:`~raftpy.storage.errors.DataDirLockedError` while a node has it open."""

    def __init__(self, data_dir: str | os.PathLike[str], *, fs: FileSystem | None = None) -> None:
        self._base: FileSystem = fs if fs is not None else OsFileSystem()
        self._fs = ReadOnlyFileSystem(self._base)
        self.data_dir = os.fspath(data_dir)
        names = _check_data_dir(self._fs, self.data_dir)
        self._findings: list[Finding] = []
        self._log: _ReadOnlyLog | None = None
        self._lock: Lock | None = None
        lock_path = os.path.join(self.data_dir, "LOCK")
        try:
            if self._base.exists(lock_path):
                # Held for the whole inspection (and a repair): the node cannot start meanwhile.
                self._lock = self._base.lock(lock_path)
        except BlockingIOError:
            raise DataDirLockedError(
                f"data dir {self.data_dir} is in use: a running node holds its lock "
                f"({lock_path}); stop the node first"
            ) from None
        except OSError as exc:
            raise DataDirError(f"cannot lock {lock_path}: {exc}") from exc
        self._unsupported: str | None = None  # the first segment of an unknown format
        try:
            segment_reports, hard = self._segments(names)
            self._open_log()
            self.report = self._build(names, segment_reports, hard)
        except OSError as exc:
            self.close()
            raise DataDirError(f"cannot read {self.data_dir}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Inspection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the files and the lock."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- the log ------------------------------------------------------------------------------

    def _open_log(self) -> None:
        """Recover the log as the node does; what stops the node becomes a finding."""
        try:
            self._log = _ReadOnlyLog(self.data_dir, fs=self._fs, segment_size=MIN_SEGMENT_SIZE)
        except DataLossError as exc:
            self._damaged(
                "data-loss",
                exc.file,
                exc.offset,
                exc.reason,
                "the node refuses to start (DataLossError): state it had synced, so possibly "
                f"acknowledged, is gone. {REPLACE_MEMBER}, or restore the data dir from a "
                "backup taken while the node was stopped",
            )
        except UnsupportedFormatError as exc:
            self._damaged(
                "unsupported-format",
                self._unsupported,
                0 if self._unsupported is not None else None,
                str(exc),
                "the node refuses to start: run the raftpy version that wrote this data dir "
                "(or a newer one)",
            )
        except DataDirError as exc:
            try:
                read_identity(self._fs, self.data_dir, self._fs.listdir(self.data_dir))
            except DataDirError:
                self._damaged(
                    "identity-damaged",
                    os.path.join(self.data_dir, IDENTITY),
                    0,
                    str(exc),
                    "the node refuses to start (DataDirError): the file says which cluster "
                    "and node this data dir belongs to; if the log beside it is intact, delete "
                    "the file (it is written again at start-up)",
                )
            else:
                raise

    def _build(
        self, names: list[str], segments: list[SegmentReport], hard: HardStateReport | None
    ) -> DataDirReport:
        log_report, membership = self._log_report()
        if self._log is not None:
            h = self._log.hard_state
            hard = HardStateReport(term=h.term, vote=h.vote, commit=h.commit)
        repairs = self._repairs()
        if self._log is not None and self._log._new:
            self._finding(
                "ok",
                "no-log",
                None,
                None,
                "the data dir holds no log yet (no segment, or only a first batch that never "
                "reached the disk)",
                "the node starts as a brand-new member, from the member list it is given",
            )
        for name in sorted(n for n in names if n.endswith(".wal.tmp")):
            self._finding(
                "ok",
                "half-created-segment",
                os.path.join(self.data_dir, name),
                None,
                "a segment whose creation never finished (it holds no record)",
                "the node deletes it at its first write",
            )
        pins = self._peers()
        snapshots, restored = self._snapshots()
        identity = self._identity(names)
        damaged = any(f.severity == "damaged" for f in self._findings)
        return DataDirReport(
            data_dir=self.data_dir,
            verdict="damaged" if damaged else "healthy",
            identity=identity,
            hard_state=hard,
            log=log_report,
            membership=membership,
            segments=segments,
            snapshots=snapshots,
            restored_snapshot=restored,
            pinned_peers=pins,
            findings=self._findings,
            repairs=repairs,
        )

    def _segments(self, names: list[str]) -> tuple[list[SegmentReport], HardStateReport | None]:
        out = []
        hard = None
        self._scans: dict[int, tuple[bytes, SegmentScan]] = {}
        for seq in segment_numbers(names):
            name = segment_name(seq)
            path = os.path.join(self.data_dir, name)
            f = self._fs.open(path)
            try:
                data = f.read_at(0, f.size())
            finally:
                f.close()
            try:
                scan = scan_segment(data, seq, path)
            except (CorruptLogError, UnsupportedFormatError) as exc:
                if isinstance(exc, CorruptLogError):
                    reason = exc.reason
                else:
                    reason = str(exc)
                    self._unsupported = self._unsupported or path
                out.append(
                    SegmentReport(
                        file=name,
                        number=seq,
                        version=None,
                        first_index=None,
                        last_index=None,
                        records=0,
                        bytes=0,
                        size=len(data),
                        preallocated=0,
                        sealed=False,
                        damage=f"bad header: {reason}",
                    )
                )
                continue
            self._scans[seq] = (data, scan)
            first = last = None
            for typ, payload, _ in scan.records:
                try:
                    if typ == ENTRIES:
                        batch = _dec_entries.decode(payload)
                        if batch:
                            first = batch[0].index if first is None else first
                            last = batch[-1].index
                    elif typ == HARD_STATE:
                        h = _dec_hard.decode(payload)
                        hard = HardStateReport(term=h.term, vote=h.vote, commit=h.commit)
                except DECODE_ERRORS:
                    pass  # recovery names it (an undecodable payload stops the node)
            out.append(
                SegmentReport(
                    file=name,
                    number=seq,
                    version=scan.version,
                    first_index=first,
                    last_index=last,
                    records=len(scan.records),
                    bytes=scan.end,
                    size=scan.size,
                    preallocated=scan.preallocated,
                    sealed=scan.sealed is not None,
                    damage=_damage_text(scan),
                )
            )
        return out, hard

    def _log_report(self) -> tuple[LogReport | None, MembershipReport | None]:
        s = self._log
        if s is None:
            return None, None
        snap = s.snapshot_meta()
        runs: list[TermRange] = []
        index = s.first_index()
        for term in s._terms:
            if runs and runs[-1].term == term:
                runs[-1].last = index
            else:
                runs.append(TermRange(term=term, first=index, last=index))
            index += 1
        log_report = LogReport(
            snapshot_index=snap.index,
            snapshot_term=snap.term,
            first_index=s.first_index(),
            last_index=s.last_index(),
            terms=runs,
            bytes=s.persisted_bytes(),
            vouches_for_tail=s.vouches_for_tail,
        )
        return log_report, _membership(s.initial_state()[1])

    def _repairs(self) -> list[Repair]:
        """Recovery's cuts (what the node does at its first write), each as a warning."""
        s = self._log
        if s is None:
            return []
        out = []
        for seq, start, end in s._repairs:
            path = os.path.join(self.data_dir, segment_name(seq))
            data, scan = self._scans[seq]
            damage = scan.damage
            if damage is not None:
                records = _records_between(data, damage.batch_start, damage.offset)
                if damage.reason != "batch has no final record":
                    records += 1  # the damaged one
                if scan.version >= 2:
                    meaning = (
                        "a crash interrupted this write before its fdatasync returned, so it "
                        "was never acknowledged: the node cuts it at start (or run raftpy "
                        "doctor --repair); nothing acknowledged is lost"
                    )
                else:
                    meaning = (
                        "the node cuts it at start; this old (format 1) segment cannot tell a "
                        "write a crash interrupted from damage to a synced batch"
                    )
                self._finding(
                    "warning",
                    "torn-tail",
                    path,
                    start,
                    f"torn tail: the last batch, at offset {start} ({end - start} bytes, "
                    f"{records} record{'s' if records != 1 else ''}), is incomplete "
                    f"({damage.reason} at offset {damage.offset})",
                    meaning,
                )
            elif start == end:
                records = 0
                self._finding(
                    "warning",
                    "missing-end-marker",
                    path,
                    start,
                    f"the end marker after the last batch (offset {start}) is missing",
                    "a crash interrupted that batch's write before its fdatasync returned; "
                    "the batch is whole and is kept, the node writes the end marker at start",
                )
            else:
                records = 0
                self._finding(
                    "warning",
                    "leftover-bytes",
                    path,
                    start,
                    f"{end - start} bytes of an interrupted write lie after the end marker "
                    f"(offset {start})",
                    "never synced: the node clears them at start; nothing acknowledged is lost",
                )
            out.append(Repair(file=path, offset=start, end=end, bytes=end - start, records=records))
        return out

    # -- the other files ----------------------------------------------------------------------

    def _identity(self, names: list[str]) -> IdentityReport | None:
        try:
            found = read_identity(self._fs, self.data_dir, names)
        except DataDirError:
            return None  # a finding already (recovery read it first) or one below
        if found is None:
            return None
        return IdentityReport(
            node_id=found.node_id, cluster_id=found.cluster_id, incarnation=found.incarnation
        )

    def _peers(self) -> dict[int, str]:
        try:
            return PeerIncarnations(self.data_dir, fs=self._fs).pinned()
        except DataDirError as exc:
            self._damaged(
                "peers-damaged",
                os.path.join(self.data_dir, PEERS),
                None,
                str(exc),
                "the node refuses to start (DataDirError): if no member lost its disk since, "
                "delete the file (peers are pinned again at their next connection)",
            )
            return {}

    def _snapshots(self) -> tuple[list[SnapshotReport], str | None]:
        directory = os.path.join(self.data_dir, SNAPSHOTS)
        if not self._fs.exists(directory):
            # The node creates it empty: a log compacted to a snapshot still needs its file.
            self._roles(directory, [])
            return [], None
        store = SnapshotStore(directory, fs=self._fs)
        for name in sorted(self._fs.listdir(directory)):
            if name.endswith((".tmp", ".partial")):
                self._finding(
                    "ok",
                    "snapshot-leftover",
                    os.path.join(directory, name),
                    None,
                    "the leftover of a snapshot write or transfer that never finished",
                    "the node deletes it at start",
                )
        keys = store.keys()
        roles = self._roles(directory, keys)
        out = []
        restored = None
        for index, term in keys:
            path = store.path_of(index, term)
            role: Role = roles.get((index, term), "old" if self._log is not None else "unknown")
            problem, offset, size, header_ok = _check_snapshot(store, index, term)
            ok = problem is None
            out.append(
                SnapshotReport(
                    file=os.path.basename(path),
                    index=index,
                    term=term,
                    size=size,
                    checksum_ok=ok,
                    problem=problem,
                    role=role,
                )
            )
            if role == "restored":
                restored = os.path.basename(path)
            if ok:
                continue
            if role == "restored" or (role == "log" and not header_ok):
                # The node reads the header of the log's own file and all of the restored one.
                self._damaged(
                    "snapshot-corrupt",
                    path,
                    offset,
                    f"the snapshot the node {'restores from' if role == 'restored' else 'keeps'} "
                    f"is damaged: {problem}",
                    f"the node refuses to start (CorruptSnapshotError). {REPLACE_MEMBER}",
                )
            else:
                self._finding(
                    "warning",
                    "snapshot-corrupt",
                    path,
                    offset,
                    f"a snapshot the node does not restore from is damaged: {problem}",
                    "the node deletes it at start"
                    if role != "log"
                    else "the node keeps it beside the newer one it restores; delete it",
                )
        return out, restored

    def _roles(
        self, directory: str, keys: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], Role]:
        """Which snapshot the node restores from at start, by the node's own rule: the file of
        the log's snapshot, or a newer one at a committed index whose term the log agrees
        with; files newer than that are not vouched for (deleted at start, with a warning).
        Findings for what stops the node."""
        s = self._log
        roles: dict[tuple[int, int], Role] = {}

        def path_of(index: int, term: int) -> str:
            return os.path.join(directory, _file_name(index, term))

        if s is None:
            return roles
        wal = s.snapshot_meta()
        hard = s.hard_state
        last = s.last_index()
        if keys and hard.term == 0 and last == 0 and wal.index == 0:
            index, term = keys[-1]
            self._damaged(
                "snapshots-without-log",
                path_of(index, term),
                0,
                f"snapshot files exist (the newest at index {index}, term {term}) but the log "
                "is empty, with no term and no vote: the log was lost",
                f"the node refuses to start (DataLossError). {REPLACE_MEMBER}",
            )
            return roles
        chosen, own, unvouched = choose_snapshot(
            keys, (wal.index, wal.term), last, hard.commit, s.term
        )
        if wal.index > 0 and chosen is None:
            self._damaged(
                "snapshot-missing",
                path_of(wal.index, wal.term),
                0,
                f"the log was compacted to a snapshot at index {wal.index} (term {wal.term}) "
                "whose file is missing: the state before it is lost here",
                f"the node refuses to start (DataLossError). {REPLACE_MEMBER}",
            )
        beyond = [(i, t) for i, t in unvouched if i > last]
        if beyond and not s.vouches_for_tail:
            index, term = beyond[0]
            self._damaged(
                "snapshot-beyond-old-log",
                path_of(index, term),
                0,
                f"this snapshot file (index {index}, term {term}) lies beyond the log's last "
                f"entry {last}, and the log's last segment (format 1) cannot tell whether its "
                "end was cut off",
                "the node refuses to start (DataLossError). If the node crashed while "
                "installing a snapshot from the leader, delete this file and start again",
            )
        for key in unvouched:
            if chosen is not None and key[0] < chosen[0]:
                continue  # older than the one restored: deleted at start, like any old file
            roles[key] = "unvouched"
            self._finding(
                "warning",
                "snapshot-unvouched",
                path_of(*key),
                None,
                f"a snapshot file (index {key[0]}, term {key[1]}) the log does not vouch for "
                f"(its last entry is {last}, its commit index {hard.commit})",
                "a crash while installing a snapshot from the leader leaves such a file: the "
                "node deletes it at start, with a warning",
            )
        if own is not None:
            roles[own] = "log"
        if chosen is not None:
            roles[chosen] = "restored"
        return roles

    # -- findings -------------------------------------------------------------------------------

    def _finding(
        self,
        severity: Severity,
        code: str,
        file: str | None,
        offset: int | None,
        what: str,
        meaning: str,
    ) -> None:
        self._findings.append(
            Finding(
                severity=severity,
                code=code,
                file=file,
                offset=offset,
                what=what,
                meaning=meaning[:1].upper() + meaning[1:],
            )
        )

    def _damaged(
        self, code: str, file: str | None, offset: int | None, what: str, meaning: str
    ) -> None:
        self._finding("damaged", code, file, offset, what, meaning)

    # -- the repair -----------------------------------------------------------------------------

    def repair(self) -> list[Repair]:
        """Cut what recovery decided to cut (:attr:`DataDirReport.repairs`), durably, with
        recovery's own code, under the lock this inspection holds; returns what was cut.
        Raises :class:`RepairRefused` when the report has a ``damaged`` finding: only
        never-synced data is ever cut."""
        report = self.report
        if report.damaged:
            first = report.damaged[0]
            raise RepairRefused(
                f"refusing to repair: {first.what}; only a torn tail (never synced) is cut, "
                "and this data dir holds damage to synced state"
            )
        if self._log is None or not report.repairs:
            return []
        lock_path = os.path.join(self.data_dir, "LOCK")
        try:
            if self._lock is None:
                # No lock file when inspected (so no node had it open): none may start now.
                self._lock = self._base.lock(lock_path)
            self._log.cut(self._base)
        except BlockingIOError:
            raise DataDirLockedError(
                f"data dir {self.data_dir} is in use: a node started meanwhile ({lock_path})"
            ) from None
        except OSError as exc:
            raise DataDirError(f"could not repair {self.data_dir}: {exc}") from exc
        return report.repairs


def inspect_data_dir(
    data_dir: str | os.PathLike[str], *, fs: FileSystem | None = None
) -> DataDirReport:
    """Inspect a stopped node's data directory, read-only (see the module docstring)."""
    with Inspection(data_dir, fs=fs) as inspection:
        return inspection.report


# -- helpers ------------------------------------------------------------------------------------


def _membership(conf: ConfState) -> MembershipReport:
    return MembershipReport(
        voters=list(conf.voters),
        learners=list(conf.learners),
        voters_outgoing=list(conf.voters_outgoing),
        addresses={a.node_id: a.address for a in conf.addresses},
    )


def _check_snapshot(
    store: SnapshotStore, index: int, term: int
) -> tuple[str | None, int | None, int, bool]:
    """What is wrong with the file of ``(index, term)`` (``None``: header, trailer and CRC
    check out) and at which byte offset, the file's size, and whether its header is intact."""
    size = 0
    with contextlib.suppress(OSError):
        f = store._fs.open(store.path_of(index, term))
        try:
            size = f.size()
        finally:
            f.close()
    header_ok = False
    try:
        meta = store.read_meta(index, term)
        header_ok = True
        store.verify(meta)
    except CorruptSnapshotError as exc:
        return exc.reason, exc.offset, size, header_ok
    except UnsupportedFormatError as exc:
        return str(exc), None, size, header_ok
    return None, None, size, True
