"""Exactly-once writes with real server processes on 127.0.0.1: a command-line write opens one
session and closes it, and a counter incremented with cas by concurrent clients while the
leader is SIGKILLed again and again ends at exactly the number of increments the clients
were told succeeded (none applied twice, none lost). Every wait is bounded; every process is
killed when a test ends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from raftpy.client import SyncClient
from raftpy.errors import ClusterUnavailableError, IndeterminateError, RaftError
from raftpy.examples.hashmap import HashMapClient
from tests.examples.test_examples_process import leader_of
from tests.processhelpers import ProcessCluster, run_cli, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def test_each_command_line_write_opens_one_session_and_closes_it(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        leader = leader_of(c)
        with SyncClient([c.address(leader)], timeout=10, sessions=False) as probe:
            for args in (("put", "k", "v"), ("cas", "k", "v", "w"), ("get", "k")):
                before = probe.status(c.address(leader))
                r = run_cli("hashmap", *args, *c.addresses)
                assert r.returncode == 0, (args, r.stderr)
                after = probe.status(c.address(leader))
                assert after.sessions == 0, args  # closed again
                if after.term == before.term and after.role == "leader":
                    assert after.commit is not None and before.commit is not None
                    # A write: open, the write, close. A read: nothing in the log.
                    expected = 0 if args[0] == "get" else 3
                    assert after.commit - before.commit == expected, args
        r = run_cli("hashmap", "get", "k", *c.addresses)
        assert (r.returncode, r.stdout.strip()) == (0, '"w"'), r.stderr


def test_cas_increments_through_leader_kills_are_applied_exactly_once(tmp_path: Path) -> None:
    workers, kills = 4, 3
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        with HashMapClient(c.addresses, timeout=30) as client:
            client.put("n", 0)
        stop = threading.Event()
        lock = threading.Lock()
        counts = {"done": 0, "raced": 0, "unknown": 0, "not-done": 0}
        errors: list[BaseException] = []

        def count(what: str) -> None:
            with lock:
                counts[what] += 1

        def work() -> None:
            try:
                with HashMapClient(c.addresses, timeout=30) as mine:
                    while not stop.is_set():
                        try:
                            value = mine.get("n")
                        except ClusterUnavailableError:
                            continue
                        try:
                            swapped = mine.cas("n", value, value + 1)
                        except IndeterminateError:
                            count("unknown")
                            continue
                        except RaftError:  # definite: not applied
                            count("not-done")
                            continue
                        count("done" if swapped else "raced")
            except BaseException as exc:  # a bug in the test or the client: report it
                errors.append(exc)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()

        def progress(what: str, more: int = 10) -> None:
            """Wait until ``more`` further increments succeeded."""
            with lock:
                target = counts["done"] + more

            def reached() -> bool:
                with lock:
                    return counts["done"] >= target

            wait_until(reached, 60, f"{more} increments {what}")

        try:
            for _ in range(kills):
                progress("before a kill")
                leader = leader_of(c, timeout=30)
                c.kill(leader)  # SIGKILL, with writes in flight
                progress("with the leader dead")
                c.start(leader)
            progress("at the end")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        with HashMapClient(c.addresses, timeout=30) as client:
            final = client.get("n")
        print(f"counter {final}, outcomes {counts}")
        # Every increment a client was told succeeded is in the counter once; a duplicate
        # application would have answered some client "false" for an applied increment (the
        # counter would be ahead), a lost one would leave it behind.
        assert counts["unknown"] == 0, counts
        assert final == counts["done"], (final, counts)
