"""benchmarks.machine.compile_raftpy: after it, a process importing raftpy compiles nothing
(every module's cached bytecode is there and matches its source), whatever
PYTHONDONTWRITEBYTECODE says."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import compile_raftpy

import raftpy

PACKAGE = Path(raftpy.__file__).resolve().parent


def _fresh_bytecode(source: Path) -> bool:
    """Whether Python would load ``source``'s cached bytecode instead of compiling it (the
    timestamp-checked .pyc header of PEP 552: flags 0, then the source's mtime and size)."""
    cached = Path(importlib.util.cache_from_source(str(source)))
    if not cached.exists():
        return False
    header = cached.read_bytes()[:16]
    st = source.stat()
    return (
        header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0
        and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF
    )


def test_every_module_has_fresh_bytecode_after_it() -> None:
    assert compile_raftpy()
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 100  # the whole package, subpackages included
    stale = [str(s.relative_to(PACKAGE)) for s in sources if not _fresh_bytecode(s)]
    assert stale == []


def test_a_server_process_then_imports_raftpy_without_compiling() -> None:
    compile_raftpy()
    # -X importtime cannot tell compiling from loading; a source loader that is asked for
    # source code only when it compiles can: count those calls in a child that imports what a
    # hashmap server imports, with writing bytecode off as on a machine that sets it.
    probe = (
        "import importlib.machinery as m\n"
        "compiled = []\n"
        "orig = m.SourceFileLoader.source_to_code\n"
        "def spy(self, data, path, *a, **k):\n"
        "    compiled.append(path)\n"
        "    return orig(self, data, path, *a, **k)\n"
        "m.SourceFileLoader.source_to_code = spy\n"
        "import raftpy.examples.hashmap\n"
        "print(sum('raftpy' in str(p) for p in compiled))\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
