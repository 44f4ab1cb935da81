# The two commands a newcomer needs:  make run  (the daemon on the embedded default)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint services bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/stacdrop run

# Installs and starts what the tests talk to (RabbitMQ, PostgreSQL, Ceph RGW), runs the linters, then the whole suite.
test: install services lint
	STACDROP_REQUIRE_SERVICES=1 $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# ruff and mypy as configured in pyproject.toml ([tool.ruff], [tool.mypy]); both must be clean.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

services:
	bash scripts/services.sh

bench: install
	$(BIN)/python bench/bench_cog.py
	$(BIN)/python bench/bench_small_files.py
	$(BIN)/python bench/bench_stac_publish.py --skip-single

clean:
	rm -rf $(VENV) data inbox .pytest_cache
