# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The oldest trio pyproject.toml supports (trio>=0.31), in a second venv that `make test` builds.
OLD_TRIO := 0.31
OLD_VENV := .venv-trio031
OLD_BIN := $(OLD_VENV)/bin
OLD_STAMP := $(OLD_VENV)/.installed

# Runs without private trio access: tests/ and the fault-injection property suite.
PUBLIC_TESTS := tests property_tests/test_faults.py property_tests/test_cleanup_faults.py property_tests/test_instrument_lifecycle.py
# Every pytest run adds to one coverage data file (.coverage); the report comes after all four.
# --cov-fail-under=0: a single run is partial, only the combined report checks fail_under.
COV := --cov=trioserver --cov-branch --cov-append --cov-report= --cov-fail-under=0

.PHONY: demo test bench docs postgresql valgrind

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(OLD_STAMP): pyproject.toml
	test -x $(OLD_BIN)/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_BIN)/python -m pip install --quiet --upgrade pip
	$(OLD_BIN)/python -m pip install --quiet -e '.[dev]' 'trio==$(OLD_TRIO).*'
	touch $(OLD_STAMP)

# The PostgreSQL store's tests start their own server (tests/postgres.py) with initdb and
# pg_ctl: install Debian's postgresql package only when no initdb is found (on the PATH, in
# `pg_config --bindir`, or in /usr/lib/postgresql/*/bin).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgresql:
	@command -v initdb >/dev/null \
	|| { command -v pg_config >/dev/null && test -x "$$(pg_config --bindir)/initdb"; } \
	|| ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	|| { $(SUDO) apt-get update -q \
	     && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

# The benchmarks' instruction counts (`python -m benchmarks --only instructions`) run under
# valgrind: install Debian's package only when none is on the PATH.
valgrind:
	@command -v valgrind >/dev/null \
	|| { $(SUDO) apt-get update -q \
	     && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind; }

# The main job: the movie theater of the seed, races and hung payments included.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The whole test suite: what CI runs (.ci/run).
# pytest runs on the newest trio (.venv) and on the oldest supported one (.venv-trio031), each
# twice: tests/ and property_tests/ with private trio access (the default), then tests/ and
# property_tests/test_faults.py without it (TRIOSERVER_PRIVATE=0). All four runs measure branch
# coverage into one data file; the combined report fails below fail_under (pyproject.toml).
# The crash tests (marked `crash`: real processes and databases killed at random moments) run
# in the first run only (TRIOSERVER_CRASH_TESTS=0 in the others).
test: $(STAMP) $(OLD_STAMP) postgresql
	$(BIN)/python -m coverage erase
	@$(BIN)/python .ci/trio_version.py
	$(BIN)/python -m pytest -q $(COV)
	TRIOSERVER_CRASH_TESTS=0 TRIOSERVER_PRIVATE=0 $(BIN)/python -m pytest -q $(COV) $(PUBLIC_TESTS)
	@$(OLD_BIN)/python .ci/trio_version.py $(OLD_TRIO)
	TRIOSERVER_CRASH_TESTS=0 $(OLD_BIN)/python -m pytest -q $(COV)
	TRIOSERVER_CRASH_TESTS=0 TRIOSERVER_PRIVATE=0 $(OLD_BIN)/python -m pytest -q $(COV) $(PUBLIC_TESTS)
	$(BIN)/python -m coverage report
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict trioserver tests/type_tests
	$(BIN)/pyright
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	$(BIN)/python -m sphinx -W --keep-going -q -b doctest docs docs/_build/doctest

docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP) valgrind
	$(BIN)/python -m benchmarks
