# Two commands matter: `make demo` and `make test`. Both build the environment when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export TRACE_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

.PHONY: demo instance test test-quick lint lock bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

## demo: build the environment, generate the demo store, backfill both demo sites and serve the UI.
## DEMO_UI=0 stops after the backfill and the summary (for scripts).
## The allocator settings keep backfill runs' memory down (see WORKER_ALLOCATOR_ENV in
## trace_pipelines/backfill.py); the daemon's runs inherit them from here.
demo: export MALLOC_ARENA_MAX ?= 2
demo: export ARROW_DEFAULT_MEMORY_POOL ?= system
demo: $(STAMP) instance
	$(BIN)/trace-pipelines demo run

# The local instance config goes into DAGSTER_HOME once; an existing one (say, PostgreSQL) is kept.
instance:
	@mkdir -p $(DAGSTER_HOME)
	@test -f $(DAGSTER_HOME)/dagster.yaml || cp deploy/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## test: build the environment and run the whole suite, slow tests included (this is what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

## test-quick: the suite without the tests marked slow.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check trace_pipelines tests bench
	$(BIN)/ruff format --check trace_pipelines tests bench

## lock: re-pin requirements.lock from the ranges in pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	( echo '# Exact versions tested by CI. Regenerate with `make lock` after changing pyproject.toml.'; \
	  .lock-venv/bin/pip freeze --exclude-editable ) > requirements.lock
	rm -rf .lock-venv

bench: $(STAMP)
	$(BIN)/python bench/bench_backfill.py

clean:
	rm -rf $(VENV) data .pytest_cache
