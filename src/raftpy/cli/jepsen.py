"""``raftpy jepsen [--nodes N] [--clients C] [--keys K] [--seconds T] [--nemesis NAME] ...``:
a Jepsen-style fault test against a real local cluster (:mod:`raftpy.testing.jepsen`).

Start an N-node cluster of the hashmap example as real processes on 127.0.0.1, run C clients
for T seconds while a nemesis injects faults, heal, and check the run. Each phase is a line on
stderr; while the faults run, the time left shows (a bar on a terminal with ``rich``, else a
line every 10 s; ``--quiet``: nothing), see :mod:`raftpy.progress`. Exit status: 0 every
check passed, 1 a check failed (not linearizable, a lost write, a write applied twice, no
recovery within 5 s, a node crashed, or the history could not be decided in time), 2 usage
error, 3 the harness itself failed (e.g. the cluster did not start).

The options are generated from :class:`~raftpy.testing.jepsen.config.JepsenConfig`: one for
each field that carries an :class:`~raftpy.testing.jepsen.config.Option`, with the field's
name, type and default. Only ``--snapshot-entries`` (which becomes ``server_args``) and
``--quiet`` (which is about this command's output) are written out here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import types
import typing
from pathlib import Path
from typing import Any, TextIO

from raftpy.cli.arguments import EXIT_USAGE, at_least
from raftpy.cli.runner import run_until_signal
from raftpy.progress import Progress
from raftpy.testing.jepsen.checks import RECOVERY_LIMIT
from raftpy.testing.jepsen.config import (
    OPTION,
    SNAPSHOT_ENTRIES_FLAG,
    JepsenConfig,
    Option,
    option_flag,
)

__all__ = [
    "EXIT_JEPSEN_HARNESS",
    "EXIT_JEPSEN_INVALID",
    "EXIT_JEPSEN_VALID",
    "add_config_options",
    "add_parser",
]

EXIT_JEPSEN_VALID = 0
EXIT_JEPSEN_INVALID = 1
EXIT_JEPSEN_HARNESS = 3

# How run_jepsen's phase line for the timed part of a run begins (clients and faults for
# --seconds): the progress shows the time left in it.
_WORKLOAD_PHASE = "running "


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _options() -> list[tuple[dataclasses.Field[Any], Option]]:
    """The fields of :class:`JepsenConfig` that are on the command line, in order."""
    return [
        (f, f.metadata[OPTION]) for f in dataclasses.fields(JepsenConfig) if OPTION in f.metadata
    ]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add an option to ``parser`` for each :class:`JepsenConfig` field with an
    :class:`Option`: its ``dest`` is the field's name, its default the field's default, and
    its type follows the field's: a number (at least ``Option.minimum``), a ``Literal`` (its
    values are the choices), a flag for a ``bool``, a path, or text."""
    hints = typing.get_type_hints(JepsenConfig)
    for f, opt in _options():
        flag = option_flag(f, opt)
        kind = hints[f.name]
        if typing.get_origin(kind) in (types.UnionType, typing.Union):  # X | None: an X
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        if kind is bool:
            if f.default is not False:
                raise TypeError(f"{f.name}: a flag must default to False")
            parser.add_argument(flag, dest=f.name, action="store_true", help=opt.help)
            continue
        shown = opt.default_text if opt.default_text is not None else _show(f.default)
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": f.default,
            "help": f"{opt.help} (default {shown})",
        }
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        if typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        elif kind is int or kind is float:
            kwargs["type"] = kind if opt.minimum is None else at_least(kind, opt.minimum)
        elif kind is Path:
            kwargs["type"] = Path
        elif kind is not str:
            raise TypeError(f"{f.name}: no command-line option for a {kind!r}")
        if opt.choices is not None:
            kwargs["choices"] = list(opt.choices)
        parser.add_argument(flag, **kwargs)


def _config(args: argparse.Namespace) -> JepsenConfig:
    """The run's settings from the parsed command line."""
    values = {f.name: getattr(args, f.name) for f, _ in _options()}
    if values["out_dir"] is None:  # a dated directory, not JepsenConfig's temporary one
        values["out_dir"] = Path("raftpy-jepsen") / time.strftime("%Y%m%d-%H%M%S")
    entries: int | None = args.snapshot_entries
    server_args = () if entries is None else (SNAPSHOT_ENTRIES_FLAG, str(entries))
    return JepsenConfig(**values, server_args=server_args)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftpy jepsen``: run the harness, print the summary, exit 0 valid / 1 invalid."""
    from raftpy.testing.jepsen.processes import NodeProcessError
    from raftpy.testing.jepsen.run import run_jepsen

    config = _config(args)
    try:
        config.validate()
    except ValueError as e:
        print(f"raftpy jepsen: {e}", file=err)
        return EXIT_USAGE

    progress = Progress(err, prefix="raftpy jepsen: ")

    def on_phase(line: str) -> None:
        if args.quiet:
            return
        progress.phase(line)
        if line.startswith(_WORKLOAD_PHASE):  # the faults run for a known time: show what is left
            progress.timed("faults and clients", config.seconds)

    try:
        result = run_until_signal(run_jepsen(config, progress=on_phase))
    except asyncio.CancelledError:
        print("raftpy jepsen: interrupted (every server process was stopped)", file=err)
        return EXIT_JEPSEN_HARNESS
    except (NodeProcessError, OSError) as e:
        print(f"raftpy jepsen: the harness failed: {e}", file=err)
        return EXIT_JEPSEN_HARNESS
    finally:
        progress.close()
    print(result.summary, file=out)
    return EXIT_JEPSEN_VALID if result.valid else EXIT_JEPSEN_INVALID


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``jepsen`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "jepsen",
        help="run a Jepsen-style fault test against a real local cluster",
        description=(
            "Start a cluster of the hashmap example as real processes on 127.0.0.1, run "
            "concurrent clients while a nemesis injects faults (partitions through a fault "
            "proxy, SIGKILL and restart, SIGSTOP/SIGCONT, members removed and added back or "
            "replaced after losing their disk), heal, and check the run. --workload register "
            "(read/write/cas): the history is linearizable and no acknowledged write was lost. "
            "--workload set (each client adds elements no one else adds to a few sets): every "
            "acknowledged add is present exactly once, no element twice, nothing that was not "
            f"added. Either way a write must succeed within {RECOVERY_LIMIT:g} s of healing. "
            "Writes history.jsonl (or adds.jsonl), timeline.html (and violation.html), "
            "summary.txt (with availability by operations and by time, the longest time "
            "without a successful write, the settings and the command that replays the run) "
            "and the node logs to --out. "
            "Exit status: 0 valid, 1 a check failed, 2 usage error, 3 harness failure."
        ),
    )
    add_config_options(p)
    p.add_argument(
        SNAPSHOT_ENTRIES_FLAG,
        type=at_least(int, 1),
        default=None,
        metavar="N",
        help="servers snapshot and compact their logs every N entries (default: theirs), so "
        "the faults also hit snapshots, compactions and InstallSnapshot",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=_run)
