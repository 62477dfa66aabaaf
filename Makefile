# `make run` and `make test` do all the set-up on a fresh machine: they create .venv/ and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/changecat demo --out build

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_aef.py
	$(BIN)/python benchmarks/bench_cluster.py

clean:
	rm -rf build .pytest_cache

# STAC Browser for tests/test_stac_browser.py: Debian's chromium (and node/npm if missing), then the npm
# package built once into build/stac-browser/dist and reused. A step that cannot run leaves its reason in
# build/stac-browser/SKIPPED (the test skips with it) rather than failing `make test`.
STAC_BROWSER_VERSION := 4.0.1
OL_STAC_VERSION := 1.1.0
.PHONY: stac-browser
stac-browser:
	bash tests/browser/setup_stac_browser.sh build/stac-browser $(STAC_BROWSER_VERSION) $(OL_STAC_VERSION)

test: stac-browser
