"""The mutation runner (``raftpy.testing.mutants``, docs/mutants.md): every catalogued mutant
still applies to the source exactly once, a refactor that breaks one fails loudly, and one
quick mutant (a double vote) is planted in a scratch copy and killed by the fuzz within a few
seeds, through the real runner and subprocess.

The whole catalogue (every mutant killed within the seed budget) runs only with
``RAFTPY_MUTANTS=1`` (minutes on 2 cores); ``RAFTPY_MUTANTS_SEEDS`` sets the budget.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import raftpy
from raftpy.testing.mutants import (
    CATALOGUE,
    Edit,
    Mutant,
    MutantError,
    apply_mutant,
    check_catalogue,
    fuzz_case,
    main,
    run_catalogue,
    run_mutant,
    table,
)

SOURCE = Path(raftpy.__file__).resolve().parent


def test_catalogue_has_at_least_twenty_distinct_mutants() -> None:
    names = [m.name for m in CATALOGUE]
    assert len(names) >= 20
    assert len(set(names)) == len(names)
    for m in CATALOGUE:
        assert m.edits and m.rule
        assert "§" in m.rule, f"{m.name}: the rule names no paper or thesis section"
        for e in m.edits:
            assert e.old != e.new


@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.name)
def test_mutant_applies_exactly_once(mutant: Mutant) -> None:
    for edit in mutant.edits:
        text = (SOURCE / edit.file).read_text(encoding="utf-8")
        assert text.count(edit.old) == 1, (
            f"{mutant.name}: its text occurs {text.count(edit.old)} times in "
            f"src/raftpy/{edit.file}; update the catalogue to the refactored code"
        )


def test_check_catalogue_passes_on_the_source() -> None:
    check_catalogue(SOURCE)


def test_a_mutant_whose_text_is_gone_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "x.py").write_text("a = 1\na = 1\n", encoding="utf-8")
    missing = Mutant("missing", "Raft §5", (Edit("core/x.py", "b = 2", "b = 3"),))
    twice = Mutant("twice", "Raft §5", (Edit("core/x.py", "a = 1", "a = 2"),))
    with pytest.raises(MutantError, match="occurs 0 times"):
        apply_mutant(tmp_path, missing)
    with pytest.raises(MutantError, match="occurs 2 times"):
        apply_mutant(tmp_path, twice)
    assert (tmp_path / "core" / "x.py").read_text(encoding="utf-8") == "a = 1\na = 1\n"


def test_fuzz_cases_cover_every_size_reads_and_schedule() -> None:
    cases = {fuzz_case(k, "mixed") for k in range(24)}
    assert {n for n, _, _ in cases} == {3, 5, 7}
    assert {r for _, r, _ in cases} == {False, True}
    assert {s for _, _, s in cases} == {"classic", "swarm"}


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(m.name in out for m in CATALOGUE)


def test_a_double_vote_is_killed_within_a_few_seeds() -> None:
    """The machinery end to end: scratch copy, mutant applied, fuzz in a subprocess."""
    double_vote = next(m for m in CATALOGUE if m.name == "double_vote")
    result = run_mutant(double_vote, seeds=40, time_limit=120.0, schedule="mixed")
    assert not result.broken, result.error
    assert result.killed, f"the fuzz missed a double vote: {result}"
    assert result.seed is not None and result.seed < 40
    assert "|" in table([result])


def test_the_unmutated_source_survives_the_same_seeds() -> None:
    """The control: the runner's child, without a mutant, passes those seeds (so a kill is
    the mutant's doing, not the harness's)."""
    noop = Mutant(
        "none",
        "Raft §5 (no change)",
        (Edit("core/quorum.py", "return n // 2 + 1", "return n // 2 + 1  # unchanged"),),
    )
    result = run_mutant(noop, seeds=12, time_limit=120.0, schedule="mixed")
    assert not result.broken, result.error
    assert not result.killed, f"the unmutated code failed the fuzz: {result}"
    assert result.tried == 12


@pytest.mark.skipif(
    not os.environ.get("RAFTPY_MUTANTS"),
    reason="the full mutation run takes minutes: RAFTPY_MUTANTS=1 .venv/bin/pytest "
    "tests/testing/test_mutants.py -k catalogue (or python -m raftpy.testing.mutants)",
)
def test_every_mutant_in_the_catalogue_is_killed() -> None:
    seeds = int(os.environ.get("RAFTPY_MUTANTS_SEEDS", "2000"))
    results = run_catalogue(
        CATALOGUE, seeds, time_limit=600.0, schedule="mixed", jobs=2, progress=False
    )
    print(table(results))
    survivors = [r.name for r in results if not r.killed]
    assert not survivors, f"mutants not killed within {seeds} seeds: {survivors}"
