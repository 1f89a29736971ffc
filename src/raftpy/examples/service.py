"""What the example services share: the command line (``server`` and one subcommand per
client command, see README.md), the server runner, and how a client command reports its end.

A client command that writes opens one client session, writes (resending the same write
through lost answers and leader changes until ``--timeout``, applied once) and closes the
session; a read opens none (README.md, "Sessions").

A value argument given as ``-`` is read from standard input instead: every byte up to the end
of input, exactly (no newline is stripped), which must be UTF-8. That is how a value larger than
the operating system's limit on one argument (128 KiB on Linux) is given.

``--version`` prints ``raftpy X.Y.Z``.

Exit status: 0 done; 1 definitely not done (no leader reachable before the command was sent,
refused, or its session expired before it was applied); 2 usage error; 3 outcome unknown (the
command was sent and still had no answer at the deadline: rare with sessions, since a write
with a lost answer is resent). Which error leads to which status is :mod:`raftpy.outcomes`'s
table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, NoReturn

from raftpy.errors import IndeterminateError, RaftError
from raftpy.logconfig import configure_logging
from raftpy.node import RaftNode
from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.outcomes import ExitStatus, exit_status_for
from raftpy.statemachine import StateMachine
from raftpy.storage.wal import MIN_SEGMENT_SIZE
from raftpy.transport.address import parse_address
from raftpy.transport.tcp import check_plaintext_bind
from raftpy.transport.tls import TlsConfig, tls_from_files

EXIT_OK = int(ExitStatus.DONE)
EXIT_NOT_DONE = int(ExitStatus.NOT_DONE)
EXIT_USAGE = int(ExitStatus.USAGE)
EXIT_UNKNOWN = int(ExitStatus.UNKNOWN)

# The library's defaults, shown in the usage and used when an option is not given.
_DEFAULTS = NodeConfig()
_RAFT = _DEFAULTS.raft
_TICK_MS = round(_DEFAULTS.tick_seconds * 1000, 6)
# The server option that sets each setting named in NodeConfig's validation messages.
_OPTION_OF = {
    "cluster_id": "--cluster-id",
    "tick_seconds": "--tick-ms",
    "election_ticks": "--election-ticks",
    "heartbeat_ticks": "--heartbeat-ticks",
    "segment_size": "--segment-size",
    "metrics_address": "--metrics",
    "snapshot_ratio": "--snapshot-ratio",
}


@dataclass(frozen=True)
class ClientOptions:
    """What every client command takes besides its arguments: the overall deadline in
    seconds, and the TLS files when the cluster uses TLS."""

    timeout: float = 10.0
    tls: TlsConfig | None = None


ClientAction = Callable[[list[str], list[str], ClientOptions], Awaitable[str]]
"""(command arguments, node addresses, client options) -> the line to print."""


STDIN_VALUE = "-"
"""A value argument given as this is read from standard input (bytes exact, UTF-8)."""


@dataclass(frozen=True)
class ClientCommand:
    """One client subcommand: its argument names and what it does. Arguments whose name ends
    in ``value`` may be given as :data:`STDIN_VALUE`."""

    name: str
    args: tuple[str, ...]
    help: str
    action: ClientAction

    def takes_stdin(self, position: int) -> bool:
        """Whether the argument at ``position`` is a value, which ``-`` reads from stdin."""
        return self.args[position].endswith("value")


class UsageError(Exception):
    """Wrong command-line arguments: print usage and exit 2."""


def usage(prog: str, commands: Sequence[ClientCommand]) -> str:
    lines = [f"usage: python -m {prog} server <id> [<node-id> <node-address>]... [options]"]
    for cmd in commands:
        args = "".join(f" <{a}>" for a in cmd.args)
        lines.append(f"       python -m {prog} {cmd.name}{args} (<node-address>)...")
    lines += [
        f"       python -m {prog} --version",
        "",
        "Give every member's address to a client command: it fails over to the others when",
        "one is down (with only a dead node's address it waits out --timeout and fails).",
        "A <...-value> given as - is read from stdin: every byte up to the end, exactly",
        "(no newline stripped; UTF-8), for values longer than the OS allows in an argument.",
        "",
        "server options:",
        "  --data-dir D          where the node keeps its log (default ./raftpy-data/<name>-<id>)",
        f"  --tick-ms MS          tick length in milliseconds (default {_TICK_MS:g})",
        "  --election-ticks N    election timeout in ticks, randomized up to 2N "
        f"(default {_RAFT.election_ticks})",
        f"  --heartbeat-ticks N   heartbeat interval in ticks (default {_RAFT.heartbeat_ticks})",
        "  --cluster-id ID       refuse peers and clients of other clusters (default raftpy)",
        "  --tls-cert F --tls-key F --tls-ca F",
        "                        mutual TLS: this node's certificate (naming its id), key, and",
        "                        the cluster CA (see raftpy tls init, README.md Security)",
        "  --tls-client-ca F     also accept clients with certificates of this CA",
        "  --insecure            serve plain TCP on an address other machines can reach",
        "                        (unauthenticated: anyone who can connect can join)",
        "  --join ADDR...        join a running cluster (any members' addresses): with an empty",
        "                        data dir, ask to be added as a learner, then promoted once",
        "                        caught up; the member list then names only this server",
        "  --no-promote          with --join: stay a learner",
        "  --metrics HOST:PORT   serve Prometheus metrics at http://HOST:PORT/metrics",
        "                        (pip install 'raftpy[metrics]'; docs/metrics.md)",
        f"  --snapshot-entries N  snapshot after N applied entries; 0 = off (default "
        f"{_DEFAULTS.snapshot_entries})",
        f"  --snapshot-bytes N    snapshot after N applied command bytes; 0 = off (default "
        f"{_DEFAULTS.snapshot_bytes})",
        "  --snapshot-ratio R    and only once the log written since the last snapshot is R",
        f"                        times its size; 0 = off (default {_DEFAULTS.snapshot_ratio})",
        f"  --segment-size BYTES  write-ahead log segment size, >= {MIN_SEGMENT_SIZE} (default "
        f"{_DEFAULTS.segment_size})",
        "client options (before the addresses or after):",
        "  --timeout S           overall deadline in seconds (default 10)",
        "  --tls-cert F --tls-key F --tls-ca F",
        "                        mutual TLS: this client's certificate, key, and the cluster CA",
        "",
        "exit status: 0 done, 1 not done, 2 usage error, 3 outcome unknown",
    ]
    return "\n".join(lines)


def _fail_usage(prog: str, commands: Sequence[ClientCommand], message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    print(usage(prog, commands), file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _check_address(address: str) -> str:
    try:
        parse_address(address)
    except ValueError as exc:
        raise UsageError(f"bad node address: {exc}") from None
    return address


_SERVER_TLS_OPTIONS = ("--tls-cert", "--tls-key", "--tls-ca", "--tls-client-ca")
_CLIENT_TLS_OPTIONS = ("--tls-cert", "--tls-key", "--tls-ca")


def tls_from_options(
    cert: str | None,
    key: str | None,
    ca: str | None,
    client_ca: str | None = None,
    *,
    insecure: bool = False,
) -> TlsConfig | None:
    """The :class:`TlsConfig` the ``--tls-*`` options name (``None`` when none is given);
    :class:`UsageError` for an incomplete set, a file that cannot be read, or ``--insecure``
    with TLS (see :func:`raftpy.transport.tls.tls_from_files`)."""
    try:
        config = tls_from_files(cert, key, ca, client_ca)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if config is not None and insecure:
        raise UsageError("--insecure (plain TCP) and the --tls-* options exclude each other")
    return config


def parse_server_args(name: str, argv: list[str]) -> tuple[int, dict[int, str], argparse.Namespace]:
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--data-dir")
    parser.add_argument("--tick-ms", type=float, default=_TICK_MS)
    parser.add_argument("--election-ticks", type=int, default=_RAFT.election_ticks)
    parser.add_argument("--heartbeat-ticks", type=int, default=_RAFT.heartbeat_ticks)
    parser.add_argument("--cluster-id", default="raftpy")
    parser.add_argument("--snapshot-entries", type=int, default=_DEFAULTS.snapshot_entries or 0)
    parser.add_argument("--snapshot-bytes", type=int, default=_DEFAULTS.snapshot_bytes or 0)
    parser.add_argument("--snapshot-ratio", type=float, default=_DEFAULTS.snapshot_ratio or 0.0)
    parser.add_argument("--segment-size", type=int, default=_DEFAULTS.segment_size)
    for option in _SERVER_TLS_OPTIONS:
        parser.add_argument(option)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--join", nargs="+", default=[])
    parser.add_argument("--no-promote", action="store_true")
    parser.add_argument("--metrics")
    try:
        opts, rest = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise UsageError(str(exc)) from None
    unknown = [a for a in rest if a.startswith("--")]
    if unknown:
        raise UsageError(f"unknown option {unknown[0]}")
    if not rest or not rest[0].isdigit():
        raise UsageError("server needs its numeric <id>")
    node_id = int(rest[0])
    pairs = rest[1:]
    if not pairs or len(pairs) % 2:
        raise UsageError("server needs <node-id> <node-address> pairs naming every member")
    peers: dict[int, str] = {}
    for k in range(0, len(pairs), 2):
        if not pairs[k].isdigit():
            raise UsageError(f"bad node id {pairs[k]!r}")
        peer = int(pairs[k])
        if peer in peers:
            raise UsageError(f"node id {peer} is listed twice")
        peers[peer] = _check_address(pairs[k + 1])
    if node_id not in peers:
        raise UsageError(f"the member list must include this server's own id {node_id}")
    _check_join(opts, peers)
    opts.tls = tls_from_options(
        opts.tls_cert, opts.tls_key, opts.tls_ca, opts.tls_client_ca, insecure=opts.insecure
    )
    try:
        check_plaintext_bind(parse_address(peers[node_id])[0], tls=opts.tls, insecure=opts.insecure)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if opts.data_dir is None:
        opts.data_dir = os.path.join("raftpy-data", f"{name}-{node_id}")
    for option, value in (
        ("--snapshot-entries", opts.snapshot_entries),
        ("--snapshot-bytes", opts.snapshot_bytes),
    ):
        if value < 0:
            raise UsageError(f"need {option} >= 0 (0 turns that trigger off), got {value}")
    try:
        server_config(opts).validate()  # the settings' rules are the config's own
    except ValueError as exc:
        named = [option for name, option in _OPTION_OF.items() if name in str(exc)]
        raise UsageError(f"bad {' / '.join(named) or 'server options'}: {exc}") from None
    return node_id, peers, opts


def _check_join(opts: argparse.Namespace, peers: dict[int, str]) -> None:
    """``--join ADDR...`` takes a member list of this server alone; ``--no-promote`` goes with
    it."""
    if opts.join:
        if len(peers) > 1:
            raise UsageError(
                "with --join the member list names only this server: the cluster's members "
                "are learned from it"
            )
        opts.join = [_check_address(a) for a in opts.join]
    elif opts.no_promote:
        raise UsageError("--no-promote goes with --join")


def server_config(opts: argparse.Namespace) -> NodeConfig:
    """The node's settings from the server options (:func:`parse_server_args`)."""
    return NodeConfig(
        cluster_id=opts.cluster_id,
        tick_seconds=opts.tick_ms / 1000,
        raft=replace(
            NODE_RAFT_DEFAULTS,
            election_ticks=opts.election_ticks,
            heartbeat_ticks=opts.heartbeat_ticks,
        ),
        segment_size=opts.segment_size,
        # 0 on the command line turns a trigger off (None in NodeConfig).
        snapshot_entries=opts.snapshot_entries or None,
        snapshot_bytes=opts.snapshot_bytes or None,
        snapshot_ratio=opts.snapshot_ratio or None,
        tls=opts.tls,
        insecure=opts.insecure,
        metrics_address=opts.metrics,
        # TEST ONLY: lets fault-harness tests prove they catch stale reads.
        unsafe_stale_reads=os.environ.get("RAFTPY_UNSAFE_STALE_READS") == "1",
    )


async def serve(
    node_id: int, peers: dict[int, str], opts: argparse.Namespace, sm: StateMachine
) -> None:
    node = RaftNode(
        node_id,
        peers[node_id],
        peers,
        sm,
        opts.data_dir,
        server_config(opts),
        join=opts.join,
        promote=not opts.no_promote,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with node:
        await stop.wait()


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Awaitable[object]) -> object:
    """Run ``coro`` on uvloop when it is installed (``pip install raftpy[fast]``)."""

    async def wrapper() -> object:
        return await coro

    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(wrapper())


def main(
    prog: str,
    name: str,
    argv: list[str] | None,
    make_state_machine: Callable[[], StateMachine],
    commands: Sequence[ClientCommand],
) -> int:
    """The example's command line: ``server ...`` or one of ``commands``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--version":
        print(version_line())
        return EXIT_OK
    if not args or args[0] in ("-h", "--help", "help"):
        if not args:
            _fail_usage(prog, commands, "missing command")
        print(usage(prog, commands))
        return EXIT_OK
    command, rest = args[0], args[1:]
    if command == "server":
        try:
            node_id, peers, opts = parse_server_args(name, rest)
            configure_logging(default="info")
        except (UsageError, ValueError) as exc:
            _fail_usage(prog, commands, str(exc))
        try:
            run(serve(node_id, peers, opts, make_state_machine()))
        except RaftError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOT_DONE
        except OSError as exc:
            print(f"error: cannot serve on {peers[node_id]}: {exc}", file=sys.stderr)
            return EXIT_NOT_DONE
        return EXIT_OK
    spec = next((c for c in commands if c.name == command), None)
    if spec is None:
        _fail_usage(prog, commands, f"unknown command {command!r}")
    return _run_client(prog, commands, spec, rest)


def _run_client(
    prog: str, commands: Sequence[ClientCommand], spec: ClientCommand, rest: list[str]
) -> int:
    """Run the client command ``spec`` with its command-line arguments ``rest``."""
    command = spec.name
    try:
        options, positional = parse_client_args(rest)
    except UsageError as exc:
        _fail_usage(prog, commands, str(exc))
    n = len(spec.args)
    if len(positional) < n + 1:
        _fail_usage(prog, commands, f"{command} needs {n} argument(s) and at least one address")
    try:
        addresses = [_check_address(a) for a in positional[n:]]
    except UsageError as exc:
        _fail_usage(prog, commands, str(exc))
    for arg in positional[:n]:
        try:
            arg.encode()
        except UnicodeEncodeError:
            # Bytes the terminal's encoding could not decode reach us as lone surrogates.
            _fail_usage(prog, commands, f"{arg.encode(errors='backslashreplace')!r} is not UTF-8")
    try:
        values = read_stdin_values(spec, positional[:n], sys.stdin.buffer)
    except UsageError as exc:
        _fail_usage(prog, commands, str(exc))
    configure_logging(default="error")
    timeout = options.timeout
    try:
        line = run(asyncio.wait_for(spec.action(values, addresses, options), timeout + 5))
    except (RaftError, TimeoutError) as exc:
        return _report_failure(exc)
    print(line)
    return EXIT_OK


def version_line() -> str:
    """What ``--version`` prints: ``raftpy X.Y.Z``, the installed package's version."""
    from raftpy import __version__

    return f"raftpy {__version__}"


def read_stdin_values(command: ClientCommand, args: list[str], stdin: BinaryIO) -> list[str]:
    """``args`` with a value given as ``-`` replaced by all of ``stdin`` (bytes exact, decoded
    as UTF-8). At most one argument can come from stdin; :class:`UsageError` for more, or for
    input that is not UTF-8."""
    from_stdin = [k for k, arg in enumerate(args) if arg == STDIN_VALUE and command.takes_stdin(k)]
    if not from_stdin:
        return args
    if len(from_stdin) > 1:
        raise UsageError("only one value can be read from stdin ('-')")
    data = stdin.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the value on stdin is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    values = list(args)
    values[from_stdin[0]] = text
    return values


def parse_client_args(rest: list[str]) -> tuple[ClientOptions, list[str]]:
    """A client command's options (anywhere among its arguments) and its positional
    arguments; :class:`UsageError` for a bad or unknown option."""
    timeout = 10.0
    files: dict[str, str] = {}
    positional: list[str] = []
    k = 0
    while k < len(rest):
        arg = rest[k]
        if arg == "--timeout" or arg in _CLIENT_TLS_OPTIONS:
            if k + 1 >= len(rest):
                raise UsageError(f"{arg} needs a value")
            value = rest[k + 1]
            if arg == "--timeout":
                try:
                    timeout = float(value)
                except ValueError:
                    raise UsageError(f"bad --timeout {value!r}") from None
                if not timeout > 0:
                    raise UsageError(f"bad --timeout {value!r}")
            else:
                files[arg] = value
            k += 2
            continue
        if arg.startswith("--"):
            raise UsageError(f"unknown option {arg}")
        positional.append(arg)
        k += 1
    tls = tls_from_options(files.get("--tls-cert"), files.get("--tls-key"), files.get("--tls-ca"))
    return ClientOptions(timeout, tls), positional


def _report_failure(exc: RaftError | TimeoutError) -> int:
    """Print why a client command failed; its exit status."""
    status = exit_status_for(exc)
    if status is ExitStatus.NOT_DONE:
        print(f"error: not done: {exc}", file=sys.stderr)
    elif isinstance(exc, (IndeterminateError, TimeoutError)):
        print(f"error: outcome unknown: {exc or 'timed out'}", file=sys.stderr)
    else:  # an error that does not say whether the command happened (a failed node, a bug)
        print(f"error: {exc}", file=sys.stderr)
    return int(status)
