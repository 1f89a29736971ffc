"""The demo (``python -m raftpy.demo``) tells the whole story and rejects bad arguments."""

from __future__ import annotations

import re

import pytest

from raftpy.demo import main


def test_demo_tells_the_story(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    leaders = [(int(n), int(t)) for n, t in re.findall(r"node (\d+) is LEADER of term (\d+)", out)]
    assert len(leaders) >= 2, out
    (first, first_term), (last, last_term) = leaders[0], leaders[-1]
    assert f"partition: node {first} (the leader) is cut off" in out
    assert last != first and last_term > first_term
    assert "COMMITTED" in out
    assert "DISCARDED" in out  # the old leader's uncommitted entries
    assert f"node {first} steps down" in out
    assert re.search(r"^CONVERGED: all 5 logs are identical", out, re.MULTILINE), out
    assert 25 <= out.count("\n") <= 80


def test_demo_is_deterministic_per_seed(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--seed", "3"])
    first = capsys.readouterr().out
    main(["--seed", "3"])
    assert capsys.readouterr().out == first
    assert "seed 3" in first


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err
