"""The ``raftpy`` command line.

Subcommands are registered in ``_SUBCOMMANDS``: each adds its parser and sets ``handler`` (a
function from the parsed arguments to the exit status). For now:

``raftpy check FILE [--timeout SECONDS] [--html OUT]``
    Check that a DESIGN §7 history is linearizable. Exit status: 0 linearizable, 1 not,
    2 undecided within the time limit, 3 bad input (unreadable or malformed file, or an
    output file that cannot be written). A usage error also exits with 2, as argparse does.

``raftpy jepsen [--nodes N] [--clients C] [--keys K] [--seconds T] [--nemesis NAME] ...``
    Start an N-node cluster of the hashmap example as real processes on 127.0.0.1, run C
    clients for T seconds while a nemesis injects faults, heal, and check the history
    (:mod:`raftpy.testing.nemesis`). Exit status: 0 every check passed, 1 a check failed (not
    linearizable, a lost write, no recovery within 5 s, a node crashed, or the history could
    not be decided in time), 2 usage error, 3 the harness itself failed (e.g. the cluster did
    not start).

``raftpy snapshot ADDRESS [--timeout SECONDS] [--cluster-id ID]``
    Ask the node at ADDRESS (any node, not only the leader: each node snapshots its own state)
    to take a snapshot now and compact its log, and print ``snapshot at index I term T``.
    Exit status: 0 done, 1 the node could not be reached, did not answer in time or failed the
    snapshot, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

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


_T = TypeVar("_T")

EXIT_JEPSEN_VALID = 0
EXIT_JEPSEN_INVALID = 1
EXIT_JEPSEN_HARNESS = 3


def _positive(kind: type[int] | type[float], minimum: float) -> Callable[[str], Any]:
    """argparse type: a number of ``kind`` that is finite and >= ``minimum``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {minimum:g}: {text!r}")
        return value

    return parse


def _run_until_signal(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on uvloop when installed; SIGTERM and SIGINT cancel it (so its cleanup
    runs) instead of killing the process."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional
        factory = None

    async def main() -> _T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _run_jepsen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftpy jepsen``: run the harness, print the summary, exit 0 valid / 1 invalid."""
    from raftpy.testing.nemesis import JepsenConfig, NodeProcessError, run_jepsen

    out_dir = args.out
    if out_dir is None:
        out_dir = Path("raftpy-jepsen") / time.strftime("%Y%m%d-%H%M%S")
    config = JepsenConfig(
        nodes=args.nodes,
        clients=args.clients,
        keys=args.keys,
        seconds=args.seconds,
        nemesis=args.nemesis,
        seed=args.seed,
        out_dir=Path(out_dir),
        interval=args.interval,
        op_timeout=args.op_timeout,
        ops_per_key=args.ops_per_key,
        tick_ms=args.tick_ms,
        election_ticks=args.election_ticks,
        read_consistency=args.read_consistency,
        client_routing=args.client_routing,
        unsafe_stale_reads=args.unsafe_stale_reads,
        check_timeout=args.check_timeout,
        server_module=args.server_module,
        server_args=(
            ()
            if args.snapshot_entries is None
            else ("--snapshot-entries", str(args.snapshot_entries))
        ),
        keep_data=args.keep_data,
    )
    try:
        config.validate()
    except ValueError as e:
        print(f"raftpy jepsen: {e}", file=err)
        return EXIT_UNDECIDED  # a usage error: 2, like argparse's

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"raftpy jepsen: {line}", file=err, flush=True)

    try:
        result = _run_until_signal(run_jepsen(config, progress=progress))
    except asyncio.CancelledError:
        print("raftpy jepsen: interrupted (every server process was stopped)", file=err)
        return EXIT_JEPSEN_HARNESS
    except (NodeProcessError, OSError) as e:
        print(f"raftpy jepsen: the harness failed: {e}", file=err)
        return EXIT_JEPSEN_HARNESS
    print(result.summary, file=out)
    return EXIT_JEPSEN_VALID if result.valid else EXIT_JEPSEN_INVALID


def _add_jepsen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from raftpy.testing.nemesis import NEMESES, JepsenConfig

    d = JepsenConfig()
    p = subparsers.add_parser(
        "jepsen",
        help="run a Jepsen-style fault test against a real local cluster",
        description=(
            "Start a cluster of the hashmap example as real processes on 127.0.0.1, run "
            "concurrent clients doing read/write/cas while a nemesis injects faults "
            "(partitions through a fault proxy, SIGKILL and restart, SIGSTOP/SIGCONT), heal, "
            "and check that the history is linearizable, that no acknowledged write was lost "
            "and that a write succeeds within 5 s of healing. Writes history.jsonl, "
            "timeline.html (and violation.html), summary.txt and the node logs to --out. "
            "Exit status: 0 valid, 1 a check failed, 2 usage error, 3 harness failure."
        ),
    )
    p.add_argument(
        "--nodes",
        type=_positive(int, 1),
        default=d.nodes,
        metavar="N",
        help=f"cluster size (default {d.nodes})",
    )
    p.add_argument(
        "--clients",
        type=_positive(int, 1),
        default=d.clients,
        metavar="C",
        help=f"concurrent clients (default {d.clients})",
    )
    p.add_argument(
        "--keys",
        type=_positive(int, 1),
        default=d.keys,
        metavar="K",
        help=f"keys in use at a time (default {d.keys})",
    )
    p.add_argument(
        "--seconds",
        type=_positive(float, 0.1),
        default=d.seconds,
        metavar="T",
        help=f"how long the clients run (default {d.seconds:g})",
    )
    p.add_argument(
        "--nemesis",
        choices=list(NEMESES),
        default=d.nemesis,
        help=f"the faults to inject (default {d.nemesis}); partition, kill, pause and all mix "
        "their variants; none runs without faults",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output directory (default raftpy-jepsen/<date-time>)",
    )
    p.add_argument(
        "--interval",
        type=_positive(float, 0.1),
        default=d.interval,
        metavar="S",
        help=f"mean length of quiet periods and of faults (default {d.interval:g})",
    )
    p.add_argument(
        "--op-timeout",
        type=_positive(float, 0.01),
        default=d.op_timeout,
        metavar="S",
        help=f"deadline of each client call (default {d.op_timeout:g})",
    )
    p.add_argument(
        "--ops-per-key",
        type=_positive(int, 0),
        default=d.ops_per_key,
        metavar="N",
        help=f"retire a key after N operations; 0 never (default {d.ops_per_key})",
    )
    p.add_argument(
        "--tick-ms",
        type=_positive(float, 1),
        default=d.tick_ms,
        metavar="MS",
        help=f"the servers' tick (default {d.tick_ms:g})",
    )
    p.add_argument(
        "--election-ticks",
        type=_positive(int, 2),
        default=d.election_ticks,
        metavar="N",
        help=f"the servers' election timeout in ticks (default {d.election_ticks})",
    )
    p.add_argument(
        "--read-consistency",
        choices=["linearizable", "lease", "stale"],
        default=d.read_consistency,
    )
    p.add_argument(
        "--client-routing",
        choices=["home", "direct"],
        default=d.client_routing,
        help="home: a client lives on a node and is partitioned with it (default); "
        "direct: clients reach every node directly",
    )
    p.add_argument(
        "--unsafe-stale-reads",
        action="store_true",
        help="TEST ONLY: start the servers with RAFTPY_UNSAFE_STALE_READS=1 (a leader answers "
        "reads without confirming leadership); the run should then fail",
    )
    p.add_argument(
        "--check-timeout",
        type=_positive(float, 0.1),
        default=d.check_timeout,
        metavar="S",
        help=f"the checker's time limit (default {d.check_timeout:g})",
    )
    p.add_argument(
        "--server-module",
        default=d.server_module,
        metavar="MODULE",
        help=f"the server to run as python -m MODULE server ... (default {d.server_module})",
    )
    p.add_argument(
        "--snapshot-entries",
        type=_positive(int, 1),
        default=None,
        metavar="N",
        help="servers snapshot and compact their logs every N entries (default: theirs), so "
        "the faults also hit snapshots, compactions and InstallSnapshot",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the nodes' data dirs")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=_run_jepsen)


EXIT_SNAPSHOT_OK = 0
EXIT_SNAPSHOT_FAILED = 1
DEFAULT_SNAPSHOT_TIMEOUT = 60.0


def _address(text: str) -> str:
    """argparse type for a node address: ``host:port``."""
    from raftpy.transport.address import parse_address

    try:
        parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _run_snapshot(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftpy snapshot``: ask one node to take a snapshot now; print its index and term."""
    from raftpy.client import Client
    from raftpy.errors import RaftError

    address: str = args.address
    timeout: float = args.timeout

    async def take() -> tuple[int, int]:
        async with Client([address], cluster_id=args.cluster_id, timeout=timeout) as client:
            return await client.snapshot(address)

    try:
        index, term = _run_until_signal(take())
    except asyncio.CancelledError:
        print("raftpy snapshot: interrupted (the node may still take the snapshot)", file=err)
        return EXIT_SNAPSHOT_FAILED
    except RaftError as e:
        print(f"raftpy snapshot: {address}: {e}", file=err)
        return EXIT_SNAPSHOT_FAILED
    print(f"snapshot at index {index} term {term}", file=out)
    return EXIT_SNAPSHOT_OK


def _add_snapshot(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "snapshot",
        help="ask one node to take a snapshot now and compact its log",
        description=(
            "Ask the node at ADDRESS to take a snapshot of its state machine now and compact "
            "its log, as it does by itself after --snapshot-entries entries. Any node will do, "
            "not only the leader: each node snapshots its own state. Prints 'snapshot at index "
            "I term T'. Exit status: 0 done, 1 the node could not be reached, did not answer "
            "in time or failed the snapshot, 2 usage error."
        ),
    )
    p.add_argument("address", metavar="ADDRESS", type=_address, help="the node, as host:port")
    p.add_argument(
        "--timeout",
        type=_positive(float, 0.001),
        default=DEFAULT_SNAPSHOT_TIMEOUT,
        metavar="S",
        help=f"overall deadline in seconds (default {DEFAULT_SNAPSHOT_TIMEOUT:g})",
    )
    p.add_argument(
        "--cluster-id",
        metavar="ID",
        default=None,
        help="the cluster id to present in the handshake (default: accept any cluster)",
    )
    p.set_defaults(handler=_run_snapshot)


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
    _add_jepsen,
    _add_snapshot,
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
