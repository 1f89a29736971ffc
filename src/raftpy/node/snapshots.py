"""Snapshots in a running node (Raft §7): taking them without stalling the event loop,
compacting the log durably, streaming them to followers and installing the leader's.

The :class:`~raftpy.node.RaftNode` owns one :class:`NodeSnapshots` and calls it from its loop;
no Raft rule lives here (the core decides who needs a snapshot and whether a received one is
taken). What this module guarantees:

- **Consistent state, off the loop.** A snapshot is taken at the node's applied index, between
  two applies. With ``prepare_snapshot()`` (see :mod:`raftpy.statemachine`) applies go on while
  a worker thread writes the file; without it applies are held back until the file is written.
- **Crash at any step leaves the old state or the new one.** Order when taking a snapshot:
  sync the log (so the commit index covering the snapshot is durable), write the file
  atomically (temp file, fsync, rename, directory fsync; :mod:`raftpy.storage.snapshots`), then
  compact the log (one synced WAL record), then delete files no longer needed. When installing
  the leader's: the received file is verified and renamed into place first, then the WAL
  records the snapshot. On start-up, :meth:`NodeSnapshots.recover` uses only a snapshot that
  the log vouches for (the WAL's own, or a newer one whose index is committed in the log with
  the same term); it refuses to start when the files show the log lost state, and deletes
  nothing before it has decided (other files are then deleted, a newer one with a warning).
- **Followers that lag a little catch up from the log.** The log is compacted to the
  *previous* snapshot, not the newest: one snapshot interval of entries stays behind the newest
  snapshot (etcd keeps 5,000 "catch-up entries", hashicorp/raft ``TrailingLogs`` for the same
  reason), and a restart still begins at the newest snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from raftpy.core.messages import (
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    PeerMessage,
    SnapshotMeta,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import SnapshotRequest
from raftpy.errors import RejectedMessage, StateMachineError
from raftpy.node.config import NodeConfig
from raftpy.node.last_error import LastError
from raftpy.node.stats import SnapshotStats
from raftpy.node.status import TransferStatus
from raftpy.node.transfer import Completed, Outcome, SnapshotReceiver, SnapshotSenders
from raftpy.statemachine import ConcurrentSnapshot, StateMachine
from raftpy.storage.base import LogStore
from raftpy.storage.errors import (
    CorruptSnapshotError,
    DataLossError,
    FatalStorageError,
    StorageError,
    StorageFullError,
)
from raftpy.storage.snapshot_choice import choose_snapshot
from raftpy.storage.snapshots import SnapshotSink, SnapshotStore

logger = logging.getLogger("raftpy.snapshot")

# What an entry costs in the write-ahead log besides its command bytes (index, term, kind,
# length and checksum), so that empty commands still count towards ``snapshot_ratio``.
ENTRY_OVERHEAD = 24


def _abort(sink: SnapshotSink) -> None:
    sink.abort()


def _reraise(exc: FatalStorageError) -> None:
    raise exc


class NodeSnapshots:
    """Snapshot work of one node: see the module docstring.

    ``send`` puts a message on the wire; ``wake`` wakes the node's loop (a background step
    finished and the loop has work: a file or an outcome for the core, held-back applies).
    ``stats`` is the snapshot part of the node's counters, counted here (default: counters of
    its own). ``authority()`` is the node's current term and leader: only that leader's
    snapshot chunks of that term are taken (:mod:`raftpy.node.transfer`). ``fatal`` hears of a
    :class:`FatalStorageError` met off the loop (writing or verifying a file in a worker
    thread); the node ends itself (default: re-raise it).

    Failures of the user's state machine: a ``prepare_snapshot()`` or ``snapshot()`` that
    raises fails that snapshot attempt only (logged; an automatic one is retried later, an
    operator's gets the error), and the node keeps serving with a longer log. A ``restore()``
    that raises on a verified file is :class:`~raftpy.errors.StateMachineError`: the state
    machine may be half replaced, so this replica cannot go on (the node ends its process).
    """

    def __init__(
        self,
        node_id: int,
        store: SnapshotStore,
        storage: LogStore,
        state_machine: StateMachine,
        config: NodeConfig,
        send: Callable[[PeerMessage], None],
        wake: Callable[[], None],
        stats: SnapshotStats | None = None,
        fatal: Callable[[FatalStorageError], None] | None = None,
        *,
        authority: Callable[[], tuple[int, int | None]],
        errors: LastError | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self._storage = storage
        self._sm = state_machine
        self._config = config
        self._send = send
        self._wake = wake
        self.stats = stats if stats is not None else SnapshotStats()
        self._fatal = fatal or _reraise
        self._errors = errors if errors is not None else LastError()
        self._outcomes: list[Outcome] = []  # transfers that ended, for Raft.report_snapshot
        self._senders = SnapshotSenders(
            node_id,
            self._send_chunk,
            chunk_bytes=config.snapshot_chunk_bytes,
            window_bytes=config.snapshot_window_bytes,
            retry_ticks=max(2, round(0.2 / config.tick_seconds)),
            give_up_ticks=max(config.raft.election_ticks * 2, round(10.0 / config.tick_seconds)),
        )
        self._receiver: SnapshotReceiver[SnapshotSink] = SnapshotReceiver(
            store.begin_receive, _abort, authority=authority
        )
        # Received and verified files: waiting for the core, then (if it took one) for
        # Ready.snapshot to install it.
        self._verified: list[Completed[SnapshotSink]] = []
        self._taken: dict[tuple[int, int], SnapshotSink] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[SnapshotMeta] | None = None
        self._installing: asyncio.Future[None] | None = None
        self._retry_at = 0.0
        self.latest: SnapshotMeta | None = None
        self.latest_size = 0  # bytes of that snapshot's file (0: none, or not known)
        self.hold_applies = False
        self.entries_since = 0
        self.bytes_since = 0

    # ------------------------------------------------------------------------------------------
    # Start-up
    # ------------------------------------------------------------------------------------------

    async def recover(self) -> int | None:
        """Restore the state machine from the newest snapshot the log vouches for; return the
        applied index to start the core with (``None``: no snapshot, apply from the start).

        Decides first and changes nothing until it has: it raises
        :class:`~raftpy.storage.errors.DataLossError` when the log was compacted to a snapshot
        whose file is gone, when snapshot files exist beside an empty log (the log was lost),
        and when a file lies beyond the end of a log that cannot vouch for its own end (a
        format 1 log), and :class:`~raftpy.storage.errors.CorruptSnapshotError` for a damaged
        file. Only after the restore does it delete files: leftovers of interrupted writes,
        old snapshots, and (with a warning naming each) files newer than the log vouches for.
        """
        storage = self._storage
        wal = storage.snapshot_meta()
        hard = storage.hard_state
        commit = hard.commit
        last = storage.last_index()
        keys = self.store.keys()
        if keys and hard.term == 0 and last == 0 and wal.index == 0:
            # No member holds a snapshot before it has a term (the leader's, or its own
            # entries'): the log these files came from is gone.
            index, term = keys[-1]
            raise DataLossError(
                self.store.path_of(index, term),
                0,
                f"snapshot files exist (the newest at index {index}, term {term}) but the log "
                f"in {storage.location} is empty, with no term and no vote: the log was lost",
            )
        # By file name first: files the log does not vouch for are never even opened.
        choice = choose_snapshot(keys, (wal.index, wal.term), last, commit, storage.term)
        own = None if choice.own is None else self.store.read_meta(*choice.own)
        chosen = own
        if choice.chosen is not None and choice.chosen != choice.own:
            chosen = self.store.read_meta(*choice.chosen)
        unvouched = choice.unvouched
        if wal.index > 0 and own is None and chosen is None:
            raise DataLossError(
                self.store.path(wal),
                0,
                f"the log in {storage.location} was compacted to a snapshot at index "
                f"{wal.index} (term {wal.term}) whose file is missing: the state before it is "
                "lost here",
            )
        beyond = [(i, t) for i, t in unvouched if i > last]
        if beyond and not getattr(storage, "vouches_for_tail", True):
            index, term = beyond[0]
            raise DataLossError(
                self.store.path_of(index, term),
                0,
                f"this snapshot file (index {index}, term {term}) lies beyond the log's last "
                f"entry {last}, and the log's last segment (format 1) cannot tell whether its "
                "end was cut off: the node took a snapshot there, so the log reached it. (If "
                "the node crashed while installing a snapshot from the leader instead, delete "
                "this file and start again.)",
            )
        if chosen is not None:
            logger.info(
                "node %d restores its state machine from snapshot %d (term %d)",
                self.node_id,
                chosen.index,
                chosen.term,
            )
            await asyncio.to_thread(self._restore, chosen)
        # Decided: from here on, files may change.
        if wal.index > 0 and own is None and chosen is not None:
            # The WAL's own file is gone but a newer usable one exists: compact to that one
            # so what we would send to followers is a file we have.
            storage.create_snapshot(chosen)
            own = chosen
        for index, term in unvouched:
            logger.warning(
                "node %d: deleting snapshot file %s (index %d, term %d): the log does not vouch "
                "for it (its last entry is %d, its commit index %d%s); a crash while installing "
                "a snapshot received from the leader leaves such a file",
                self.node_id,
                self.store.path_of(index, term),
                index,
                term,
                last,
                commit,
                "" if index > last else f", its term at {index} is {storage.term(index)}",
            )
        self.store.retain([m for m in (own, chosen) if m is not None])
        self.store.remove_leftovers()
        if chosen is None:
            return None
        self.latest = chosen
        self.latest_size = self._file_size(chosen)
        self.entries_since = max(0, commit - chosen.index)
        return chosen.index

    def _file_size(self, meta: SnapshotMeta) -> int:
        """The size of the snapshot file ``meta`` (0 if it cannot be opened: the size only
        paces automatic snapshots, and opening it for use will report the problem)."""
        try:
            with self.store.open_source(meta) as source:
                return source.size
        except (OSError, StorageError):
            return 0

    def _restore(self, meta: SnapshotMeta) -> None:
        try:
            with self.store.open_body(meta) as body:
                self._sm.restore(body)
        except CorruptSnapshotError:
            raise
        except Exception:
            # The state machine choked on the bytes: if they are damaged, say so, naming the
            # file and offset (CorruptSnapshotError), rather than the parser's complaint.
            self.store.verify(meta)
            raise

    # ------------------------------------------------------------------------------------------
    # Taking snapshots
    # ------------------------------------------------------------------------------------------

    def note_applied(self, entries: Sequence[Entry]) -> None:
        self.entries_since += len(entries)
        self.bytes_since += sum([len(e.data) for e in entries])

    @property
    def busy(self) -> bool:
        """A snapshot is being written."""
        return self._task is not None and not self._task.done()

    async def wait_quiet(self) -> None:
        """Wait until no snapshot is being written or installed (an operator's snapshot must
        not race an install: the state machine is being replaced meanwhile)."""
        while True:
            if self._installing is not None and not self._installing.done():
                await asyncio.shield(self._installing)
            elif self._task is not None and not self._task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._task)
            else:
                return

    def due(self, now: float) -> bool:
        """Whether the log since the last snapshot passed the configured size."""
        cfg = self._config
        # The cheapest test first: the node asks after every pass of its loop.
        if not (
            (cfg.snapshot_entries is not None and self.entries_since >= cfg.snapshot_entries)
            or (cfg.snapshot_bytes is not None and self.bytes_since >= cfg.snapshot_bytes)
        ):
            return False
        if cfg.snapshot_ratio is not None:
            # Thesis §5.1.2: pace snapshots by the previous one's size, so a large state is
            # not rewritten every few thousand entries (the cost per write stays bounded).
            written = self.bytes_since + ENTRY_OVERHEAD * self.entries_since
            if written < cfg.snapshot_ratio * self.latest_size:
                return False
        return not self.busy and now >= self._retry_at

    def start_automatic(self, raft: Raft, applied: int, now: float) -> None:
        """Start a snapshot because the log grew (:meth:`due`); a failure to start is logged
        and retried a few seconds later (the node carries on with a longer log)."""
        try:
            self.start(raft, applied)
        except FatalStorageError:
            raise  # the node ends itself
        except (StorageError, OSError) as exc:
            logger.error("node %d: cannot start a snapshot: %s", self.node_id, exc)
            self._errors.note(f"cannot start a snapshot: {exc}")
            self._retry_at = now + 5.0
        except Exception:
            # The state machine's prepare_snapshot() raised: this attempt fails, nothing else.
            logger.exception("node %d: prepare_snapshot() raised; snapshot skipped", self.node_id)
            self._errors.note("prepare_snapshot() raised; snapshot skipped")
            self._retry_at = now + 5.0

    def start(self, raft: Raft, applied: int) -> asyncio.Future[SnapshotMeta]:
        """Snapshot the state machine at ``applied`` (the node's applied index: nothing is
        applied between this call and the moment the state is captured)."""
        if self._task is not None and not self._task.done():
            return self._task
        latest = self.latest
        if latest is not None and latest.index >= applied:
            # Nothing new since the last one: hand that one back.
            done: asyncio.Future[SnapshotMeta] = asyncio.get_running_loop().create_future()
            done.set_result(latest)
            return done
        term = raft.log.term(applied)
        if term is None:
            raise StorageError(f"cannot snapshot at {applied}: its term is unknown")
        meta = SnapshotMeta(applied, term, raft.conf_state_at(applied))
        # The file must never be ahead of the durable commit index (recover() checks it).
        self._storage.sync()
        sm = self._sm
        if isinstance(sm, ConcurrentSnapshot):
            writer = sm.prepare_snapshot()
        else:
            writer = sm.snapshot
            self.hold_applies = True  # the state must not move while snapshot() reads it
        self.entries_since = 0
        self.bytes_since = 0
        self._task = asyncio.get_running_loop().create_task(
            self._write(meta, writer), name=f"raftpy-snapshot-{applied}"
        )
        return self._task

    async def _write(self, meta: SnapshotMeta, writer: Callable[..., None]) -> SnapshotMeta:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            size = await asyncio.to_thread(self.store.create, meta, writer)
        except BaseException as exc:
            self.hold_applies = False
            self._wake()
            self._retry_at = loop.time() + 5.0
            if not isinstance(exc, asyncio.CancelledError | FatalStorageError):
                self._errors.note(f"snapshot {meta.index} failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, StorageFullError):
                logger.error("node %d: snapshot %d failed: %s", self.node_id, meta.index, exc)
            elif isinstance(exc, FatalStorageError):
                self._fatal(exc)
            elif not isinstance(exc, asyncio.CancelledError):
                # The state machine's snapshot() (or its writer) raised: this attempt fails,
                # the node keeps serving and tries again later.
                logger.exception("node %d: snapshot %d failed", self.node_id, meta.index)
            raise
        self.hold_applies = False
        self._wake()
        previous = self.latest
        if previous is not None and previous.index >= meta.index:
            # The leader's snapshot was installed meanwhile: this one is older; drop it.
            self.store.retain([self._storage.snapshot_meta(), previous])
            return previous
        self.latest = meta
        self.latest_size = size
        # Compact to the previous snapshot: one interval of entries stays for followers that
        # lag a little (module docstring). The file is durable; the WAL record follows.
        if previous is not None and previous.index > self._storage.snapshot_meta().index:
            try:
                self._storage.create_snapshot(previous)
            except StorageFullError as exc:
                # The compaction record stays buffered and goes out with the next sync; the
                # old segments go at the next compaction. Nothing is lost meanwhile.
                logger.error("node %d: compaction delayed: %s", self.node_id, exc)
                self._errors.note(f"compaction delayed: {exc}")
        self.store.retain([self._storage.snapshot_meta(), meta])
        self.stats.taken += 1
        logger.info(
            "node %d took snapshot %d (term %d, %d bytes) in %.3f s; log starts at %d",
            self.node_id,
            meta.index,
            meta.term,
            size,
            loop.time() - started,
            self._storage.first_index(),
        )
        return meta

    # ------------------------------------------------------------------------------------------
    # Sending (leader)
    # ------------------------------------------------------------------------------------------

    def on_request(self, request: SnapshotRequest) -> None:
        """The core wants ``request.to`` to get a snapshot: start streaming it."""
        try:
            source = self.store.open_source(request.meta)
        except (OSError, StorageError) as exc:
            logger.error(
                "node %d: cannot open snapshot %d to send: %s",
                self.node_id,
                request.meta.index,
                exc,
            )
            self._errors.note(f"cannot open snapshot {request.meta.index} to send: {exc}")
            self._senders.end(request.to)
            self._outcomes.append((request, False))
            return
        self._senders.start(request, source)
        self.stats.sent += 1
        logger.info(
            "node %d streams snapshot %d (%d bytes) to %d",
            self.node_id,
            request.meta.index,
            source.size,
            request.to,
        )

    def on_answer(self, m: InstallSnapshotResponse) -> None:
        outcome = self._senders.on_answer(m)
        if outcome is not None:
            self._outcomes.append(outcome)

    def tick(self) -> None:
        self._outcomes.extend(self._senders.tick())

    def transfers(self) -> tuple[TransferStatus, ...]:
        """The snapshot transfers in progress, sending and receiving (for operators)."""
        out = [
            TransferStatus(
                peer=s.dst,
                direction="send",
                index=s.meta.index,
                bytes_done=s.acked,
                size=s.size,
                started=s.started,
            )
            for s in self._senders.senders()
        ]
        receiving = self._receiver.progress()
        if receiving is not None:
            out.append(
                TransferStatus(
                    peer=receiving.leader,
                    direction="receive",
                    index=receiving.index,
                    bytes_done=receiving.bytes_done,
                    size=receiving.size,
                    started=receiving.started,
                )
            )
        return tuple(out)

    def stop_sending(self) -> None:
        """Leadership ended: its transfers end with it (the next leader starts its own)."""
        self._senders.stop()

    def _send_chunk(self, m: InstallSnapshot) -> None:
        self.stats.bytes_sent += len(m.data)  # resends included
        self._send(m)

    # ------------------------------------------------------------------------------------------
    # Receiving (follower)
    # ------------------------------------------------------------------------------------------

    def on_chunk(self, m: InstallSnapshot) -> None:
        self.stats.bytes_received += len(m.data)  # duplicates and refused chunks included
        receiver = self._receiver
        refused = receiver.refused
        try:
            answer, completed = receiver.on_chunk(m)
        except FatalStorageError:
            raise
        except (OSError, StorageError) as exc:
            logger.error("node %d: writing a received snapshot failed: %s", self.node_id, exc)
            self._errors.note(f"writing a received snapshot failed: {exc}")
            self._receiver.reset()
            self._send(SnapshotReceiver.rejection(m))
            return
        finally:
            self.stats.chunks_refused += receiver.refused - refused
        if answer is not None:
            self._send(answer)
        if completed is not None:
            task = asyncio.get_running_loop().create_task(self._verify(completed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _verify(self, completed: Completed[SnapshotSink]) -> None:
        """Sync and check the received file off the loop; a good one waits for
        :meth:`feed_core`."""
        m = completed.message
        sink = completed.sink
        try:
            meta = await asyncio.to_thread(sink.finish)
            ok = meta == m.meta
            if not ok:
                self._errors.note(f"received snapshot names {meta}, not {m.meta}")
                logger.error(
                    "node %d: received snapshot names %s, not %s", self.node_id, meta, m.meta
                )
        except FatalStorageError as exc:
            sink.abort()
            self._fatal(exc)
            return
        except (CorruptSnapshotError, OSError, StorageError) as exc:
            logger.error(
                "node %d: received snapshot %d is bad: %s", self.node_id, m.meta.index, exc
            )
            self._errors.note(f"received snapshot {m.meta.index} is bad: {exc}")
            ok = False
        self._send(self._receiver.finished(completed, ok))
        if not ok:
            sink.abort()
            return
        self._verified.append(completed)
        self._wake()

    def feed_core(
        self, raft: Raft, on_rejected: Callable[[RejectedMessage], None] | None = None
    ) -> None:
        """Hand the core what arrived since the last call: how our transfers ended
        (``Raft.report_snapshot``) and the files received whole and verified
        (``Raft.install_snapshot``). A file the core does not take is deleted now; the one it
        takes waits for ``Ready.snapshot`` (:meth:`install`). A file the core rejects
        (``RejectedMessage``) is deleted and handed to ``on_rejected`` (raised without one)."""
        outcomes, self._outcomes = self._outcomes, []
        for request, ok in outcomes:
            if not ok:
                self._errors.note(
                    f"snapshot transfer of {request.meta.index} to node {request.to} failed"
                )
            raft.report_snapshot(request, ok)
        verified, self._verified = self._verified, []
        for completed in verified:
            m = completed.message
            try:
                taken = raft.install_snapshot(m.meta, m.src, m.term)
            except RejectedMessage as exc:  # a second leader's, or contradicts our commit
                completed.sink.abort()
                if on_rejected is None:
                    raise
                on_rejected(exc)
                continue
            if not taken:
                completed.sink.abort()  # stale, or the log already holds what it covers
                continue
            # A file taken earlier in this batch is superseded: Ready.snapshot holds only the
            # newest (each snapshot the core takes lies past its commit index, which the
            # earlier one raised to its own index).
            for sink in self._taken.values():
                sink.abort()
            self._taken = {(m.meta.index, m.meta.term): completed.sink}

    async def install(self, meta: SnapshotMeta) -> None:
        """The core took the leader's snapshot (``Ready.snapshot``): make it durable, then
        restore the state machine from it (in a worker thread)."""
        installing = self._installing = asyncio.get_running_loop().create_future()
        try:
            if self._task is not None and not self._task.done():
                # A local snapshot may be reading the state machine: let it finish first.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(self._task)
            sink = self._taken.pop((meta.index, meta.term))
            self.store.install(sink)
            try:
                self._storage.apply_snapshot(meta)
            except StorageFullError as exc:
                # The record stays buffered: park until it is durable (as the node does for
                # any write), since nothing may be acknowledged before.
                logger.error("node %d: %s; waiting for free space", self.node_id, exc)
                self._errors.note(f"disk full: {exc}")
                while True:
                    await asyncio.sleep(0.2)
                    try:
                        self._storage.sync()
                        break
                    except StorageFullError:
                        continue
            try:
                await asyncio.to_thread(self._restore, meta)
            except (StorageError, OSError):
                raise
            except Exception as exc:
                # The file's checksum was verified, so the state machine itself failed, part
                # way through replacing its state: this replica cannot serve from it.
                raise StateMachineError(
                    f"the state machine's restore() raised {type(exc).__name__}: {exc} on "
                    f"verified snapshot {meta.index} (term {meta.term}); this replica's state "
                    "is unknown"
                ) from exc
        finally:
            installing.set_result(None)
        self.latest = meta
        self.latest_size = self._file_size(meta)
        self.entries_since = 0
        self.bytes_since = 0
        self.stats.installed += 1
        self.store.retain([meta])
        logger.info("node %d installed snapshot %d from the leader", self.node_id, meta.index)

    async def close(self) -> None:
        self.stop_sending()
        self._receiver.reset()
        for sink in [*self._taken.values(), *(c.sink for c in self._verified)]:
            sink.abort()
        self._taken.clear()
        self._verified.clear()
        tasks = list(self._background)
        if self._task is not None:
            tasks.append(self._task)  # type: ignore[arg-type]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
