"""The matrix layout run for real: a repository of three models where a merge/pull
request touches one. The plan job picks that model; on GitLab its child pipeline (the
jobs written out, or includes of the pipeline component) runs just that model's jobs
with gitlab-ci-local, on GitHub the matrix jobs (in include mode the one matrix job that
calls the reusable workflow) run one leg each with act."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.generate.github import REUSABLE_FILE
from ci_mlops.generate.matrix import CALLS, CHILD_FILE, GITLAB_PLAN, GITLAB_TRIGGER
from tests.e2e.act_harness import (
    TEMPLATES_SHA,
    ActTools,
    GitHubRepository,
    WorkflowRun,
    new_repository,
    pr_event,
    push_event,
)
from tests.e2e.harness import Project, make_project, run_pipeline, safe_job_name
from tests.e2e.test_gitlab_pipelines import ci_variables
from tests.fakes.env import GITLAB_TOKEN, start_github
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import REPO, git

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = "breast-cancer"
MODELS = ("bc-a", "bc-b", "bc-c")
TOUCHED = "bc-b"
CHANGE_JOBS = ("data-test", "train", "evaluate", "export")
MR_JOBS = (*CHANGE_JOBS, "report")
MR_IID = "7"
# The component the generated child pipeline names, and where gitlab-ci-local finds it.
RELEASED = "$CI_SERVER_FQDN/ci-mlops/ci-mlops/pipeline@0.1.0"


def three_models(spec: dict[str, Any]) -> None:
    """The example's model three times, each trained by its own script (its ``paths``),
    in the matrix layout, without deploys or drift (a merge request runs neither)."""
    base = spec["models"][0]
    base.pop("deploy", None)
    base.pop("retrain", None)
    spec["models"] = [
        {
            **base,
            "name": name,
            "paths": [script(name)],
            "train": {**base["train"], "command": f"python {script(name)}"},
        }
        for name in MODELS
    ]
    spec["runtime"]["layout"] = "matrix"


def script(model: str) -> str:
    return f"train_{model.replace('-', '_')}.py"


def monorepo(tmp_path: Path, **options: Any) -> Project:
    """The three-model repository on main, with a branch whose one commit changes the
    touched model's training script."""
    project = make_project(EXAMPLE, tmp_path, change=three_models, **options)
    one_script_per_model(project)
    project.branch("tune-b")
    project.commit(script(TOUCHED), "# tuned\n", "tune one model")
    return project


def one_script_per_model(project: Project) -> None:
    """Each model's training script, a copy of the example's, committed and pushed."""
    for name in MODELS:
        shutil.copy(project.path / "train.py", project.path / script(name))
    project.commit("train.py", "", "one training script per model")
    project.push()


def base_sha(project: Project) -> str:
    return git(project.path, "rev-parse", "main").strip()


# --- GitLab ------------------------------------------------------------------------


def run_gitlab_matrix(
    project: Project, job_bin: Path, api: FakeGitLab, *, included: bool = False
) -> tuple[Any, Any, dict[str, Any]]:
    """The parent pipeline of a merge request, then its child pipeline as GitLab would
    start it: the plan job's artifact as the pipeline file, ``parent_pipeline`` as the
    source, the project's variables, but not the merge request's (the child file
    carries what it needs)."""
    parent_vars = ci_variables(
        api,
        "merge_request_event",
        CI_MERGE_REQUEST_IID=MR_IID,
        CI_MERGE_REQUEST_DIFF_BASE_SHA=base_sha(project),
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        GITLAB_TOKEN=GITLAB_TOKEN,
    )
    # gitlab-ci-local 4.69 runs `trigger: include: artifact:` as an experimental
    # downstream pipeline, but it reads the artifact under the job's raw name (it stores
    # `ci-mlops:plan`'s artifacts under an encoded one) and starts the child without the
    # --variable values. So the parent runs its plan job, and the child runs on its own.
    parent = run_pipeline(project, job_bin, parent_vars, jobs=[GITLAB_PLAN])
    artifact = project.state() / "artifacts" / safe_job_name(GITLAB_PLAN) / CHILD_FILE
    assert artifact.is_file(), parent.explain()
    text = artifact.read_text("utf-8")
    if included:
        # The component from this very commit, as include_locally does for the parent.
        assert RELEASED in text, text
        text = text.replace(RELEASED, f"$CI_SERVER_FQDN/ci-mlops/demo/pipeline@{project.head()}")
    child_file = project.path / CHILD_FILE
    child_file.parent.mkdir(parents=True, exist_ok=True)
    child_file.write_text(text, "utf-8")
    child_vars = {k: v for k, v in parent_vars.items() if not k.startswith("CI_MERGE_REQUEST_")} | {
        "CI_PIPELINE_SOURCE": "parent_pipeline"
    }
    extra = ["--file", CHILD_FILE]
    if included:
        # The component's `tags: []` (see test_include_mode_runs_the_same_jobs...).
        extra += ["--ignore-schema-paths", "#/definitions/tags/minItems"]
    child = run_pipeline(project, job_bin, child_vars, extra_args=extra)
    return parent, child, yaml.safe_load(text)


def assert_one_model_ran(parent: Any, child: Any, api: FakeGitLab) -> None:
    assert parent.code == 0 and parent.passed() == [GITLAB_PLAN], parent.explain()
    assert "1 of 3 models (bc-b)" in parent.log(GITLAB_PLAN)
    assert child.code == 0, child.explain()
    assert list(child.jobs) == [f"{TOUCHED}:{k}" for k in MR_JOBS], child.explain()
    assert child.failed() == [], child.explain()
    (note,) = api.notes[int(MR_IID)]  # the report found its merge request through the file
    assert note["body"].startswith(f"<!-- ci-mlops:report model={TOUCHED} -->")
    for text in (parent.output, child.output):
        assert GITLAB_TOKEN not in text and api.job_token not in text


def test_gitlab_matrix_runs_the_touched_models_jobs_in_its_child_pipeline(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = monorepo(tmp_path)
    committed = yaml.safe_load((project.path / ".gitlab-ci.yml").read_text("utf-8"))
    assert committed[GITLAB_TRIGGER]["trigger"]["include"] == [
        {"artifact": CHILD_FILE, "job": GITLAB_PLAN}
    ]

    parent, child, doc = run_gitlab_matrix(project, job_bin, gitlab_api)

    assert_one_model_ran(parent, child, gitlab_api)
    assert doc["variables"] == {"CI_MERGE_REQUEST_IID": {"value": MR_IID, "expand": False}}
    evaluated = json.loads(
        (
            project.state()
            / "artifacts"
            / safe_job_name(f"{TOUCHED}:evaluate")
            / ".ci-mlops"
            / TOUCHED
            / "gates.json"
        ).read_text("utf-8")
    )
    assert evaluated["passed"] is True


def test_gitlab_include_mode_matrix_includes_the_component_for_the_touched_model(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = monorepo(tmp_path)
    git(project.path, "checkout", "--quiet", "main")
    project.generate("--mode", "include")
    shutil.copytree(REPO / "templates", project.path / "templates")
    project.commit("templates/README.md", "CI/CD components\n", "include mode")
    project.push()
    git(project.path, "checkout", "--quiet", "tune-b")
    git(project.path, "merge", "--quiet", "--no-edit", "main")
    committed = (project.path / ".gitlab-ci.yml").read_text("utf-8")
    assert "component:" not in committed and "--mode include" in committed

    parent, child, doc = run_gitlab_matrix(project, job_bin, gitlab_api, included=True)

    assert_one_model_ran(parent, child, gitlab_api)
    (include,) = doc["include"]
    assert include["inputs"]["model"] == TOUCHED
    assert include["inputs"]["jobs"] == "," + ",".join(MR_JOBS) + ","
    # The jobs are the component's: they install through its MLOPS_INSTALL input.
    assert 'echo "$MLOPS_INSTALL"' in child.log(f"{TOUCHED}:data-test")


# --- GitHub ------------------------------------------------------------------------


@pytest.fixture
def github_api() -> Iterator[FakeGitHub]:
    api = start_github()
    yield api
    api.stop()


PR_NUMBER = 8


def github_monorepo(
    tmp_path: Path, tools: ActTools, api: FakeGitHub, *, include: bool = False
) -> tuple[GitHubRepository, dict[str, Any]]:
    """The three-model repository on the fake GitHub, on a branch that changes the
    touched model's script, and the pull request event of that branch (its base the
    default branch's head, which the plan job measures the change from)."""
    repository = new_repository(tmp_path, tools, api, include=include, change=three_models)
    project = repository.project
    one_script_per_model(project)
    base = base_sha(project)
    project.branch("tune-b")
    project.commit(script(TOUCHED), "# tuned\n", "tune one model")
    event = pr_event(api, PR_NUMBER)
    event["pull_request"]["base"]["sha"] = base
    return repository, event


def assert_touched_model_commented(api: FakeGitHub, run: WorkflowRun) -> None:
    """The report of the touched model, and no other, reached the pull request."""
    (comment,) = api.comments[PR_NUMBER]
    assert comment["body"].startswith(f"<!-- ci-mlops:report model={TOUCHED} -->")
    assert f"/actions/runs/{run.run_id}" in comment["body"]
    assert api.workflow_token not in run.output


def test_github_matrix_runs_one_leg_per_job_for_the_touched_model(
    tmp_path: Path, act_tools: ActTools, github_api: FakeGitHub
) -> None:
    repository, event = github_monorepo(tmp_path, act_tools, github_api)

    run = repository.run("pull_request", event, branch="tune-b")

    assert run.code == 0, run.explain()
    assert sorted(run.jobs) == sorted(["ci-mlops-validate", "plan", *MR_JOBS]), run.explain()
    assert run.failed() == [], run.explain()
    # Each matrix job ran one leg, for the touched model; no other model's leg started.
    assert legs_run(run.output) == sorted((k, TOUCHED) for k in MR_JOBS), run.explain()
    assert run.artifact_json(f"{TOUCHED}-evaluate", "gates.json")["passed"] is True
    assert_touched_model_commented(github_api, run)


def test_github_include_mode_matrix_calls_the_reusable_workflow_for_the_touched_model(
    tmp_path: Path, act_tools: ActTools, github_api: FakeGitHub
) -> None:
    # The caller runs as generated; only the reusable workflow it pins
    # (ci-mlops/ci-mlops/.github/workflows/mlops.yml@<sha>) comes from this working tree,
    # through act's --local-repository, as in the per-model include-mode scenario.
    repository, event = github_monorepo(tmp_path, act_tools, github_api, include=True)
    caller = yaml.safe_load(
        (repository.project.path / ".github" / "workflows" / "mlops.yml").read_text("utf-8")
    )
    assert set(caller["jobs"]) == {"ci-mlops-validate", "plan", CALLS}
    assert caller["jobs"][CALLS]["uses"] == f"ci-mlops/ci-mlops/{REUSABLE_FILE}@{TEMPLATES_SHA}"

    run = repository.run("pull_request", event, branch="tune-b")

    assert run.code == 0, run.explain()
    assert run.failed() == [], run.explain()
    assert sorted(run.jobs) == sorted(["ci-mlops-validate", "plan", *MR_JOBS]), run.explain()
    assert "1 of 3 models (bc-b)" in run.output, run.explain()
    # One leg of the calling matrix job, for the touched model; no other model's leg
    # started, and the reusable workflow's jobs ran for that model alone.
    assert legs_run(run.output, finished=False) == [(CALLS, TOUCHED)], run.explain()
    names = job_names(run.output)
    for job in MR_JOBS:
        assert names[job].startswith(f"{CALLS}/") and f"{TOUCHED}:" in names[job], names
    assert run.artifacts is not None
    made = {p.name for p in (run.artifacts / str(run.run_id)).iterdir()}
    assert made == {f"{TOUCHED}-{k}" for k in MR_JOBS}, made
    assert run.artifact_json(f"{TOUCHED}-evaluate", "gates.json")["passed"] is True
    assert_touched_model_commented(github_api, run)


def test_github_include_mode_matrix_retrains_only_the_model_a_dispatch_names(
    tmp_path: Path, act_tools: ActTools, github_api: FakeGitHub
) -> None:
    """A run by hand asking to retrain one model: the plan job reads the request (the
    caller passes it to the plan job as it passes it to the reusable workflow), so the
    workflow is called for that model alone, which retrains although nothing changed
    and deploys."""
    repository = new_repository(tmp_path, act_tools, github_api, include=True, change=three_models)
    one_script_per_model(repository.project)
    requested = "bc-c"
    event = {**push_event(github_api), "inputs": {"retrain": requested}}

    run = repository.run("workflow_dispatch", event)

    assert run.code == 0, run.explain()
    assert run.failed() == [], run.explain()
    assert f"1 of 3 models ({requested})" in run.output, run.explain()
    assert legs_run(run.output, finished=False) == [(CALLS, requested)], run.explain()
    deploys = ["deploy-staging", "deploy-production"]
    assert sorted(run.jobs) == sorted(["ci-mlops-validate", "plan", *CHANGE_JOBS, *deploys])
    assert run.artifact_json(f"{requested}-train", "train.json")["skipped"] is False
    assert {d["task"] for d in github_api.deployments} == {f"deploy:{requested}"}
    assert [r["tag_name"] for r in github_api.releases] == [f"{requested}-v1.0.0-run.{run.run_id}"]
    assert github_api.workflow_token not in run.output


def legs_run(output: str, *, finished: bool = True) -> list[tuple[str, str]]:
    """The matrix legs act finished (or, ``finished=False``, started: act reports no
    result for a job that calls a reusable workflow), as (job id, model), from its JSON
    log."""
    legs = set()
    for entry in log_entries(output):
        if entry.get("matrix") and (entry.get("jobResult") or not finished):
            legs.add((str(entry["jobID"]), str(entry["matrix"].get("model"))))
    return sorted(legs)


def job_names(output: str) -> dict[str, str]:
    """Each finished job's id and the name act ran it under: a called workflow's job is
    named after the calling job (``models/...``), with the model in its own name."""
    return {
        str(entry["jobID"]): str(entry["job"]).strip()
        for entry in log_entries(output)
        if entry.get("jobResult")
    }


def log_entries(output: str) -> list[dict[str, Any]]:
    entries = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
