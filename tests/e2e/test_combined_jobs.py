"""``runtime.jobs: combined``, run for real: gitlab-ci-local and act run the breast-cancer
example's generated pipelines, where one ``<model>:build`` job runs data-test, train,
evaluate and export in one ``ci-mlops build`` process, and the report and deploy jobs
take the model folder from that job's artifact. The jobs talk to the fake GitLab and
GitHub APIs through python-gitlab and PyGithub.

Each platform runs two pipelines: a push to the default branch, then a merge/pull
request judged against the baseline that push's build job left."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.act_harness import (
    ActTools,
    GitHubRepository,
    WorkflowRun,
    new_repository,
    pr_event,
    push_event,
)
from tests.e2e.harness import PipelineRun, Project, make_project, run_pipeline, safe_job_name
from tests.e2e.test_gitlab_pipelines import MODEL, MR_IID, assert_passed, ci_variables
from tests.fakes.env import GITLAB_TOKEN, start_github, start_gitlab
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUILD = f"{MODEL}:build"
STEPS = ("data-test", "train", "evaluate", "export")
# What the build job leaves in the model folder: each of the four steps' records.
BUILD_FILES = (
    "data-test.json",
    "data-docs/index.html",
    "model.joblib",
    "train.json",
    "metrics.json",
    "gates.json",
    "model.onnx",
    "export.json",
)
# Stronger regularisation: a model whose metrics differ from the default branch's
# (accuracy 0.986 against 0.979 on the example's data) and still pass every gate.
TUNED = ('float(params.get("C", 1.0))', "0.3")


def combined(spec: dict[str, Any]) -> None:
    spec["runtime"]["jobs"] = "combined"


def tune(project: Project) -> None:
    """Change a parameter in train.py and commit it."""
    path = project.path / "train.py"
    text = path.read_text("utf-8")
    assert TUNED[0] in text, text
    path.write_text(text.replace(*TUNED), "utf-8")
    project.commit("train.py", "", "regularise more strongly")


def assert_steps_in_order(log: str) -> None:
    """The build job ran the four steps one after the other, each saying so, and each
    step's results are in its log. (Where results land among the headings is not
    checked here: gitlab-ci-local reads a job's stdout and stderr through two pipes, so
    their lines interleave as they happen to arrive; tests/steps/test_build.py checks
    the order through one.)"""
    headings = [f"build {MODEL}: [{n}/4] {step}" for n, step in enumerate(STEPS, start=1)]
    assert re.findall(rf"build {MODEL}: \[\d/\d\] [\w-]+", log) == headings, log[-4000:]
    assert log.index(headings[-1]) < log.index(f"build {MODEL}: 4 steps in ")
    for result in ("trained on 426 rows", f"{MODEL}: quality gates passed", "parity ok"):
        assert result in log, (result, log[-4000:])


# --- GitLab -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gitlab() -> Iterator[FakeGitLab]:
    api = start_gitlab()
    yield api
    api.stop()


@dataclass(frozen=True)
class MainPipeline:
    project: Project
    run: PipelineRun
    build: Path  # a copy of the build job's model folder, as the pipeline left it
    baseline_lookups: list[str]  # the jobs whose artifacts evaluate asked the fake for


@pytest.fixture(scope="module")
def gitlab_main(
    tmp_path_factory: pytest.TempPathFactory, job_bin: Path, gitlab: FakeGitLab
) -> MainPipeline:
    """A push to the default branch that switches the example to the combined layout:
    the spec and the pipeline file change, so validate runs besides the model's jobs."""
    folder = tmp_path_factory.mktemp("gitlab-combined")
    project = make_project(MODEL, folder)
    project.edit_spec(combined)
    project.commit("mlops.yaml", "", "run each model's steps in one job")

    run = run_pipeline(project, job_bin, ci_variables(gitlab))

    build = folder / "main-build"
    model_folder = project.state() / "artifacts" / safe_job_name(BUILD) / ".ci-mlops" / MODEL
    if model_folder.is_dir():  # kept apart from what the next pipeline leaves there
        shutil.copytree(model_folder, build)
    lookups = [str(c.query.get("job")) for c in gitlab.calls("artifact_raw")]
    return MainPipeline(project, run, build, lookups)


def test_gitlab_default_branch_builds_in_one_job_and_deploys_staging(
    gitlab_main: MainPipeline, gitlab: FakeGitLab, record_property: Any
) -> None:
    run, build = gitlab_main.run, gitlab_main.build
    record_property("pipeline_seconds", round(run.wall_seconds, 2))

    assert_passed(run, ["ci-mlops:validate", BUILD, f"{MODEL}:deploy-staging"])
    for name in BUILD_FILES:
        assert (build / name).is_file(), name
    records = {n: json.loads((build / n).read_text("utf-8")) for n in BUILD_FILES if ".json" in n}
    model_sha = records["train.json"]["model_sha256"]
    assert records["data-test.json"]["passed"] is True
    assert records["train.json"]["skipped"] is False
    assert records["metrics.json"]["model_sha256"] == records["gates.json"]["model_sha256"]
    assert records["gates.json"]["model_sha256"] == model_sha
    assert records["gates.json"]["passed"] is True
    assert records["export.json"]["model_sha256"] == model_sha
    assert records["export.json"]["passed"] is True

    # One `ci-mlops build` process ran the four steps, in order.
    log = run.log(BUILD)
    assert log.count("$ ci-mlops ") == 1 and "$ ci-mlops build " in log, log[-3000:]
    assert_steps_in_order(log)
    # With no artifact on the default branch yet, the baseline was looked for in the
    # combined layout's job first, then in the step layout's.
    assert gitlab_main.baseline_lookups == [BUILD, f"{MODEL}:evaluate"]

    # The staging deploy published the model the build job made, and production waits.
    environments = gitlab.packages.get((f"{MODEL}-environments", "0.0.0"), [])
    staging = [json.loads(data) for name, data in environments if name == "staging.json"]
    assert staging, run.log(f"{MODEL}:deploy-staging")
    version = str(staging[-1]["version"])
    assert version.startswith("1.0.0-pipeline.")
    assert gitlab.package_file(MODEL, version, "model.joblib") == (
        (build / "model.joblib").read_bytes()
    )
    assert not any(name == "production.json" for name, _ in environments)
    assert gitlab.job_token not in run.output


def test_gitlab_merge_request_reports_deltas_against_the_build_jobs_baseline(
    gitlab_main: MainPipeline, job_bin: Path, gitlab: FakeGitLab, record_property: Any
) -> None:
    project, build = gitlab_main.project, gitlab_main.build
    assert gitlab_main.run.code == 0, gitlab_main.run.explain()
    # GitLab keeps the default branch's job artifacts: the fake serves what the build job
    # of the pipeline above left, under that job's name.
    gitlab.artifacts[("main", BUILD)] = {
        f".ci-mlops/{MODEL}/{path.relative_to(build)}": path.read_bytes()
        for path in build.rglob("*")
        if path.is_file()
    }
    project.push()
    project.branch("regularise")
    tune(project)
    before = len(gitlab.calls("artifact_raw"))
    variables = ci_variables(
        gitlab,
        "merge_request_event",
        CI_MERGE_REQUEST_IID=MR_IID,
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        GITLAB_TOKEN=GITLAB_TOKEN,
    )

    run = run_pipeline(project, job_bin, variables)

    record_property("pipeline_seconds", round(run.wall_seconds, 2))
    assert_passed(run, [BUILD, f"{MODEL}:report"])
    # The baseline came through python-gitlab from the combined layout's job, first try.
    assert [c.query.get("job") for c in gitlab.calls("artifact_raw")[before:]] == [BUILD]
    baseline = json.loads((build / "metrics.json").read_text("utf-8"))["metrics"]
    metrics = project.artifact_json(BUILD, "metrics.json")
    assert metrics["baseline"]["source"] == f"latest successful {BUILD} job on main"
    accuracy = metrics["metrics"]["accuracy"]
    assert accuracy != baseline["accuracy"]  # the tuned model differs from the baseline
    (note,) = gitlab.notes[int(MR_IID)]
    body = note["body"]
    assert body.startswith(f"<!-- ci-mlops:report model={MODEL} -->")
    assert f"latest successful {BUILD} job on main" in body
    for name in ("accuracy", "roc_auc", "f1"):
        assert f"{metrics['metrics'][name]:.4g}" in body, name
        assert f"{baseline[name]:.4g}" in body, name
    assert f"{accuracy - baseline['accuracy']:+.4g}" in body and "better" in body
    # The plots came to the report job in the build job's artifact.
    assert gitlab.uploads and all(upload["url"] in body for upload in gitlab.uploads)
    assert GITLAB_TOKEN not in run.output and gitlab.job_token not in run.output


# --- GitHub -------------------------------------------------------------------------

PR_NUMBER = 9
ARTIFACT = f"{MODEL}-build"
VALIDATE = "ci-mlops-validate"


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    api = start_github()
    yield api
    api.stop()


@dataclass(frozen=True)
class MainRun:
    repository: GitHubRepository
    run: WorkflowRun
    baseline_lookups: list[str]  # the artifact names evaluate listed through the API


@pytest.fixture(scope="module")
def github_main(
    tmp_path_factory: pytest.TempPathFactory, act_tools: ActTools, github: FakeGitHub
) -> MainRun:
    """A push to the default branch of the example in the combined layout."""
    repository = new_repository(
        tmp_path_factory.mktemp("github-combined"), act_tools, github, change=combined
    )
    repository.project.commit("train.py", "# tuned\n", "tune the model")
    run = repository.run("push", push_event(github))
    lookups = [str(c.query.get("name")) for c in github.calls("repo_artifacts")]
    return MainRun(repository, run, lookups)


def act_log(repository: GitHubRepository, job: str) -> str:
    """The lines act logged for ``job`` (a job id) in the repository's last run."""
    project = repository.project.path
    return (project.parent / f"{project.name}-act" / "logs" / f"{job}.log").read_text("utf-8")


def test_github_push_builds_in_one_job_and_deploys_from_its_artifact(
    github_main: MainRun, github: FakeGitHub, record_property: Any
) -> None:
    repository, run = github_main.repository, github_main.run
    record_property("workflow_seconds", round(run.wall_seconds, 2))

    deploys = [f"{MODEL}-deploy-staging", f"{MODEL}-deploy-production"]
    assert run.code == 0, run.explain()
    assert sorted(run.jobs) == sorted([VALIDATE, ARTIFACT, *deploys]), run.explain()
    assert run.failed() == [], run.explain()
    # The one artifact of the run is the build job's, with every step's records.
    assert run.artifacts is not None
    uploaded = sorted(p.name for p in (run.artifacts / str(run.run_id)).iterdir())
    assert uploaded == [ARTIFACT]
    files = run.artifact(ARTIFACT)
    for name in BUILD_FILES:
        assert name in files, sorted(files)
    model_sha = run.artifact_sha256(ARTIFACT, "model.joblib")
    assert run.artifact_json(ARTIFACT, "gates.json")["passed"] is True
    assert run.artifact_json(ARTIFACT, "gates.json")["model_sha256"] == model_sha
    assert run.artifact_json(ARTIFACT, "export.json")["passed"] is True
    assert_steps_in_order(act_log(repository, ARTIFACT))
    # No default-branch run before this one: evaluate looked for both layouts' artifacts.
    assert github_main.baseline_lookups == [ARTIFACT, f"{MODEL}-evaluate"]
    # Each deploy downloaded that artifact and released the model it holds.
    for job in deploys:
        log = act_log(repository, job)
        assert f"- {ARTIFACT} (ID: " in log and "Total of 1 artifact(s) downloaded" in log, job
    (release,) = github.releases
    asset = next(a for a in release["assets"] if a["name"] == "model.joblib")
    assert asset["digest"] == f"sha256:{model_sha}"
    environments = sorted(d["environment"] for d in github.deployments)
    assert environments == ["production", "staging"]
    assert github.workflow_token not in run.output


def test_github_pull_request_builds_and_comments_once_with_the_metrics(
    tmp_path_factory: pytest.TempPathFactory,
    act_tools: ActTools,
    github: FakeGitHub,
    github_main: MainRun,
    record_property: Any,
) -> None:
    pushed = github_main.run
    assert pushed.code == 0, pushed.explain()
    repository = new_repository(
        tmp_path_factory.mktemp("github-combined-pr"), act_tools, github, change=combined
    )
    repository.project.branch("better-model")
    tune(repository.project)
    before = len(github.calls("repo_artifacts"))

    run = repository.run("pull_request", pr_event(github, PR_NUMBER))

    record_property("workflow_seconds", round(run.wall_seconds, 2))
    assert run.code == 0, run.explain()
    assert sorted(run.jobs) == sorted([VALIDATE, ARTIFACT, f"{MODEL}-report"]), run.explain()
    assert run.failed() == [], run.explain()
    # The baseline is the push's build artifact, found by its name through the API.
    names = [c.query.get("name") for c in github.calls("repo_artifacts")[before:]]
    assert names == [ARTIFACT]
    metrics = run.artifact_json(ARTIFACT, "metrics.json")
    baseline = pushed.artifact_json(ARTIFACT, "metrics.json")["metrics"]
    assert metrics["metrics"]["accuracy"] != baseline["accuracy"]
    (comment,) = github.comments[PR_NUMBER]
    body = comment["body"]
    assert body.startswith(f"<!-- ci-mlops:report model={MODEL} -->")
    assert comment["user"]["login"] == "github-actions[bot]"
    assert (
        "of mlops.yml on main" in body and "of mlops.yml on main" in metrics["baseline"]["source"]
    )
    for name in ("accuracy", "roc_auc", "f1"):
        assert f"{metrics['metrics'][name]:.4g}" in body, name
        assert f"{baseline[name]:.4g}" in body, name
    accuracy = metrics["metrics"]["accuracy"]
    assert f"{accuracy - baseline['accuracy']:+.4g}" in body and "better" in body, body
    assert f"/actions/runs/{run.run_id}" in body
    # Its plots are linked where they are: in the build job's artifact.
    assert f"(in the `{ARTIFACT}` artifact of this run)" in body, body
    assert len(github.calls("create_comment")) == 1
    assert github.workflow_token not in run.output
