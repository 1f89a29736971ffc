"""The blocking client: :class:`SyncClient`, a :class:`~raftpy.client.client.Client` run on a
private event loop in a daemon thread, for code without an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import weakref
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from raftpy.client.client import Client, parse_consistency
from raftpy.errors import ClusterUnavailableError, IndeterminateError, LocalProtocolError
from raftpy.node.status import NodeStatus
from raftpy.transport.codec import DEFAULT_MAX_FRAME_BYTES
from raftpy.transport.protocol import Consistency, Members
from raftpy.transport.tls import TlsConfig

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class SyncClient:
    """A blocking :class:`Client` for code without an event loop.

    It runs a private event loop in a daemon background thread (``raftpy-sync-client``) and
    hands each call to it, so it works from plain code, from any number of threads at once,
    and even from inside a coroutine of another event loop (that loop is blocked for the
    duration of the call). Connections persist between calls. Arguments and errors are those
    of :class:`Client`; :meth:`close` (or the ``with`` statement) stops the thread.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        cluster_id: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 1.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.1,
        sessions: bool = True,
        attempt_timeout: float = 2.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        rng: random.Random | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        self._client = Client(
            addresses,
            cluster_id=cluster_id,
            timeout=timeout,
            connect_timeout=connect_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            sessions=sessions,
            attempt_timeout=attempt_timeout,
            max_frame_bytes=max_frame_bytes,
            rng=rng,
            tls=tls,
        )
        self._timeout = timeout
        self._grace = connect_timeout + 5.0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(self._loop,), name="raftpy-sync-client", daemon=True
        )
        self._thread.start()
        # If the SyncClient is dropped without close(), at least stop its thread.
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop)

    @property
    def leader_address(self) -> str | None:
        """The last known leader's address (``None`` when unknown)."""
        return self._client.leader_address

    @property
    def session_id(self) -> int | None:
        """The id of the open session (``None``: none open yet, or it ended)."""
        return self._client.session_id

    def propose(self, command: bytes, *, timeout: float | None = None) -> bytes:
        """Blocking :meth:`Client.propose` (exactly once with ``sessions``, the default)."""
        return self._run(self._client.propose(command, timeout=timeout), timeout, write=True)

    def query(
        self,
        query: bytes,
        *,
        consistency: str | Consistency = "linearizable",
        timeout: float | None = None,
    ) -> bytes:
        """Blocking :meth:`Client.query`."""
        parse_consistency(consistency)
        return self._run(
            self._client.query(query, consistency=consistency, timeout=timeout), timeout
        )

    def status(self, address: str | None = None, *, timeout: float | None = None) -> NodeStatus:
        """Blocking :meth:`Client.status`."""
        return self._run(self._client.status(address, timeout=timeout), timeout)

    def members(self, *, stale: bool = False, timeout: float | None = None) -> Members:
        """Blocking :meth:`Client.members`."""
        return self._run(self._client.members(stale=stale, timeout=timeout), timeout)

    def add_member(
        self,
        node_id: int,
        address: str,
        voter: bool = False,
        force: bool = False,
        *,
        timeout: float | None = None,
    ) -> Members:
        """Blocking :meth:`Client.add_member` (sent again after an unknown outcome: see
        there)."""
        coro = self._client.add_member(node_id, address, voter, force, timeout=timeout)
        return self._run(coro, timeout, write=True)

    def promote(
        self, node_id: int, force: bool = False, *, timeout: float | None = None
    ) -> Members:
        """Blocking :meth:`Client.promote`."""
        return self._run(self._client.promote(node_id, force, timeout=timeout), timeout, write=True)

    def remove_member(
        self, node_id: int, force: bool = False, *, timeout: float | None = None
    ) -> Members:
        """Blocking :meth:`Client.remove_member`."""
        coro = self._client.remove_member(node_id, force, timeout=timeout)
        return self._run(coro, timeout, write=True)

    def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> None:
        """Blocking :meth:`Client.transfer_leadership`."""
        coro = self._client.transfer_leadership(node_id, timeout=timeout)
        self._run(coro, timeout, write=True)

    def close(self) -> None:
        """Close the session and the connections and stop the background thread (bounded;
        idempotent)."""
        if self._closed:
            return
        self._closed = True
        if threading.current_thread() is not self._thread and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._client.close(), self._loop)
            try:
                fut.result(timeout=self._grace)
            except Exception as exc:  # closing must not fail; say why it was not clean
                log.warning("SyncClient: closing the connections failed: %r", exc)
        self._finalizer()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=self._grace)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(
        self, coro: Coroutine[Any, Any, _T], timeout: float | None, *, write: bool = False
    ) -> _T:
        if self._closed:
            coro.close()
            raise LocalProtocolError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise LocalProtocolError("a SyncClient cannot be called from its own loop thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        budget = (self._timeout if timeout is None else timeout) + self._grace
        try:
            return fut.result(timeout=budget)
        except TimeoutError:
            if not fut.done():
                # The call outlived its own deadline by the grace period: a bug, but the
                # caller still gets a bounded wait and an honest classification.
                fut.cancel()
                if write:
                    raise IndeterminateError("the client did not finish in time") from None
                raise ClusterUnavailableError("the client did not finish in time") from None
            raise
        except BaseException:
            fut.cancel()  # e.g. KeyboardInterrupt: do not leave the request running
            raise
