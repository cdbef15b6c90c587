"""The matrix layout: 200 models in one repository. The committed pipelines stay a few
lines per model and pass the platforms' schemas, zizmor and actionlint; the plan job
picks the models a change touches (one model's files: that model; the spec or the
pipeline file: every model; a schedule: every drift check; docs: none)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ci_mlops.generate.affected import Event, glob_regex, selection, uses_matrix
from ci_mlops.generate.kinds import job_suffix
from ci_mlops.generate.matrix import CHILD_FILE, choose, gitlab_child, gitlab_children_included
from ci_mlops.generate.plan import build_plan
from ci_mlops.generate.templates import interpolate
from ci_mlops.generate.write import GITHUB_FILE, GITLAB_FILE, GITLAB_MAX_BYTES, render_files
from ci_mlops.spec.model import Spec
from tests.hardening.checks import load, schema_errors
from tests.hardening.strategies import to_yaml
from tests.hardening.test_scale import model, spec_of
from tests.helpers import git, make_git_repo, run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_ci_local_list,
    gitlab_schema_errors,
    zizmor_findings,
)

ACT = Path(sys.executable).with_name("act")
COUNT = 200
CHANGE_JOBS = ("data-test", "train", "evaluate", "export")
MR_JOBS = (*CHANGE_JOBS, "report")
DEPLOYS = ("deploy-staging", "deploy-production")


@pytest.fixture(scope="module")
def many() -> Spec:
    return spec_of(COUNT, layout="auto")


@pytest.fixture(scope="module")
def files(many: Spec) -> dict[str, str]:
    return render_files(many, platform="all")


def picked(spec: Spec, event: Event, shared: tuple[str, ...] = ()) -> dict[str, list[str]]:
    chosen = selection(build_plan(spec), event, shared)
    return {name: [job_suffix(j.key) for j in jobs] for name, jobs in chosen.items()}


def test_auto_layout_switches_to_the_matrix_above_ten_models() -> None:
    assert not uses_matrix(spec_of(10, layout="auto"))
    assert uses_matrix(spec_of(11, layout="auto"))
    assert uses_matrix(spec_of(2, layout="matrix"))
    assert not uses_matrix(spec_of(50, layout="per-model"))


def test_two_hundred_models_take_a_few_lines_each_on_both_platforms(files: dict[str, str]) -> None:
    for rel in (GITLAB_FILE, GITHUB_FILE):
        lines = files[rel].count("\n")
        assert lines / COUNT <= 40, (rel, lines)
    # Only path filters grow with the models: the jobs are the same for 20 and 200.
    few = render_files(spec_of(20, layout="matrix"), platform="all")
    assert load(few[GITHUB_FILE])["jobs"].keys() == load(files[GITHUB_FILE])["jobs"].keys()
    assert load(few[GITLAB_FILE]).keys() == load(files[GITLAB_FILE]).keys()
    jobs = load(files[GITHUB_FILE])["jobs"]
    assert list(jobs) == ["ci-mlops-validate", "plan", *MR_JOBS[:4], "report", *DEPLOYS, "drift"]


def test_two_hundred_models_pass_schemas_zizmor_and_actionlint(
    files: dict[str, str], many: Spec, tmp_path: Path
) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, "utf-8")
    workflow = tmp_path / GITHUB_FILE
    caller = tmp_path / "include" / GITHUB_FILE
    caller.parent.mkdir(parents=True)
    caller.write_text(render_files(many, platform="github", mode="include")[GITHUB_FILE])
    assert caller.read_text().count("\n") / COUNT <= 40
    for path in (workflow, caller):
        assert github_workflow_errors(path) == []
        assert zizmor_findings([path]) == []
        assert actionlint_findings([path]) == []
    assert gitlab_schema_errors(tmp_path / GITLAB_FILE) == []
    # The child pipeline of a change to the spec: every job of every model.
    plan = build_plan(many)
    event = Event(source="push", default_branch=True, changed=("mlops.yaml",))
    child = gitlab_child(many, plan, choose(plan, event, GITLAB_FILE), {})
    text = to_yaml(child)
    assert len(text.encode()) < GITLAB_MAX_BYTES
    assert schema_errors("gitlab-ci", child) == []
    # A push to the default branch: the change jobs and deploys, no report or drift.
    assert sum(1 for k in child if k.startswith("model-")) == COUNT * 6


def test_the_github_plan_job_reads_a_retrain_request_in_both_modes(many: Spec) -> None:
    """Without the request a run by hand picks every model: inline the plan job reads
    it from the workflow's env; the include-mode caller has none, so its plan job gets
    the very expression the call of the reusable workflow gets."""
    inline = load(render_files(many, platform="github")[GITHUB_FILE])
    caller = load(render_files(many, platform="github", mode="include")[GITHUB_FILE])
    asked = caller["jobs"]["models"]["with"]["retrain"]
    assert "inputs.retrain" in asked and "client_payload.model" in asked
    assert inline["env"]["MLOPS_RETRAIN"] == asked
    assert "env" not in caller
    assert caller["jobs"]["plan"]["env"]["MLOPS_RETRAIN"] == asked


def test_a_change_to_one_models_files_selects_only_that_model(many: Spec) -> None:
    mr = Event(source="merge-request", default_branch=False, changed=("models/model-042/train.py",))
    assert picked(many, mr) == {"model-042": list(MR_JOBS)}
    push = Event(source="push", default_branch=True, changed=("models/model-007/eval.csv",))
    assert picked(many, push) == {"model-007": [*CHANGE_JOBS, *DEPLOYS]}
    branch = Event(source="push", default_branch=False, changed=("models/model-007/eval.csv",))
    assert picked(many, branch) == {"model-007": list(CHANGE_JOBS)}


def test_a_change_to_shared_files_or_a_schedule_selects_every_model(many: Spec) -> None:
    spec_change = Event(source="merge-request", default_branch=False, changed=("mlops.yaml",))
    assert len(picked(many, spec_change)) == COUNT
    pipeline = Event(source="push", default_branch=False, changed=(GITLAB_FILE,))
    assert len(picked(many, pipeline, (GITLAB_FILE,))) == COUNT
    schedule = Event(source="schedule", default_branch=True, schedule="0 3 * * 1")
    assert picked(many, schedule) == {f"model-{i:03d}": ["drift"] for i in range(COUNT)}
    other_cron = Event(source="schedule", default_branch=True, schedule="0 5 * * *")
    assert picked(many, other_cron) == {}


def test_docs_retrain_requests_and_manual_runs(many: Spec) -> None:
    docs = Event(source="merge-request", default_branch=False, changed=("README.md", "docs/x.md"))
    assert picked(many, docs) == {}
    retrain = Event(source="manual", default_branch=True, retrain="model-003")
    assert picked(many, retrain) == {"model-003": [*CHANGE_JOBS, *DEPLOYS]}
    scheduled_retrain = Event(source="schedule", default_branch=True, retrain="model-003")
    assert picked(many, scheduled_retrain) == {"model-003": [*CHANGE_JOBS, *DEPLOYS]}
    by_hand = Event(source="manual", default_branch=False)
    assert len(picked(many, by_hand)) == COUNT


def test_globs_read_as_the_platforms_read_them() -> None:
    folder = glob_regex("models/a/**/*")
    assert folder.match("models/a/train.py") and folder.match("models/a/x/y.csv")
    assert not folder.match("models/ab/train.py")
    star = glob_regex("data/*.csv")
    assert star.match("data/a.csv") and not star.match("data/x/a.csv")


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    """A git repository of 200 models on main, generated, with a branch for changes."""
    repo = tmp_path / "repo"
    for i in range(COUNT):
        folder = repo / "models" / f"model-{i:03d}"
        folder.mkdir(parents=True)
        for file in ("train.csv", "eval.csv", "now.csv"):
            (folder / file).write_text("x,y\n1,0\n", "utf-8")
        (folder / "train.py").write_text("print('train')\n", "utf-8")
    doc = {"version": 1, "models": [model(f"model-{i:03d}") for i in range(COUNT)]}
    (repo / "mlops.yaml").write_text(to_yaml(doc), "utf-8")
    (repo / "README.md").write_text("models\n", "utf-8")
    assert run_cli("generate", cwd=repo).code == 0
    make_git_repo(repo)
    git(repo, "checkout", "--quiet", "-b", "change")
    return repo


def commit(repo: Path, rel: str, text: str) -> str:
    (repo / rel).write_text(text, "utf-8")
    git(repo, "commit", "--quiet", "-am", f"change {rel}")
    return git(repo, "rev-parse", "main").strip()


@pytest.mark.slow
def test_gitlab_merge_request_touching_one_model_runs_only_its_jobs(monorepo: Path) -> None:
    base = commit(monorepo, "models/model-042/train.py", "print('tuned')\n")
    mr = {"CI_PIPELINE_SOURCE": "merge_request_event"}
    parent = gitlab_ci_local_list(monorepo, mr)
    assert parent == ["ci-mlops:plan", "ci-mlops:models"]
    env = {**mr, "CI_MERGE_REQUEST_DIFF_BASE_SHA": base, "CI_MERGE_REQUEST_IID": "7"}
    result = run_cli("plan", "--platform", "gitlab", cwd=monorepo, env=env)
    assert result.code == 0, result.output
    assert "1 of 200 models (model-042)" in result.stdout
    child = gitlab_ci_local_list(monorepo, mr, file=CHILD_FILE)
    assert child == [f"model-042:{k}" for k in MR_JOBS]
    variables = load((monorepo / CHILD_FILE).read_text("utf-8"))["variables"]
    # The report job of the child pipeline still finds its merge request.
    assert variables == {"CI_MERGE_REQUEST_IID": {"value": "7", "expand": False}}


@pytest.mark.slow
def test_gitlab_docs_only_change_runs_nothing(monorepo: Path) -> None:
    commit(monorepo, "README.md", "more words\n")
    assert gitlab_ci_local_list(monorepo, {"CI_PIPELINE_SOURCE": "merge_request_event"}) == []


def test_github_pull_request_touching_one_model_fills_only_its_matrices(monorepo: Path) -> None:
    base = commit(monorepo, "models/model-199/train.csv", "x,y\n2,1\n")
    event = monorepo.parent / "event.json"
    event.write_text(json.dumps({"pull_request": {"base": {"sha": base}}}), "utf-8")
    outputs = monorepo.parent / "outputs"
    env = {
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REF_NAME": "7/merge",
        "GITHUB_OUTPUT": str(outputs),
        "MLOPS_RETRAIN": "",
    }
    result = run_cli("plan", "--platform", "github", cwd=monorepo, env=env)
    assert result.code == 0, result.output
    rows = dict(line.split("=", 1) for line in outputs.read_text("utf-8").splitlines())
    matrices = {slot: json.loads(value) for slot, value in rows.items()}
    one = [{"model": "model-199", "onnx": True, "build_image": False, "drift": True}]
    assert matrices == {
        **{slot: one for slot in MR_JOBS},
        **{slot: [] for slot in (*DEPLOYS, "drift")},
        # Include mode calls the reusable workflow once per listed model.
        "models": [{"model": "model-199", "schedule": "0 3 * * 1", **one[0]}],
    }
    # The workflow runs a matrix job only when its list is not empty.
    jobs = load((monorepo / GITHUB_FILE).read_text("utf-8"))["jobs"]
    assert "needs.plan.outputs.drift != '[]'" in jobs["drift"]["if"]
    assert jobs["train"]["strategy"]["matrix"]["include"] == (
        "${{ fromJSON(needs.plan.outputs.train) }}"
    )


def test_act_plans_the_same_ten_jobs_for_two_hundred_models(monorepo: Path) -> None:
    """act reads the committed workflow as GitHub would: validate, plan and one matrix
    job per kind, whatever the number of models."""
    proc = subprocess.run(
        [str(ACT), "-l", "--workflows", GITHUB_FILE],
        cwd=monorepo,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [line.split()[1] for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert sorted(rows) == sorted(["ci-mlops-validate", "plan", *MR_JOBS, *DEPLOYS, "drift"])


def test_include_mode_keeps_two_hundred_models_to_path_filters_and_splits_the_child(
    many: Spec, tmp_path: Path
) -> None:
    """GitLab include mode: the committed file holds no include (the child pipelines
    do, one per chosen model), and a change that concerns every model spreads them over
    child pipelines of at most 150 includes, GitLab's limit."""
    text = render_files(many, platform="gitlab", mode="include")[GITLAB_FILE]
    assert text.count("\n") / COUNT <= 5
    parent = load(text)
    assert "include" not in parent and "--mode include" in text
    assert [k for k in parent if k.startswith("ci-mlops:models")] == [
        "ci-mlops:models",
        "ci-mlops:models-2",
    ]
    assert parent["ci-mlops:plan"]["artifacts"]["paths"] == [CHILD_FILE, ".ci-mlops/pipeline-2.yml"]
    (tmp_path / GITLAB_FILE).write_text(text, "utf-8")
    assert gitlab_schema_errors(tmp_path / GITLAB_FILE) == []
    plan = build_plan(many)
    every = Event(source="merge-request", default_branch=False, changed=("mlops.yaml",))
    children = gitlab_children_included(many, plan, choose(plan, every, GITLAB_FILE), {})
    assert [len(c["include"]) for c in children] == [150, 50]
    for child in children:
        assert schema_errors("gitlab-ci", child) == []
        assert len(to_yaml(child).encode()) < GITLAB_MAX_BYTES
    one = Event(source="merge-request", default_branch=False, changed=("models/model-042/x.py",))
    first, second = gitlab_children_included(many, plan, choose(plan, one, GITLAB_FILE), {})
    (include,) = first["include"]
    assert include["inputs"]["model"] == "model-042"
    assert include["inputs"]["jobs"] == "," + ",".join(MR_JOBS) + ","
    # GitLab checks an input against the component's regex: every job list passes it.
    component = (Path(__file__).parents[2] / "templates" / "pipeline.yml").read_text("utf-8")
    declared = load(component.partition("\n---\n")[0])["spec"]["inputs"]["jobs"]["regex"]
    for child in children:
        for each in child["include"]:
            assert re.fullmatch(declared, each["inputs"]["jobs"]), each["inputs"]["jobs"]
    assert re.fullmatch(declared, ",data-test,deploy-eu2,")
    # A child pipeline needs one job: the second says there is nothing to do.
    assert list(second) == ["stages", "ci-mlops:nothing"]


def test_the_components_jobs_input_decides_before_the_rules_that_read_the_source() -> None:
    """In a child pipeline the source is parent_pipeline: a job the plan listed runs
    (a manual one waits for a person), and every other job of the component is left out,
    even one a retrain request would otherwise start."""
    component = (Path(__file__).parents[2] / "templates" / "pipeline.yml").read_text("utf-8")
    jobs = interpolate(component, {"model": "churn", "jobs": ",train,deploy-production,"})
    train, production = jobs["churn:train"]["rules"], jobs["churn:deploy-production"]["rules"]
    assert train[:2] == [
        {"if": '",train,deploy-production," =~ /,train,/'},
        {"if": '",train,deploy-production," != ""', "when": "never"},
    ]
    assert production[0] == {
        "if": '",train,deploy-production," =~ /,deploy-production,/',
        "when": "manual",
    }
    evaluate = jobs["churn:evaluate"]["rules"]
    assert evaluate[0]["if"].endswith("=~ /,evaluate,/") and evaluate[1]["when"] == "never"
    # Left empty (a project including the component itself), the rules decide as before.
    plain = interpolate(component, {"model": "churn"})["churn:train"]["rules"]
    assert plain[1] == {"if": '"" != ""', "when": "never"}


def test_plan_in_include_mode_writes_every_child_file(monorepo: Path) -> None:
    env = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "change"}
    result = run_cli(
        "plan",
        "--platform",
        "gitlab",
        "--mode",
        "include",
        "--changed-file",
        "mlops.yaml",
        cwd=monorepo,
        env=env,
    )
    assert result.code == 0, result.output
    assert "200 of 200 models" in result.stdout
    parts = [
        load((monorepo / p).read_text("utf-8")) for p in (CHILD_FILE, ".ci-mlops/pipeline-2.yml")
    ]
    assert [len(p["include"]) for p in parts] == [150, 50]
    assert parts[1]["include"][-1]["inputs"]["model"] == "model-199"
