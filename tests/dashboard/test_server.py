"""The dashboard's web server (aiohttp's test client, no browser) and ``raftpy dashboard``'s
command line: usage errors, a port in use, aiohttp missing, and Ctrl-C."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from raftpy.cli import main as cli_main
from raftpy.dashboard.poller import Poller
from raftpy.errors import ClusterUnavailableError
from tests.dashboard.fakes import addr, status

pytestmark = pytest.mark.timeout(60)

aiohttp = pytest.importorskip("aiohttp", reason="the dashboard extra (aiohttp) is not installed")


def run_app(check: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from raftpy.dashboard.server import make_app

    async def fetch(address: str, timeout: float) -> Any:
        if address == addr(1):
            return status(1, role="leader", n=2)
        raise ClusterUnavailableError("connection refused")

    async def main() -> None:
        poller = Poller([addr(1), addr(2)], fetch)
        await asyncio.gather(poller.poll_once(addr(1)), poller.poll_once(addr(2)))
        async with TestClient(TestServer(make_app(poller))) as client:
            await check(client, poller)

    asyncio.run(main())


def test_page_script_style_and_api() -> None:
    async def check(client: Any, poller: Poller) -> None:
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert '<script src="/static/dashboard.js"' in html and 'id="graph"' in html
        # Nothing but this server's own files runs in the page.
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        js = await client.get("/static/dashboard.js")
        assert js.status == 200 and js.content_type == "text/javascript"
        assert "/api/cluster" in await js.text()
        css = await client.get("/static/dashboard.css")
        assert css.status == 200 and css.content_type == "text/css"
        api = await client.get("/api/cluster")
        assert api.status == 200 and api.headers["Cache-Control"] == "no-store"
        doc = json.loads(await api.text())
        assert doc["leader"] == 1
        assert [(n["address"], n["alive"]) for n in doc["nodes"]] == [
            (addr(1), True),
            (addr(2), False),
        ]
        for path in ("/static/index.html", "/static/../poller.py", "/static/x.js", "/api"):
            assert (await client.get(path)).status == 404, path

    run_app(check)


def test_picture_is_rebuilt_only_when_the_poller_learnt_something() -> None:
    async def check(client: Any, poller: Poller) -> None:
        first = await (await client.get("/api/cluster")).read()
        assert await (await client.get("/api/cluster")).read() == first
        await poller.poll_once(addr(1))
        assert await (await client.get("/api/cluster")).read() != first

    run_app(check)


# -- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["not-an-address"],
        ["127.0.0.1:1", "--port", "70000"],
        ["127.0.0.1:1", "--port", "http"],
        ["127.0.0.1:1", "--interval", "0"],
        ["127.0.0.1:1", "--interval", "nan"],
        ["127.0.0.1:1", "--bogus"],
    ],
    ids=lambda a: " ".join(a) or "none",
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["dashboard", *args]) == 2
    assert "usage:" in capsys.readouterr().err


def test_a_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli_main(["dashboard", "127.0.0.1:1", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err == (
        f"raftpy dashboard: cannot listen on 127.0.0.1:{port}: the port is in use (another "
        "program listens there; pick another with --port)\n"
    )


def test_without_aiohttp_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a)
    )
    assert cli_main(["dashboard", "127.0.0.1:1"]) == 2
    assert "pip install 'raftpy[dashboard]'" in capsys.readouterr().err


@pytest.mark.process
def test_serves_until_ctrl_c_and_shows_a_dead_member(tmp_path: Path) -> None:
    """As a process: prints the URL, serves the page and the picture (a member that does not
    answer is shown so), and exits 0 on Ctrl-C."""
    from raftpy.transport.address import free_port

    dead = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftpy.cli", "dashboard", dead, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        assert lines and lines[0].startswith("raftpy dashboard: serving http://127.0.0.1:"), lines
        url = lines[0].split()[3]
        doc: dict[str, Any] = {}
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with urllib.request.urlopen(url + "api/cluster", timeout=5) as resp:
                doc = json.load(resp)
            if doc["nodes"][0]["error"]:
                break
            time.sleep(0.1)
        node = doc["nodes"][0]
        assert (node["address"], node["alive"], node["id"]) == (dead, False, None), doc
        assert doc["leader"] is None
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert b"raftpy dashboard" in resp.read()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert err.strip().endswith("raftpy dashboard: stopped")
