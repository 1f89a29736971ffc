"""Debian's headless Chromium driven by selenium, for the dashboard's browser tests.

Only the system's browser and driver are used (/usr/bin/chromium, /usr/bin/chromedriver):
giving both paths keeps selenium-manager from looking for, or downloading, anything.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing() -> str | None:
    """Why the browser tests cannot run here (``None`` when they can)."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package})"
    return None


def artifacts_dir() -> Path:
    """Where screenshots go: $RAFTPY_ARTIFACTS, else tests/artifacts/ (git-ignored)."""
    root = os.environ.get("RAFTPY_ARTIFACTS")
    path = Path(root) if root else Path(__file__).resolve().parents[1] / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_chromium(profile: Path, width: int = 1400, height: int = 1360) -> Any:
    """A headless Chromium with a fresh profile, nothing fetched from the network but the
    pages it is sent to."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_dom(
    driver: Any, predicate: Callable[[Any], Any], timeout: float, what: str, step: float = 0.05
) -> Any:
    """Poll ``predicate(driver)`` until it returns something true (returned); AssertionError
    after ``timeout`` seconds. Errors from a page being redrawn under the query count as
    not yet."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            got = predicate(driver)
            if got:
                return got
        except WebDriverException as exc:  # an element replaced while read
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last})")
        time.sleep(step)


GRAPH_SCRIPT = """
return Array.from(document.querySelectorAll('#graph g.node')).map((g) => [
  g.getAttribute('data-id'), g.getAttribute('data-alive'), g.getAttribute('data-role'),
  Array.from(g.querySelectorAll('text')).map((t) => t.textContent)]);
"""


def graph_nodes(driver: Any) -> list[tuple[str, str, str, list[str]]]:
    """(id, alive, role, texts) of each member drawn in the graph, read in one script so that
    a redraw cannot split the reading."""
    rows = driver.execute_script(GRAPH_SCRIPT)
    return sorted((str(i), str(a), str(r), [str(t) for t in texts]) for i, a, r, texts in rows)
