"""RAFTPY_LOG: log levels per logger, in the style of Rust's RUST_LOG (README.md, "Run a cluster").

A spec is a comma-separated list of directives. A bare level sets the default for every
logger; ``name=level`` sets one logger (and its children)::

    RAFTPY_LOG=debug                        # everything at debug
    RAFTPY_LOG=raftpy.core=debug,info       # the core at debug, the rest at info
    RAFTPY_LOG=warn,raftpy.transport=off    # quiet transport

Levels: ``trace`` (same as debug), ``debug``, ``info``, ``warn``/``warning``, ``error``, ``off``.
(Named ``logconfig`` so it cannot shadow the standard library's ``logging``.)
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

ENV_VAR = "RAFTPY_LOG"

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


def configure_logging(
    spec: str | None = None, *, default: str = "warn", stream: TextIO | None = None
) -> None:
    """Install one stderr handler and apply ``spec`` (default: the RAFTPY_LOG environment
    variable; when unset, ``default``). Raises ``ValueError`` for a malformed spec."""
    text = os.environ.get(ENV_VAR, default) if spec is None else spec
    base, levels = parse_log_spec(default)
    base, levels_from_spec = parse_log_spec(text, base)
    levels.update(levels_from_spec)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_raftpy", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler._raftpy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(base)
    # Loggers named earlier keep their levels unless the spec names them again.
    logging.getLogger("raftpy").setLevel(logging.NOTSET)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
