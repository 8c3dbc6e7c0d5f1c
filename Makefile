# The two README commands: `make demo` and `make test`. Each does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# local: LocalExecutor on SQLite; celery: PostgreSQL, Redis and two Celery workers (docs/operations.md)
EXECUTOR ?= local
# when make started: the demo summary counts its set-up (apt, venv) too
MAKE_STARTED := $(shell date +%s.%N)

.PHONY: test test-fast test-stress demo serve stop deps venv lint clean

deps:
	@scripts/install-system-deps.sh

# uv installs the ~250 packages in a fraction of pip's time, a set-up every fresh clone and CI
# run pays. torch is pinned: unpinned, fuxictr would pull the newest (a multi-GB CUDA build on
# PyPI); the CPU build comes from the local wheels pip's config points at (find-links), which uv
# is given too. uv reads UV_INDEX_URL / UV_EXTRA_INDEX_URL for other indexes, not pip's config.
# Bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (these
# machines) every Airflow and test process would otherwise compile each module it imports.
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv>=0.9"
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) \
		"torch==2.13.0" -e ".[fuxictr,hive-embedded,celery,test]"
	@# the build leaves an egg-info beside the package; on sys.path it makes Airflow load the plugin twice
	rm -rf plugins/*.egg-info
	@touch $(STAMP)

venv: $(STAMP)

demo: deps venv
	@FXW_MAKE_STARTED=$(MAKE_STARTED) $(PY) scripts/demo.py run --executor $(EXECUTOR)

serve: deps venv
	@$(PY) scripts/demo.py serve --executor $(EXECUTOR)

stop:
	@$(PY) scripts/demo.py stop

# everything: the fast tier (no Airflow or Hive stack), then, if it passed, the stack tier
test: deps venv
	@scripts/run-tests.sh all $(PYTEST_ARGS)

# the fast tier alone: the inner loop
test-fast: deps venv
	@scripts/run-tests.sh fast $(PYTEST_ARGS)

# the stand-in restart stress tests (20 restarts of each server under busy CPUs)
test-stress: deps venv
	@scripts/run-tests.sh stress $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .work demo-output
