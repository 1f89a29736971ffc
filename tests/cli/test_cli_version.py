"""``raftpy --version`` prints the installed package's version, in-process and as the command;
importing raftpy does not load the package metadata machinery to learn it."""

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


def test_importing_raftpy_leaves_the_package_metadata_machinery_out() -> None:
    # The version is a plain string (raftpy.version): importlib.metadata cost every server and
    # command a third of its import of raftpy. A fresh interpreter shows what raftpy pulls in.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, raftpy, raftpy.examples.hashmap, raftpy.cli\n"
            "print('importlib.metadata' in sys.modules, raftpy.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"False {metadata.version('raftpy')}\n",
        "",
    )
