"""Benchmark of the linearizability checker (raftpy.testing.linearizability).

``run()`` checks seeded random linearizable histories of 10,000 operations over 10 keys (with
10 and with 50 concurrent clients) and,
when the shared test vectors are present next to the repository (``../shared``), the
porcupine ``c50`` key-value histories. It returns the seconds each took. Importing this module
does nothing else.
"""

from __future__ import annotations

import importlib.util
import random
import time
from pathlib import Path
from types import ModuleType

from raftpy.testing.history import Operation, Value
from raftpy.testing.linearizability import Verdict, check, check_operations

_REPO = Path(__file__).resolve().parents[1]
_VECTORS = _REPO.parent / "shared" / "linearizability-vectors"
_VECTOR_TESTS = _REPO / "tests" / "testing" / "test_linearizability_vectors.py"


def random_history(
    seed: int, n_ops: int = 10_000, n_keys: int = 10, n_clients: int = 10
) -> list[Operation]:
    """A random linearizable key-value history.

    Each client issues operations one after another with random durations and pauses; each
    operation takes effect at a random instant inside its interval, and the results are those
    of a real register per key executed in the order of those instants. A small share of
    writes and cas are recorded as indeterminate (some of them never took effect).
    """
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    planned: list[tuple[int, int, int, int, str, str, int, int]] = []
    clock = [rng.randrange(100) for _ in range(n_clients)]
    for n in range(n_ops):
        c = rng.randrange(n_clients)
        call = clock[c] + rng.randrange(1, 50)
        ret = call + rng.randrange(1, 200)
        clock[c] = ret
        point = rng.randrange(call, ret + 1)
        kind = rng.choice(("read", "read", "write", "cas"))
        planned.append((point, n, c, call, kind, rng.choice(keys), rng.randrange(5), ret))
    planned.sort()
    registers: dict[str, Value] = {}
    ops: list[tuple[int, Operation]] = []
    for point, n, c, call, kind, key, v, ret in planned:
        del point
        current = registers.get(key)
        unknown = kind != "read" and rng.random() < 0.02
        happened = not (unknown and rng.random() < 0.5)
        if kind == "read":
            op = Operation(client=c, op="read", key=key, call=call, ret=ret, value=current)
        elif kind == "write":
            if happened:
                registers[key] = v
            op = Operation(
                client=c, op="write", key=key, call=call, ret=ret, value=v, unknown=unknown
            )
        else:
            expected = current if isinstance(current, int) and rng.random() < 0.5 else v
            swapped = current == expected
            if happened and swapped:
                registers[key] = (v + 1) % 5
            op = Operation(
                client=c,
                op="cas",
                key=key,
                call=call,
                ret=None if unknown else ret,
                from_=expected,
                to=(v + 1) % 5,
                ok=None if unknown else swapped,
                unknown=unknown,
            )
        ops.append((n, op))
    ops.sort(key=lambda item: item[0])
    return [op for _, op in ops]


def _load_vector_module() -> ModuleType:
    """Import tests/testing/test_linearizability_vectors.py, where the vector parsers live."""
    spec = importlib.util.spec_from_file_location("_raftpy_lin_vectors", _VECTOR_TESTS)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_VECTOR_TESTS}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run() -> dict[str, float]:
    """Run the benchmark; return (and print) seconds per case."""
    results: dict[str, float] = {}
    for clients, name in ((10, ""), (50, "_50_clients")):
        history = random_history(seed=1, n_clients=clients)
        start = time.perf_counter()
        result = check(history)
        results[f"linearizability_10k_ops_10_keys{name}_s"] = time.perf_counter() - start
        if result.verdict is not Verdict.LINEARIZABLE:
            raise AssertionError(f"a generated history must be linearizable: {result.explain()}")
    if _VECTORS.is_dir() and _VECTOR_TESTS.is_file():
        vectors = _load_vector_module()
        for name, want in (("c50-ok", Verdict.LINEARIZABLE), ("c50-bad", Verdict.NOT_LINEARIZABLE)):
            ops = vectors.parse_kv_edn(_VECTORS / "kv" / f"{name}.txt")
            start = time.perf_counter()
            got = check_operations(ops, vectors.KvAppendModel())
            results[f"linearizability_{name.replace('-', '_')}_s"] = time.perf_counter() - start
            if got.verdict is not want:
                raise AssertionError(f"{name}: expected {want}, got {got.verdict}")
    for name, seconds in results.items():
        print(f"{name}: {seconds:.3f}")
    return results


if __name__ == "__main__":
    run()
