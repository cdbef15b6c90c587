"""Generated GitLab pipelines, run for real by gitlab-ci-local on this machine: the jobs
install ci-mlops from this working tree, train, evaluate, export, report and deploy, and
talk to a fake GitLab API on 127.0.0.1 through python-gitlab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import PipelineRun, make_project, run_pipeline
from tests.fakes.env import GITLAB_TOKEN
from tests.fakes.gitlab_api import FakeGitLab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "breast-cancer"
CHECKS = [f"{MODEL}:{k}" for k in ("data-test", "train", "evaluate", "export")]
MR_IID = "7"


def ci_variables(api: FakeGitLab, source: str = "push", **extra: str) -> dict[str, str]:
    """The CI variables GitLab would give the jobs, pointed at the fake API."""
    return {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{api.origin}/api/v4",
        "CI_PROJECT_ID": api.project_id,
        "CI_PROJECT_URL": "https://gitlab.example.invalid/ci-mlops/demo",
        "CI_JOB_TOKEN": api.job_token,
        "CI_PIPELINE_SOURCE": source,
        "MLOPS_API_RETRIES": "2",
        **extra,
    }


def environment(api: FakeGitLab, name: str) -> dict[str, object] | None:
    """The record of what a deploy environment runs, as the GitLab platform keeps it."""
    data = api.package_file(f"{MODEL}-environments", "0.0.0", f"{name}.json")
    return None if data is None else json.loads(data)


def assert_passed(run: PipelineRun, expected: list[str]) -> None:
    assert run.code == 0, run.explain()
    assert list(run.jobs) == expected, run.explain()
    assert run.failed() == [], run.explain()


def test_default_branch_pipeline_deploys_staging_and_production_waits_for_a_person(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = make_project(MODEL, tmp_path)
    project.commit("train.py", "# tuned\n", "tune the model")
    variables = ci_variables(gitlab_api)

    run = run_pipeline(project, job_bin, variables)

    assert_passed(run, [*CHECKS, f"{MODEL}:deploy-staging"])
    trained = project.artifact_json(f"{MODEL}:train", "train.json")
    metrics = project.artifact_json(f"{MODEL}:evaluate", "metrics.json")
    gates = project.artifact_json(f"{MODEL}:evaluate", "gates.json")
    exported = project.artifact_json(f"{MODEL}:export", "export.json")
    # evaluate and export judged the model train made: it reached them through needs.
    assert trained["skipped"] is False
    assert metrics["model_sha256"] == gates["model_sha256"] == trained["model_sha256"]
    assert exported["model_sha256"] == trained["model_sha256"] and exported["passed"]
    assert gates["passed"] is True
    assert "trained in" in run.log(f"{MODEL}:train")

    staging = environment(gitlab_api, "staging")
    assert staging is not None, run.log(f"{MODEL}:deploy-staging")
    version = str(staging["version"])
    assert version.startswith("1.0.0-pipeline.")
    assert gitlab_api.package_file(MODEL, version, "model.joblib") == (
        project.artifact(f"{MODEL}:train", "model.joblib").read_bytes()
    )
    assert environment(gitlab_api, "production") is None  # waits for a person

    played = run_pipeline(
        project,
        job_bin,
        variables,
        manual=[f"{MODEL}:deploy-production"],
        jobs=[f"{MODEL}:deploy-production"],
    )

    assert_passed(played, [f"{MODEL}:deploy-production"])
    production = environment(gitlab_api, "production")
    assert production is not None and production["version"] == version
    for text in (run.output, played.output):
        assert gitlab_api.job_token not in text and GITLAB_TOKEN not in text
