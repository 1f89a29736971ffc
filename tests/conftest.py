"""Markers by module, so ``make test-fast`` can leave out what takes more than seconds.

- ``process``: starts real server processes (or the harness that does);
- ``sweep``: seeded randomized sweeps and long searches (the simulator fuzz, property tests).

``make test`` runs everything; ``make test-fast`` runs ``-m "not process and not sweep"``.
"""

from __future__ import annotations

import pytest

from tests.tlshelpers import TlsFiles, make_tls_files

MARKERS = {
    "process": (
        "tests/cli/test_cli_check.py",
        "tests/cli/test_cli_snapshot.py",
        "tests/demos/test_demo_cluster.py",
        "tests/examples/test_examples_process.py",
        "tests/examples/test_snapshot_process.py",
        "tests/examples/test_tls_process.py",
        "tests/testing/test_jepsen.py",
    ),
    "sweep": (
        "tests/storage/test_wal_properties.py",
        "tests/testing/test_linearizability.py",
        "tests/testing/test_linearizability_vectors.py",
        "tests/testing/test_sim_file_storage.py",
        "tests/testing/test_sim_fuzz.py",
        "tests/testing/test_sim_fuzz_members.py",
        "tests/transport/test_fuzz_live.py",
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "process: starts real server processes")
    config.addinivalue_line("markers", "sweep: seeded randomized sweeps and long searches")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        for marker, modules in MARKERS.items():
            if path in modules:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Real certificates made once per session by ``raftpy tls init`` (tests/tlshelpers.py)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))
