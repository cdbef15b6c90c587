"""The retrain step and command: start a retraining pipeline on GitLab or GitHub (fake
APIs on 127.0.0.1), or explain what to do on a laptop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_mlops.errors import UsageError
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Spec
from ci_mlops.steps import retrain
from tests.fakes.env import TRIGGER_TOKEN, github_vars, gitlab_vars, start_github, start_gitlab
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import copy_example, run_cli


@pytest.fixture
def example(tmp_path: Path) -> Spec:
    return load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    api = start_gitlab()
    yield api
    api.stop()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    api = start_github()
    yield api
    api.stop()


def test_retrain_on_github_dispatches_the_workflow(
    example: Spec, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in github_vars(github, tmp_path, pr_number=None).items():
        monkeypatch.setenv(name, value)
    result = retrain.run(example, example.models[0], "new labels")

    (dispatch,) = github.dispatches
    assert dispatch["inputs"] == {"retrain": "breast-cancer"}
    assert result["platform"] == "github"
    assert result["reference"].endswith(f"/actions/runs/{dispatch['run_id']}")


def test_retrain_on_a_laptop_explains_how_to_retrain_locally(example: Spec) -> None:
    with pytest.raises(UsageError, match="ci-mlops run --force --model breast-cancer"):
        retrain.run(example, example.models[0], "new labels")


def test_the_command_from_a_data_pipeline_with_a_trigger_token(
    example: Spec, gitlab: FakeGitLab
) -> None:
    # Outside GitLab: no GITLAB_CI, no job token; the platform is named explicitly.
    env = {
        "CI_API_V4_URL": f"{gitlab.origin}/api/v4",
        "CI_PROJECT_ID": gitlab.project_id,
        "CI_DEFAULT_BRANCH": "main",
        "MLOPS_TRIGGER_TOKEN": TRIGGER_TOKEN,
    }
    result = run_cli(
        "retrain", "--model", "breast-cancer", "--platform", "gitlab", "--reason", "labels",
        cwd=example.root, env=env,
    )  # fmt: skip
    assert result.code == 0, result.output
    (pipeline,) = gitlab.pipelines
    assert pipeline["variables"] == {
        "MLOPS_RETRAIN": "breast-cancer",
        "MLOPS_RETRAIN_REASON": "labels",
    }
    assert pipeline["source"] == "trigger"
    assert pipeline["web_url"] in result.stdout
    assert TRIGGER_TOKEN not in result.output


def test_the_command_reports_a_refused_token_with_exit_2_and_no_secret(
    example: Spec, gitlab: FakeGitLab
) -> None:
    env = {**gitlab_vars(gitlab), "MLOPS_TRIGGER_TOKEN": "glptt-revoked-123456"}
    for debug in ((), ("--debug",)):
        result = run_cli("retrain", "--model", "breast-cancer", *debug, cwd=example.root, env=env)
        assert result.code != 0
        assert "POST /projects/42/trigger/pipeline: 404 Not Found" in result.output
        for secret in ("glptt-revoked-123456", gitlab.job_token, env["GITLAB_TOKEN"]):
            assert secret not in result.output
    assert gitlab.pipelines == []


def test_the_command_on_a_laptop_exits_2(example: Spec) -> None:
    result = run_cli("retrain", "--model", "breast-cancer", cwd=example.root)
    assert result.code == 2
    assert "no pipeline to trigger on this machine" in result.stderr
