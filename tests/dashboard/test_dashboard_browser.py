"""The dashboard in a real headless Chromium against a real 3-node hashmap cluster.

The page must show the three members and the leader, the write rate moving under writes, and
follow a leadership transfer within 2 s of its completion. Screenshots go to
$RAFTPY_ARTIFACTS (else tests/artifacts/). Skipped, saying why, where Debian's chromium,
chromium-driver or selenium are missing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from raftpy.client import SyncClient
from raftpy.errors import RaftError
from raftpy.examples.hashmap import HashMapClient
from tests.dashboard.browser import (
    artifacts_dir,
    graph_nodes,
    missing,
    start_chromium,
    wait_dom,
)
from tests.processhelpers import ProcessCluster

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

WHY_NOT = missing()


class Dashboard:
    """``raftpy dashboard`` as a subprocess on a free port."""

    def __init__(self, addresses: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raftpy.cli", "dashboard", *addresses, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),  # noqa: SIM115 - the child owns it
            text=True,
        )
        self.url = self._read_url()

    def _read_url(self) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            found.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(30)
        line = found[0] if found else ""
        m = re.fullmatch(r"raftpy dashboard: serving (http://\S+/) \(Ctrl-C to stop\)\n", line)
        assert m, f"no URL printed: {line!r}; {self.log.read_text(errors='replace')}"
        return m.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - last resort
            self.proc.kill()
            return self.proc.wait(timeout=10)


class Writer(threading.Thread):
    """Puts keys as fast as one client can until stopped (failures during a leader change
    are expected and counted)."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(daemon=True)
        self.addresses = addresses
        self.stop_event = threading.Event()
        self.done = 0
        self.failed = 0

    def run(self) -> None:
        with HashMapClient(self.addresses, timeout=5.0) as client:
            i = 0
            while not self.stop_event.is_set():
                try:
                    client.put(f"k{i % 500}", i)
                    self.done += 1
                except RaftError:
                    self.failed += 1
                i += 1

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(30)


def leader_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "leader").text)


def nodes_shown(driver: Any) -> list[tuple[str, str, str]]:
    """(id, alive, role) of each member drawn in the graph."""
    return [(i, alive, role) for i, alive, role, _ in graph_nodes(driver)]


def three_up_one_leading(driver: Any) -> list[tuple[str, str, str]] | None:
    shown = nodes_shown(driver)
    alive = len(shown) == 3 and all(a == "true" for _, a, _ in shown)
    return shown if alive and sum(r == "leader" for _, _, r in shown) == 1 else None


def latency_text(driver: Any) -> str | None:
    from selenium.webdriver.common.by import By

    text = str(driver.find_element(By.ID, "latency").text)
    return text if "/" in text else None


def elections_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "elections").text)


def write_rate(driver: Any) -> float:
    from selenium.webdriver.common.by import By

    text = str(driver.find_element(By.ID, "write-rate").text)
    try:
        return float(text)
    except ValueError:
        return 0.0


def screenshot(driver: Any, name: str) -> Path:
    path = artifacts_dir() / name
    driver.save_screenshot(str(path))
    return path


@pytest.mark.skipif(WHY_NOT is not None, reason=f"no browser test: {WHY_NOT}")
def test_page_shows_members_writes_and_follows_a_leader_change(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as cluster:
        addresses = cluster.addresses
        dash = Dashboard(addresses[:1], tmp_path / "dashboard.log")  # the others: via the leader
        driver = start_chromium(tmp_path / "chromium-profile")
        writer = Writer(addresses)
        try:
            driver.get(dash.url)
            assert driver.title == "raftpy dashboard"
            shown = wait_dom(driver, three_up_one_leading, 30, "three live members, one leading")
            leader = next(i for i, _, r in shown if r == "leader")
            assert [i for i, _, _ in shown] == ["1", "2", "3"]
            assert wait_dom(driver, lambda d: leader_text(d) == f"n{leader}", 5, "the leader")
            screenshot(driver, "dashboard-idle.png")

            writer.start()
            wait_dom(driver, lambda d: write_rate(d) > 0, 20, "the write rate to move")
            # Let a few seconds of writes reach the charts before the picture.
            deadline = time.monotonic() + 8
            wait_dom(
                driver,
                lambda d: time.monotonic() > deadline and write_rate(d) > 0,
                20,
                "8 s of writes",
            )
            screenshot(driver, "dashboard-writes.png")
            # The leader times each write (NodeStats.proposal): p50 / p99 appear.
            latency = wait_dom(driver, latency_text, 10, "the write latency")
            assert re.fullmatch(r"[\d.]+ [µm]?s / [\d.]+ [µm]?s", latency), latency
            assert writer.done > 0

            target = next(i for i in ("1", "2", "3") if i != leader)
            with SyncClient(addresses, timeout=20.0) as client:
                client.transfer_leadership(int(target))
            transferred = time.monotonic()
            wait_dom(
                driver,
                lambda d: (
                    leader_text(d) == f"n{target}"
                    and ("".join(r for i, _, r in nodes_shown(d) if i == target) == "leader")
                ),
                2.0,
                f"the page to show n{target} leading within 2 s of the transfer",
            )
            followed = time.monotonic() - transferred
            print(f"the page showed the new leader {followed:.2f} s after the transfer")
            screenshot(driver, "dashboard-after-transfer.png")
            # The new leader's role change is listed with its reason.
            wait_dom(
                driver,
                lambda d: (
                    f"n{target} \u2192 leader in term" in elections_text(d)
                    and "(leader transfer)" in elections_text(d)
                ),
                10,
                "the transfer among the recent elections",
            )
            # Keep writing a little under the new leader, for the docs' screenshot.
            deadline = time.monotonic() + 5
            wait_dom(driver, lambda d: time.monotonic() > deadline, 10, "5 s more of writes")
            screenshot(driver, "dashboard.png")
        finally:
            writer.stop()
            driver.quit()
            status = dash.stop()
        assert status == 0, dash.log.read_text(errors="replace")
        assert "raftpy dashboard: stopped" in dash.log.read_text()
        assert os.environ.get("RAFTPY_ARTIFACTS") or (artifacts_dir() / "dashboard.png").exists()
