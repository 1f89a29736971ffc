"""The set workload of the Jepsen harness: the hash map's ``add``, the exactly-once checker on
handcrafted histories, the settings line and replay command of a run's summary, the command
line, and short runs against real clusters (process tests, marked below)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
from pathlib import Path

import msgspec
import pytest

from raftpy.cli import main
from raftpy.cli.jepsen import _config, add_parser
from raftpy.examples.hashmap import HashMapStateMachine
from raftpy.testing.jepsen import JepsenConfig, SetAdd, check_sets, run_jepsen, set_checks
from raftpy.testing.jepsen.config import options_line, replay_command
from raftpy.testing.jepsen.report import JepsenResult, summarize, write_report
from raftpy.testing.jepsen.workload import Outcome, Sample

# --- The hash map's add ---------------------------------------------------------------------


def _apply(sm: HashMapStateMachine, *op: str) -> bytes:
    return sm.apply(msgspec.msgpack.encode(op))


def test_hashmap_add_appends_and_returns_the_new_length() -> None:
    sm = HashMapStateMachine()
    assert _apply(sm, "add", "s", '"a"') == b"1"
    assert _apply(sm, "add", "s", '"b"') == b"2"
    assert _apply(sm, "add", "s", '"a"') == b"3"  # not idempotent: that is the point
    assert json.loads(sm.query(b"s")) == ["a", "b", "a"]
    assert _apply(sm, "add", "t", '{"x": [1]}') == b"1"
    assert json.loads(sm.query(b"t")) == [{"x": [1]}]
    # A value that is not a list, or an element that is not JSON: that request fails, and
    # nothing changes.
    _apply(sm, "put", "p", "3")
    with pytest.raises(ValueError, match="not a list"):
        _apply(sm, "add", "p", '"a"')
    with pytest.raises(ValueError, match="not JSON"):
        _apply(sm, "add", "s", "{oops")
    with pytest.raises(ValueError, match="unknown hashmap command"):
        _apply(sm, "add", "s")
    assert sm.query(b"p") == b"3" and json.loads(sm.query(b"s")) == ["a", "b", "a"]


# --- The checker ----------------------------------------------------------------------------


def _add(key: str, element: str, outcome: Outcome, client: int = 1) -> SetAdd:
    return SetAdd(client, key, element, outcome, call=0, ret=1)


def test_check_sets_finds_a_duplicate_and_a_loss() -> None:
    adds = [
        _add("s", "1-1", "ok"),
        _add("s", "1-2", "ok"),  # lost
        _add("s", "2-1", "ok"),  # applied twice
        _add("t", "2-2", "ok"),
    ]
    final: dict[str, object] = {"s": ["1-1", "2-1", "2-1"], "t": ["2-2"]}
    v = check_sets(adds, final)
    assert v.duplicates == {"2-1": 2}
    assert v.lost == ["1-2"]
    assert not v.unexpected and not v.failed_present and not v.valid
    checks = {c.name: c for c in set_checks(v)}
    once = checks["every add applied at most once"]
    assert not once.passed and "1 element(s)" in once.detail and "2-1 x2" in once.detail
    lost = checks["no acknowledged add lost"]
    assert not lost.passed and "1 of 4 acknowledged" in lost.detail and "1-2" in lost.detail
    assert checks["nothing present that was not added"].passed


def test_check_sets_allows_an_unknown_add_once_or_not_at_all() -> None:
    adds = [
        _add("s", "1-1", "ok"),
        _add("s", "1-2", "unknown"),  # took effect
        _add("s", "1-3", "unknown"),  # did not
        _add("s", "1-4", "failed"),  # definitely not
    ]
    v = check_sets(adds, {"s": ["1-2", "1-1"]})
    assert v.valid, v
    assert (v.acknowledged, v.unknown, v.failed, v.present, v.unknown_present) == (1, 2, 1, 2, 1)
    assert all(c.passed for c in set_checks(v))
    # An unknown add present twice is a duplicate all the same.
    v = check_sets(adds, {"s": ["1-2", "1-1", "1-2"]})
    assert v.duplicates == {"1-2": 2} and not v.valid


def test_check_sets_flags_elements_never_attempted_or_definitely_failed() -> None:
    adds = [_add("s", "1-1", "ok"), _add("t", "1-2", "failed"), _add("t", "1-3", "ok")]
    # "9-9" was never added anywhere; "1-1" was added to s, not t; "1-2" failed definitely.
    v = check_sets(adds, {"s": ["1-1", "9-9"], "t": ["1-3", "1-1", "1-2"], "u": ["x"]})
    assert sorted(v.unexpected) == ["s:9-9", "t:1-1", "u:x"]
    assert v.failed_present == ["1-2"]
    assert not v.duplicates and not v.lost and not v.valid
    stray = {c.name: c for c in set_checks(v)}["nothing present that was not added"]
    assert not stray.passed
    assert "3 never attempted" in stray.detail and "1 whose add failed definitely" in stray.detail


def test_check_sets_cannot_judge_a_set_it_could_not_read() -> None:
    adds = [_add("s", "1-1", "ok"), _add("t", "1-2", "ok"), _add("m", "1-3", "unknown")]
    v = check_sets(adds, {"s": ["1-1"], "m": {"not": "a list"}})
    assert v.unread == ["t"] and v.malformed == ["m"] and not v.lost and not v.valid
    lost = {c.name: c for c in set_checks(v)}["no acknowledged add lost"]
    assert not lost.passed and "could not read 1 set(s): t" in lost.detail
    # A set never written reads as null: its acknowledged adds are lost.
    v = check_sets([_add("s", "1-1", "ok")], {"s": None})
    assert v.lost == ["1-1"]
    # Element ids must be unique per set, or the verdict would mean nothing.
    with pytest.raises(ValueError, match="added twice"):
        check_sets([_add("s", "1-1", "ok"), _add("s", "1-1", "unknown")], {})


def test_set_checks_name_how_many_and_which_elements() -> None:
    adds = [_add("s", f"1-{i}", "ok") for i in range(25)]
    v = check_sets(adds, {"s": [f"1-{i}" for i in range(25) if i % 2] * 2})
    once, lost, _ = set_checks(v)
    assert "12 element(s) present more than once" in once.detail and "and 2 more" in once.detail
    assert "13 of 25 acknowledged adds missing" in lost.detail and "and 3 more" in lost.detail


def test_the_summary_counts_indeterminate_writes_duplicates_and_losses(tmp_path: Path) -> None:
    adds = [_add("s", "1-1", "ok"), _add("s", "1-2", "ok"), _add("s", "1-3", "unknown")]
    verdict = check_sets(adds, {"s": ["1-1", "1-1", "1-3"]})
    result = JepsenResult(
        config=JepsenConfig(workload="set", nemesis="kill", seconds=60.0),
        seed=1414,
        history=[],
        checks=set_checks(verdict),
        linearizability=None,
        violations=[],
        windows=[],
        samples=[Sample("add", 0, 1_000_000, a.outcome) for a in adds],
        started=0,
        workload_seconds=1.0,
        workload_ops=3,
        out_dir=tmp_path,
        adds=adds,
        set_verdict=verdict,
    )
    result.summary = summarize(result)
    write_report(result)
    text = (tmp_path / "summary.txt").read_text()
    assert "writes that ended indeterminate: 1 of 3 (33.333%)" in text
    assert "duplicates 1, losses 1, unknown adds applied 1" in text
    assert "1-1 x2" in text and "missing: 1-2" in text and "valid: NO" in text
    assert "replay: raftpy jepsen --workload set --seconds 60 --nemesis kill --seed 1414" in text
    assert "options: workload=set nodes=3" in text
    assert len((tmp_path / "adds.jsonl").read_text().splitlines()) == 3


# --- Settings, replay, the command line -----------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftpy")
    add_parser(parser.add_subparsers())
    return parser


def test_the_replay_command_gives_back_the_same_settings(tmp_path: Path) -> None:
    config = JepsenConfig(
        workload="set",
        nemesis="kill",
        seconds=60.0,
        op_timeout=0.123456789,
        unsafe_resend=True,
        out_dir=tmp_path,
        server_args=("--snapshot-entries", "300"),
    )
    command, missing = replay_command(config, 1414)
    assert not missing
    argv = shlex.split(command)
    assert argv[:2] == ["raftpy", "jepsen"]
    assert "--seed" in argv and "--workload" in argv and "--unsafe-resend" in argv
    assert "--nodes" not in argv  # defaults are left out
    replayed = _config(_parser().parse_args(argv[1:]))
    assert replayed == dataclasses.replace(config, seed=1414, out_dir=replayed.out_dir)
    # What the command line cannot give is named, not dropped silently.
    odd = dataclasses.replace(config, read_fraction=0.5, server_env={"X": "1"})
    _, missing = replay_command(odd, 1)
    assert missing == ["read_fraction=0.5", "server_env={'X': '1'}"]
    line = options_line(config, 1414)
    assert "workload=set" in line and "seed=1414" in line and "op_timeout=0.123456789" in line


def test_cli_jepsen_workload_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jepsen", "--workload", "bogus"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    args = _parser().parse_args(["jepsen", "--workload", "set", "--unsafe-resend"])
    config = _config(args)
    assert config.workload == "set" and config.unsafe_resend
    assert _config(_parser().parse_args(["jepsen"])).workload == "register"
    with pytest.raises(ValueError, match="unknown workload"):
        JepsenConfig(workload="bag").validate()  # type: ignore[arg-type]


# --- Runs against real clusters -------------------------------------------------------------


@pytest.mark.process
@pytest.mark.timeout(180)
def test_a_short_set_run_under_leader_kills_applies_every_add_once(tmp_path: Path) -> None:
    """Under leader kills the clients resend through their sessions: every add is applied
    exactly once, and hardly any ends unknown."""
    config = JepsenConfig(
        workload="set",
        seconds=8,
        nemesis="kill-leader",
        interval=1.5,
        seed=14,
        out_dir=tmp_path,
        server_args=("--snapshot-entries", "300"),
    )
    result = asyncio.run(run_jepsen(config))
    print(result.summary)
    assert result.valid, result.summary
    assert any(w.fault for w in result.windows), "the nemesis injected no fault"
    verdict = result.set_verdict
    assert verdict is not None and verdict.acknowledged > 500
    assert verdict.present >= verdict.acknowledged
    # Each client has a write in flight at the leader when it dies: a client that did not
    # resend it (no session) would end it unknown, about one per client per kill. With
    # sessions the resend succeeds within the deadline (a slow election may cost a few).
    assert verdict.unknown < config.clients, result.summary
    summary = (tmp_path / "summary.txt").read_text()
    assert "writes that ended indeterminate: " in summary
    assert "replay: raftpy jepsen --workload set" in summary and "--seed 14" in summary
    lines = (tmp_path / "adds.jsonl").read_text().splitlines()
    assert len(lines) == len(result.adds) and json.loads(lines[0])["key"]
    assert not (tmp_path / "history.jsonl").exists()


@pytest.mark.process
@pytest.mark.timeout(300)
def test_the_set_checker_finds_adds_resent_without_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--unsafe-resend`` an add whose connection broke under a leader kill is resent as
    a new write: when the first had been applied, the element is there twice, and the run
    must fail naming the duplicates. At most 3 runs of 10 s (each kill usually makes several)."""
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        args = ["jepsen", "--workload", "set", "--unsafe-resend", "--nemesis", "kill-leader"]
        args += ["--seconds", "10", "--interval", "1.5", "--seed", str(attempt + 1)]
        code = main([*args, "--out", str(out), "--quiet"])
        text = capsys.readouterr().out
        print(text)
        if code == 1:
            assert "[FAIL] every add applied at most once: " in text, text
            assert "present more than once" in text and "valid: NO" in text
            assert "[ok] no acknowledged add lost" in text
            return
        assert code == 0, text
    pytest.fail("3 runs resending adds after unknown outcomes found no duplicate")
