"""``raftpy dashboard ADDR... [--port P] [--host H] [--interval S]``: serve a live web page of
a running cluster (docs/dashboard.md).

It asks every given member (and the members the leader names) for its status every
``--interval`` seconds, keeps the last 10 minutes in memory, and serves the page at
``http://HOST:PORT/`` and the JSON behind it at ``/api/cluster``. It prints the URL, then runs
until interrupted (Ctrl-C or SIGTERM). Needs aiohttp: ``pip install 'raftpy[dashboard]'``.

Exit status: 0 stopped by Ctrl-C or SIGTERM; 1 it cannot listen on the address (the port is
taken, the host is not this machine's); 2 usage error (aiohttp missing included).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.util
from typing import TextIO

from raftpy.cli.arguments import EXIT_USAGE, add_connection_options, address, at_least
from raftpy.cli.runner import run_until_signal

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EXIT_DASHBOARD_CANNOT_LISTEN",
    "EXIT_DASHBOARD_STOPPED",
    "add_parser",
]

EXIT_DASHBOARD_STOPPED = 0
EXIT_DASHBOARD_CANNOT_LISTEN = 1
DEFAULT_HOST = "127.0.0.1"
"""Only this machine by default: the page shows the cluster's addresses and state to whoever
can open it."""
DEFAULT_PORT = 8800


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        why = "the port is in use (another program listens there; pick another with --port)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "the address is not one of this machine's (see --host)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    else:
        why = exc.strerror or str(exc)
    return f"raftpy dashboard: cannot listen on {host}:{port}: {why}"


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if importlib.util.find_spec("aiohttp") is None:
        print(
            "raftpy dashboard: needs aiohttp, which is not installed: "
            "pip install 'raftpy[dashboard]'",
            file=err,
        )
        return EXIT_USAGE
    from raftpy.client import Client
    from raftpy.dashboard.poller import Poller, client_fetcher
    from raftpy.dashboard.server import start_server
    from raftpy.transport.tls import tls_from_files

    try:
        tls = tls_from_files(args.tls_cert, args.tls_key, args.tls_ca)
    except ValueError as exc:
        print(f"raftpy dashboard: {exc}", file=err)
        return EXIT_USAGE
    host: str = args.host
    port: int = args.port

    async def serve() -> None:
        async with Client(
            args.addresses, cluster_id=args.cluster_id, tls=tls, sessions=False
        ) as client:
            poller = Poller(args.addresses, client_fetcher(client), interval=args.interval)
            runner, bound = await start_server(poller, host, port)
            try:
                shown = f"[{host}]" if ":" in host else host
                print(
                    f"raftpy dashboard: serving http://{shown}:{bound}/ (Ctrl-C to stop)",
                    file=out,
                    flush=True,
                )
                await poller.run()
            finally:
                await runner.cleanup()

    try:
        run_until_signal(serve())
    except asyncio.CancelledError:
        print("raftpy dashboard: stopped", file=err)
        return EXIT_DASHBOARD_STOPPED
    except OSError as exc:
        print(_listen_error(host, port, exc), file=err)
        return EXIT_DASHBOARD_CANNOT_LISTEN
    return EXIT_DASHBOARD_STOPPED  # pragma: no cover - serve() only ends by cancellation


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in 0..65535: {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "dashboard",
        help="serve a live web page of a running cluster",
        description=(
            "Serve a live web page of a running cluster: the members as a graph with roles and "
            "terms, replication to each follower, snapshot transfers, recent elections, write "
            "rate and latency over the last minutes (docs/dashboard.md). It asks each member "
            "for its status every --interval seconds and keeps the last 10 minutes in memory; "
            "the page's data is at /api/cluster as JSON. Prints the URL, then runs until "
            "Ctrl-C. Needs aiohttp (pip install 'raftpy[dashboard]'). Exit status: 0 stopped "
            "by Ctrl-C, 1 cannot listen on --host/--port, 2 usage error."
        ),
    )
    p.add_argument(
        "addresses",
        metavar="ADDR",
        nargs="+",
        type=address,
        help="members' addresses (host:port); the others are found through the leader",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="P",
        help=f"the port to serve the page on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        metavar="H",
        help=f"the address to serve on (default {DEFAULT_HOST}, this machine only; 0.0.0.0 "
        "serves every network the machine is on)",
    )
    p.add_argument(
        "--interval",
        type=at_least(float, 0.05, what="a number of seconds"),
        default=0.5,
        metavar="S",
        help="seconds between two status requests to a member (default 0.5)",
    )
    add_connection_options(p)
    p.set_defaults(handler=_run)
