# The two commands of the README: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
AUDIT := tests/http_audit
AUDIT_DEPS := $(if $(wildcard $(AUDIT)/package.json),$(AUDIT)/node_modules/.installed)
MACHINE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
MACHINE_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test lint bench clean

# After a failed pytest: say which pass failed and how, and fail with pytest's code.
pytest_failed = { code=$$?; echo "=== pass $(1) FAILED: pytest exit code $$code$$([ $$code = 5 ] && echo ': no tests collected') ==="; exit $$code; }

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (neither python3.11 nor python3 found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(AUDIT)/node_modules/.installed: $(AUDIT)/package.json $(AUDIT)/package-lock.json
	cd $(AUDIT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.installed
	$(BIN)/yiyang run

# Pass 1 starts embedded PostgreSQL and Redis; pass 2 uses the machine's, when both answer.
# Any non-zero pytest code fails the target, 5 (no tests collected) included.
test: $(VENV)/.installed $(AUDIT_DEPS)
	@echo "=== test suite, pass 1 of 2: embedded PostgreSQL and Redis (DATABASE_URL, REDIS_URL unset) ==="
	@env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest || $(call pytest_failed,1)
	@if $(BIN)/python -c "import socket; [socket.create_connection(('127.0.0.1', p), 2).close() for p in (5432, 6379)]" 2>/dev/null; then \
		echo "=== test suite, pass 2 of 2: the machine's PostgreSQL and Redis ($(MACHINE_DATABASE_URL), $(MACHINE_REDIS_URL)) ==="; \
		DATABASE_URL=$(MACHINE_DATABASE_URL) REDIS_URL=$(MACHINE_REDIS_URL) $(BIN)/pytest || $(call pytest_failed,2); \
	else \
		echo "=== pass 2 of 2 SKIPPED: PostgreSQL on 127.0.0.1:5432 or Redis on 127.0.0.1:6379 does not answer ==="; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/yiyang bench tenancy

clean:
	rm -rf $(VENV) var $(AUDIT)/node_modules web/node_modules
