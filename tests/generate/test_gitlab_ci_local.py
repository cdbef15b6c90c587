"""The generated .gitlab-ci.yml as gitlab-ci-local reads it: which jobs each kind of
pipeline selects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import copy_example, git, make_git_repo
from tests.linters import gitlab_ci_local_jobs, gitlab_ci_local_list

MODEL = "breast-cancer"
MODEL_JOBS = [f"{MODEL}:{k}" for k in ("data-test", "train", "evaluate", "export")]
MR = {"CI_PIPELINE_SOURCE": "merge_request_event"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The example as a repository whose origin/main is the current commit."""
    return make_git_repo(copy_example(MODEL, tmp_path / "repo"))


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)


def on_branch(repo: Path, branch: str, path: str, text: str) -> None:
    git(repo, "checkout", "--quiet", "-b", branch)
    target = repo / path
    target.write_text(target.read_text() + text if target.exists() else text)
    commit(repo, f"change {path}")


def test_a_docs_only_merge_request_selects_no_model_job(repo: Path) -> None:
    on_branch(repo, "docs", "README.md", "# How to use the model\n")
    assert gitlab_ci_local_list(repo, MR) == []


def test_a_code_change_merge_request_runs_checks_and_reports_without_deploying(repo: Path) -> None:
    on_branch(repo, "better-model", "train.py", "# tuned\n")
    jobs = gitlab_ci_local_list(repo, MR)
    assert jobs == [*MODEL_JOBS, f"{MODEL}:report"]


def test_a_data_change_runs_the_model_jobs(repo: Path) -> None:
    on_branch(repo, "new-data", "data/eval.csv", "\n")
    assert MODEL_JOBS[0] in gitlab_ci_local_list(repo, MR)


def test_a_spec_change_also_runs_the_pipeline_check(repo: Path) -> None:
    on_branch(repo, "spec", "mlops.yaml", "# comment\n")
    jobs = gitlab_ci_local_list(repo, MR)
    assert jobs[0] == "ci-mlops:validate"
    assert MODEL_JOBS[0] in jobs


def test_the_default_branch_deploys_staging_and_waits_for_production(repo: Path) -> None:
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# tuned\n")
    commit(repo, "tune on main")
    listed = {j.name: j for j in gitlab_ci_local_jobs(repo)}
    assert list(listed) == [*MODEL_JOBS, f"{MODEL}:deploy-staging", f"{MODEL}:deploy-production"]
    assert listed[f"{MODEL}:deploy-staging"].when == "on_success"
    assert listed[f"{MODEL}:deploy-production"].when == "manual"


def test_a_schedule_runs_only_the_drift_check(repo: Path) -> None:
    assert gitlab_ci_local_list(repo, {"CI_PIPELINE_SOURCE": "schedule"}) == [f"{MODEL}:drift"]


@pytest.mark.parametrize("source", ["trigger", "api", "schedule"])
def test_a_retrain_request_retrains_although_nothing_changed(repo: Path, source: str) -> None:
    jobs = gitlab_ci_local_list(repo, {"CI_PIPELINE_SOURCE": source, "MLOPS_RETRAIN": MODEL})
    assert jobs == [*MODEL_JOBS, f"{MODEL}:deploy-staging", f"{MODEL}:deploy-production"]


def test_a_retrain_request_for_another_model_leaves_this_one_alone(repo: Path) -> None:
    jobs = gitlab_ci_local_list(repo, {"CI_PIPELINE_SOURCE": "trigger", "MLOPS_RETRAIN": "other"})
    assert jobs == []
