"""The ``raftpy`` command line.

Subcommands are registered in ``_SUBCOMMANDS``: each adds its parser and sets ``handler`` (a
function from the parsed arguments to the exit status). For now:

``raftpy check FILE [--timeout SECONDS] [--html OUT]``
    Check that a DESIGN §7 history is linearizable. Exit status: 0 linearizable, 1 not,
    2 undecided within the time limit, 3 bad input (unreadable or malformed file, or an
    output file that cannot be written). A usage error also exits with 2, as argparse does.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TextIO

from raftpy.testing.history import HistoryFormatError, load_history
from raftpy.testing.linearizability import Verdict, check, render_html

__all__ = ["main"]

EXIT_LINEARIZABLE = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNDECIDED = 2
EXIT_BAD_INPUT = 3
DEFAULT_TIMEOUT = 60.0

_EXIT_CODES = {
    Verdict.LINEARIZABLE: EXIT_LINEARIZABLE,
    Verdict.NOT_LINEARIZABLE: EXIT_NOT_LINEARIZABLE,
    Verdict.UNDECIDED: EXIT_UNDECIDED,
}


def _seconds(text: str) -> float:
    """argparse type for --timeout: a non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _run_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftpy check``: load the history, check it, print the verdict (and write HTML)."""
    path: str = args.file
    try:
        history = load_history(path)
    except OSError as e:
        print(f"raftpy check: cannot read {path}: {e.strerror or e}", file=err)
        return EXIT_BAD_INPUT
    except HistoryFormatError as e:
        print(f"raftpy check: malformed history: {e}", file=err)
        return EXIT_BAD_INPUT
    timeout: float = args.timeout
    result = check(history, timeout=timeout if timeout > 0 else None)
    print(result.explain(), file=out)
    if args.html is not None:
        if result.violation is None:
            print(f"raftpy check: no violation, so {args.html} was not written", file=err)
        else:
            try:
                with open(args.html, "w", encoding="utf-8") as f:
                    f.write(render_html(result))
            except OSError as e:
                print(f"raftpy check: cannot write {args.html}: {e.strerror or e}", file=err)
                return EXIT_BAD_INPUT
            print(f"timeline written to {args.html}", file=out)
    return _EXIT_CODES[result.verdict]


def _add_check(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check",
        help="check that a history is linearizable",
        description=(
            "Check that a history (DESIGN §7: one JSON object per line) is linearizable, "
            "with a register per key. Exit status: 0 linearizable, 1 not linearizable, "
            "2 undecided within the time limit (or a usage error), 3 bad input."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the history file (JSON lines)")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time limit for the check (default {DEFAULT_TIMEOUT:g}; 0 = no limit)",
    )
    p.add_argument(
        "--html",
        metavar="OUT",
        help="if the history is not linearizable, write a timeline of the failing key here",
    )
    p.set_defaults(handler=_run_check)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_check,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``raftpy`` command, with every subcommand."""
    parser = argparse.ArgumentParser(prog="raftpy", description="raftpy command line tools")
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
        return e.code if isinstance(e.code, int) else EXIT_UNDECIDED
    handler: Callable[[argparse.Namespace, TextIO, TextIO], int] = args.handler
    return handler(args, sys.stdout, sys.stderr)
