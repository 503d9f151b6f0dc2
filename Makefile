# feederd: `make demo` runs the demo, `make test` runs lint, types, the import layers and the
# tests. Both create .venv in the checkout and install the project into it when missing.
# `make test-fast` runs the tests that start no outside program and take seconds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := mosquitto mosquitto-clients socat prometheus systemd

.PHONY: demo test test-fast lint typecheck pytest venv apt clean

$(BIN)/feederd: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/feederd

demo: venv
	$(BIN)/feederd demo

# Packages the tests need; installed only when running as root and missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "warning: missing apt packages:$$missing (run as root or install them)"; fi; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# Two workers (the 2-core box): each test's ports and topics are its own (tests/support/net.py).
pytest: venv apt
	$(BIN)/pytest -n 2 --dist worksteal

test: lint typecheck pytest

test-fast: venv
	$(BIN)/pytest -n 2 -m "not slow and not integration"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
