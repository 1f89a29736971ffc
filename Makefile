# raftpy developer commands. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test test-fast lint typecheck bytecode pytest bench demo demo-sim clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/ruff format --check src tests $(wildcard benchmarks)

typecheck: $(STAMP)
	$(BIN)/mypy src

# The servers and command lines that tests and the demo start import raftpy at every start.
# Where PYTHONDONTWRITEBYTECODE is set (some CI and container images set it), nothing caches
# an editable install's compiled modules, and each start compiles them all again: 0.3-0.5 s of
# CPU on a 2-core machine, about 30% of the process tests' time. compileall writes them once (a
# few ms when up to date); Python still checks each against its source. (The benchmarks do
# the same for themselves: benchmarks.machine.compile_raftpy.)
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src

pytest: $(STAMP) bytecode
	$(BIN)/pytest

test: lint typecheck pytest

# The seconds-long unit tests only: no server processes, no randomized sweeps.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not process and not sweep"

# The `bench` extra (grpcio for etcd's gRPC API, pysyncobj) is for the comparisons only: the
# tests never need it, and the benchmarks skip a peer whose package is missing, with a note.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks

demo: $(STAMP) bytecode
	$(BIN)/python -m raftpy.demos.cluster

demo-sim: $(STAMP)
	$(BIN)/python -m raftpy.demos.sim

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find src tests benchmarks -name __pycache__ -prune -exec rm -rf {} +
