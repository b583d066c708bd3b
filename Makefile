# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: the movie theater of the seed, races and hung payments included.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The whole test suite: what CI runs (.ci/run).
# tests/ runs twice: with private trio access (the default) and without it (TRIOSERVER_PRIVATE=0).
test: $(STAMP)
	$(BIN)/python -m pytest -q
	TRIOSERVER_PRIVATE=0 $(BIN)/python -m pytest -q tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict trioserver tests/type_tests
	$(BIN)/pyright
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	$(BIN)/python -m sphinx -W --keep-going -q -b doctest docs docs/_build/doctest

docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python -m benchmarks
