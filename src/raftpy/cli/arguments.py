"""Value types for the ``raftpy`` subcommands' options, and the exit status of a usage error.

Each type turns an option's text into its value or raises ``argparse.ArgumentTypeError`` with
the reason, which argparse prints under the usage before exiting with :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from raftpy.transport.address import parse_address

__all__ = ["EXIT_USAGE", "add_connection_options", "address", "at_least", "seconds"]

EXIT_USAGE = 2
"""A usage error: what argparse exits with, and what a subcommand returns for a bad setting."""


def at_least(
    kind: type[int] | type[float], minimum: float, *, what: str | None = None
) -> Callable[[str], Any]:
    """An option type: a number of ``kind`` that is finite and >= ``minimum``. ``what`` names
    the expected value in the message for text that is not a number (default: the kind)."""
    expected = what if what is not None else f"a {kind.__name__}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {expected}: {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {minimum:g}: {text!r}")
        return value

    return parse


seconds = at_least(float, 0, what="a number of seconds")
"""An option type: a non-negative number of seconds."""


def address(text: str) -> str:
    """An option type: a node address, ``host:port`` (checked by
    :func:`~raftpy.transport.address.parse_address`)."""
    try:
        parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that talks to a cluster as a client: ``--cluster-id`` and
    mutual TLS's ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (README.md, "Security")."""
    parser.add_argument(
        "--cluster-id",
        metavar="ID",
        default=None,
        help="the cluster id to present in the handshake (default: accept any cluster)",
    )
    parser.add_argument("--tls-cert", metavar="F", help="mutual TLS: this client's certificate")
    parser.add_argument("--tls-key", metavar="F", help="mutual TLS: its key")
    parser.add_argument("--tls-ca", metavar="F", help="mutual TLS: the cluster CA")
