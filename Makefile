# The two commands of the README: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
AUDIT := tests/http_audit
AUDIT_DEPS := $(if $(wildcard $(AUDIT)/package-lock.json),$(AUDIT)/node_modules/.installed)
MACHINE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
MACHINE_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test test-embedded test-machine lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(AUDIT)/node_modules/.installed: $(AUDIT)/package-lock.json
	cd $(AUDIT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(BIN)/.installed
	$(BIN)/yiyang run

# pytest's exit code 5 (no tests collected) fails the target like any other non-zero code.
test: $(BIN)/.installed $(AUDIT_DEPS)
	@echo "=== test suite, pass 1 of 2: embedded PostgreSQL and Redis ==="
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest
	@if $(BIN)/python -c "import socket,sys; [socket.create_connection(('127.0.0.1', p), 2).close() for p in (5432, 6379)]" 2>/dev/null; then \
		echo "=== test suite, pass 2 of 2: the machine's PostgreSQL and Redis ==="; \
		DATABASE_URL=$(MACHINE_DATABASE_URL) REDIS_URL=$(MACHINE_REDIS_URL) $(BIN)/pytest; \
	else \
		echo "=== pass 2 skipped: no PostgreSQL on 127.0.0.1:5432 or Redis on 127.0.0.1:6379 ==="; \
	fi

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/yiyang bench tenancy

clean:
	rm -rf $(VENV) var $(AUDIT)/node_modules
