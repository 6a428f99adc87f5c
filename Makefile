# netwarden: the two commands a new user runs are `make run` and `make test`.
# Each sets itself up: a local virtual environment in .venv with the packages it needs.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test test-fast lint format notebooks bench bench-detection bench-score bench-service bench-remediation bench-hubble bench-agent proto system-bcc clean venv

run: $(VENV)/.installed system-bcc  ## install and start the service on its embedded default (no cluster): live generated traffic, API on :8080
	$(BIN)/netwarden serve

# The eBPF tests skip with one line saying what is missing (root, python3-bpfcc, kernel headers,
# tracefs) where the probes cannot run; .ci/run installs all of it and makes them required.
test: $(VENV)/.installed-test system-bcc  ## install the test dependencies and run every test, slow ones too
	$(BIN)/pytest -m "" -q

test-fast: $(VENV)/.installed-test system-bcc  ## the quick subset (skips tests marked slow)
	$(BIN)/pytest -q

# ruff (lint, import order, format at 100 columns) and import-linter (the layers of README:
# Layout, no circles). import-linter reads the package as installed, and the editable install
# maps folders by an import hook it cannot see: so it reads a copy built into build/lint.
lint: $(VENV)/.installed-test  ## ruff check + format check, and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rm -rf build/lint
	@$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --target build/lint . 2>/dev/null
	cd build && PYTHONPATH=$(abspath build/lint) $(abspath $(BIN))/lint-imports --no-cache ../pyproject.toml

format: $(VENV)/.installed-test  ## fix what ruff can and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Generates labelled traffic, trains a model, starts `netwarden serve` on a loopback port and
# runs every notebook in notebooks/ top to bottom against it (data in notebooks/.demo, reused).
notebooks: $(VENV)/.installed-test  ## run the analyst notebooks against a local `netwarden serve` on generated traffic
	$(BIN)/python notebooks/demo.py

bench: $(VENV)/.installed  ## ingest benchmark: parse-only vs in-process vs `netwarden windows`, demo and fintech (about 1.5M flows, 10 minutes, 2.7 GB cached in benchmarks/.data)
	$(BIN)/python benchmarks/ingest.py

bench-detection: $(VENV)/.installed  ## detection under change: this tree vs the previous release, 3 seeds x 2 clusters (about 15 minutes, 10 GB)
	$(BIN)/python benchmarks/detection.py

bench-score: $(VENV)/.installed  ## `netwarden score` vs `netwarden windows` as whole processes, demo and fintech
	$(BIN)/python benchmarks/score.py

bench-service: $(VENV)/.installed  ## ingest rate with and without API load, listing latency
	$(BIN)/python benchmarks/service.py

bench-remediation: $(VENV)/.installed  ## proposed policies vs hubble-audit2policy, replayed on attacks
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/remediation.py

bench-hubble: $(VENV)/.installed  ## Hubble protobuf path: bytes -> windows and over gRPC, vs parsing alone
	$(BIN)/python benchmarks/hubble.py

bench-agent: $(VENV)/.installed  ## eBPF agent overhead: loopback connections/s with and without it (root)
	$(BIN)/python benchmarks/agent_overhead.py

proto: $(VENV)/.installed-test  ## regenerate the Hubble gRPC stubs in hubble/ from its .proto files
	$(BIN)/python hubble/generate.py

venv: $(VENV)/.installed

# Python >= 3.11 is required. On a fresh Debian machine `python3 -m venv` needs python3-venv
# (ensurepip); as root we install it, otherwise we say what to run.
$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+ (Debian: apt-get install python3)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: netwarden needs Python 3.11+, $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { \
	  rm -rf $(VENV); \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing python3-venv (needed to create $(VENV)) ..." >&2; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	    $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; on Debian run: sudo apt-get install python3-venv" >&2; exit 1; fi; }
	@echo "created virtual environment $(VENV) ($$($(BIN)/python -V))"

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# The eBPF agent uses bcc's Python bindings from Debian (python3-bpfcc; the PyPI package named
# bcc is unrelated): a .pth file puts a folder holding only a `bcc` link on the venv's path, so
# no other system package leaks in. Without python3-bpfcc this does nothing (the agent then says
# what to install). `run` and `test` redo it every time, so python3-bpfcc installed after the venv
# was made is picked up.
SYSTEM_BCC := /usr/lib/python3/dist-packages/bcc
system-bcc: $(BIN)/python
	@if [ -d $(SYSTEM_BCC) ]; then \
	  mkdir -p $(VENV)/system-bcc && ln -sfn $(SYSTEM_BCC) $(VENV)/system-bcc/bcc && \
	  echo "$(abspath $(VENV))/system-bcc" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/netwarden-system-bcc.pth"; \
	fi

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

clean:
	rm -rf $(VENV) netwarden-data .pytest_cache .hypothesis *.egg-info
