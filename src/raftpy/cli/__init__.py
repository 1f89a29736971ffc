"""The ``raftpy`` command line: :func:`main` and :func:`build_parser`.

One module per subcommand, each with an ``add_parser`` that adds its parser and sets
``handler`` (a function from the parsed arguments and the output streams to the exit status):

- :mod:`raftpy.cli.check`: ``raftpy check FILE``, check that a history is linearizable;
- :mod:`raftpy.cli.doctor`: ``raftpy doctor DATA_DIR``, inspect a stopped node's data dir;
- :mod:`raftpy.cli.jepsen`: ``raftpy jepsen ...``, a Jepsen-style fault test against a real
  local cluster;
- :mod:`raftpy.cli.members`: ``raftpy members list|add|promote|remove ...`` and
  ``raftpy transfer-leader ID ADDR...``, change a running cluster's members;
- :mod:`raftpy.cli.snapshot`: ``raftpy snapshot ADDRESS``, ask a node to take a snapshot now;
- :mod:`raftpy.cli.status`: ``raftpy status ADDR...``, every node's status in one table;
- :mod:`raftpy.cli.tls`: ``raftpy tls init DIR --nodes 1,2,3``, make certificates for mutual TLS.

Each module's docstring gives its exit statuses; a usage error exits with 2 everywhere.
``raftpy --version`` prints ``raftpy X.Y.Z`` (the installed package's version).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from raftpy.cli import check, doctor, jepsen, members, snapshot, status, tls
from raftpy.cli.arguments import EXIT_USAGE
from raftpy.cli.check import (
    DEFAULT_TIMEOUT,
    EXIT_BAD_INPUT,
    EXIT_LINEARIZABLE,
    EXIT_NOT_LINEARIZABLE,
    EXIT_UNDECIDED,
)
from raftpy.cli.jepsen import EXIT_JEPSEN_HARNESS, EXIT_JEPSEN_INVALID, EXIT_JEPSEN_VALID
from raftpy.cli.snapshot import DEFAULT_SNAPSHOT_TIMEOUT, EXIT_SNAPSHOT_FAILED, EXIT_SNAPSHOT_OK

__all__ = [
    "DEFAULT_SNAPSHOT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "EXIT_BAD_INPUT",
    "EXIT_JEPSEN_HARNESS",
    "EXIT_JEPSEN_INVALID",
    "EXIT_JEPSEN_VALID",
    "EXIT_LINEARIZABLE",
    "EXIT_NOT_LINEARIZABLE",
    "EXIT_SNAPSHOT_FAILED",
    "EXIT_SNAPSHOT_OK",
    "EXIT_UNDECIDED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    check.add_parser,
    doctor.add_parser,
    jepsen.add_parser,
    members.add_parser,
    members.add_transfer_parser,
    snapshot.add_parser,
    status.add_parser,
    tls.add_parser,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``raftpy`` command, with every subcommand."""
    from raftpy import __version__

    parser = argparse.ArgumentParser(prog="raftpy", description="raftpy command line tools")
    parser.add_argument(
        "--version",
        action="version",
        version=f"raftpy {__version__}",
        help="print the installed raftpy's version and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``raftpy`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status. Usage errors print the usage to stderr and return 2 (``--help`` returns 0)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace, TextIO, TextIO], int] = args.handler
    return handler(args, sys.stdout, sys.stderr)
