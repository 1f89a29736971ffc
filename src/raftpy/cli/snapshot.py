"""``raftpy snapshot ADDRESS [--timeout SECONDS] [--cluster-id ID] [--tls-cert F --tls-key F
--tls-ca F]``: ask one node to take a snapshot now and compact its log.

Any node will do, not only the leader: each node snapshots its own state. Prints
``snapshot at index I term T``. Exit status: 0 done, 1 the node could not be reached, refused
the connection, did not answer in time or failed the snapshot, 2 usage error. A refusal that
asking again cannot change (another cluster id, a certificate not trusted) ends the command at
once, with one line; an unreachable node is retried until ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TextIO

from raftpy.cli.arguments import add_connection_options, address, at_least
from raftpy.cli.runner import run_until_signal

__all__ = ["DEFAULT_SNAPSHOT_TIMEOUT", "EXIT_SNAPSHOT_FAILED", "EXIT_SNAPSHOT_OK", "add_parser"]

EXIT_SNAPSHOT_OK = 0
EXIT_SNAPSHOT_FAILED = 1
DEFAULT_SNAPSHOT_TIMEOUT = 60.0


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftpy snapshot``: ask one node to take a snapshot now; print its index and term."""
    from raftpy.cli.arguments import EXIT_USAGE
    from raftpy.client import Client
    from raftpy.errors import RaftError
    from raftpy.transport.tls import tls_from_files

    node: str = args.address
    timeout: float = args.timeout
    try:
        tls = tls_from_files(args.tls_cert, args.tls_key, args.tls_ca)
    except ValueError as exc:
        print(f"raftpy snapshot: {exc}", file=err)
        return EXIT_USAGE

    async def take() -> tuple[int, int]:
        async with Client([node], cluster_id=args.cluster_id, timeout=timeout, tls=tls) as client:
            return await client.snapshot(node)

    try:
        index, term = run_until_signal(take())
    except asyncio.CancelledError:
        print("raftpy snapshot: interrupted (the node may still take the snapshot)", file=err)
        return EXIT_SNAPSHOT_FAILED
    except RaftError as e:
        print(f"raftpy snapshot: {node}: {e}", file=err)
        return EXIT_SNAPSHOT_FAILED
    print(f"snapshot at index {index} term {term}", file=out)
    return EXIT_SNAPSHOT_OK


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``snapshot`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "snapshot",
        help="ask one node to take a snapshot now and compact its log",
        description=(
            "Ask the node at ADDRESS to take a snapshot of its state machine now and compact "
            "its log, as it does by itself after --snapshot-entries entries. Any node will do, "
            "not only the leader: each node snapshots its own state. Prints 'snapshot at index "
            "I term T'. Exit status: 0 done, 1 the node could not be reached, refused the "
            "connection, did not answer in time or failed the snapshot, 2 usage error. A "
            "refusal that asking again cannot change (another cluster id, a certificate not "
            "trusted) ends the command at once; an unreachable node is retried until --timeout."
        ),
    )
    p.add_argument("address", metavar="ADDRESS", type=address, help="the node, as host:port")
    p.add_argument(
        "--timeout",
        type=at_least(float, 0.001),
        default=DEFAULT_SNAPSHOT_TIMEOUT,
        metavar="S",
        help=f"overall deadline in seconds (default {DEFAULT_SNAPSHOT_TIMEOUT:g})",
    )
    add_connection_options(p)
    p.set_defaults(handler=_run)
