"""Generated GitHub workflows, run for real by act in host mode on this machine: the jobs
set up Python with actions/setup-python, pass the model folder through
upload-/download-artifact and the model cache through actions/cache (act's own servers),
install ci-mlops from a wheel, and talk to a fake GitHub API through PyGithub."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.act_harness import (
    CRON,
    MODEL,
    ActTools,
    GitHubRepository,
    WorkflowRun,
    new_repository,
    pr_event,
    push_event,
    shift_current_data,
    step_output,
)
from tests.e2e.harness import commit_locks
from tests.fakes.env import start_github
from tests.fakes.github_api import FakeGitHub

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHECKS = [f"{MODEL}-{k}" for k in ("data-test", "train", "evaluate", "export")]
DEPLOYS = [f"{MODEL}-deploy-staging", f"{MODEL}-deploy-production"]
VALIDATE = "ci-mlops-validate"


def assert_jobs(run: WorkflowRun, expected: list[str]) -> None:
    assert run.code == 0, run.explain()
    assert sorted(run.jobs) == sorted(expected), run.explain()
    assert run.failed() == [], run.explain()


def assert_no_token(api: FakeGitHub, *runs: WorkflowRun) -> None:
    for run in runs:
        assert api.workflow_token not in run.output


# --- one repository on the default branch, shared by the push scenarios -------------


@pytest.fixture(scope="module")
def main_api() -> Iterator[FakeGitHub]:
    api = start_github()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def pushed(
    tmp_path_factory: pytest.TempPathFactory, act_tools: ActTools, main_api: FakeGitHub
) -> tuple[GitHubRepository, WorkflowRun]:
    """The example pushed to the default branch once: the run every push scenario (and
    the pull requests' baseline) starts from."""
    repository = new_repository(tmp_path_factory.mktemp("pushed"), act_tools, main_api)
    repository.project.commit("train.py", "# tuned\n", "tune the model")
    return repository, repository.run("push", push_event(main_api))


def test_a_push_deploys_staging_then_production_with_the_same_digest(
    pushed: tuple[GitHubRepository, WorkflowRun], main_api: FakeGitHub
) -> None:
    _, run = pushed

    assert_jobs(run, [VALIDATE, *CHECKS, *DEPLOYS])
    trained = run.artifact_json(f"{MODEL}-train", "train.json")
    model_sha = run.artifact_sha256(f"{MODEL}-train", "model.joblib")
    assert trained["skipped"] is False and trained["model_sha256"] == model_sha
    gates = run.artifact_json(f"{MODEL}-evaluate", "gates.json")
    assert gates["passed"] is True and gates["model_sha256"] == model_sha

    staging, production = sorted(
        (d for d in main_api.deployments if d["task"] == f"deploy:{MODEL}"),
        key=lambda d: d["id"],
    )
    assert (staging["environment"], production["environment"]) == ("staging", "production")
    assert staging["statuses"][-1]["state"] == production["statuses"][-1]["state"] == "success"
    # Production runs the very release staging got: one release, one model digest.
    assert production["ref"] == staging["ref"] == f"{MODEL}-v1.0.0-run.{run.run_id}"
    release = main_api.release(staging["ref"])
    assert release is not None
    assets = {a["name"]: a for a in release["assets"]}
    assert hashlib.sha256(main_api.asset_bytes(assets["model.joblib"])).hexdigest() == model_sha
    assert assets["model.joblib"]["digest"] == f"sha256:{model_sha}"
    assert "model.onnx" in assets
    assert len(main_api.releases) == 1
    assert_no_token(main_api, run)


def test_a_second_push_with_unchanged_inputs_reuses_the_cached_model(
    pushed: tuple[GitHubRepository, WorkflowRun], main_api: FakeGitHub
) -> None:
    repository, first = pushed
    before = first.artifact_json(f"{MODEL}-train", "train.json")
    project = repository.project
    # Only how the model is judged changes: the spec, not what training reads.
    project.edit_spec(lambda d: d["models"][0]["metrics"]["precision"].update(min=0.5))
    project.commit("mlops.yaml", "", "require precision")

    second = repository.run("push", push_event(main_api))

    assert_jobs(second, [VALIDATE, *CHECKS, *DEPLOYS])
    cached = second.artifact_json(f"{MODEL}-train", "train.json")
    assert cached["skipped"] is True
    assert cached["input_hash"] == before["input_hash"]
    assert cached["model_sha256"] == before["model_sha256"]
    assert second.artifact_sha256(f"{MODEL}-train", "model.joblib") == before["model_sha256"]


@pytest.mark.parametrize(
    ("event_name", "payload"),
    [
        ("workflow_dispatch", {"inputs": {"retrain": MODEL}}),
        ("repository_dispatch", {"action": "ci-mlops-retrain", "client_payload": {"model": MODEL}}),
    ],
    ids=["workflow_dispatch", "repository_dispatch"],
)
def test_a_retrain_request_retrains_although_nothing_changed(
    pushed: tuple[GitHubRepository, WorkflowRun],
    main_api: FakeGitHub,
    event_name: str,
    payload: dict[str, Any],
) -> None:
    repository, first = pushed
    before = first.artifact_json(f"{MODEL}-train", "train.json")

    run = repository.run(event_name, {**push_event(main_api), **payload})

    assert_jobs(run, [VALIDATE, *CHECKS, *DEPLOYS])
    after = run.artifact_json(f"{MODEL}-train", "train.json")
    assert after["input_hash"] == before["input_hash"]  # nothing changed...
    assert after["skipped"] is False  # ...and it trained anyway
    assert after["trained_at"] != before["trained_at"]
    tag = f"{MODEL}-v1.0.0-run.{run.run_id}"
    assert main_api.release(tag) is not None
    assert any(d["ref"] == tag and d["environment"] == "production" for d in main_api.deployments)


# --- pull requests --------------------------------------------------------------------

PR_NUMBER = 5


@pytest.fixture(scope="module")
def pull_request(
    tmp_path_factory: pytest.TempPathFactory,
    act_tools: ActTools,
    main_api: FakeGitHub,
    pushed: tuple[GitHubRepository, WorkflowRun],
) -> tuple[GitHubRepository, WorkflowRun]:
    """A pull request against the pushed default branch: its first run."""
    repository = new_repository(tmp_path_factory.mktemp("pr"), act_tools, main_api)
    repository.project.branch("better-model")
    repository.project.commit("train.py", "# tuned\n", "tune the model")
    return repository, repository.run("pull_request", pr_event(main_api, PR_NUMBER))


def test_a_pull_request_comments_once_and_the_next_run_edits_that_comment(
    pull_request: tuple[GitHubRepository, WorkflowRun],
    pushed: tuple[GitHubRepository, WorkflowRun],
    main_api: FakeGitHub,
) -> None:
    repository, first = pull_request

    assert_jobs(first, [VALIDATE, *CHECKS, f"{MODEL}-report"])
    (comment,) = main_api.comments[PR_NUMBER]
    body = comment["body"]
    assert body.startswith(f"<!-- ci-mlops:report model={MODEL} -->")
    assert comment["user"]["login"] == "github-actions[bot]"
    assert "| metric | baseline | this run | 95% interval | change | gate |" in body
    # The baseline is the default branch's run, found through the API.
    assert "of mlops.yml on main" in body
    accuracy = first.artifact_json(f"{MODEL}-evaluate", "metrics.json")["metrics"]["accuracy"]
    assert f"{accuracy:.4g}" in body
    assert f"/actions/runs/{first.run_id}" in body

    repository.project.commit("train.py", "# tuned again\n", "tune again")
    second = repository.run("pull_request", pr_event(main_api, PR_NUMBER))

    assert_jobs(second, [VALIDATE, *CHECKS, f"{MODEL}-report"])
    (edited,) = main_api.comments[PR_NUMBER]
    assert edited["id"] == comment["id"]
    assert f"/actions/runs/{second.run_id}" in edited["body"]
    assert len(main_api.calls("create_comment")) == 1
    assert len(main_api.calls("edit_comment")) >= 1
    assert_no_token(main_api, first, second)


def test_include_mode_runs_the_same_jobs_and_reaches_the_same_comment(
    tmp_path: Path,
    act_tools: ActTools,
    main_api: FakeGitHub,
    pull_request: tuple[GitHubRepository, WorkflowRun],
) -> None:
    """The same pull request inline (pip, runtime.install) and through the reusable
    workflow with uv and a folder of per-job locks: its shell lines pick uv and each
    job's lock from its inputs at run time."""
    _, inline_run = pull_request
    (inline_comment,) = main_api.comments[PR_NUMBER]
    included = new_repository(
        tmp_path,
        act_tools,
        main_api,
        include=True,
        installer="uv",
        change=lambda d: d["runtime"].update(lock="locks/"),
    )
    commit_locks(included.project, act_tools.wheel)
    included.project.branch("better-model")
    included.project.commit("train.py", "# tuned\n", "tune the model")
    number = PR_NUMBER + 1

    run = included.run("pull_request", pr_event(main_api, number))

    assert run.code == 0, run.explain()
    assert run.failed() == [], run.explain()
    called = {"data-test", "train", "evaluate", "export", "report"}
    assert called <= set(run.jobs), run.explain()
    (comment,) = main_api.comments[number]
    # The same model, metrics, baseline and gates: only the run links differ.
    metrics = [r.artifact_json(f"{MODEL}-evaluate", "metrics.json") for r in (inline_run, run)]
    assert metrics[0]["metrics"] == metrics[1]["metrics"]
    assert _without_run_links(comment["body"]) == _without_run_links(inline_comment["body"])
    assert_no_token(main_api, run)
    assert_uv_installed(run, act_tools.wheel)


def assert_uv_installed(run: WorkflowRun, wheel: Path) -> None:
    """Every job installed with uv, pip installed nothing (not even uv: the jobs' Python
    holds the pinned release), and what uv installed is the wheel the lock names, by
    hash: once, as the jobs share one Python here; after that, uv finds it there."""
    installs = step_output(run.output, "Install ci-mlops")
    assert sorted(installs) == sorted(run.jobs), installs
    for job, printed in installs.items():
        assert "Using Python 3.11" in printed, (job, printed)  # uv's line; pip has none
        assert re.search(r"^(Installed|Checked) \d+ packages? in ", printed, re.M), (job, printed)
        for pip_said in ("Successfully installed", "Requirement already satisfied", "Collecting"):
            assert pip_said not in printed, (job, printed)
    (first,) = (p for p in installs.values() if re.search(r"^Installed ", p, re.M))
    assert f"+ ci-mlops==0.1.0 (from {wheel.as_uri()})" in first, first
    # The reusable workflow's uv cache step ran (its installer input was uv) and saved
    # uv's cache under the release's key.
    assert "Cache saved with key: uv-3.11-ci-mlops-0.1.0-" in run.output, run.explain()


def _without_run_links(body: str) -> str:
    """The comment without what differs between any two runs: run links and timings."""
    body = re.sub(r"/actions/runs/\d+", "/actions/runs/N", body)
    body = re.sub(r"[\d.]+ ms", "N ms", body)
    return re.sub(r"[\d.]+x faster", "Nx faster", body)


# --- scenarios with a repository of their own -----------------------------------------


@pytest.fixture
def api() -> Iterator[FakeGitHub]:
    api = start_github()
    yield api
    api.stop()


def test_a_schedule_checks_drift_and_dispatches_a_retrain(
    tmp_path: Path, act_tools: ActTools, api: FakeGitHub
) -> None:
    repository = new_repository(tmp_path, act_tools, api)
    shift_current_data(repository.project.path)
    repository.project.commit("data/current.csv", "", "new production data")

    run = repository.run("schedule", {"schedule": CRON, **push_event(api)})

    assert_jobs(run, [VALIDATE, f"{MODEL}-drift"])  # no model job
    drift = run.artifact_json(f"{MODEL}-drift", "drift.json")
    assert drift["dataset_drift"] is True
    assert api.dispatches == [
        {
            "workflow": "mlops.yml",
            "ref": "main",
            "inputs": {"retrain": MODEL},
            "run_id": api.dispatches[0]["run_id"],
        }
    ]
    assert api.releases == [] and api.deployments == []
    assert_no_token(api, run)


def test_a_failing_gate_stops_the_run_before_any_deploy(
    tmp_path: Path, act_tools: ActTools, api: FakeGitHub
) -> None:
    def cripple(spec: dict[str, Any]) -> None:
        spec["models"][0]["train"]["params"]["C"] = 0.000001

    repository = new_repository(tmp_path, act_tools, api, change=cripple)
    repository.project.commit("train.py", "# tuned\n", "tune the model")

    run = repository.run("push", push_event(api))

    assert run.code != 0, run.explain()
    assert run.jobs[f"{MODEL}-evaluate"] == "failure", run.explain()
    assert not set(DEPLOYS) & set(run.jobs), run.explain()
    gates = run.artifact_json(f"{MODEL}-evaluate", "gates.json")  # kept: if always()
    assert gates["passed"] is False
    assert any(c["metric"] == "accuracy" and not c["passed"] for c in gates["checks"])
    assert api.releases == [] and api.deployments == []
    assert not api.calls("create_release")


def test_a_model_without_onnx_export_runs_green_through_deploy(
    tmp_path: Path, act_tools: ActTools, api: FakeGitHub
) -> None:
    def no_onnx(spec: dict[str, Any]) -> None:
        spec["models"][0]["export"] = {"onnx": False}

    repository = new_repository(tmp_path, act_tools, api, include=True, change=no_onnx)
    repository.project.commit("train.py", "# tuned\n", "tune the model")

    run = repository.run("push", push_event(api))

    assert run.code == 0, run.explain()
    assert run.failed() == [], run.explain()
    ran = set(run.jobs)
    assert {"data-test", "train", "evaluate", "deploy-staging", "deploy-production"} <= ran
    assert "export" not in ran, run.explain()
    environments = sorted(d["environment"] for d in api.deployments)
    assert environments == ["production", "staging"]
    (release,) = api.releases
    names = {a["name"] for a in release["assets"]}
    assert "model.joblib" in names and "model.onnx" not in names
    model_sha = run.artifact_sha256(f"{MODEL}-train", "model.joblib")
    asset = next(a for a in release["assets"] if a["name"] == "model.joblib")
    assert hashlib.sha256(api.asset_bytes(asset)).hexdigest() == model_sha
