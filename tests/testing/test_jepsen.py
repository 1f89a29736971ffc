"""The Jepsen-style fault harness: the fault proxy, process control, nemesis runs against real
hashmap clusters, and proof that the harness catches a broken cluster.

Default suite: one 30-second run per fault type (partition, kill, pause) on 3 nodes, plus
shorter tests (a few minutes in all). ``RAFTPY_JEPSEN=long`` runs 20 x 60 s per fault type
instead (seeds 1 to 20), and writes a combined report of the runs, one line each (fault,
seed, operations, availability by operations and by time, longest gap, valid) and a digest
per fault type, to ``raftpy-jepsen/long-<date-time>.txt``. For a shorter long run (to try
the machinery): ``RAFTPY_JEPSEN_RUNS=N`` seeds 1 to N and ``RAFTPY_JEPSEN_SECONDS=T`` seconds
each; ``RAFTPY_JEPSEN_REPORT=FILE`` writes the report there (also for the default runs). See
README.md, "Testing". Every wait is bounded and every server process is killed when a test
ends, pass or fail (the harness's ``finally`` blocks; the tests below check it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from raftpy.cli import main
from raftpy.client import Client
from raftpy.errors import RaftError
from raftpy.node.config import NodeConfig
from raftpy.testing import nemesis
from raftpy.testing.history import Operation
from raftpy.testing.jepsen import RUN_LINE_HEADER, run_line
from raftpy.testing.nemesis import (
    Cluster,
    FaultProxy,
    JepsenConfig,
    JepsenResult,
    judge_history,
    run_jepsen,
)


def _env_number(name: str, kind: type[int] | type[float], default: float) -> float:
    """A positive number from the environment variable ``name`` (``default`` when unset)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {raw!r}")
    return value


LONG = os.environ.get("RAFTPY_JEPSEN") == "long"
LONG_RUNS = int(_env_number("RAFTPY_JEPSEN_RUNS", int, 20))
LONG_SECONDS = _env_number("RAFTPY_JEPSEN_SECONDS", float, 60.0)
FAULT_TYPES = ("partition", "kill", "pause")
RUNS = (
    [(kind, seed, LONG_SECONDS) for kind in FAULT_TYPES for seed in range(1, LONG_RUNS + 1)]
    if LONG
    else [(kind, 1, 30.0) for kind in FAULT_TYPES]
)


def _report_path() -> Path | None:
    """Where the combined report of the runs goes: ``RAFTPY_JEPSEN_REPORT``, or (long runs)
    a dated file under ``raftpy-jepsen/``; ``None``: no report."""
    chosen = os.environ.get("RAFTPY_JEPSEN_REPORT")
    if chosen:
        return Path(chosen)
    if LONG:
        return Path("raftpy-jepsen") / f"long-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    return None


class CombinedReport:
    """The combined report of :func:`test_jepsen_run`'s runs: a header, one line per run as
    it ends (so an interrupted long run keeps what it did), and a digest per fault type."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[tuple[str, int, float, float, float, bool]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# raftpy jepsen runs, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{'long' if LONG else 'default'}, {len(RUNS)} runs; by-time: the share of time "
            "not in gaps of more than 100 ms between successful writes (docs/jepsen.md)"
            "\n"
            f"{RUN_LINE_HEADER}  output\n",
            encoding="utf-8",
        )

    def _append(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def add(self, kind: str, result: JepsenResult) -> None:
        progress = result.progress()
        self.rows.append(
            (
                kind,
                result.seed,
                result.by_operations,
                progress.over().share,
                progress.longest.duration,
                result.valid,
            )
        )
        self._append(f"{run_line(result)}  {result.out_dir}")

    def harness_failed(self, kind: str, seed: int, seconds: float, error: BaseException) -> None:
        self.rows.append((kind, seed, 0.0, 0.0, 0.0, False))
        self._append(f"{kind:<24} {seed:>5} {seconds:>5g} harness failed: {error!r}")

    def close(self) -> None:
        lines = ["# per fault type:"]
        for kind in FAULT_TYPES:
            rows = [r for r in self.rows if r[0] == kind]
            if not rows:
                continue
            by_ops = [r[2] for r in rows]
            by_time = [r[3] for r in rows]
            worst = max(rows, key=lambda r: r[4])
            lines.append(
                f"# {kind}: {len(rows)} runs, {sum(r[5] for r in rows)} valid; by operations "
                f"mean {100 * statistics.fmean(by_ops):.1f}% min {100 * min(by_ops):.1f}%; by "
                f"time mean {100 * statistics.fmean(by_time):.1f}% min "
                f"{100 * min(by_time):.1f}%; longest gap {worst[4]:.2f} s (seed {worst[1]})"
            )
        self._append("\n".join(lines))


@pytest.fixture(scope="module")
def combined_report() -> Iterator[CombinedReport | None]:
    path = _report_path()
    if path is None:
        yield None
        return
    report = CombinedReport(path)
    yield report
    report.close()
    print(f"\ncombined report: {path}\n{path.read_text(encoding='utf-8')}")


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- The fault proxy ------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def _read_frame(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    try:
        async with asyncio.timeout(timeout):
            size = int.from_bytes(await reader.readexactly(4), "big")
            return await reader.readexactly(size)
    except TimeoutError:
        return None


def test_fault_proxy_forwards_blocks_delays_and_drops() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                writer.write(_frame(await reader.readexactly(size)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = FaultProxy([1, 2], seed=1)
        await proxy.start()
        proxy.set_target(2, "127.0.0.1", port)
        host, _, p = proxy.address(1, 2).rpartition(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(p))

            async def roundtrip(payload: bytes, timeout: float = 1.0) -> bytes | None:
                writer.write(_frame(payload))
                await writer.drain()
                return await _read_frame(reader, timeout)

            # The first frame each way (the handshake) passes even when the link is blocked.
            proxy.block(1, 2)
            assert await roundtrip(b"hello") == b"hello"
            assert await roundtrip(b"blocked", 0.3) is None
            assert proxy.stats()[(1, 2)].dropped == 1
            proxy.unblock(1, 2)
            assert await roundtrip(b"a") == b"a"  # the dropped frame is gone for good

            proxy.set_faults(1, 2, delay=0.2)
            start = time.monotonic()
            assert await roundtrip(b"slow") == b"slow"
            assert time.monotonic() - start >= 0.19
            proxy.set_faults(1, 2, delay=0.0)

            proxy.set_faults(2, 1, drop=1.0)  # the way back loses everything
            assert await roundtrip(b"lost", 0.3) is None
            proxy.set_faults(2, 1, drop=0.0)
            assert await roundtrip(b"b") == b"b"

            # A big frame arrives whole, in order with small ones.
            big = os.urandom(300_000)
            writer.write(_frame(big) + _frame(b"after"))
            await writer.drain()
            assert await _read_frame(reader, 2.0) == big
            assert await _read_frame(reader, 2.0) == b"after"

            # A partition swallows new connections: accepted, never answered.
            proxy.partition([[1], [2]])
            assert proxy.faults(1, 2).blocked and proxy.faults(2, 1).blocked
            r2, w2 = await asyncio.open_connection(host, int(p))
            w2.write(_frame(b"hello"))
            assert await _read_frame(r2, 0.3) is None
            assert proxy.stats()[(1, 2)].swallowed == 1
            w2.close()
            proxy.heal()
            assert proxy.healthy
            assert await roundtrip(b"healed") == b"healed"
            writer.close()
        finally:
            await proxy.close()
            server.close()

    asyncio.run(run())


def test_fault_proxy_partition_rules() -> None:
    proxy = FaultProxy([1, 2, 3, 4, 5])
    proxy.partition([[1, 2], [3, 4]])  # 5 is in no group: cut off from everyone
    assert not proxy.faults(1, 2).blocked and not proxy.faults(4, 3).blocked
    assert proxy.faults(1, 3).blocked and proxy.faults(3, 1).blocked
    assert proxy.faults(5, 1).blocked and proxy.faults(4, 5).blocked
    proxy.isolate(2)
    assert proxy.faults(2, 1).blocked and proxy.faults(1, 2).blocked
    assert not proxy.faults(1, 3).blocked and not proxy.faults(5, 4).blocked
    with pytest.raises(ValueError, match="two groups"):
        proxy.partition([[1], [1, 2]])
    with pytest.raises(ValueError, match="probability"):
        proxy.set_faults(1, 2, drop=1.5)


# --- Processes ------------------------------------------------------------------------------


def test_cluster_process_control_and_partitions(tmp_path: Path) -> None:
    """Leader election through the proxies, isolation, SIGKILL/restart, SIGSTOP/SIGCONT, an
    exit the harness did not cause, and every process gone after close (also on an error)."""
    procs: list[object] = []

    async def run() -> None:
        cluster = Cluster(3, tmp_path, seed=7)
        with pytest.raises(RuntimeError, match="boom"):
            async with cluster as c:
                procs.extend(node.proc for node in c.nodes.values())
                leader = await c.leader(timeout=10)
                assert leader is not None
                st = await c.status(leader)
                assert st is not None
                # Each run has its own cluster id: a client (or a server left over from
                # another run on a reused port) of another cluster is refused.
                assert c.cluster_id.startswith("jepsen-")
                assert c.cluster_id != Cluster(3, tmp_path, seed=7).cluster_id
                async with Client([c.addresses[0]], cluster_id="raftpy", timeout=2) as stranger:
                    with pytest.raises(RaftError, match="cluster id does not match"):
                        await stranger.status(c.addresses[0], timeout=2)
                term = st.term
                assert term is not None and st.peers is not None
                # Its peers are dialed through the proxy: its member list names their member
                # ports (the proxy tells the link from the dialer's handshake).
                assert st.peers[next(i for i in c.ids if i != leader)].address in {
                    c.member_address(j) for j in c.ids if j != leader
                }

                c.proxy.isolate(leader)

                async def other_leads() -> bool:
                    new = await c.leader(timeout=0.5)
                    if new is None or new == leader:
                        return False
                    s = await c.status(new)
                    return s is not None and (s.term or 0) > term

                await eventually(other_leads, 10, "a new leader on the majority side")

                async def old_steps_down() -> bool:
                    s = await c.status(leader)
                    return s is not None and s.role != "leader"

                await eventually(old_steps_down, 10, "the isolated leader to step down")
                c.proxy.heal()

                new = await c.leader(timeout=10)
                assert new is not None
                await c.kill(new)
                assert await c.status(new) is None
                await eventually(
                    lambda: _leads_other_than(c, new), 10, "a leader after the SIGKILL"
                )
                await c.restart(new)
                assert await c.status(new) is not None

                victim = next(i for i in c.ids if i != new)
                c.pause(victim)
                assert c.nodes[victim].paused and await c.status(victim) is None
                c.resume(victim)
                assert await c.status(victim) is not None

                # An exit the harness did not cause is noticed.
                proc = c.nodes[victim].proc
                assert proc is not None
                proc.kill()
                proc.wait(5)
                assert c.check_exits() == [(victim, proc.returncode)]
                await c.heal()
                assert c.nodes[victim].running
                procs.append(c.nodes[victim].proc)
                procs.append(c.nodes[new].proc)
                raise RuntimeError("boom")

    asyncio.run(run())
    assert procs and all(p.poll() is not None for p in procs)  # type: ignore[attr-defined]


async def _leads_other_than(c: Cluster, node: int) -> bool:
    leader = await c.leader(timeout=0.5)
    return leader is not None and leader != node


def test_every_process_is_killed_when_a_run_is_cancelled(tmp_path: Path) -> None:
    async def run() -> list[object]:
        before = set(nemesis._LIVE_PROCESSES)
        config = JepsenConfig(seconds=60, nemesis="kill", seed=3, out_dir=tmp_path / "out")
        task = asyncio.ensure_future(run_jepsen(config))
        deadline = time.monotonic() + 20
        while len(nemesis._LIVE_PROCESSES - before) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        started = list(nemesis._LIVE_PROCESSES - before)
        assert len(started) == 3
        await asyncio.sleep(2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return list(started)

    started = asyncio.run(run())
    assert all(p.poll() is not None for p in started)  # type: ignore[attr-defined]


# --- The checks -----------------------------------------------------------------------------


def test_judge_history_tells_a_lost_write_from_a_stale_read() -> None:
    final = 99
    history = [
        # Key a: an acknowledged write, then the final read finds nothing: lost.
        Operation(client=1, op="write", key="a", call=0, ret=10, value=1),
        Operation(client=2, op="read", key="a", call=12, ret=14, value=1),
        Operation(client=final, op="read", key="a", call=20, ret=30, value=None),
        # Key b: a stale read in the middle; the final read is fine.
        Operation(client=1, op="write", key="b", call=0, ret=10, value=1),
        Operation(client=2, op="read", key="b", call=11, ret=12, value=None),
        Operation(client=final, op="read", key="b", call=20, ret=30, value=1),
        # Key c: fine, with an indeterminate write that did happen.
        Operation(client=3, op="write", key="c", call=0, ret=5, value=2, unknown=True),
        Operation(client=final, op="read", key="c", call=20, ret=30, value=2),
    ]
    overall, violations, checks = judge_history(history, final_reader=final)
    assert overall.verdict.name == "NOT_LINEARIZABLE"
    assert sorted(v.violation.key for v in violations if v.violation) == ["a", "b"]
    assert [c.passed for c in checks] == [False, False]
    assert "a" in checks[1].detail and "b" not in checks[1].detail.split(": ")[-1]

    ok_history = [op for op in history if op.key == "c"]
    _, violations, checks = judge_history(ok_history, final_reader=final)
    assert not violations and all(c.passed for c in checks)
    _, _, checks = judge_history(ok_history, final_reader=final, unread_keys=["c"])
    assert not checks[1].passed and "could not read" in checks[1].detail


# --- Runs against real clusters -------------------------------------------------------------


def _assert_valid_run(result: JepsenResult, nemesis_kind: str) -> None:
    print(result.summary)
    assert result.valid, result.summary
    faults = [w for w in result.windows if w.fault]
    if nemesis_kind != "none":
        assert faults, "the nemesis injected no fault"
        assert all(w.label.startswith(nemesis_kind) for w in faults), result.summary
    counts = result.counts
    assert counts["ok"] > 1000, result.summary
    for name in ("history.jsonl", "timeline.html", "summary.txt", "node1.log"):
        assert (result.out_dir / name).is_file(), name


# Every run snapshots and compacts often, so crashes, pauses and partitions also hit snapshot
# writes, compactions, restarts from snapshots and (for nodes left behind) InstallSnapshot.
SNAPSHOT_EVERY = 300


@pytest.mark.parametrize(("kind", "seed", "seconds"), RUNS)
def test_jepsen_run(
    kind: str,
    seed: int,
    seconds: float,
    tmp_path: Path,
    combined_report: CombinedReport | None,
) -> None:
    config = JepsenConfig(
        nodes=3,
        clients=10,
        keys=5,
        seconds=seconds,
        nemesis=kind,
        seed=seed,
        out_dir=tmp_path,
        server_args=("--snapshot-entries", str(SNAPSHOT_EVERY)),
    )
    try:
        result = asyncio.run(run_jepsen(config))
    except Exception as e:
        if combined_report is not None:
            combined_report.harness_failed(kind, seed, seconds, e)
        raise
    if combined_report is not None:
        combined_report.add(kind, result)
    print(f"{RUN_LINE_HEADER}\n{run_line(result)}")
    _assert_valid_run(result, kind)
    logs = "".join((tmp_path / f"node{i}.log").read_text() for i in (1, 2, 3))
    assert "took snapshot" in logs, "no node took a snapshot: the run did not test them"
    if kind == "kill":
        assert "restores its state machine from snapshot" in logs, (
            "no killed node restarted from a snapshot"
        )


def test_a_fault_free_3_node_run_with_10_clients_is_valid(tmp_path: Path) -> None:
    """With no faults every check passes. How many operations per second such a run records
    (>= 1,000) is a speed target: ``python -m benchmarks jepsen`` checks it, not a test,
    because a busy machine would make a timed assertion fail now and then."""
    config = JepsenConfig(nodes=3, clients=10, seconds=10, nemesis="none", seed=5, out_dir=tmp_path)
    result = asyncio.run(run_jepsen(config))
    _assert_valid_run(result, "none")


# --- The command line -----------------------------------------------------------------------


def test_cli_jepsen_run_writes_a_checkable_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["jepsen", "--seconds", "6", "--nemesis", "kill-leader", "--interval", "1.5"]
    args += ["--snapshot-entries", "50"]
    code = main([*args, "--seed", "3", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "valid: yes" in text and "kill-leader: leader" in text
    # Both availability figures and the longest gap, the settings and the replay command.
    assert "availability: by operations " in text and "%, by time " in text
    assert "longest gap without a successful write: " in text
    summary = (out / "summary.txt").read_text()
    assert "options: workload=register" in summary
    assert (
        "replay: raftpy jepsen --seconds 6 --nemesis kill-leader --seed 3 --interval 1.5 "
        "--snapshot-entries 50"
    ) in summary
    for name in ("history.jsonl", "timeline.html", "summary.txt", "node3.log"):
        assert (out / name).is_file()
    logs = "".join((out / f"node{i}.log").read_text() for i in (1, 2, 3))
    assert "took snapshot" in logs, "--snapshot-entries did not reach the servers"
    assert "<svg" in (out / "timeline.html").read_text()
    assert main(["check", str(out / "history.jsonl")]) == 0


def test_cli_jepsen_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jepsen", "--clients", "0"]) == 2
    assert main(["jepsen", "--nemesis", "bogus"]) == 2
    assert main(["jepsen", "--seconds", "nan"]) == 2
    assert main(["jepsen", "--read-consistency", "sometimes"]) == 2
    assert main(["jepsen", "--snapshot-entries", "0"]) == 2
    capsys.readouterr()


def _stale_read_switch_available() -> bool:
    """The node's test-only switch and the example servers' environment variable for it."""
    from raftpy.examples import service

    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    return "unsafe_stale_reads" in fields and nemesis.UNSAFE_STALE_READS_ENV in (
        inspect.getsource(service)
    )


@pytest.mark.skipif(
    not _stale_read_switch_available(),
    reason="the servers do not honour RAFTPY_UNSAFE_STALE_READS=1 (NodeConfig.unsafe_stale_reads)",
)
def test_the_harness_catches_stale_reads_from_a_deposed_leader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the test-only switch, a node that believes it leads answers reads without
    confirming leadership. The zombie-leader partition pauses the leader, cuts it off, lets the
    others elect a new leader and write, and resumes it still cut off with its clients around
    it: it believes it leads for at least one more election timeout and answers their reads
    with old values. The run must fail with a violation; at most 3 runs of 15 s (the first
    has always been enough: every fault window produces stale reads)."""
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        args = ["jepsen", "--unsafe-stale-reads", "--nemesis", "partition-zombie-leader"]
        args += ["--seconds", "15", "--interval", "3", "--op-timeout", "0.25"]
        code = main([*args, "--seed", str(attempt + 1), "--out", str(out), "--quiet"])
        text = capsys.readouterr().out
        print(text)
        if code == 1:
            assert "[FAIL] linearizable: NOT linearizable" in text
            assert "valid: NO" in text
            assert (out / "violation.html").is_file()
            return
        assert code == 0, text
    pytest.fail("3 runs with stale reads found no violation")
