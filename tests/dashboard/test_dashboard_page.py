"""The page's drawing in headless Chromium against a scripted picture (no cluster): the parts a
quiet test cluster never shows (a member down, a learner, a snapshot transfer, elections with
reasons, a node sending markup in its error) are drawn, and drawn as text.

Skipped, saying why, where Debian's chromium, chromium-driver or selenium are missing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from raftpy.dashboard.poller import Poller
from raftpy.errors import ClusterUnavailableError
from tests.dashboard.browser import (
    artifacts_dir,
    graph_nodes,
    missing,
    start_chromium,
    wait_dom,
)
from tests.dashboard.fakes import addr, newer, status

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

WHY_NOT = missing()
MARKUP = '<img id="injected" src="x">'


def scripted_poller() -> Poller:
    """Node 1 leads and sends a snapshot to learner 4; node 2 is down (its error carries
    markup); node 3 follows."""

    asked: dict[str, int] = {}

    async def fetch(address: str, timeout: float) -> Any:
        asked[address] = asked.get(address, 0) + 1
        if address == addr(2) and asked[address] > 1:
            raise ClusterUnavailableError(f"connection refused {MARKUP}")
        if address == addr(1):
            st = status(1, role="leader", term=5, leader=1, commit=900, n=4, lag={4: 850})
            return newer(
                st,
                learners=(4,),
                members=(1, 2, 3),
                transfers=(
                    SimpleNamespace(
                        peer=4,
                        direction="send",
                        index=880,
                        bytes_done=3 << 20,
                        size=4 << 20,
                        started=time.time() - 12,
                    ),
                ),
                elections=(
                    SimpleNamespace(
                        time=time.time() - 30,
                        term=5,
                        role="leader",
                        leader=1,
                        reason="leader transfer",
                    ),
                ),
                last_error=f"fsync slow {MARKUP}",
                last_error_time=2.0,
            )
        i = int(address.rsplit(":", 1)[1]) - 7000
        return newer(status(i, term=5, commit=50 if i == 4 else 900), learners=(4,))

    poller = Poller([addr(1), addr(2), addr(3), addr(4)], fetch, max_nodes=4)

    async def once() -> None:
        for _ in range(2):  # node 2 answers once, then is down
            await asyncio.gather(*(poller.poll_once(a) for a in list(poller.views)))

    asyncio.run(once())
    return poller


@pytest.fixture
def page_url() -> Iterator[str]:
    from aiohttp import web

    from raftpy.dashboard.server import make_app

    poller = scripted_poller()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(make_app(poller))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    assert started.wait(20)
    try:
        yield f"http://127.0.0.1:{box['port']}/"
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.skipif(WHY_NOT is not None, reason=f"no browser test: {WHY_NOT}")
def test_down_member_learner_transfer_and_elections_are_drawn_as_text(
    page_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = start_chromium(tmp_path / "profile")
    try:
        driver.get(page_url)

        def graph(d: Any) -> dict[str, tuple[str, str]] | None:
            got = {i: (alive, texts[1]) for i, alive, _, texts in graph_nodes(d)}
            return got if len(got) == 4 and got.get("2", ("",))[0] == "false" else None

        got = wait_dom(driver, graph, 20, "four members drawn")
        assert got == {
            "1": ("true", "leader"),
            "2": ("false", "down"),
            "3": ("true", "follower"),
            "4": ("true", "learner"),
        }
        bar = driver.find_element(By.CSS_SELECTOR, "#transfers progress")
        assert float(bar.get_attribute("value")) == pytest.approx(0.75)
        transfer = driver.find_element(By.CSS_SELECTOR, "#transfers .transfer").text
        assert re.fullmatch(
            r"n1 \u2192 n4: snapshot at 880, 3.0 MiB of 4.0 MiB in [\d.]+ s", transfer
        )
        elections = driver.find_element(By.ID, "elections").text
        assert "n1 \u2192 leader in term 5 (leader transfer)" in elections
        nodes = driver.find_element(By.ID, "nodes").text
        # What nodes send is shown as text: the markup is visible, and nothing was injected.
        assert f"connection refused {MARKUP}" in nodes and f"fsync slow {MARKUP}" in nodes
        assert driver.find_elements(By.ID, "injected") == []
        rows = driver.find_elements(By.CSS_SELECTOR, "#replication tbody tr")
        assert len(rows) == 4
        driver.save_screenshot(str(artifacts_dir() / "dashboard-scripted.png"))
    finally:
        driver.quit()
