"""``raftpy jepsen``'s options are generated from JepsenConfig: one per field that carries an
Option, with the field's name, default and type (the runs themselves are in
tests/testing/test_jepsen.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raftpy import progress as progress_module
from raftpy.cli import build_parser, main
from raftpy.cli import jepsen as jepsen_cli
from raftpy.cli.jepsen import _config
from raftpy.testing.jepsen import run as jepsen_run
from raftpy.testing.jepsen.config import OPTION, JepsenConfig


def test_no_options_give_the_configs_defaults() -> None:
    config = _config(build_parser().parse_args(["jepsen"]))
    assert config.out_dir is not None and config.out_dir.parent == Path("raftpy-jepsen")
    assert dataclasses.replace(config, out_dir=None) == JepsenConfig()


def test_every_option_reaches_its_field() -> None:
    argv = ["jepsen", "--nodes", "5", "--seconds", "2.5", "--nemesis", "kill-leader"]
    argv += ["--seed", "7", "--out", "x", "--read-consistency", "lease", "--unsafe-stale-reads"]
    argv += ["--client-routing", "direct", "--snapshot-entries", "50", "--keep-data"]
    config = _config(build_parser().parse_args(argv))
    assert (config.nodes, config.seconds, config.nemesis, config.seed) == (5, 2.5, "kill-leader", 7)
    assert config.out_dir == Path("x")
    assert (config.read_consistency, config.client_routing) == ("lease", "direct")
    assert config.unsafe_stale_reads and config.keep_data
    assert config.server_args == ("--snapshot-entries", "50")


def test_help_lists_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jepsen", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(JepsenConfig):
        if OPTION in f.metadata:
            assert (f.metadata[OPTION].flag or "--" + f.name.replace("_", "-")) in text
    assert "(default 30)" in text and "(default partition)" in text
    assert "DESIGN" not in text


@pytest.mark.parametrize("command", ["check", "jepsen", "snapshot"])
def test_help_points_to_nothing_users_cannot_read(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "DESIGN" not in text and "issue" not in text.lower()


@dataclasses.dataclass
class _FakeResult:
    summary: str
    valid: bool


def _fake_run(seconds_to_sleep: float) -> Any:
    """Stands in for run_jepsen: its phase lines, and a wait as long as the faults' part."""

    async def run(config: JepsenConfig, *, progress: Callable[[str], None]) -> _FakeResult:
        progress(f"starting {config.nodes} nodes (logs in x)")
        progress(f"running {config.clients} clients (register workload) for {config.seconds:g} s")
        await asyncio.sleep(seconds_to_sleep)
        progress("healing")
        return _FakeResult("all good", True)

    return run


def test_phases_and_time_left_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(jepsen_run, "run_jepsen", _fake_run(1.2))
    monkeypatch.setattr(progress_module, "_RICH_TICK", 0.1)
    assert main(["jepsen", "--seconds", "3", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "all good\n"
    lines = err.splitlines()
    assert lines[:2] == [
        "raftpy jepsen: starting 3 nodes (logs in x)",
        "raftpy jepsen: running 10 clients (register workload) for 3 s",
    ], err
    assert lines[-1] == "raftpy jepsen: healing"
    # Not a terminal: the first time-left line at once, the next only 10 s later.
    assert len(lines) == 4, err
    assert re.fullmatch(r"raftpy jepsen: faults and clients: [23] s left", lines[2]), err


def test_quiet_prints_no_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(jepsen_run, "run_jepsen", _fake_run(0.3))
    assert main(["jepsen", "--seconds", "1", "--quiet", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr() == ("all good\n", "")


def test_the_workload_phase_line_is_the_one_the_progress_times() -> None:
    """The time left shows for the phase line run_jepsen begins with 'running '."""
    source = inspect.getsource(jepsen_run.run_jepsen)
    assert 'f"running {config.clients} clients' in source
    assert jepsen_cli._WORKLOAD_PHASE == "running "
