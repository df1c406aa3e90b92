# Two commands do all set-up on a fresh machine:
#   make demo   - a simulated WAA evaluation end to end on the local host + Azurite
#   make test   - lint and the whole test suite (what CI runs)
# Both install the command-line client as .venv/bin/waa-eval.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: setup test-setup demo serve test lint bench clean

# The last step installs the command-line client's console script, .venv/bin/waa-eval (its
# dependencies come with requirements-dev.txt, which includes requirements-cli.txt).
$(STAMP): requirements.txt requirements-dev.txt requirements-cli.txt requirements-worker.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python -r requirements-worker.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's openssh-server: the SSH tier's tests start a real sshd on a loopback port.
/usr/sbin/sshd:
	command -v apt-get >/dev/null && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; } || echo "openssh-server not installed: the SSH tier tests will be skipped"

# Debian's chromium: the dashboard's browser tests drive it with Playwright (executable_path
# /usr/bin/chromium; `playwright install` is never run: it downloads browser builds).
/usr/bin/chromium:
	command -v apt-get >/dev/null && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: the dashboard's browser tests will be skipped"

setup: $(STAMP) node_modules/.package-lock.json

test-setup: setup /usr/sbin/sshd /usr/bin/chromium

demo: setup
	$(PY) -m devhost.demo $(DEMO_ARGS)

serve: setup
	$(PY) -m devhost serve $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: test-setup lint
	$(PY) -m pytest -q -n auto

bench: setup
	$(PY) -m benchmarks.replay
	$(PY) -m benchmarks.policy
	$(PY) -m benchmarks.dashboard

clean:
	rm -rf $(VENV) node_modules .azurite .devhost waa_control_plane.egg-info
