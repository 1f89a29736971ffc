"""pyproject.toml keeps installs quiet: the license as an SPDX string (the TOML-table form makes
setuptools print a deprecation warning, three times per install) with a setuptools that
understands it, and no ``License ::`` classifier (deprecated beside an SPDX license)."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string() -> None:
    data = tomllib.loads(PYPROJECT.read_text())
    assert data["project"]["license"] == "Apache-2.0"
    classifiers = data["project"].get("classifiers", [])
    assert not [c for c in classifiers if c.startswith("License ::")]
    # SPDX strings are understood from setuptools 77 on; older ones reject or warn.
    assert "setuptools>=77" in data["build-system"]["requires"]
