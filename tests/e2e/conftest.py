"""Shared by the end-to-end pipeline runs: one virtualenv for every GitLab job of the
session and the fake GitLab API the jobs talk to. The act set-up every GitHub run shares
(``act_tools``) is in ``tests/conftest.py``: `ci-mlops try` tests use it too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import make_job_python
from tests.fakes.env import start_gitlab
from tests.fakes.gitlab_api import FakeGitLab
from tests.linters import GITLAB_CI_LOCAL


@pytest.fixture(scope="session")
def job_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of the python every job of the session runs."""
    assert GITLAB_CI_LOCAL.is_file(), "gitlab-ci-local is not installed: run `make tools`"
    return make_job_python(tmp_path_factory.mktemp("job-python") / "venv")


@pytest.fixture
def gitlab_api() -> Iterator[FakeGitLab]:
    """A fake GitLab on 127.0.0.1; jobs run on this machine, so they reach it."""
    api = start_gitlab()
    yield api
    api.stop()
