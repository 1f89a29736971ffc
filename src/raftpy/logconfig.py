"""RAFTPY_LOG: log levels per logger, in the style of Rust's RUST_LOG (README.md, "Run a cluster").

A spec is a comma-separated list of directives. A bare level sets the default for every
logger; ``name=level`` sets one logger (and its children)::

    RAFTPY_LOG=debug                        # everything at debug
    RAFTPY_LOG=raftpy.core=debug,info       # the core at debug, the rest at info
    RAFTPY_LOG=warn,raftpy.transport=off    # quiet transport

Levels: ``trace`` (same as debug), ``debug``, ``info``, ``warn``/``warning``, ``error``, ``off``.

``RAFTPY_LOG_FORMAT=json`` (or ``configure_logging(fmt="json")``) writes one JSON object per
line instead of text, for log shippers: ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message``, and ``exc_info`` (the formatted traceback) when the record has one.
Non-ASCII characters and newlines are escaped, so a record is always exactly one line.

A program of your own calls :func:`configure_logging` once at start (it is re-exported as
``raftpy.configure_logging``); the example servers and the ``raftpy`` commands call it
themselves. (Named ``logconfig`` so it cannot shadow the standard library's ``logging``.)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal, TextIO, get_args

__all__ = [
    "ENV_VAR",
    "FORMAT_ENV_VAR",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "parse_log_spec",
]

ENV_VAR = "RAFTPY_LOG"
FORMAT_ENV_VAR = "RAFTPY_LOG_FORMAT"

LogFormat = Literal["text", "json"]
"""How :func:`configure_logging` writes records: ``text`` lines or one JSON object a line."""

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}

_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


def parse_log_spec(spec: str, default: int = logging.WARNING) -> tuple[int, dict[str, int]]:
    """Parse a spec into (default level, {logger name: level}). Raises ``ValueError`` naming
    the bad directive."""
    levels: dict[str, int] = {}
    for raw in spec.split(","):
        directive = raw.strip()
        if not directive:
            continue
        name, sep, level_name = directive.rpartition("=")
        level = _LEVELS.get(level_name.strip().lower())
        if level is None:
            known = ", ".join(sorted(_LEVELS))
            raise ValueError(
                f"{ENV_VAR}: unknown level {level_name.strip()!r} in {directive!r} (known: {known})"
            )
        if sep:
            if not name.strip():
                raise ValueError(f"{ENV_VAR}: empty logger name in {directive!r}")
            levels[name.strip()] = level
        else:
            default = level
    return default, levels


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time``, ``level``, ``logger``, ``message``,
    and ``exc_info`` / ``stack_info`` (formatted text) when the record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        millis = int((record.created - seconds) * 1000)
        fields: dict[str, object] = {
            "time": f"{stamp}.{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        # ensure_ascii: every newline and control character is escaped, so one record is one
        # line whatever its message holds (text from the network included).
        return json.dumps(fields, ensure_ascii=True)


def _formatter(fmt: str | None) -> logging.Formatter:
    chosen = os.environ.get(FORMAT_ENV_VAR, "text") if fmt is None else fmt
    name = chosen.strip().lower()
    if name == "json":
        return JsonFormatter()
    if name in ("text", ""):
        return logging.Formatter(_FORMAT)
    known = ", ".join(get_args(LogFormat))
    raise ValueError(f"{FORMAT_ENV_VAR}: unknown log format {chosen!r} (known: {known})")


def configure_logging(
    spec: str | None = None,
    *,
    default: str = "warn",
    stream: TextIO | None = None,
    fmt: LogFormat | None = None,
) -> None:
    """Install one handler on the root logger (on ``stream``, default stderr) and apply
    ``spec`` (default: the RAFTPY_LOG environment variable; when unset, ``default``).
    ``fmt`` is ``"text"`` or ``"json"`` (default: the RAFTPY_LOG_FORMAT environment variable;
    when unset, text). Calling it again replaces the handler it installed before, not
    handlers of your own. Raises ``ValueError`` for a malformed spec or an unknown format,
    naming it, before changing anything."""
    text = os.environ.get(ENV_VAR, default) if spec is None else spec
    formatter = _formatter(fmt)
    base, levels = parse_log_spec(default)
    base, levels_from_spec = parse_log_spec(text, base)
    levels.update(levels_from_spec)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_raftpy", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler._raftpy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(base)
    # Loggers named earlier keep their levels unless the spec names them again.
    logging.getLogger("raftpy").setLevel(logging.NOTSET)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
