"""``raftpy --version`` prints the installed package's version, in-process and as the command."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

import raftpy
from raftpy.cli import main

VERSION_LINE = f"raftpy {metadata.version('raftpy')}\n"


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr() == (VERSION_LINE, "")
    assert raftpy.__version__ == metadata.version("raftpy")


def test_version_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raftpy.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_LINE, "")
