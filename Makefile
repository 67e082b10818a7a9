# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv if it is missing and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck pytest docs bench browser postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,mlflow,dashboard]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# ruff, then the import contracts in pyproject.toml: a wrong-way import fails here.
lint: $(STAMP)
	$(BIN)/ruff check zenmeta tests benchmarks
	$(BIN)/ruff format --check zenmeta tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy --strict zenmeta

# The dashboard's end-to-end test drives Debian's Chromium (Playwright never
# downloads a browser here); install it when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser test"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The store tests start a throwaway PostgreSQL server (tests/_postgres.py);
# install Debian's server when it is missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql for the store tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

pytest: $(STAMP) browser postgres
	$(BIN)/pytest

# No --quiet: with it, mkdocs 1.6 exits 0 on warnings even under --strict.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: lint typecheck docs pytest

bench: $(STAMP) postgres
	$(BIN)/python benchmarks/bench.py --million

clean:
	rm -rf $(VENV) .zenmeta .mypy_cache .ruff_cache .pytest_cache
