# The two commands a newcomer needs: `make run` and `make test`.
# Both create (or refresh) .venv from requirements.lock on a machine with only Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench binary smoke fuzz lock clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Tillbox needs Python 3.11 or newer"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tillbox serve

# The browser that tests/e2e/test_docs_browser.py drives: Debian's, installed when missing
# (a fresh machine or CI runs as root; elsewhere through sudo). The lock timeout lets two
# installs started at once wait for each other instead of failing.
CHROMIUM := /usr/bin/chromium
APT_GET  := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

$(CHROMIUM):
	$(APT_GET) update -qq
	$(APT_GET) install -y -qq --no-install-recommends chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz_api

# The load generator of `make bench`: Debian's wrk, installed when missing (bench/loadgen.py,
# the Python fallback, is client-bound on a small machine and compresses every ratio).
WRK := /usr/bin/wrk

$(WRK):
	$(APT_GET) update -qq
	$(APT_GET) install -y -qq --no-install-recommends wrk

bench: $(STAMP) $(WRK)
	$(BIN)/python bench/run.py

# The single executable, dist/tillbox, from the locked dependencies in .venv.
# `binary` always rebuilds; `smoke` rebuilds only when the sources are newer.
BINARY_SOURCES := $(shell find core adapters entrypoints packaging \( -name '*.py' -o -name '*.spec' \) \
                    -not -name _build_info.py -not -path '*/__pycache__/*')
# The smoke test runs with the system interpreter: it tests the binary, not the venv. Only
# localstripe, the Stripe emulator its card payment goes to, runs on the venv's Python.
SMOKE_PYTHON ?= /usr/bin/python3

binary: $(STAMP)
	$(BIN)/python packaging/build.py

dist/tillbox: $(STAMP) $(BINARY_SOURCES)
	$(BIN)/python packaging/build.py

# The terminal the smoke test drives `tillbox admin` in (tests/binary/tmux.py): Debian's
# tmux, installed when missing.
TMUX := /usr/bin/tmux

$(TMUX):
	$(APT_GET) update -qq
	$(APT_GET) install -y -qq --no-install-recommends tmux

smoke: dist/tillbox $(TMUX)
	SMOKE_LOCALSTRIPE_PYTHON=$(abspath $(BIN))/python $(SMOKE_PYTHON) tests/binary/smoke.py dist/tillbox

# pip-compile is a tool for this target only, not a dependency of Tillbox: installed on first use.
$(BIN)/pip-compile: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip-tools

lock: $(BIN)/pip-compile
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --extra dev --strip-extras -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
