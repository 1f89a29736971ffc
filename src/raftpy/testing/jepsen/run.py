"""One run of the harness, end to end: :func:`run_jepsen`.

It starts a cluster (:mod:`~raftpy.testing.jepsen.processes`), runs the clients
(:mod:`~raftpy.testing.jepsen.workload`) for ``seconds`` while the nemesis
(:mod:`~raftpy.testing.jepsen.nemesis`) alternates quiet periods and faults, records the
history, then heals everything, makes the recovery write and the final reads, judges the run
(:mod:`~raftpy.testing.jepsen.checks`) and writes its report
(:mod:`~raftpy.testing.jepsen.report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from raftpy.testing.history import HistoryRecorder
from raftpy.testing.jepsen.checks import (
    RECOVERY_LIMIT,
    JepsenCheck,
    crash_check,
    judge_history,
    membership_check,
    recovery_check,
)
from raftpy.testing.jepsen.config import UNSAFE_STALE_READS_ENV, JepsenConfig
from raftpy.testing.jepsen.nemesis import (
    HEALED_LABEL,
    MEMBER_FAULTS,
    NEMESES,
    FaultWindow,
    Nemesis,
    run_schedule,
)
from raftpy.testing.jepsen.processes import Cluster, NodeProcessError
from raftpy.testing.jepsen.report import JepsenResult, summarize, write_report
from raftpy.testing.jepsen.set_checks import SetVerdict, check_sets, set_checks
from raftpy.testing.jepsen.set_workload import RECOVERY_SET, SetWorkload
from raftpy.testing.jepsen.workload import Workload
from raftpy.testing.linearizability import CheckResult

__all__ = ["run_jepsen"]


async def _monitor_exits(cluster: Cluster) -> None:
    """Notice servers that exit on their own while the run goes on (see Cluster.check_exits)."""
    while True:
        await asyncio.sleep(0.25)
        cluster.check_exits()


async def run_jepsen(
    config: JepsenConfig, *, progress: Callable[[str], None] | None = None
) -> JepsenResult:
    """Run one Jepsen-style test (see :mod:`raftpy.testing.jepsen`) and return what it found.

    Raises ``ValueError`` for a bad configuration and :class:`NodeProcessError` if the cluster
    cannot be started. Every process started is killed before this returns or raises.
    ``progress`` receives a line at each phase.
    """
    config.validate()
    say = progress if progress is not None else (lambda _line: None)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1 << 31)
    out_dir = config.out_dir
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="raftpy-jepsen-"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="raftpy-jepsen-data-"))
    env = dict(config.server_env)
    if config.unsafe_stale_reads:
        env[UNSAFE_STALE_READS_ENV] = "1"
    rng = random.Random(seed)
    cluster = Cluster(
        config.nodes,
        workdir,
        log_dir=out_dir,
        module=config.server_module,
        tick_ms=config.tick_ms,
        election_ticks=config.election_ticks,
        env=env,
        seed=seed,
        server_args=config.server_args,
    )
    recorder = HistoryRecorder()
    windows: list[FaultWindow] = []
    checks: list[JepsenCheck] = []
    loop = asyncio.get_running_loop()
    monitor: asyncio.Task[None] | None = None
    try:
        say(f"starting {config.nodes} nodes (logs in {out_dir})")
        await cluster.start()
        monitor = loop.create_task(_monitor_exits(cluster))
        leader = await cluster.leader(timeout=10.0)
        if leader is None:
            raise NodeProcessError("no leader was elected within 10 s of starting the cluster")
        # Members' addresses live in the log: each must be its member port, or peers would
        # dial it around the proxy's faults.
        await cluster.record_member_addresses()
        nemesis = Nemesis(cluster, NEMESES[config.nemesis], random.Random(rng.random()))
        workload: Workload | SetWorkload
        if config.workload == "set":
            workload = SetWorkload(config, cluster, seed)
        else:
            workload = Workload(config, cluster, recorder, seed)
        say(
            f"running {config.clients} clients ({config.workload} workload) for "
            f"{config.seconds:g} s, nemesis {config.nemesis}, seed {seed}"
        )
        started = time.monotonic_ns()
        stop_at = loop.time() + config.seconds
        schedule = loop.create_task(
            run_schedule(nemesis, windows, config.interval, random.Random(rng.random()), stop_at)
        )
        try:
            await workload.run(stop_at)
        finally:
            if not schedule.done():
                schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await schedule
        workload_seconds = (time.monotonic_ns() - started) / 1e9
        workload_ops = len(workload.samples)

        say("healing")
        # A membership fault takes time to undo (a learner catching up, a node joining): the
        # membership is whole again before the recovery check's clock starts.
        await nemesis.members.repair()
        heal_started = loop.time()
        await nemesis.repair(wait=False)
        await cluster.heal(wait=False)
        heal_ns = time.monotonic_ns()
        final_rng = random.Random(rng.random())
        client_base = workload.next_client + 1000
        recovered, after = await workload.recovery_write(
            heal_started, RECOVERY_LIMIT, client_base, final_rng
        )
        checks.append(recovery_check(recovered, after))
        await cluster.wait_ready()
        keys = workload.keys.used
        say(f"final reads of {len(keys)} keys")
        set_verdict: SetVerdict | None = None
        if isinstance(workload, SetWorkload):
            final = await workload.final_reads([*keys, RECOVERY_SET], final_rng, 30.0)
        else:
            missing = await workload.final_reads(keys, client_base + 100, final_rng, 30.0)
        cluster.check_exits()
        windows.append(
            FaultWindow(
                f"{HEALED_LABEL}: recovery write, final reads", heal_ns, time.monotonic_ns()
            )
        )
        history = recorder.operations()

        overall: CheckResult | None = None
        violations: list[CheckResult] = []
        if isinstance(workload, SetWorkload):
            say(f"checking {len(workload.adds)} adds")
            set_verdict = check_sets(workload.adds, final)
            checks[:0] = set_checks(set_verdict)
        else:
            say(f"checking {len(history)} operations")
            overall, violations, judged = await asyncio.to_thread(
                judge_history,
                history,
                final_reader=client_base + 100,
                unread_keys=missing,
                timeout=config.check_timeout,
            )
            checks[:0] = judged
        checks.append(crash_check(cluster.problems))
        if any(fault in MEMBER_FAULTS for fault in nemesis.faults):
            checks.append(membership_check(nemesis.members.problems, nemesis.members.injected))
        result = JepsenResult(
            config=config,
            seed=seed,
            history=history,
            checks=checks,
            linearizability=overall,
            violations=violations,
            windows=windows,
            samples=workload.samples,
            started=started,
            workload_seconds=workload_seconds,
            workload_ops=workload_ops,
            out_dir=out_dir,
            adds=workload.adds if isinstance(workload, SetWorkload) else [],
            set_verdict=set_verdict,
        )
        result.summary = summarize(result)
        write_report(result)
        return result
    finally:
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        await cluster.close()
        if not config.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"data dirs kept in {workdir}")
