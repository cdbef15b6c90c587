"""The project's own CI files pass the same checks as the pipelines it generates, and
run the example through the project's own templates."""

from __future__ import annotations

import yaml

from tests.helpers import REPO
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

GITHUB_CI = REPO / ".github/workflows/ci.yml"
GITLAB_CI = REPO / ".gitlab-ci.yml"


def test_github_ci_passes_schema_zizmor_and_actionlint() -> None:
    assert github_workflow_errors(GITHUB_CI) == []
    assert zizmor_findings([GITHUB_CI]) == []
    assert actionlint_findings([GITHUB_CI]) == []


def test_github_ci_runs_the_example_through_the_reusable_workflow() -> None:
    jobs = yaml.safe_load(GITHUB_CI.read_text())["jobs"]
    assert jobs["example"]["uses"] == "./.github/workflows/mlops.yml"
    assert "make test" in jobs["test"]["steps"][-1]["run"]


def test_gitlab_ci_matches_schema_and_uses_this_commits_components() -> None:
    assert gitlab_schema_errors(GITLAB_CI) == []
    doc = yaml.safe_load(GITLAB_CI.read_text())
    component = doc["include"][0]["component"]
    assert component == "$CI_SERVER_FQDN/$CI_PROJECT_PATH/pipeline@$CI_COMMIT_SHA"
    assert (REPO / "templates/pipeline.yml").is_file()
    assert doc["test"]["script"] == ["make test"]
