# Two commands do all set-up on a fresh machine:
#   make demo   - a simulated WAA evaluation end to end on the local host + Azurite
#   make test   - lint and the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: setup demo serve test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) node_modules/.package-lock.json

demo: setup
	$(PY) -m devhost.demo $(DEMO_ARGS)

serve: setup
	$(PY) -m devhost serve $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.replay
	$(PY) -m benchmarks.policy

clean:
	rm -rf $(VENV) node_modules .azurite .devhost
