"""``raftpy status ADDR... [--json] [--watch S] [--timeout S] [--cluster-id ID] [--tls-cert F
--tls-key F --tls-ca F]``: one line per node, as each describes itself, in a table in the
style of ``etcdctl endpoint status -w table``.

Every address is asked at once (``Client.status``), each answer bounded by ``--timeout``; a
node that does not answer in time is a row saying so. The lag columns (how far each node is
behind the leader, in entries and in seconds) come from the leader's own status, so they are
shown only when a leader answered (``?`` otherwise). docs/status.md describes every column,
when to worry, and the ``--json`` object.

``--json`` prints one object: ``{"format": 1, "nodes": [{"address", "ok", "error",
"status"}, ...]}``, one entry per address in the order given; ``status`` is the node's
:class:`~raftpy.node.status.NodeStatus` as plain JSON (``null`` when it did not answer).
``--watch S`` asks again every S seconds and redraws (one JSON object a line with ``--json``)
until Ctrl-C.

Exit status: 0 every node answered; 1 some did not (the table is printed all the same); 2
usage error (an address that is not ``host:port`` or whose host does not resolve, a bad
option). ``--watch`` ends with 0 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from raftpy.cli.arguments import EXIT_USAGE, add_connection_options, address, at_least
from raftpy.cli.runner import run_until_signal
from raftpy.errors import RaftError

if TYPE_CHECKING:
    from raftpy.node.status import NodeStatus

__all__ = [
    "COLUMNS",
    "DEFAULT_STATUS_TIMEOUT",
    "EXIT_STATUS_ALL_ANSWERED",
    "EXIT_STATUS_SOME_SILENT",
    "JSON_FORMAT",
    "Answer",
    "add_parser",
    "render_json",
    "render_table",
]

EXIT_STATUS_ALL_ANSWERED = 0
EXIT_STATUS_SOME_SILENT = 1
DEFAULT_STATUS_TIMEOUT = 3.0
JSON_FORMAT = 1
"""The ``format`` of the ``--json`` object; it changes only if a key changes meaning (keys may
be added)."""

COLUMNS = (
    "ID",
    "ADDRESS",
    "ROLE",
    "TERM",
    "LEADER",
    "COMMIT",
    "APPLIED",
    "LAST INDEX",
    "MEMBERS",
    "LAG",
    "LAG TIME",
    "FSYNC P99",
    "LAST ERROR",
)
_LEFT = frozenset({"ADDRESS", "ROLE", "MEMBERS", "LAST ERROR"})
"""Columns of text, aligned left; the numbers are aligned right (as etcdctl does)."""
_ERROR_CHARS = 60

_EPILOG = (
    "Exit status: 0 every node answered; 1 some did not (the table is printed all the same); "
    "2 usage error (an address that is not host:port or does not resolve, a bad option). "
    "--watch ends with 0 on Ctrl-C. The columns and the --json object: docs/status.md."
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one address answered: its status, or why there is none."""

    address: str
    status: NodeStatus | None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Rendering (pure: tests pin the exact output)
# ---------------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _short(text: str) -> str:
    text = " ".join(text.split())  # one line, whatever the node sent
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _members(st: NodeStatus) -> str:
    if st.members is None:
        return "-"
    voters = ",".join(str(m) for m in st.members)
    if st.learners:
        return f"{voters} +{','.join(str(m) for m in st.learners)}"
    return voters


def _role(st: NodeStatus) -> str:
    if st.failed is not None:
        return "failed"
    if not st.running or st.role is None:
        return "stopped"
    return st.role if st.healthy else f"{st.role} (unhealthy)"


def _error(st: NodeStatus, now: float) -> str:
    if st.failed is not None:
        return _short(st.failed)
    if st.disk_full:
        return "disk full"
    if st.last_error is None:
        return "-"
    when = "" if st.last_error_time is None else f" ({_ago(now - st.last_error_time)})"
    return _short(st.last_error) + when


def leader_of(answers: Sequence[Answer]) -> NodeStatus | None:
    """The status of the leader among the answers (of the highest term, should a deposed one
    still believe it leads), or ``None`` when no leader answered."""
    leaders = [a.status for a in answers if a.status is not None and a.status.role == "leader"]
    return max(leaders, key=lambda s: s.term or 0, default=None)


def _row(answer: Answer, leader: NodeStatus | None, now: float) -> list[str]:
    st = answer.status
    if st is None:
        error = _short(answer.error or "no answer")
        return ["?", answer.address, "no answer", *["-"] * 9, error]
    lag = lag_time = "?"
    peer = None if leader is None else (leader.peers or {}).get(st.id)
    if peer is not None:
        lag = str(peer.lag)
        lag_time = "?" if peer.lag_seconds is None else f"{peer.lag_seconds:.1f}s"

    def num(value: int | None) -> str:
        return "-" if value is None else str(value)

    return [
        str(st.id),
        answer.address,
        _role(st),
        num(st.term),
        num(st.leader),
        num(st.commit),
        num(st.applied),
        num(st.last_index),
        _members(st),
        lag,
        lag_time,
        _seconds(st.fsync_p99),
        _error(st, now),
    ]


def render_table(answers: Sequence[Answer], now: float) -> str:
    """The table of ``answers`` (``now``: unix seconds, for the age of each last error), one
    row per answer in order, framed as ``etcdctl endpoint status -w table`` frames it."""
    leader = leader_of(answers)
    rows = [_row(a, leader, now) for a in answers]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str], header: bool = False) -> str:
        out = []
        for name, cell, w in zip(COLUMNS, cells, widths, strict=True):
            if header:
                out.append(cell.center(w))
            elif name in _LEFT:
                out.append(cell.ljust(w))
            else:
                out.append(cell.rjust(w))
        return "| " + " | ".join(out) + " |"

    lines = [rule, line(COLUMNS, header=True), rule, *(line(r) for r in rows), rule]
    return "\n".join(lines) + "\n" + render_transfers(answers, now)


def render_transfers(answers: Sequence[Answer], now: float) -> str:
    """Lines under the table for the snapshot transfers in progress, as each node sees its
    own (a sender's bytes are those the follower acknowledged); empty when there are none.
    With ``--watch`` they are the transfers' progress."""
    lines = []
    for a in answers:
        st = a.status
        if st is None:
            continue
        for t in st.transfers:
            ends = f"{st.id} -> {t.peer}" if t.direction == "send" else f"{t.peer} -> {st.id}"
            share = 100 * t.bytes_done // t.size if t.size else 100
            lines.append(
                f"  {ends}: snapshot at index {t.index}, {share}% ({_mib(t.bytes_done)} of "
                f"{_mib(t.size)} MiB), for {max(0.0, now - t.started):.1f}s "
                f"(as node {st.id} sees it)"
            )
    return "snapshot transfers in progress:\n" + "\n".join(lines) + "\n" if lines else ""


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


def render_json(answers: Sequence[Answer]) -> dict[str, Any]:
    """The ``--json`` object (docs/status.md): ``{"format": 1, "nodes": [...]}``."""
    return {
        "format": JSON_FORMAT,
        "nodes": [
            {
                "address": a.address,
                "ok": a.status is not None,
                "error": a.error,
                "status": None
                if a.status is None
                else msgspec.to_builtins(a.status, str_keys=True),
            }
            for a in answers
        ],
    }


# ---------------------------------------------------------------------------------------------
# Asking the nodes
# ---------------------------------------------------------------------------------------------


async def ask_all(client: Any, addresses: Sequence[str], timeout: float) -> list[Answer]:
    """Ask every address at once for its status, each bounded by ``timeout`` seconds."""

    async def ask(addr: str) -> Answer:
        try:
            # The client ends at `timeout` with its own reason (refused, timed out); this is
            # only a backstop should it not.
            async with asyncio.timeout(timeout + 1.0):
                return Answer(addr, await client.status(addr, timeout=timeout))
        except TimeoutError:
            return Answer(addr, None, f"no answer within {timeout:g}s")
        except RaftError as exc:
            return Answer(addr, None, _why(addr, str(exc)))
        except Exception as exc:  # any failure of one node is that node's row
            return Answer(addr, None, f"{type(exc).__name__}: {exc}")

    return list(await asyncio.gather(*(ask(a) for a in addresses)))


def _why(addr: str, message: str) -> str:
    """The client's reason, without what the row already says: "no node answered within 3s
    (last: ADDR: cannot connect: ...)" becomes "cannot connect: ..."."""
    last = f"(last: {addr}: "
    if last in message and message.endswith(")"):
        return message.split(last, 1)[1][:-1]
    return message


def _unresolvable(addresses: Sequence[str]) -> str | None:
    """The first address whose host does not resolve, with why; ``None`` if all do."""
    for addr in addresses:
        host, _, port = addr.rpartition(":")
        try:
            socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return f"address {addr!r}: host {host!r} does not resolve ({exc})"
    return None


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from raftpy.client import Client
    from raftpy.transport.tls import tls_from_files

    addresses: list[str] = list(dict.fromkeys(args.addresses))  # once each, in order
    timeout: float = args.timeout
    watch: float | None = args.watch
    problem = _unresolvable(addresses)
    if problem is not None:
        print(f"raftpy status: {problem}", file=err)
        return EXIT_USAGE
    try:
        tls = tls_from_files(args.tls_cert, args.tls_key, args.tls_ca)
    except ValueError as exc:
        print(f"raftpy status: {exc}", file=err)
        return EXIT_USAGE
    redraw = watch is not None and not args.json and out.isatty()

    def show(answers: list[Answer]) -> None:
        if args.json:
            text = json.dumps(render_json(answers), indent=None if watch else 2)
            print(text, file=out, flush=True)
            return
        if redraw:
            out.write("\x1b[H\x1b[2J")  # home and clear: the table replaces the last one
        if watch is not None:
            print(time.strftime("%Y-%m-%d %H:%M:%S"), file=out)
        out.write(render_table(answers, time.time()))
        out.flush()

    async def body() -> int:
        async with Client(
            addresses,
            cluster_id=args.cluster_id,
            timeout=timeout,
            attempt_timeout=timeout,
            connect_timeout=min(1.0, timeout),
            sessions=False,
            tls=tls,
        ) as client:
            while True:
                answers = await ask_all(client, addresses, timeout)
                show(answers)
                if watch is None:
                    silent = any(a.status is None for a in answers)
                    return EXIT_STATUS_SOME_SILENT if silent else EXIT_STATUS_ALL_ANSWERED
                await asyncio.sleep(watch)

    try:
        return run_until_signal(body())
    except asyncio.CancelledError:  # Ctrl-C (or SIGTERM)
        if watch is not None:
            return EXIT_STATUS_ALL_ANSWERED
        print("raftpy status: interrupted", file=err)
        return EXIT_STATUS_SOME_SILENT


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "status",
        help="show every node's role, term, indexes, lag, fsync p99 and last error",
        description=(
            "Ask every ADDR at once for its status and print one row per node, in the style "
            "of 'etcdctl endpoint status -w table': id, address, role, term, leader, commit, "
            "applied and last index, members, lag behind the leader in entries and seconds "
            "(from the leader's status; '?' when no leader answered), fsync p99 and the last "
            "error. A node that does not answer within --timeout is a row saying so."
        ),
        epilog=_EPILOG,
    )
    p.add_argument(
        "addresses", metavar="ADDR", nargs="+", type=address, help="a node, as host:port"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"format": 1, "nodes": [{"address", "ok", "error", "status"}, ...]}',
    )
    p.add_argument(
        "--watch",
        type=at_least(float, 0.1),
        default=None,
        metavar="S",
        help="ask again and redraw every S seconds until Ctrl-C",
    )
    p.add_argument(
        "--timeout",
        type=at_least(float, 0.001),
        default=DEFAULT_STATUS_TIMEOUT,
        metavar="S",
        help=f"how long to wait for each node, in seconds (default {DEFAULT_STATUS_TIMEOUT:g})",
    )
    add_connection_options(p)
    p.set_defaults(handler=_run)
