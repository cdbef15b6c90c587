"""Fake GitLab and GitHub servers on 127.0.0.1, and a job's CI variables pointing at them.

The real python-gitlab and PyGithub clients talk to these servers over HTTP; nothing in
the clients is replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Spec
from tests.fakes.env import github_vars, gitlab_vars, start_github, start_gitlab
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import copy_example, make_key_pair


@pytest.fixture(autouse=True)
def signing_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every deploy in these tests signs with a key pair (as where there is no OIDC) and verify with its
    public half; returns the private key."""
    private, public = make_key_pair(tmp_path / "keys")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", str(private))
    monkeypatch.setenv("MLOPS_SIGNING_PUBLIC_KEY", str(public))
    return private


@pytest.fixture
def gitlab_api() -> Iterator[FakeGitLab]:
    api = start_gitlab()
    yield api
    api.stop()


@pytest.fixture
def gitlab_env(gitlab_api: FakeGitLab, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A merge-request pipeline's job: MR !7, default branch main, pipeline IID 17."""
    env = gitlab_vars(gitlab_api)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def github_api() -> Iterator[FakeGitHub]:
    api = start_github()
    yield api
    api.stop()


@pytest.fixture
def github_env(
    github_api: FakeGitHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """A pull-request run's job: PR #5 of octo/models, run number 12."""
    env = github_vars(github_api, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    """The breast-cancer example, copied, with a working folder holding two plots."""
    folder = copy_example("breast-cancer", tmp_path)
    loaded = load_spec(folder / "mlops.yaml")
    plots = loaded.workdir(loaded.models[0]) / "plots"
    plots.mkdir(parents=True)
    (plots / "roc.png").write_bytes(b"\x89PNG\r\n\x1a\nroc-curve")
    (plots / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\nconfusion-matrix")
    return loaded
