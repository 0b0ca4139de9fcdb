# Two commands on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make demo   - create .venv, install, run the whole pipeline on a synthetic feed
#   make test   - install what the tests need, run pytest (tests start their own services)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench sysdeps clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q python3-venv; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# System packages the tests use privately: Redis and PostgreSQL 15 servers, Chromium (Debian names),
# systemd for `systemd-analyze` (the unit checks; installing it in a container starts nothing).
sysdeps:
	@command -v redis-server >/dev/null 2>&1 && [ -x /usr/lib/postgresql/15/bin/initdb ] && \
	  command -v chromium >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server postgresql-15 chromium systemd; }

demo: $(STAMP)
	$(BIN)/scanner demo

test: $(STAMP) sysdeps
	@$(BIN)/python -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/scanner bench engine --json

clean:
	rm -rf $(VENV) var .pytest_cache
