"""MetricsServer: a minimal HTTP server for Prometheus scrapes, run on the node's own event loop
(docs/metrics.md).

It answers ``GET /metrics`` with what ``render`` returns, 404 for any other
path, 405 for any other method, and closes the connection after each answer. Serving on the
node's loop, not in a thread (as ``prometheus_client.start_http_server`` would), means a scrape
reads the node's counters between two steps of its loop, never while the loop is changing them:
no locks, no torn reads of a dict that grows under the reader.

Whatever a connection sends costs at most that connection: the request head is read with a
deadline and a byte bound (an oversized or garbage head gets 400/431 and a close, a silent one
is closed at the deadline), and at most :data:`MAX_CONNECTIONS` are served at once (more are
closed at accept). A failure while rendering answers 500 and logs it; the node goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import Callable

from raftpy.errors import ConfigError
from raftpy.transport.address import format_address, parse_address

logger = logging.getLogger("raftpy.metrics")

MAX_REQUEST_BYTES = 8192
"""The longest request head (request line and headers) answered; longer ones get 431."""
REQUEST_TIMEOUT = 5.0
"""Seconds a connection has to send its whole request head."""
LINGER_SECONDS = 1.0
"""After an error answer, what the client still sends is read and dropped for at most this
long (in small reads: it costs no memory)."""
MAX_CONNECTIONS = 32
"""Connections served at once; Prometheus opens one per scrape."""

INSTALL_HINT = "pip install 'raftpy[metrics]'"


def check_metrics_address(address: str) -> None:
    """Raise :class:`~raftpy.errors.ConfigError` when ``address`` is not a ``host:port`` to
    listen on (port 0 picks a free one) or when prometheus-client is not installed."""
    try:
        parse_address(address, listen=True)
    except ValueError as exc:
        raise ConfigError(f"metrics_address: {exc}") from None
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            "metrics_address needs the prometheus-client package, which is not installed: "
            f"{INSTALL_HINT}"
        )


class MetricsServer:
    """Serves ``render()`` (bytes of ``content_type``) at ``http://address/metrics``."""

    def __init__(self, address: str, render: Callable[[], bytes], content_type: str) -> None:
        self._host, self._port = parse_address(address, listen=True)
        self._render = render
        self._content_type = content_type
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.address: str | None = None
        """The bound ``host:port`` once started (the real port when 0 was asked for)."""

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self._host, self._port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            where = format_address(self._host, self._port)
            raise ConfigError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = format_address(host, port)
        logger.info("serving metrics on http://%s/metrics", self.address)

    async def close(self) -> None:
        server, self._server = self._server, None
        self.address = None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            status, body, ctype = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
            if not status.startswith("200"):
                # Closing with unread bytes would reset the connection and could destroy the
                # answer before the client reads it: half-close, and drop what still comes
                # (for a bounded time) until the client closes too.
                writer.write_eof()
                await asyncio.wait_for(_drop_rest(reader), LINGER_SECONDS)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the scraper went away or stalled: only its connection is lost
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        """The status line, body and content type for the request on ``reader``."""
        text = "text/plain; charset=utf-8"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            return "431 Request Header Fields Too Large", b"request head too large\n", text
        except (asyncio.IncompleteReadError, TimeoutError):
            raise TimeoutError from None  # nothing complete to answer
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", b"bad request line\n", text
        method, target = parts[0], parts[1]
        if target.split(b"?", 1)[0] != b"/metrics":
            return "404 Not Found", b"metrics are at /metrics\n", text
        if method != b"GET":
            return "405 Method Not Allowed", b"use GET\n", text
        try:
            body = self._render()
        except Exception:
            logger.exception("rendering metrics failed")
            return "500 Internal Server Error", b"rendering metrics failed\n", text
        return "200 OK", body, self._content_type


async def _drop_rest(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client still sends until it closes."""
    while await reader.read(MAX_REQUEST_BYTES):
        pass
