"""RAFTPY_LOG parsing."""

from __future__ import annotations

import io
import logging

import pytest

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
