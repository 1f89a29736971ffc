"""``raftpy jepsen``'s options are generated from JepsenConfig: one per field that carries an
Option, with the field's name, default and type (the runs themselves are in
tests/testing/test_jepsen.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from raftpy.cli import build_parser, main
from raftpy.cli.jepsen import _config
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
