"""``raftpy check FILE [--timeout SECONDS] [--html OUT]``: check that a history is linearizable.

The history is JSON lines, one operation per line (the format of
:mod:`raftpy.testing.history`). Exit status: 0 linearizable, 1 not, 2 undecided within the
time limit, 3 bad input (unreadable or malformed file, or an output file that cannot be
written). A usage error also exits with 2, as argparse does.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from raftpy.cli.arguments import seconds
from raftpy.testing.history import HistoryFormatError, load_history
from raftpy.testing.linearizability import Verdict, check, render_html

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_BAD_INPUT",
    "EXIT_LINEARIZABLE",
    "EXIT_NOT_LINEARIZABLE",
    "EXIT_UNDECIDED",
    "add_parser",
]

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


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "check",
        help="check that a history is linearizable",
        description=(
            "Check that a history (JSON lines: one operation per line, as the README "
            "describes) is linearizable, with a register per key. Exit status: "
            "0 linearizable, 1 not linearizable, 2 undecided within the time limit (or a "
            "usage error), 3 bad input."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the history file (JSON lines)")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time limit for the check (default {DEFAULT_TIMEOUT:g}; 0 = no limit)",
    )
    p.add_argument(
        "--html",
        metavar="OUT",
        help="if the history is not linearizable, write a timeline of the failing key here",
    )
    p.set_defaults(handler=_run)
