"""A guided tour of a real 3-node raftpy cluster: ``python -m raftpy.demos.cluster``
(``make demo``).

Three ``python -m raftpy.examples.hashmap server`` processes run on free 127.0.0.1 ports, each
with its own data dir in a temporary directory, with the default timeouts. The story:

1. the nodes start and elect a leader;
2. keys are written and read through the command line (``python -m raftpy.examples.hashmap
   put|cas|get ...``), each command shown with its output and exit status;
3. the leader is killed with SIGKILL; the survivors elect a new leader and the demo measures how
   long the next write took;
4. the data is read back from the survivors;
5. the dead node restarts from its data dir, catches up, and answers a ``get`` sent to it alone
   (it redirects the client to the leader);
6. every node is stopped (SIGTERM, then SIGKILL if one hangs) and the temporary directory is
   removed (``--keep`` leaves it, with the servers' logs).

Every wait is bounded. Whatever happens (a failed step, Ctrl-C, SIGTERM), every process the demo
started is stopped before it exits. Exit status: 0 the story completed, 1 a step failed, 2 usage
error, 130/143 interrupted by SIGINT/SIGTERM. The simulated (virtual-time) tour is
:mod:`raftpy.demos.sim` (``make demo-sim``).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from raftpy.client import SyncClient
from raftpy.node.status import NodeStatus
from raftpy.transport.address import format_address, free_ports

__all__ = ["main"]

EXAMPLE = "raftpy.examples.hashmap"
HOST = "127.0.0.1"
N_NODES = 3
POLL = 0.05  # seconds between two status polls
LISTEN_TIMEOUT = 15.0  # a server process to start and listen
LEADER_TIMEOUT = 15.0  # a leader to be elected and known by every live node
CATCH_UP_TIMEOUT = 15.0  # the restarted node to apply what the others applied
CLI_DEADLINE = 10.0  # the command-line client's own --timeout
CLI_TIMEOUT = CLI_DEADLINE + 10.0  # hard bound on one command-line run
STOP_GRACE = 5.0  # SIGTERM to exit, before SIGKILL
STATUS_TIMEOUT = 0.5  # one status request
_INDENT = " " * 9  # continuation lines line up under the event text


class DemoFailed(Exception):
    """A step of the story did not happen in time (or went wrong): stop and say why."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop the cluster and exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """Turns SIGINT/SIGTERM/SIGHUP into :class:`Interrupted`, except inside :meth:`deferred`
    sections (starting a process), where the signal is held until the section ends, so that no
    child is ever started without the demo knowing it must stop it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def ignore(self) -> None:
        """While cleaning up: a second Ctrl-C must not cut the cleanup short."""
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = signum
            return
        raise Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise Interrupted(signum)


@dataclass
class _Node:
    """One server process of the cluster (restartable: same id, port and data dir)."""

    id: int
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    expected_up: bool = False  # False once the demo killed or stopped it on purpose

    @property
    def address(self) -> str:
        return format_address(HOST, self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


@dataclass(frozen=True)
class _Status:
    """What one node says about itself (its own view: it may lag behind the leader's)."""

    id: int | None
    role: str
    term: int
    leader: int | None
    commit: int
    applied: int

    @classmethod
    def of(cls, st: NodeStatus) -> _Status:
        return cls(
            id=st.id,
            role=st.role or "?",
            term=st.term or 0,
            leader=st.leader,
            commit=st.commit or 0,
            applied=st.applied or 0,
        )


def _names(ids: Sequence[int]) -> str:
    if len(ids) == 1:
        return f"node {ids[0]}"
    return "nodes " + ", ".join(str(i) for i in ids[:-1]) + f" and {ids[-1]}"


class _Demo:
    """Runs the cluster through the story and prints a timeline of what happens."""

    def __init__(self, root: Path, signals: _Signals, out: Callable[[str], None]) -> None:
        self.root = root
        self.signals = signals
        self.out = out
        self.t0 = time.monotonic()
        ports = free_ports(N_NODES, HOST)
        self.nodes = {
            i: _Node(i, ports[i - 1], root / f"node{i}", root / f"node{i}.log")
            for i in range(1, N_NODES + 1)
        }
        self.client: SyncClient | None = None
        self.commands: list[subprocess.Popen[str]] = []  # command-line runs in progress
        self.cli_seconds: list[float] = []

    # -- output -------------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        """One timeline line, stamped with the seconds since the demo started."""
        self.out(f"{self.now():6.2f}s  {text}")

    def more(self, text: str) -> None:
        """A line under the previous one."""
        self.out(f"{_INDENT}{text}")

    def heading(self, text: str) -> None:
        self.out("")
        self.out(f"-- {text} " + "-" * max(0, 76 - len(text)))

    # -- processes ----------------------------------------------------------------------------

    def members(self) -> list[str]:
        args: list[str] = []
        for node in self.nodes.values():
            args += [str(node.id), node.address]
        return args

    def start(self, node: _Node) -> None:
        argv = [sys.executable, "-m", EXAMPLE, "server", str(node.id), *self.members()]
        argv += ["--data-dir", str(node.data_dir)]
        with self.signals.deferred(), open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
            node.expected_up = True

    def check_processes(self) -> None:
        """Fail at once when a server the story needs has exited on its own."""
        for node in self.nodes.values():
            if node.expected_up and node.proc is not None and node.proc.poll() is not None:
                raise DemoFailed(
                    f"node {node.id} exited unexpectedly with status {node.proc.returncode}"
                )

    def wait_listening(self, nodes: Sequence[_Node]) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        waiting = list(nodes)
        while waiting:
            self.check_processes()
            for node in list(waiting):
                # Its status answer, not just an open port: the port might be someone else's.
                st = self.status(node)
                if st is not None and st.id == node.id:
                    waiting.remove(node)
            if waiting:
                if time.monotonic() > deadline:
                    raise DemoFailed(
                        f"{_names([n.id for n in waiting])} not answering after {LISTEN_TIMEOUT} s"
                    )
                time.sleep(POLL)

    def status(self, node: _Node) -> _Status | None:
        """The node's own status, or None when it does not answer (quickly)."""
        if not node.alive():
            return None
        if self.client is None:
            addresses = [n.address for n in self.nodes.values()]
            self.client = SyncClient(addresses, timeout=STATUS_TIMEOUT, connect_timeout=0.3)
        try:
            return _Status.of(self.client.status(node.address, timeout=STATUS_TIMEOUT))
        except Exception:  # a node being killed or restarted: no answer this time
            return None

    def statuses(self) -> dict[int, _Status]:
        self.check_processes()
        found: dict[int, _Status] = {}
        for node in self.nodes.values():
            st = self.status(node)
            if st is not None:
                found[node.id] = st
        return found

    def wait_leader(self, above_term: int = 0) -> tuple[int, dict[int, _Status]]:
        """Wait until one live node leads in a term above ``above_term`` and every live node
        answers and names it as leader of that term."""
        deadline = time.monotonic() + LEADER_TIMEOUT
        while True:
            live = [n.id for n in self.nodes.values() if n.alive()]
            sts = self.statuses()
            leaders = [i for i, st in sts.items() if st.role == "leader" and st.term > above_term]
            if len(leaders) == 1 and set(sts) == set(live):
                lead = sts[leaders[0]]
                if all(st.leader == leaders[0] and st.term == lead.term for st in sts.values()):
                    return leaders[0], sts
            if time.monotonic() > deadline:
                seen = ", ".join(f"node {i}: {st.role} term {st.term}" for i, st in sts.items())
                raise DemoFailed(f"no agreed leader after {LEADER_TIMEOUT} s ({seen or 'silence'})")
            time.sleep(POLL)

    # -- the command line ---------------------------------------------------------------------

    def cli_start(self, *args: str) -> tuple[subprocess.Popen[str], float]:
        """Start ``python -m raftpy.examples.hashmap args...`` and print the command."""
        shown = shlex.join(["python", "-m", EXAMPLE, *args])
        self.say(f"$ {shown}")
        argv = [sys.executable, "-m", EXAMPLE, *args, "--timeout", str(CLI_DEADLINE)]
        with self.signals.deferred():
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.commands.append(proc)
        return proc, time.monotonic()

    def cli_finish(
        self, proc: subprocess.Popen[str], started: float, expect: str, why: str = ""
    ) -> float:
        """Wait for a command started by :meth:`cli_start`; print its output and exit status;
        fail unless it exited 0 printing ``expect``. Returns when it finished (monotonic)."""
        try:
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"the command did not finish within {CLI_TIMEOUT} s") from None
        finally:
            if proc in self.commands and proc.poll() is not None:
                self.commands.remove(proc)
        done = time.monotonic()
        took = done - started
        printed = stdout.strip() or "(nothing)"
        self.more(f"-> {printed:<10} exit status {proc.returncode}, {took:.2f} s{why}")
        if proc.returncode != 0 or stdout.strip() != expect:
            for line in stderr.strip().splitlines()[-3:]:
                self.more(f"  stderr: {line}")
            raise DemoFailed(
                f"expected {expect!r} with exit status 0, got {stdout.strip()!r} with "
                f"{proc.returncode}"
            )
        return done

    def cli(self, *args: str, expect: str, why: str = "") -> float:
        proc, started = self.cli_start(*args)
        done = self.cli_finish(proc, started, expect, why)
        self.cli_seconds.append(done - started)
        return done

    # -- the story ----------------------------------------------------------------------------

    def play(self) -> None:
        nodes = self.nodes
        everyone = [n.address for n in nodes.values()]
        self.out(f"raftpy demo: a real {N_NODES}-node Raft cluster on this machine ({HOST})")
        self.out(f"Each node is a `python -m {EXAMPLE} server` process; their data dirs")
        self.out(f"and logs are in {self.root}. A write succeeds once a majority")
        self.out(
            f"({N_NODES // 2 + 1} of {N_NODES} nodes) has it on disk, so the cluster survives "
            "a crashed node"
        )
        self.out("without losing a write it acknowledged. Times are seconds since the start.")

        self.heading("1. start and elect a leader")
        for node in nodes.values():
            self.start(node)
            self.say(f"node {node.id} started: pid {node.pid:<7} address {node.address}")
        self.wait_listening(list(nodes.values()))
        self.say(f"all {N_NODES} nodes answer; they start as followers in term 0, with no leader")
        leader, sts = self.wait_leader()
        followers = [i for i in sts if i != leader]
        verb = "follows" if len(followers) == 1 else "follow"
        self.say(
            f"node {leader} is LEADER of term {sts[leader].term}; {_names(followers)} {verb} it"
        )
        self.more("(no leader was heard for an election timeout, so one node asked for votes)")

        self.heading("2. write and read through the command line (any node's address will do)")
        self.cli("put", "color", "blue", *everyone, expect="null", why="  (previous value: none)")
        self.cli("put", "shape", "circle", *everyone, expect="null")
        self.cli("cas", "color", "blue", "red", *everyone, expect="true", why="  (blue -> red)")
        self.cli("get", "color", *everyone, expect='"red"')

        old = nodes[leader]
        old_term = sts[leader].term
        survivors = [n for n in nodes.values() if n is not old]
        self.heading(f"3. crash: kill the leader (node {leader}) with SIGKILL")
        killed = time.monotonic()
        assert old.proc is not None
        old.expected_up = False
        old.proc.send_signal(signal.SIGKILL)
        try:
            old.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"node {leader} did not die of SIGKILL") from None
        self.say(f"kill -KILL {old.pid}: node {leader} is gone, with no chance to clean up")
        self.more("a write sent right away waits until the survivors elect a new leader:")
        put, put_started = self.cli_start("put", "survivor", "yes", *everyone)
        new_leader, sts = self.wait_leader(above_term=old_term)
        elected = time.monotonic() - killed
        self.say(
            f"node {new_leader} is LEADER of term {sts[new_leader].term}, "
            f"{elected:.2f} s after the kill"
        )
        if sts[new_leader].term > old_term + 1:
            self.more(
                f"(no one won term {old_term + 1}: the survivors split their votes, so they voted "
                "again)"
            )
        done = self.cli_finish(put, put_started, "null")
        typical = min(self.cli_seconds) if self.cli_seconds else 0.0
        self.say(
            f"first write after the kill succeeded {done - killed:.2f} s after it "
            f"(starting the client costs ~{typical:.2f} s)"
        )

        self.heading("4. the data is intact: read it back from the survivors")
        alive = [n.address for n in survivors]
        self.cli("get", "color", *alive, expect='"red"')
        self.cli("get", "shape", *alive, expect='"circle"')

        self.heading(f"5. restart node {leader} from its data dir")
        restarting = time.monotonic()
        self.start(old)
        self.wait_listening([old])
        self.say(
            f"node {leader} restarted: pid {old.pid}, same address and data dir "
            f"(answering after {time.monotonic() - restarting:.2f} s)"
        )
        first = self.status(old)
        if first is not None:
            self.more(
                f"its status right away: {first.role}, term {first.term}, commit {first.commit}, "
                f"applied {first.applied}"
            )
            if first.applied < first.commit:
                self.more("(its log is back from disk; it re-applies the entries to its hash map)")
        sts = self.wait_caught_up(old)
        self.say(f"node {leader} caught up: it applied what the others applied")
        self.more("node  role        term  commit  applied")
        for i, st in sorted(sts.items()):
            self.more(f"{i:>4}  {st.role:<10}  {st.term:>4}  {st.commit:>6}  {st.applied:>7}")
        self.cli(
            "get",
            "survivor",
            old.address,
            expect='"yes"',
            why=f"  (node {leader} redirected it to node {new_leader})",
        )
        local = self.status(old)
        if local is None:
            raise DemoFailed(f"node {leader} did not answer a status request")
        self.say(
            f"node {leader}'s status, answered by node {leader} itself (a stale read, no leader "
            "involved):"
        )
        self.more(
            f"applied {local.applied}, commit {local.commit} (leader node {new_leader}: applied "
            f"{sts[new_leader].applied})"
        )

    def wait_caught_up(self, node: _Node) -> dict[int, _Status]:
        """Wait until ``node`` follows the leader and applied as far as every other node."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while True:
            sts = self.statuses()
            mine = sts.get(node.id)
            leaders = [i for i, st in sts.items() if st.role == "leader"]
            if mine is not None and len(leaders) == 1 and len(sts) == N_NODES:
                lead = sts[leaders[0]]
                if (
                    mine.leader == leaders[0]
                    and all(st.commit == lead.commit for st in sts.values())
                    and all(st.applied == lead.commit for st in sts.values())
                ):
                    return sts
            if time.monotonic() > deadline:
                raise DemoFailed(f"node {node.id} did not catch up in {CATCH_UP_TIMEOUT} s")
            time.sleep(POLL)

    # -- cleanup ------------------------------------------------------------------------------

    def stop_all(self, quiet: bool) -> bool:
        """SIGTERM every live server and wait (bounded); SIGKILL the ones that hang. Also kill
        any command-line run still going and close the status client. True if every server
        exited cleanly on SIGTERM."""
        for proc in self.commands:
            if proc.poll() is None:
                proc.kill()
            with suppress(subprocess.TimeoutExpired, ValueError, OSError):
                proc.communicate(timeout=STOP_GRACE)
        self.commands.clear()
        for node in self.nodes.values():
            node.expected_up = False
        live = [n for n in self.nodes.values() if n.alive()]
        started = time.monotonic()
        for node in live:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        deadline = started + STOP_GRACE
        clean: list[int] = []
        forced: list[int] = []
        codes: set[int] = set()
        for node in live:
            assert node.proc is not None
            try:
                codes.add(node.proc.wait(timeout=max(0.0, deadline - time.monotonic())))
                clean.append(node.id)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                forced.append(node.id)
                with suppress(subprocess.TimeoutExpired):  # then it is the kernel's business
                    node.proc.wait(timeout=STOP_GRACE)
        took = time.monotonic() - started
        if self.client is not None:
            self.client.close()
            self.client = None
        if not quiet:
            if live:
                self.say(
                    f"SIGTERM to {_names([n.id for n in live])} (pids "
                    f"{', '.join(str(n.pid) for n in live)})"
                )
            if clean:
                status = ", ".join(str(c) for c in sorted(codes))
                self.more(f"{_names(clean)} exited in {took:.2f} s, exit status {status}")
            if forced:
                self.more(f"{_names(forced)} ignored SIGTERM for {STOP_GRACE} s: SIGKILLed")
        return not forced and codes <= {0}

    def dump_logs(self) -> None:
        for node in self.nodes.values():
            tail = node.log_tail()
            if tail:
                self.out(f"last lines of node {node.id}'s log ({node.log_path}):")
                for line in tail:
                    self.out(f"    {line}")


def _print(line: str) -> None:
    """Each line as it happens, also into a pipe (``make demo | tee``)."""
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raftpy.demos.cluster",
        description="Start a real 3-node raftpy hashmap cluster on 127.0.0.1, write and read "
        "through the command line, SIGKILL the leader, watch the failover, restart the dead "
        "node and see it catch up; then stop everything.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (data dirs and server logs) instead of removing it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (0: the whole story happened)."""
    args = _parser().parse_args(argv)
    signals = _Signals()
    signals.install()
    root = Path(tempfile.mkdtemp(prefix="raftpy-demo-"))
    demo: _Demo | None = None
    status = 1
    try:
        demo = _Demo(root, signals, _print)
        demo.play()
        demo.heading("6. stop everything")
        clean = demo.stop_all(quiet=False)
        if not clean:
            raise DemoFailed("a node did not exit cleanly on SIGTERM")
        status = 0
    except DemoFailed as exc:
        print(f"FAILED: {exc}", flush=True)
        if demo is not None:
            demo.dump_logs()
    except Interrupted as exc:
        print(f"\ninterrupted ({exc}): stopping the cluster", flush=True)
        status = 128 + exc.signum
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before our handler was installed
        print("\ninterrupted: stopping the cluster", flush=True)
        status = 128 + signal.SIGINT
    except Exception:  # a bug or an environment problem: say what, then clean up all the same
        print("FAILED: unexpected error", flush=True)
        traceback.print_exc()
        if demo is not None:
            demo.dump_logs()
    finally:
        signals.ignore()
        try:
            if demo is not None:
                demo.stop_all(quiet=True)
        finally:
            if args.keep:
                print(f"kept {root} (data dirs and node logs)", flush=True)
            else:
                shutil.rmtree(root, ignore_errors=True)
                if demo is not None and status == 0:
                    demo.say(f"removed {root}")
            if status != 0:
                done = "kept" if args.keep else "removed"
                print(f"every process the demo started is stopped; {done} {root}", flush=True)
            signals.restore()
    if status == 0:
        print("DONE: leader elected, leader killed, new leader, data intact, node caught up.")
    return status


if __name__ == "__main__":
    sys.exit(main())
