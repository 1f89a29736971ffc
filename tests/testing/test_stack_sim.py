"""The whole-stack simulation: real nodes, storage and clients on virtual time
(raftpy.testing.stack_sim). Seeds: RAFTPY_STACK_SEEDS=N runs N (default below);
RAFTPY_STACK_SEED=S replays one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from raftpy.client import Client
from raftpy.errors import ProposalDropped
from raftpy.storage import segments
from raftpy.storage.wal import FileStorage
from raftpy.testing.history import Operation
from raftpy.testing.linearizability import Verdict
from raftpy.testing.stack_sim import FAULT_KINDS, STACK_CONFIG, StackFaults, run_kv
from raftpy.testing.stack_workload import durability_problems

DEFAULT_SEEDS = 200  # RAFTPY_STACK_SEEDS=10000 for the long sweep
DURATION = 2.0  # virtual seconds of load per seed; faults come faster to keep the mix
SWEEP_FAULTS = replace(StackFaults(), interval=0.5)
RUN = 4.0  # the other tests' runs

if "RAFTPY_STACK_SEED" in os.environ:
    SEEDS = [int(os.environ["RAFTPY_STACK_SEED"])]
else:
    SEEDS = list(range(int(os.environ.get("RAFTPY_STACK_SEEDS", DEFAULT_SEEDS))))


@pytest.fixture(autouse=True)
def _quiet() -> object:
    # The nemesis makes nodes log every fault at WARNING or worse: keep the captured log small.
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.sweep  # ~35 s for the default seeds: a sweep (make test runs it, test-fast not)
@pytest.mark.parametrize("seed", SEEDS)
def test_seed_is_linearizable_and_converges(seed: int) -> None:
    result = run_kv(seed, duration=DURATION, faults=SWEEP_FAULTS)
    print(result.summary())
    assert result.ok, result.summary()


def test_same_seed_same_history_byte_for_byte() -> None:
    first = run_kv(12, duration=RUN)
    second = run_kv(12, duration=RUN)
    assert first.history_bytes() == second.history_bytes()
    assert first.faults == second.faults
    assert len(first.history) > 50


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_is_injected_and_survived(kind: str) -> None:
    faults = replace(StackFaults.only(kind), interval=0.4)
    result = run_kv(1, duration=RUN, faults=faults)
    print(result.summary())
    assert result.faults[kind] >= 3
    assert result.ok, result.summary()
    assert result.check is not None and result.check.verdict is Verdict.LINEARIZABLE


def test_same_seed_same_history_across_processes(tmp_path: Path) -> None:
    # Another process with another string-hash seed: nothing may depend on object addresses
    # or set order.
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"history-{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        cmd = [sys.executable, "-m", "raftpy.testing.stack_sim", "7", "--duration", "4"]
        subprocess.run([*cmd, "--history", str(out)], env=env, check=True, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0]


def test_a_planted_durability_bug_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bug: the log skips every other fsync, so a node acknowledges appends and votes a
    # crash can take back. Only a simulation with real storage, crashes and clients sees it.
    synced = FileStorage.sync
    calls = 0

    def lazy_sync(self: FileStorage) -> None:
        nonlocal calls
        calls += 1
        if calls % 2 == 0:
            synced(self)

    monkeypatch.setattr(FileStorage, "sync", lazy_sync)
    # Caught when a power loss (a majority crashing at once) comes while acknowledged entries
    # are still unsynced: 3 of the first 60 seeds on 2026-12-07.
    faults = replace(StackFaults.only("crash", "partition"), interval=0.5)
    for seed in range(60):
        result = run_kv(seed, duration=RUN, faults=faults)
        if not result.ok:
            print(result.summary())
            assert "replay: python -m raftpy.testing.stack_sim" in result.summary()
            return
    pytest.fail("60 seeds of the stack simulation did not catch skipped fsyncs")


def test_durability_problems_name_lost_and_wrongly_refused_writes() -> None:
    history = [
        Operation(client=1, op="write", key="a", call=1, ret=2, value=5),
        Operation(client=2, op="cas", key="a", call=3, ret=4, from_=5, to=7, ok=True),
        Operation(client=2, op="cas", key="a", call=5, ret=6, from_=1, to=9, ok=False),
        Operation(client=1, op="write", key="b", call=7, ret=None, value=11),  # unknown
        Operation(client=1, op="write", key="b", call=8, ret=9, value=12, unknown=True),
    ]
    written = {1: {5, 7, 11}, 2: {5}, 3: {5, 7, 13}}
    assert durability_problems(history, {13}, written) == [
        "node 2 lacks 1 acknowledged write(s): 7 (client 2)",
        "node 3 applied 1 write(s) the client was told definitely failed: [13]",
    ]
    assert durability_problems(history, set(), {1: {5, 7}}) == []


def test_a_planted_false_failure_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bug: the client says a write definitely failed (raftpy.errors: nothing was done)
    # after it was applied.
    propose = Client.propose
    calls = 0

    async def lying(self: Client, command: bytes, *args: object, **kwargs: object) -> bytes:
        nonlocal calls
        result = await propose(self, command, *args, **kwargs)  # type: ignore[arg-type]
        calls += 1
        if calls % 7 == 0:
            raise ProposalDropped("planted: said dropped after it was applied")
        return result

    monkeypatch.setattr(Client, "propose", lying)
    result = run_kv(0, duration=2.0, faults=StackFaults.none())
    assert not result.ok
    assert "the client was told definitely failed" in result.summary()


def test_a_planted_checksum_bug_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bug: the log reads records back without verifying their checksum, so a bit flipped
    # on its way from the disk is applied (or voted on) as if it were what was written.
    checked = segments._check_record

    def trusting(*args: object) -> str | None:
        why = checked(*args)  # type: ignore[arg-type]
        return None if why == "checksum mismatch" else why

    monkeypatch.setattr(segments, "_check_record", trusting)
    faults = replace(StackFaults.only("corrupt_read"), interval=0.4)
    # A flipped bit does harm only when it lands in a command read back to be applied or sent
    # (mostly after a restart), and shows only because the replicas compare the commands they
    # applied, not their final values (SimKV.fingerprint). 40 of the first 100 seeds caught it
    # on 2026-12-07, seed 0 first; 3 of 100 before the nemesis skipped reads past the restart's
    # scan and before the fingerprint.
    for seed in range(20):
        result = run_kv(seed, duration=RUN, faults=faults)
        if not result.ok:
            print(result.summary())
            assert "replicas diverged" in result.summary()
            assert result.replay_command().endswith("--faults corrupt_read --interval 0.4")
            return
    pytest.fail("20 seeds of the stack simulation did not catch skipped checksums")


def test_a_planted_stale_read_is_caught() -> None:
    # The bug: a leader answers reads at once, without confirming it still leads (the config
    # switch that exists for this). A leader cut off with some clients, and stalled while the
    # others elect a new leader and take writes, answers them what was overwritten.
    config = replace(STACK_CONFIG, unsafe_stale_reads=True)
    faults = replace(StackFaults.only("partition", "clock_jump"), interval=0.7)
    for seed in range(40):
        result = run_kv(seed, duration=6.0, faults=faults, config=config, reads="linearizable")
        if not result.ok:
            print(result.summary())
            assert result.check is not None
            assert result.check.verdict is Verdict.NOT_LINEARIZABLE
            return
    pytest.fail("40 seeds of the stack simulation did not catch unconfirmed leader reads")


def test_damage_is_refused_naming_file_and_offset_then_replaced() -> None:
    # A bit flipped on the disk itself: the node refuses to start, naming the damaged file
    # (the simulator checks the name), stays down, and is replaced at the end (removed,
    # wiped, added back through the real membership API); the history stays linearizable.
    faults = replace(StackFaults.only("damage", "crash"), interval=0.4)
    replaced = 0
    for seed in range(6):
        result = run_kv(seed, duration=RUN, faults=faults)
        print(result.summary())
        assert result.ok, result.summary()
        replaced += result.faults["replaced"]
    assert replaced >= 1


def test_a_failure_prints_the_command_that_replays_it() -> None:
    faults = replace(StackFaults.only("crash", "partition"), interval=0.5)
    result = run_kv(3, duration=0.5, faults=faults)
    assert result.replay_command() == (
        "python -m raftpy.testing.stack_sim 3 --duration 0.5 --faults crash,partition "
        "--interval 0.5"
    )
    assert run_kv(3, duration=0.5).replay_command().endswith(" 3 --duration 0.5")


README = Path(__file__).resolve().parents[2] / "README.md"


class Counter:
    """The README's state machine."""

    def __init__(self) -> None:
        self.total = 0

    def apply(self, command: bytes) -> bytes:
        self.total += int(command)
        return str(self.total).encode()

    def query(self, query: bytes) -> bytes:
        return str(self.total).encode()

    def snapshot(self, out: BinaryIO) -> None:
        out.write(str(self.total).encode())

    def restore(self, inp: BinaryIO) -> None:
        self.total = int(inp.read())


def test_readme_example_runs() -> None:
    text = README.read_text()
    start = text.index("from raftpy.testing.stack_sim import StackCluster")
    code = text[start : text.index("```", start)]
    namespace: dict[str, object] = {"Counter": Counter}
    exec(compile(code, "README.md", "exec"), namespace)
    assert isinstance(namespace["virtual_seconds"], float)
    assert namespace["virtual_seconds"] >= 10.0
