"""Fixtures of the security regression suite: one attacked cluster per mode (plain TCP, mutual
TLS) per module, started again only after a test left it damaged.

``@modes(...)`` runs a test once per mode. A mode whose defence is not built yet is marked
``xfail(strict=True)`` with the reason naming the missing fix: the test states the correct
expectation, the branch stays green, and the marker must go when the fix lands (an XPASS
fails). The TLS mode is skipped while ``raftpy tls`` does not exist, and turns on by itself
when it does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.cluster import TLS_UNAVAILABLE, AttackedCluster, tls_available

MODES = ("plain", "tls")


def modes(
    *, plain: str | None = None, tls: str | None = None, only: str | None = None
) -> pytest.MarkDecorator:
    """Parametrize the ``attacked`` cluster over plain TCP and mutual TLS. ``plain=`` /
    ``tls=``: the fix that mode still needs (strict xfail until it lands). ``only=``: run in
    that mode alone."""
    params = []
    for mode, pending in (("plain", plain), ("tls", tls)):
        if only is not None and mode != only:
            continue
        marks: list[pytest.MarkDecorator] = []
        if pending is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=f"needs {pending}"))
        params.append(pytest.param(mode, marks=marks, id=mode))
    return pytest.mark.parametrize("mode", params, indirect=True)


@pytest.fixture(scope="module")
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    if value == "tls" and not tls_available():
        pytest.skip(TLS_UNAVAILABLE)
    return value


@pytest.fixture(scope="module")
def _cluster(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackedCluster]:
    root: Path = tmp_path_factory.mktemp(f"attacked-{mode}")
    cluster = AttackedCluster(root, tls=mode == "tls")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def attacked(_cluster: AttackedCluster) -> Iterator[AttackedCluster]:
    """The module's cluster, healthy: started again when the previous test did not end with
    :meth:`AttackedCluster.intact` passing. A test that does not reach that check (it failed,
    or it expected a failure) leaves the cluster marked dirty."""
    if _cluster.dirty:
        _cluster.fresh()
    _cluster.dirty = True
    yield _cluster
