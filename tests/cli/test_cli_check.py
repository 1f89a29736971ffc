"""The ``raftpy check FILE`` command: verdicts and exit statuses (docs/history-format.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftpy.cli import main
from raftpy.testing.history import Operation, write_history

OK_HISTORY = [
    Operation(client=1, op="write", key="x", call=0, ret=10, value=1),
    Operation(client=2, op="read", key="x", call=5, ret=20, value=1),
    Operation(client=3, op="cas", key="x", call=30, ret=40, from_=1, to=2, ok=True),
]
STALE_READ = [
    Operation(client=1, op="write", key="x", call=0, ret=10, value=1),
    Operation(client=1, op="write", key="x", call=20, ret=30, value=2),
    Operation(client=2, op="read", key="x", call=40, ret=50, value=1),
]
# 40 concurrent writes, then a read of a value none of them wrote: hopeless to decide.
HOPELESS = [
    Operation(client=i, op="write", key="x", call=0, ret=1000, value=i) for i in range(40)
] + [Operation(client=99, op="read", key="x", call=2000, ret=2001, value=-1)]


def _file(tmp_path: Path, ops: list[Operation]) -> str:
    path = tmp_path / "history.jsonl"
    write_history(path, ops)
    return str(path)


def test_linearizable_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", _file(tmp_path, OK_HISTORY)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("linearizable: 3 operations")


def test_not_linearizable_exits_1_and_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "timeline.html"
    assert main(["check", _file(tmp_path, STALE_READ), "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("not linearizable")
    assert 'read("x") -> 1' in out
    assert "client 2" in out
    page = html.read_text()
    assert "<svg" in page and "unplaceable" in page


def test_html_is_not_written_without_a_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "timeline.html"
    assert main(["check", _file(tmp_path, OK_HISTORY), "--html", str(html)]) == 0
    assert not html.exists()
    assert "not written" in capsys.readouterr().err


def test_undecided_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", _file(tmp_path, HOPELESS), "--timeout", "0.05"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("undecided")
    assert "time limit" in out


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["check"], id="no-file"),
        pytest.param(["check", "a", "b"], id="two-files"),
        pytest.param(["check", "f", "--timeout", "soon"], id="bad-timeout"),
        pytest.param(["check", "f", "--timeout", "-1"], id="negative-timeout"),
        pytest.param(["frobnicate"], id="unknown-command"),
    ],
)
def test_usage_error_exits_2_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "usage: raftpy" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--help"]) == 0
    assert "--timeout" in capsys.readouterr().out


def test_missing_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["check", str(missing)]) == 3
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "cannot read" in err


def test_directory_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path)]) == 3
    assert str(tmp_path) in capsys.readouterr().err


def test_malformed_history_exits_3_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"client": 1, "op": "write", "key": "x", "call": 0, "return": 1, "value": 1}\n'
        '{"client": 1, "op": "write", "key": "x", "call": 2, "return": 3}\n'
    )
    assert main(["check", str(path)]) == 3
    captured = capsys.readouterr()
    assert f"{path}:2:" in captured.err
    assert "value" in captured.err
    assert captured.out == ""


def test_unwritable_html_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing-dir" / "t.html"
    assert main(["check", _file(tmp_path, STALE_READ), "--html", str(out)]) == 3
    assert "cannot write" in capsys.readouterr().err


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_module_entry_point_exit_status(tmp_path: Path) -> None:
    proc = _run_module("check", _file(tmp_path, STALE_READ))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("not linearizable")


def test_module_entry_point_usage_error() -> None:
    proc = _run_module("check")
    assert proc.returncode == 2
    assert "usage: raftpy check" in proc.stderr
