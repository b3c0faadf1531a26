# Developer entry points for tidb-memory. `make help` lists them.
# Everything runs from a local .venv so CI and laptops behave the same.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k sqlite -x'`.
PYTEST_ARGS ?=

# Extras for install/test. If pyproject grows a `langgraph` extra it is picked
# up automatically, so those tests run instead of being skipped for lack of deps.
comma := ,
HAS_LANGGRAPH := $(shell grep -Eq '^langgraph[[:space:]]*=' pyproject.toml && echo yes)
EXTRAS ?= test$(if $(HAS_LANGGRAPH),$(comma)langgraph)

# One stamp per extras set, inside the venv so recreating/deleting it invalidates
# them; they also depend on pyproject.toml so dependency edits trigger a reinstall.
stamp = $(VENV)/.stamp-install-$(subst $(comma),-,$(1))
STAMP_TEST  := $(call stamp,$(EXTRAS))
STAMP_BENCH := $(call stamp,$(EXTRAS)$(comma)bench)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help venv install install-bench langchain-core-tests demo test test-lowest lint types fmt bench bench-growth clean FORCE

help: ## Show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

# --- environment -------------------------------------------------------------

venv: $(VENV)/pyvenv.cfg ## Create .venv (only if missing or broken)

# Runs on every invocation (FORCE) but only touches the venv when its Python
# cannot import pip (missing, half-created, or its base interpreter vanished).
# Make compares pyvenv.cfg's mtime afterwards, so stamps go stale only on rebuild.
$(VENV)/pyvenv.cfg: FORCE
	@if ! $(BIN)/python -c 'import pip' >/dev/null 2>&1; then \
		echo "==> creating $(VENV) with $(PYTHON)"; \
		rm -rf $(VENV) && \
		$(PYTHON) -m venv $(VENV) && \
		$(PIP) install --quiet --upgrade pip && \
		echo '*' > $(VENV)/.gitignore; \
	fi

install: $(STAMP_TEST) ## Editable install with the [test] extra (cheap when up to date)

install-bench: $(STAMP_BENCH) ## Editable install with [test,bench] extras

# .stamp-install-test-bench installs '.[test,bench]', and so on.
$(VENV)/.stamp-install-%: pyproject.toml $(VENV)/pyvenv.cfg
	@echo "==> pip install -e '.[$(subst -,$(comma),$*)]'"
	@$(PIP) install --quiet -e '.[$(subst -,$(comma),$*)]'
	@touch $@

# langchain-core's own RunnableWithMessageHistory tests (tests/test_blocking.py runs them on our
# class): its sdist ships its tests. Each venv gets those of the version it has installed, once.
# $(call lc_core_tests,VENV) fetches them into VENV/langchain-core-tests.
define lc_core_tests
	@set -e; \
	dir=$(1)/langchain-core-tests; \
	version=$$($(1)/bin/python -c 'import importlib.metadata as m; print(m.version("langchain-core"))'); \
	echo "==> langchain-core $$version tests into $$dir"; \
	rm -rf $$dir; mkdir -p $$dir/sdist; \
	$(1)/bin/python -m pip download --quiet --no-deps --no-binary :all: -d $$dir/sdist \
		"langchain-core==$$version"; \
	tar -xzf $$dir/sdist/*.tar.gz -C $$dir --strip-components=1 \
		--wildcards '*/tests/*' '*/pyproject.toml'; \
	rm -rf $$dir/sdist; \
	touch $$dir/.stamp
endef

langchain-core-tests: $(VENV)/langchain-core-tests/.stamp ## Fetch langchain-core's test suite (sdist)

$(VENV)/langchain-core-tests/.stamp: $(STAMP_TEST)
	$(call lc_core_tests,$(VENV))

# --- running -----------------------------------------------------------------

demo: install ## Run the CLI demo (SQLite unless TIDB_DATABASE_URL is set)
	$(BIN)/tidb-memory demo

# One shell so TIDB_MEMORY_TEST_URL reaches pytest; `set -e` makes any step fail
# the target. ensure-mysql.sh fails loudly rather than letting DB tests skip.
test: install langchain-core-tests ## Lint, format check, mypy --strict, then pytest against MySQL
	@set -e; \
	url=$$(PROBE_PYTHON=$(BIN)/python bash scripts/ensure-mysql.sh); \
	export TIDB_MEMORY_TEST_URL="$$url"; \
	echo "==> ruff check"; $(BIN)/ruff check .; \
	echo "==> ruff format --check"; $(BIN)/ruff format --check .; \
	echo "==> mypy --strict tidb_memory"; $(BIN)/mypy --strict tidb_memory; \
	echo "==> pytest (TIDB_MEMORY_TEST_URL set)"; $(BIN)/pytest $(PYTEST_ARGS)

# The same suite on the LOWEST version of every dependency pyproject.toml allows (its own
# venv; scripts/lowest_pins.py turns each `>=X` into `==X`), so the lower bounds stay true.
# Test tools resolve freely. Reinstalls when pyproject.toml or the script changes.
LOWEST_VENV  ?= .venv-lowest
LOWEST_BIN   := $(LOWEST_VENV)/bin
STAMP_LOWEST := $(LOWEST_VENV)/.stamp-install-lowest-$(subst $(comma),-,$(EXTRAS))

$(STAMP_LOWEST): pyproject.toml scripts/lowest_pins.py
	@if ! $(LOWEST_BIN)/python -c 'import pip' >/dev/null 2>&1; then \
		echo "==> creating $(LOWEST_VENV) with $(PYTHON)"; \
		rm -rf $(LOWEST_VENV) && \
		$(PYTHON) -m venv $(LOWEST_VENV) && \
		$(LOWEST_BIN)/python -m pip install --quiet --upgrade pip && \
		echo '*' > $(LOWEST_VENV)/.gitignore; \
	fi
	@$(PYTHON) scripts/lowest_pins.py > $(LOWEST_VENV)/constraints.txt
	@echo "==> pip install -e '.[$(EXTRAS)]' -c $(LOWEST_VENV)/constraints.txt"
	@$(LOWEST_BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' -c $(LOWEST_VENV)/constraints.txt
	@touch $@

$(LOWEST_VENV)/langchain-core-tests/.stamp: $(STAMP_LOWEST)
	$(call lc_core_tests,$(LOWEST_VENV))

test-lowest: $(STAMP_LOWEST) $(LOWEST_VENV)/langchain-core-tests/.stamp ## pytest on the lowest dependency versions pyproject allows
	@set -e; \
	url=$$(PROBE_PYTHON=$(LOWEST_BIN)/python bash scripts/ensure-mysql.sh); \
	export TIDB_MEMORY_TEST_URL="$$url"; \
	echo "==> installed lowest versions"; $(LOWEST_BIN)/python scripts/lowest_pins.py --check; \
	echo "==> pytest on the lowest versions"; $(LOWEST_BIN)/pytest $(PYTEST_ARGS)

lint: install ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install ## mypy --strict on the package
	$(BIN)/mypy --strict tidb_memory

# Fix first (fixes can leave code unformatted), format, then report what's left.
fmt: install ## Apply safe lint fixes and reformat (ruff check --fix + ruff format)
	$(BIN)/ruff check --fix --exit-zero --quiet .
	$(BIN)/ruff format .
	$(BIN)/ruff check .

# Every round is printed as it finishes, then each benchmark's table. BENCH_ARGS go to turns.py.
BENCH_ARGS ?=
bench: install-bench ## Run the benchmarks: turns, LangGraph savers, connection churn, store
	@set -e; \
	echo "==> benchmarks/turns.py $(BENCH_ARGS)"; $(BIN)/python benchmarks/turns.py $(BENCH_ARGS); \
	echo "==> benchmarks/graph_savers.py"; $(BIN)/python benchmarks/graph_savers.py; \
	echo "==> benchmarks/churn.py"; $(BIN)/python benchmarks/churn.py; \
	echo "==> benchmarks/store.py"; $(BIN)/python benchmarks/store.py

bench-growth: install-bench ## Checkpoint growth with and without retention (long: ~15 min)
	$(BIN)/python benchmarks/growth.py

clean: ## Remove .venv, caches and build output
	rm -rf $(VENV) $(LOWEST_VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -exec rm -rf {} +

FORCE:
