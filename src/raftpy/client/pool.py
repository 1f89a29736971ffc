"""The connections of one client: one per node, opened lazily on first use and kept.

Concurrent calls to the same node share one opening, and one caller giving up (a cancelled
call, a passed deadline) does not abort it for the others. Closing the pool is closing the
client: it aborts every connection (their outstanding requests fail), cancels the openings in
progress and cuts short every call's backoff pause.
"""

from __future__ import annotations

import asyncio

from raftpy.client.connection import Connection, connect
from raftpy.transport.tls import TlsContexts


class ConnectionPool:
    """Open connections by address, and whether the client is closed."""

    def __init__(
        self,
        *,
        cluster_id: str | None,
        connect_timeout: float,
        max_frame_bytes: int,
        tls: TlsContexts | None = None,
    ):
        self._cluster_id = cluster_id
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._max_frame_bytes = max_frame_bytes
        self._conns: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Task[Connection]] = {}
        self._closed = False
        self._closed_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the client runs on: the running loop of its first call, kept. Its
        connections belong to that loop, so the client cannot serve another anyway; asking
        asyncio on every call would cost a ``getpid`` system call each time in Python 3.11
        (three per write, about a tenth of the client's CPU at load)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def ready(self, address: str) -> Connection | None:
        """The open, usable connection to ``address``, or ``None`` (then ask
        :meth:`connection`, which opens one)."""
        conn = self._conns.get(address)
        if conn is not None and conn.usable:
            return conn
        return None

    async def connection(self, address: str, deadline: float) -> Connection:
        """The open connection to ``address``, opening it if needed. Raises
        :class:`~raftpy.client.connection.ConnectFailed`, or ``TimeoutError`` at
        ``deadline`` (loop time)."""
        conn = self._conns.get(address)
        if conn is not None:
            if conn.usable:
                return conn
            del self._conns[address]
        task = self._connecting.get(address)
        if task is None:
            opening = connect(
                address,
                cluster_id=self._cluster_id,
                connect_timeout=self._connect_timeout,
                max_frame_bytes=self._max_frame_bytes,
                tls=self._tls,
            )
            task = self.loop.create_task(opening)
            self._connecting[address] = task
            task.add_done_callback(lambda t: self._opened(address, t))
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(task)

    def _opened(self, address: str, task: asyncio.Task[Connection]) -> None:
        if self._connecting.get(address) is task:
            del self._connecting[address]
        if task.cancelled() or task.exception() is not None:
            return  # exception() marks it retrieved; callers waiting on it see it themselves
        conn = task.result()
        if self._closed:
            conn.abort("the client was closed")
        else:
            self._conns[address] = conn

    async def pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if the pool is closed meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await self._closed_event.wait()
        except TimeoutError:
            pass

    async def close(self) -> None:
        """Abort every connection and opening; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        tasks = list(self._connecting.values())
        for task in tasks:
            task.cancel()
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.abort("the client was closed")
        if tasks:
            await asyncio.wait(tasks, timeout=self._connect_timeout + 1.0)
        for conn in conns:
            await conn.wait_closed(1.0)
