"""``raftpy members list|add|promote|remove`` and ``raftpy transfer-leader``: change a running
cluster's members (README.md, "Changing members").

Every command takes the address of any member (or several): it finds the leader by following
redirects, under one deadline (``--timeout``). Membership changes follow Ongaro's thesis,
chapter 4: a new server joins as a learner, which receives the log but does not vote
(Thesis §4.2.1), and becomes a voter once it has caught up, so that adding it never stalls
commitment while it copies the log.

Exit status (:mod:`raftpy.outcomes`): 0 done; 1 definitely not done (nothing changed, or for
``add``, the member was added but could not be promoted: the message says which); 2 usage
error; 3 outcome unknown (the change was sent and may or may not have taken effect; run
``raftpy members list`` to see).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from raftpy.cli.arguments import EXIT_USAGE, add_connection_options, address, at_least
from raftpy.cli.runner import run_until_signal
from raftpy.core.messages import MAX_NODE_ID
from raftpy.outcomes import ExitStatus, exit_status_for
from raftpy.progress import Progress
from raftpy.transport.protocol import Members

__all__ = ["DEFAULT_MAX_LAG", "DEFAULT_MEMBERS_TIMEOUT", "add_parser", "add_transfer_parser"]

DEFAULT_MEMBERS_TIMEOUT = 10.0
"""The default deadline of a command, in seconds (``members add`` waits longer: see below)."""
DEFAULT_ADD_TIMEOUT = 300.0
"""The default deadline of ``members add``, which waits for the learner to catch up."""
DEFAULT_MAX_LAG = 100
"""``members add`` promotes the learner once it is at most this many entries behind the
leader (the leader itself refuses to promote one further behind than its ``max_learner_lag``,
1000 by default)."""
POLL_INTERVAL = 0.2
"""How often ``members add`` asks the leader how far the learner has come, in seconds."""


class CommandFailed(Exception):
    """A command ends with ``exit_status`` after printing ``message``."""

    def __init__(self, message: str, exit_status: ExitStatus) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def node_id(text: str) -> int:
    """An option type: a node id (an integer in 0..2**63-1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a node id: {text!r}") from None
    if not 0 <= value <= MAX_NODE_ID:
        raise argparse.ArgumentTypeError(f"a node id is in 0..{MAX_NODE_ID}: {text!r}")
    return value


# -- output ---------------------------------------------------------------------------------


def member_rows(members: Members) -> list[dict[str, Any]]:
    """One row per member, in id order: its id, address (``None`` if none recorded), role
    (``voter``, ``learner`` or ``outgoing``) and whether it leads."""
    return [
        {
            "id": i,
            "address": members.addresses.get(i),
            "role": members.role(i),
            "leader": i == members.leader_id,
        }
        for i in members.members()
    ]


def members_json(members: Members) -> str:
    """The stable ``--json`` form: one object with sorted keys (fields are only added)."""
    doc = {
        "voters": list(members.voters),
        "learners": list(members.learners),
        "voters_outgoing": list(members.voters_outgoing),
        "learners_next": list(members.learners_next),
        "leader": members.leader_id,
        "answered_by": members.node_id,
        "members": member_rows(members),
    }
    return json.dumps(doc, sort_keys=True)


def members_table(members: Members) -> str:
    """A table of the members: id, address, role, and ``*`` on the leader."""
    rows = [("ID", "ADDRESS", "ROLE", "LEADER")]
    for row in member_rows(members):
        rows.append(
            (str(row["id"]), row["address"] or "-", str(row["role"]), "*" if row["leader"] else "")
        )
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    ]
    if members.voters_outgoing:
        lines.append("(a joint change is in progress: 'outgoing' voters still vote until it ends)")
    return "\n".join(line.rstrip() for line in lines)


def summary(members: Members) -> str:
    """One line: the voters and learners after a change."""
    voters = ",".join(map(str, members.voters)) or "none"
    learners = ",".join(map(str, members.learners)) or "none"
    return f"voters {voters}; learners {learners}"


class CatchUpProgress:
    """How far a learner has come, shown on a terminal (a bar with ``rich`` when it is
    installed, else a line a second) and not at all otherwise (:mod:`raftpy.progress`)."""

    def __init__(self, err: TextIO, node: int, *, use_rich: bool = True) -> None:
        self._node = node
        self._progress = Progress(err, piped="quiet", use_rich=use_rich)
        self._progress.step(f"node {node} catching up")

    def update(self, match: int, last_index: int) -> None:
        behind = last_index - match
        line = f"node {self._node}: at {match} of {last_index} ({behind} behind)"
        self._progress.update(match, max(last_index, 1), line=line)

    def close(self) -> None:
        self._progress.close()


# -- running a command ------------------------------------------------------------------------


def _client_for(args: argparse.Namespace, err: TextIO) -> Any:
    """The Client of a command's addresses and options; ``None`` after printing a usage error."""
    from raftpy.client import Client
    from raftpy.transport.tls import tls_from_files

    try:
        tls = tls_from_files(args.tls_cert, args.tls_key, args.tls_ca)
    except ValueError as exc:
        print(f"raftpy {args.command}: {exc}", file=err)
        return None
    return Client(args.addresses, cluster_id=args.cluster_id, timeout=args.timeout, tls=tls)


def _run_command(
    args: argparse.Namespace,
    err: TextIO,
    body: Callable[[Any, float], Awaitable[None]],
    *,
    changes: bool,
) -> int:
    """Run ``body(client, deadline)`` and turn how it ends into the exit status. ``changes``:
    the command sends a change, so an interruption leaves its outcome unknown."""
    from raftpy.errors import RaftError

    name = "members " + args.action if args.command == "members" else args.command
    client = _client_for(args, err)
    if client is None:
        return EXIT_USAGE

    async def main() -> None:
        async with client:
            await body(client, asyncio.get_running_loop().time() + args.timeout)

    try:
        run_until_signal(main())
    except asyncio.CancelledError:
        if changes:
            print(f"raftpy {name}: interrupted; the change may or may not take effect", file=err)
            return ExitStatus.UNKNOWN
        print(f"raftpy {name}: interrupted", file=err)
        return ExitStatus.NOT_DONE
    except CommandFailed as exc:
        print(f"raftpy {name}: {exc}", file=err)
        return exc.exit_status
    except (RaftError, TimeoutError) as exc:
        status = exit_status_for(exc)
        note = " (the change may or may not take effect)" if status is ExitStatus.UNKNOWN else ""
        print(f"raftpy {name}: {exc}{note}", file=err)
        return status
    return ExitStatus.DONE


def _remaining(deadline: float) -> float:
    """The time left before ``deadline``; called before a request is sent, so a deadline
    already passed means that request was definitely not sent."""
    from raftpy.errors import ClusterUnavailableError

    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise ClusterUnavailableError("the deadline passed before the request was sent")
    return left


async def member_problems(client: Any, members: Members, timeout: float) -> list[str]:
    """What the members report about each other, asked of every member with a known address
    (one short status request each; a member that does not answer is reported too): members
    that came back with another data directory (refused by their peers), and followers the
    leader saw refuse entries they had acknowledged (a lost or restored disk)."""
    from raftpy.logtext import untrusted

    async def status_of(node: int, address: str) -> tuple[int, Any]:
        try:
            return node, await client.status(address, timeout=timeout)
        except Exception:
            return node, None

    asked = [(n, a) for n, a in sorted(members.addresses.items()) if n in members.members()]
    problems: list[str] = []
    for node, st in await asyncio.gather(*(status_of(n, a) for n, a in asked)):
        if st is None:
            problems.append(f"node {node} does not answer")
            continue
        for other, reason in sorted(st.refused_members.items()):
            problems.append(f"node {node} refuses node {other}: {untrusted(reason)}")
        for other, peer in sorted((st.peers or {}).items()):
            if peer.lost_entries:
                problems.append(
                    f"node {other} refused entries it had acknowledged {peer.lost_entries} "
                    f"time(s) (seen by leader {node}): it lost part of its log; remove it and "
                    "add it back (README.md, 'Changing members')"
                )
    return problems


def _list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: Any, deadline: float) -> None:
        members: Members = await client.members(stale=args.stale, timeout=_remaining(deadline))
        left = deadline - asyncio.get_running_loop().time()
        problems = await member_problems(client, members, max(0.1, min(1.0, left / 2)))
        if args.json:
            doc = json.loads(members_json(members))
            doc["problems"] = problems
            print(json.dumps(doc, sort_keys=True), file=out)
            return
        print(members_table(members), file=out)
        for line in problems:
            print(f"problem: {line}", file=out)

    return _run_command(args, err, body, changes=False)


def _promote(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: Any, deadline: float) -> None:
        members = await client.promote(args.id, args.force, timeout=_remaining(deadline))
        print(f"node {args.id} is a voter; {summary(members)}", file=out)

    return _run_command(args, err, body, changes=True)


def _remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: Any, deadline: float) -> None:
        members = await client.remove_member(args.id, args.force, timeout=_remaining(deadline))
        print(f"node {args.id} removed; {summary(members)}", file=out)

    return _run_command(args, err, body, changes=True)


def _transfer(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: Any, deadline: float) -> None:
        await client.transfer_leadership(args.id, timeout=_remaining(deadline))
        print(f"node {args.id} leads", file=out)

    return _run_command(args, err, body, changes=True)


def _add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: Any, deadline: float) -> None:
        node: int = args.id
        before: Members = await client.members(timeout=_remaining(deadline))
        if before.role(node) == "voter" and not args.voter:
            if before.addresses.get(node) == args.address:
                print(f"node {node} already is a voter at {args.address}", file=out)
                return
            # Adding it as a learner would demote it: never do that by surprise.
            raise CommandFailed(
                f"node {node} is a voter at {before.addresses.get(node)}; adding it as a "
                "learner would demote it (use --voter to change only its address)",
                ExitStatus.NOT_DONE,
            )
        members = await client.add_member(
            node, args.address, args.voter, args.force, timeout=_remaining(deadline)
        )
        role = "voter" if args.voter else "learner"
        if args.voter or args.no_promote:
            print(f"node {node} added as a {role} at {args.address}; {summary(members)}", file=out)
            return
        await _wait_caught_up(client, node, args.max_lag, deadline, err)
        try:
            members = await client.promote(node, args.force, timeout=_remaining(deadline))
        except Exception as exc:
            status = exit_status_for(exc)
            raise CommandFailed(
                f"node {node} was added as a learner but not promoted: {exc} (promote it "
                f"later with 'raftpy members promote {node} ADDR...')",
                status,
            ) from None
        print(f"node {node} added at {args.address} and promoted; {summary(members)}", file=out)

    return _run_command(args, err, body, changes=True)


async def _wait_caught_up(
    client: Any, node: int, max_lag: int, deadline: float, err: TextIO
) -> None:
    """Wait until the leader reports learner ``node`` at most ``max_lag`` entries behind
    (Thesis §4.2.1: a server is promoted only once it has caught up)."""
    from raftpy.errors import ClusterUnavailableError

    progress = CatchUpProgress(err, node)
    last = "the leader has not reported it yet"
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise CommandFailed(
                    f"node {node} was added as a learner but did not catch up in time ({last}); "
                    f"promote it later with 'raftpy members promote {node} ADDR...'",
                    ExitStatus.NOT_DONE,
                )
            try:
                await client.members(timeout=left)  # finds the leader, following redirects
                status = await client.status(client.leader_address, timeout=left)
            except ClusterUnavailableError as exc:
                last = str(exc)
                continue
            peer = (status.peers or {}).get(node) if status.role == "leader" else None
            if peer is not None and status.last_index is not None:
                last = f"{peer.lag} entries behind"
                progress.update(peer.match, status.last_index)
                if peer.active and peer.lag <= max_lag:
                    return
            await asyncio.sleep(min(POLL_INTERVAL, max(0.0, left)))
    finally:
        progress.close()


# -- parsers ----------------------------------------------------------------------------------


def _client_options(p: argparse.ArgumentParser, timeout: float) -> None:
    p.add_argument(
        "addresses",
        metavar="ADDR",
        nargs="+",
        type=address,
        help="any members' addresses (host:port); redirects lead to the leader",
    )
    p.add_argument(
        "--timeout",
        type=at_least(float, 0.001),
        default=timeout,
        metavar="S",
        help=f"overall deadline in seconds (default {timeout:g})",
    )
    add_connection_options(p)


_EXITS = (
    "Exit status: 0 done, 1 definitely not done, 2 usage error, 3 outcome unknown (the change "
    "may or may not have taken effect: see 'raftpy members list')."
)
_FORCE = (
    "skip the leader's safety checks: promote a learner that has not caught up, or make a "
    "change that leaves fewer reachable voters than a quorum (README.md, 'Changing members')"
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``members`` (``list``, ``add``, ``promote``, ``remove``) to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "members",
        help="list or change the members of a running cluster",
        description=(
            "List or change the members of a running cluster through any of its members "
            "(Ongaro's thesis, chapter 4; README.md, 'Changing members'). " + _EXITS
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = actions.add_parser(
        "list",
        help="the members, their addresses and roles, and the leader",
        description=(
            "Print the members as a table (id, address, role: voter, learner, or outgoing "
            "during a joint change; '*' marks the leader), as the leader sees them. " + _EXITS
        ),
    )
    _client_options(ls, DEFAULT_MEMBERS_TIMEOUT)
    ls.add_argument("--json", action="store_true", help="print one JSON object instead")
    ls.add_argument(
        "--stale",
        action="store_true",
        help="take the first node's answer, even without a leader (it may lag behind)",
    )
    ls.set_defaults(handler=_list)

    add = actions.add_parser(
        "add",
        help="add a member: a learner, promoted to voter once it has caught up",
        description=(
            "Add node ID, listening at ADDRESS, to the cluster. By default it joins as a "
            "learner (it receives the log but does not vote, Thesis §4.2.1); the command then "
            "waits until the leader reports it at most --max-lag entries behind and promotes "
            "it to voter, all within --timeout. Progress is shown on a terminal. " + _EXITS
        ),
    )
    add.add_argument("id", metavar="ID", type=node_id, help="the new member's node id")
    add.add_argument("address", metavar="ADDRESS", type=address, help="where it listens")
    _client_options(add, DEFAULT_ADD_TIMEOUT)
    how = add.add_mutually_exclusive_group()
    how.add_argument("--voter", action="store_true", help="add it as a voter at once")
    how.add_argument(
        "--no-promote", action="store_true", help="add it as a learner and leave it one"
    )
    add.add_argument(
        "--max-lag",
        type=at_least(int, 0, what="a number of entries"),
        default=DEFAULT_MAX_LAG,
        metavar="N",
        help=f"promote once at most N entries behind the leader (default {DEFAULT_MAX_LAG})",
    )
    add.add_argument("--force", action="store_true", help=_FORCE)
    add.set_defaults(handler=_add)

    promote = actions.add_parser(
        "promote",
        help="make a learner a voter",
        description=(
            "Make the learner ID a voter. The leader refuses one that has not caught up yet "
            "unless --force. " + _EXITS
        ),
    )
    promote.add_argument("id", metavar="ID", type=node_id, help="the learner's node id")
    _client_options(promote, DEFAULT_MEMBERS_TIMEOUT)
    promote.add_argument("--force", action="store_true", help=_FORCE)
    promote.set_defaults(handler=_promote)

    remove = actions.add_parser(
        "remove",
        help="remove a member",
        description=(
            "Remove node ID from the cluster. A removed leader hands leadership over and steps "
            "down once the change is committed (Thesis §4.2.2). The leader refuses a removal "
            "that leaves fewer reachable voters than a quorum unless --force. " + _EXITS
        ),
    )
    remove.add_argument("id", metavar="ID", type=node_id, help="the member's node id")
    _client_options(remove, DEFAULT_MEMBERS_TIMEOUT)
    remove.add_argument("--force", action="store_true", help=_FORCE)
    remove.set_defaults(handler=_remove)


def add_transfer_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``transfer-leader`` to the ``raftpy`` command."""
    p = subparsers.add_parser(
        "transfer-leader",
        help="hand leadership to another voter",
        description=(
            "Hand leadership to the voter ID (Thesis §3.10: the leader brings it up to date, "
            "then tells it to start an election at once); returns once it leads. " + _EXITS
        ),
    )
    p.add_argument("id", metavar="ID", type=node_id, help="the voter to lead")
    _client_options(p, DEFAULT_MEMBERS_TIMEOUT)
    p.set_defaults(handler=_transfer)
