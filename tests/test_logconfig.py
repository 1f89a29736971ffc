"""RAFTPY_LOG parsing, raftpy.configure_logging and its JSON format."""

from __future__ import annotations

import calendar
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import raftpy
from raftpy.logconfig import configure_logging, parse_log_spec


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("debug", (logging.DEBUG, {})),
        ("raftpy.core=debug,info", (logging.INFO, {"raftpy.core": logging.DEBUG})),
        ("warn, raftpy.transport=off", (logging.WARNING, {"raftpy.transport": 60})),
        ("", (logging.WARNING, {})),
        ("TRACE", (logging.DEBUG, {})),
    ],
    ids=["bare", "per-logger", "off", "empty", "case"],
)
def test_parse(spec: str, want: tuple[int, dict[str, int]]) -> None:
    assert parse_log_spec(spec) == want


@pytest.mark.parametrize("spec", ["loud", "raftpy=", "=debug", "raftpy.core=verbose"])
def test_bad_spec_names_the_directive(spec: str) -> None:
    with pytest.raises(ValueError, match="RAFTPY_LOG"):
        parse_log_spec(spec)


def test_configure_applies_per_logger_levels() -> None:
    out = io.StringIO()
    try:
        configure_logging("raftpy.core=debug,error", stream=out)
        logging.getLogger("raftpy.core").debug("core-detail")
        logging.getLogger("raftpy.node").info("node-chatter")
        logging.getLogger("raftpy.node").error("node-error")
        text = out.getvalue()
        assert "core-detail" in text
        assert "node-chatter" not in text
        assert "node-error" in text
    finally:
        configure_logging("warn", stream=io.StringIO())
        logging.getLogger("raftpy.core").setLevel(logging.NOTSET)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put raftpy's handler back to a quiet text one after the test."""
    yield
    configure_logging("warn", stream=io.StringIO(), fmt="text")
    logging.getLogger("raftpy.core").setLevel(logging.NOTSET)


def test_public_and_exported() -> None:
    assert raftpy.configure_logging is configure_logging
    assert "configure_logging" in raftpy.__all__


def test_json_one_object_per_line(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out, fmt="json")
    log = logging.getLogger("raftpy.node")
    log.info("elected in term %d", 7)
    log.warning("peer said %s", "line one\nFORGED line\x1b[31m é")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the newline in the message cannot start a line of its own
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO"
    assert first["logger"] == "raftpy.node"
    assert first["message"] == "elected in term 7"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    stamp = calendar.timegm(time.strptime(first["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(stamp - time.time()) < 60
    assert second["message"] == "peer said line one\nFORGED line\x1b[31m é"
    assert second["level"] == "WARNING"
    assert lines[1].isascii()


def test_json_carries_the_exception(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("error", stream=out, fmt="json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("raftpy.node").exception("apply failed")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "apply failed"
    assert record["level"] == "ERROR"
    assert record["exc_info"].startswith("Traceback (most recent call last):")
    assert record["exc_info"].endswith("ValueError: boom")


def test_format_from_the_environment(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setenv("RAFTPY_LOG_FORMAT", "JSON")
    monkeypatch.setenv("RAFTPY_LOG", "raftpy.core=debug,error")
    configure_logging(stream=out)
    logging.getLogger("raftpy.core").debug("detail")
    logging.getLogger("raftpy.node").info("chatter")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["message"] == "detail"
    # The argument wins over the environment.
    out2 = io.StringIO()
    configure_logging(stream=out2, fmt="text")
    logging.getLogger("raftpy.core").debug("detail2")
    assert out2.getvalue().endswith(" DEBUG raftpy.core: detail2\n")
    assert out.getvalue().count("\n") == 1  # the first handler was replaced, not kept


def test_unknown_format_refused_before_anything_changes(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out, fmt="text")
    monkeypatch.setenv("RAFTPY_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match=r"RAFTPY_LOG_FORMAT: unknown log format 'xml'"):
        configure_logging("debug", stream=io.StringIO())
    logging.getLogger("raftpy.node").info("still here")
    assert out.getvalue().endswith("INFO  raftpy.node: still here\n")


def test_users_own_handlers_are_kept(restore_logging: None) -> None:
    mine = io.StringIO()
    own = logging.StreamHandler(mine)
    root = logging.getLogger()
    root.addHandler(own)
    try:
        configure_logging("info", stream=io.StringIO(), fmt="json")
        configure_logging("info", stream=io.StringIO(), fmt="text")
        logging.getLogger("raftpy.node").warning("to both")
        assert mine.getvalue() == "to both\n"
        assert sum(1 for h in root.handlers if getattr(h, "_raftpy", False)) == 1
    finally:
        root.removeHandler(own)


USER_PROGRAM = """
import logging
import raftpy

raftpy.configure_logging()
logging.getLogger("raftpy.node").info("from the node")
logging.getLogger("raftpy.core").debug("from the core")
logging.getLogger("myapp").info("not shown at the default level")
"""


def test_raftpy_log_works_in_a_users_program() -> None:
    """The README's example: a program of one's own, no private import, RAFTPY_LOG applies."""
    env = {**os.environ, "RAFTPY_LOG": "raftpy.core=debug,raftpy.node=info,warn"}
    env.pop("RAFTPY_LOG_FORMAT", None)
    done = subprocess.run(
        [sys.executable, "-c", USER_PROGRAM],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO  raftpy.node: from the node",
        "DEBUG raftpy.core: from the core",
    ]
    env["RAFTPY_LOG_FORMAT"] = "json"
    done = subprocess.run(
        [sys.executable, "-c", USER_PROGRAM],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "raftpy.node", "from the node"),
        ("DEBUG", "raftpy.core", "from the core"),
    ]
