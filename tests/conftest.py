"""Every test runs as if on a clean laptop: no CI variables, no tokens, a throwaway HOME.

Shared builders live in ``tests/helpers.py``; linter wrappers in ``tests/linters.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from tests.fakes import mlflow_server

if TYPE_CHECKING:
    from tests.e2e.act_harness import ActTools

# Variables that would make ci-mlops think it runs inside a pipeline, or give it a way to
# reach a real server. Prefixes catch the rest of the platforms' predefined variables.
_CLEARED = (
    "CI",
    "GITLAB_CI",
    "GITHUB_ACTIONS",
    "CI_JOB_TOKEN",
    "GITLAB_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "CI_API_V4_URL",
    "GITHUB_API_URL",
    "MLOPS_RETRAIN",
    "MLOPS_PLATFORM",
)
# SIGSTORE_ and ACTIONS_ID_TOKEN_ would make signing keyless (and reach for the network).
_CLEARED_PREFIXES = (
    "CI_",
    "GITHUB_",
    "GITLAB_",
    "MLOPS_",
    "GCL_",
    "ZIZMOR_",
    "SIGSTORE_",
    "ACTIONS_ID_TOKEN_",
    "MLFLOW_",
)

settings.register_profile("default", deadline=None)
# `make fuzz`: many more examples, no time limit per example.
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Strip CI and token variables and point HOME at an empty folder."""
    for name in list(os.environ):
        if name in _CLEARED or name.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    yield home


@pytest.fixture(scope="session")
def act_tools(tmp_path_factory: pytest.TempPathFactory) -> ActTools:
    """The vendored actions, the ci-mlops wheel and the tool-cache Python every act run
    of the session shares (the GitHub end-to-end runs and `ci-mlops try`), made once."""
    from tests.e2e.act_harness import make_act_tools

    return make_act_tools(tmp_path_factory.mktemp("act"))


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server (SQLite backend, local artifacts) shared by the session;
    tests keep apart by using models and experiments of their own names."""
    server = mlflow_server.start(tmp_path_factory.mktemp("mlflow-server"))
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def spark_session() -> Iterator[object]:
    """One local Spark session (two cores, no web UI) for every Spark test: starting
    the JVM takes seconds, so it is started once. The steps find it as the active
    session instead of starting their own."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("ci-mlops-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
