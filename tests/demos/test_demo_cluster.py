"""The real-cluster demo (``python -m raftpy.demo_cluster``, ``make demo``) tells the whole
story, leaves no server process or temporary directory behind, and rejects bad arguments.

Each run starts real server processes on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

DEMO = [sys.executable, "-m", "raftpy.demo_cluster"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, *args], capture_output=True, text=True, timeout=timeout, check=False, env=ENV
    )


def _temp_dir(out: str) -> str:
    m = re.search(r"(/\S*raftpy-demo-[A-Za-z0-9_]+)", out)
    assert m, out
    return m.group(1)


def _ports(out: str) -> list[int]:
    ports = [int(p) for p in re.findall(r"started: pid \d+ +address 127\.0\.0\.1:(\d+)", out)]
    assert len(ports) == 3, out
    return ports


def _processes_mentioning(text: str) -> list[str]:
    ps = subprocess.run(
        ["ps", "-eo", "pid=,args="], capture_output=True, text=True, timeout=10, check=True
    )
    return [line for line in ps.stdout.splitlines() if text in line and "ps -eo" not in line]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a server
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def _assert_nothing_left(out: str) -> None:
    root = _temp_dir(out)
    assert _processes_mentioning(root) == []
    for port in _ports(out):
        assert _port_free(port), f"port {port} still in use"


def test_demo_tells_the_story_and_cleans_up() -> None:
    started = time.monotonic()
    r = _run()
    took = time.monotonic() - started
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert took < 60, f"the demo took {took:.1f} s"

    leaders = [(int(n), int(t)) for n, t in re.findall(r"node (\d) is LEADER of term (\d+)", out)]
    assert len(leaders) == 2, out
    (first, first_term), (second, second_term) = leaders
    assert second != first and second_term > first_term, out
    assert re.search(rf"kill -KILL \d+: node {first} is gone", out), out
    assert re.search(r"first write after the kill succeeded [\d.]+ s after it", out), out

    # Every command line exited 0 with the expected output.
    results = re.findall(r"-> (\S+) +exit status (\d+)", out)
    assert [(value, int(code)) for value, code in results] == [
        ("null", 0),  # put color blue
        ("null", 0),  # put shape circle
        ("true", 0),  # cas color blue red
        ('"red"', 0),  # get color
        ("null", 0),  # put survivor yes, during the failover
        ('"red"', 0),  # get color from the survivors
        ('"circle"', 0),  # get shape from the survivors
        ('"yes"', 0),  # get survivor from the restarted node alone
    ], out
    ports = _ports(out)
    intact = out[out.index("the data is intact") :]
    survivors = [f"127.0.0.1:{p}" for i, p in enumerate(ports, 1) if i != first]
    assert f"get color {' '.join(survivors)}\n" in intact, out
    assert f"get survivor 127.0.0.1:{ports[first - 1]}\n" in intact, out

    # The restarted node caught up: every row of the table shows the same commit and applied.
    assert f"node {first} caught up" in out, out
    rows = re.findall(r"^ +(\d)  (leader|follower) +(\d+) +(\d+) +(\d+)$", out, re.MULTILINE)
    assert sorted(int(r[0]) for r in rows) == [1, 2, 3], out
    assert len({(r[2], r[3], r[4]) for r in rows}) == 1, out
    assert re.search(rf"node {first}'s status, answered by node {first} itself", out), out

    assert re.search(r"nodes 1, 2 and 3 exited in [\d.]+ s, exit status 0$", out, re.M), out
    assert "removed /" in out and out.rstrip().endswith("node caught up."), out
    assert not Path(_temp_dir(out)).exists()
    _assert_nothing_left(out)
    assert 30 <= out.count("\n") <= 60, out


def test_sigterm_mid_story_stops_every_process() -> None:
    proc = subprocess.Popen(
        DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    lines: list[str] = []
    elected = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "is LEADER of term" in line:
                elected.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert elected.wait(30), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    reader.join(timeout=10)
    out = "".join(lines)
    assert "interrupted (SIGTERM): stopping the cluster" in out, out
    assert not Path(_temp_dir(out)).exists()
    _assert_nothing_left(out)


def test_bad_arguments_exit_2_and_help_exits_0() -> None:
    r = _run("--bogus", timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "usage:" in r.stderr
    r = _run("extra", timeout=30)
    assert r.returncode == 2
    assert "usage:" in r.stderr
    r = _run("--help", timeout=30)
    assert r.returncode == 0
    assert "--keep" in r.stdout
