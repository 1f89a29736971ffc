"""The dashboard's web server (aiohttp, the optional extra ``dashboard``): the page, its
script and style, and ``/api/cluster``.

Only this module imports aiohttp, and only :mod:`raftpy.cli.dashboard` imports this module,
once it knows aiohttp is installed. The page is plain HTML with vanilla JavaScript that asks
``/api/cluster`` every 500 ms and draws with inline SVG: nothing to build, nothing fetched
from elsewhere (the Content-Security-Policy says so to the browser).
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from aiohttp import web

from raftpy.dashboard.picture import cluster_picture
from raftpy.dashboard.poller import Poller

__all__ = ["STATIC_FILES", "make_app", "start_server"]

STATIC_FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
"""The files under ``/static/``, with their content types (nothing else is served)."""

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    ),
}

_POLLER: web.AppKey[Poller] = web.AppKey("poller", Poller)
_FILES: web.AppKey[dict[str, bytes]] = web.AppKey("files", dict)


def _read_static() -> dict[str, bytes]:
    """The page's files, read once from the package data."""
    root = importlib.resources.files("raftpy.dashboard") / "static"
    names = ["index.html", *STATIC_FILES]
    return {name: (root / name).read_bytes() for name in names}


class _PictureCache:
    """The last picture, rebuilt only once the poller learnt something new (several open pages
    then cost one build per answer, not one per request)."""

    def __init__(self) -> None:
        self.version = -1
        self.body = b""

    def get(self, poller: Poller) -> bytes:
        if poller.version != self.version:
            self.version = poller.version
            self.body = json.dumps(cluster_picture(poller), allow_nan=False).encode()
        return self.body


async def _index(request: web.Request) -> web.Response:
    body = request.app[_FILES]["index.html"]
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=_HEADERS)


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(
        body=request.app[_FILES][name],
        content_type=STATIC_FILES[name],
        charset="utf-8",
        headers=_HEADERS,
    )


def make_app(poller: Poller) -> web.Application:
    """The dashboard's aiohttp application for ``poller`` (which the caller runs)."""
    app = web.Application()
    app[_POLLER] = poller
    app[_FILES] = _read_static()
    cache = _PictureCache()

    async def api_cluster(request: web.Request) -> web.Response:
        return web.Response(
            body=cache.get(request.app[_POLLER]),
            content_type="application/json",
            headers=_HEADERS,
        )

    app.router.add_get("/", _index)
    app.router.add_get("/api/cluster", api_cluster)
    app.router.add_get("/static/{name}", _static)
    return app


async def start_server(poller: Poller, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the dashboard of ``poller`` on ``host:port`` (port 0: any free port); return the
    runner (``await runner.cleanup()`` stops it) and the port it listens on. Raises OSError
    when it cannot listen there (the port is taken, the host is not this machine's)."""
    runner = web.AppRunner(make_app(poller), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    addresses: list[Any] = list(runner.addresses)
    return runner, int(addresses[0][1]) if addresses else port
