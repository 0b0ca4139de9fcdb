# Two commands on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make demo   - create .venv, install, run the whole pipeline on a synthetic feed
#   make test   - install what the tests need, run pytest (tests start their own services)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench sysdeps vendor clean

# Browser charting library for the dashboard: TradingView lightweight-charts (Apache-2.0), fetched
# with npm at a pinned version, its tarball checked against the pinned sha512 (npm's
# dist.integrity), the standalone build copied into procs/static/vendor/ (ignored by git). Without
# npm or the registry the dashboard still runs and says that charts are unavailable.
LWC_VERSION   := 4.2.3
LWC_INTEGRITY := sha512-5kS/2hY3wNYNzhnS8Gb+GAS07DX8GPF2YVDnd2NMC85gJVQ6RLU6YrXNgNJ6eg0AnWPwCnvaGtYmGky3HiLQEw==
VENDOR        := procs/static/vendor
LWC_JS        := $(VENDOR)/lightweight-charts.standalone.production.js

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q python3-venv; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@$(MAKE) --no-print-directory vendor
	@touch $(STAMP)

vendor: $(LWC_JS)

$(LWC_JS):
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: dashboard charts unavailable"; exit 0; }; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	if ! (cd "$$tmp" && npm pack --silent lightweight-charts@$(LWC_VERSION) >pack.out 2>pack.err); then \
	  echo "npm could not fetch lightweight-charts@$(LWC_VERSION): dashboard charts unavailable"; exit 0; fi; \
	tgz="$$tmp/$$(tail -n1 "$$tmp/pack.out")"; \
	got=$$($(PYTHON) -c 'import base64,hashlib,sys; print("sha512-"+base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$$tgz"); \
	[ "$$got" = "$(LWC_INTEGRITY)" ] || { echo "lightweight-charts tarball checksum mismatch ($$got): not installed"; exit 1; }; \
	tar -xzf "$$tgz" -C "$$tmp" && mkdir -p $(VENDOR) && \
	cp "$$tmp/package/dist/lightweight-charts.standalone.production.js" $@ && \
	cp "$$tmp/package/LICENSE" $(VENDOR)/LICENSE.lightweight-charts && \
	echo "installed lightweight-charts $(LWC_VERSION) (sha512 verified) into $(VENDOR)/"

# System packages the tests use privately: Redis and PostgreSQL 15 servers, Chromium (Debian names),
# systemd for `systemd-analyze` (the unit checks; installing it in a container starts nothing).
sysdeps:
	@command -v redis-server >/dev/null 2>&1 && [ -x /usr/lib/postgresql/15/bin/initdb ] && \
	  command -v chromium >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server postgresql-15 chromium systemd; }

demo: $(STAMP) vendor
	$(BIN)/scanner demo

# The suite runs on one pytest worker per core (pytest-xdist, at most 4), a test file to a
# worker: most of its time is instance tests waiting for events, which overlap well. Files go
# out in collection order (files with slow tests first, tests/conftest.py), not xdist's
# most-tests-first, which left the long one-test files to finish alone at the end.
TEST_WORKERS ?= auto
test: $(STAMP) sysdeps vendor
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/scanner bench engine --json

clean:
	rm -rf $(VENV) var .pytest_cache
