"""``runtime.jobs: combined``: one build job per model runs data-test, train, evaluate
and export; every other job stays as it is and takes its inputs from the build job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ci_mlops.generate.kinds import (
    COMBINED_KINDS,
    COMBINED_STEPS,
    KINDS,
    PLATFORMS,
    baseline_names,
    job_images,
)
from tests.generate.test_job_images import generate, gitlab_jobs, project_with, tag
from tests.helpers import run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

MODEL = "breast-cancer"
BUILD = f"{MODEL}:build"
COMMAND = 'ci-mlops build --spec "$MLOPS_SPEC" --model "$MLOPS_MODEL"'


def downloads(job: dict[str, Any]) -> list[str]:
    return [s["with"]["name"] for s in job["steps"] if "download-artifact" in s.get("uses", "")]


def test_gitlab_runs_one_build_job_where_the_four_step_jobs_were(tmp_path: Path) -> None:
    folder = project_with(tmp_path, {"jobs": "combined"})
    gitlab, _ = generate(folder, "--platform", "gitlab")
    jobs = gitlab_jobs(gitlab)
    assert set(jobs) == {
        "ci-mlops:validate",
        BUILD,
        f"{MODEL}:report",
        f"{MODEL}:deploy-staging",
        f"{MODEL}:deploy-production",
        f"{MODEL}:drift",
    }
    assert gitlab["stages"] == ["validate", "build", "report", "deploy", "monitor"]
    build = jobs[BUILD]
    assert build["script"] == [COMMAND]
    # What the four step jobs installed between them, and the project's requirements.
    assert build["before_script"] == [
        "python -I -m pip install 'ci-mlops[data,ml,plots,gitlab,onnx]==0.1.0' -r requirements.txt"
    ]
    # The merge request still shows the data tests' and the gates' JUnit results, the
    # metrics widget and the Data Docs link; the model cache is training's.
    reports = build["artifacts"]["reports"]
    assert reports["junit"] == [
        f".ci-mlops/{MODEL}/data-test.junit.xml",
        f".ci-mlops/{MODEL}/evaluate.junit.xml",
    ]
    assert reports["metrics"] == f".ci-mlops/{MODEL}/metrics.txt"
    assert build["artifacts"]["expose_as"] == f"{MODEL} data docs"
    assert build["artifacts"]["when"] == "always"
    assert f"ci-mlops-{MODEL}-model" in [c["key"] for c in build["cache"]]
    # Training's limit (10 minutes in the example) plus room for it and the other steps.
    assert build["timeout"] == "50 minutes"
    for later in ("report", "deploy-staging"):
        needs = jobs[f"{MODEL}:{later}"]["needs"]
        assert [n if isinstance(n, str) else n["job"] for n in needs] == [BUILD]
    assert gitlab_schema_errors(folder / ".gitlab-ci.yml") == []


def test_github_runs_one_build_job_and_later_jobs_download_its_artifact(tmp_path: Path) -> None:
    folder = project_with(tmp_path, {"jobs": "combined"})
    _, github = generate(folder, "--platform", "github")
    jobs = github["jobs"]
    assert set(jobs) == {
        "ci-mlops-validate",
        f"{MODEL}-build",
        f"{MODEL}-report",
        f"{MODEL}-deploy-staging",
        f"{MODEL}-deploy-production",
        f"{MODEL}-drift",
    }
    build = jobs[f"{MODEL}-build"]
    # Evaluation reads the baseline artifact of the default branch: actions: read.
    assert build["permissions"] == {"contents": "read", "actions": "read"}
    run = next(s for s in build["steps"] if s.get("name", "").startswith("Data tests"))
    assert run["run"] == COMMAND
    assert downloads(build) == []
    for later in ("report", "deploy-staging", "deploy-production"):
        job = jobs[f"{MODEL}-{later}"]
        assert downloads(job) == [f"{MODEL}-build"], later
        assert f"{MODEL}-build" in job["needs"], later
    workflow = folder / ".github/workflows/mlops.yml"
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []


def test_job_images_run_the_build_job_in_the_build_image(tmp_path: Path) -> None:
    folder = project_with(tmp_path, {"jobs": "combined", "job_images": "published"})
    gitlab, github = generate(folder)
    assert gitlab[BUILD]["image"] == tag("build")
    assert github["jobs"][f"{MODEL}-build"]["container"] == {"image": tag("build")}
    assert gitlab[f"{MODEL}:deploy-staging"]["image"] == tag("deploy")
    workflow = folder / ".github/workflows/mlops.yml"
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    assert gitlab_schema_errors(folder / ".gitlab-ci.yml") == []


def test_the_build_image_holds_every_extra_of_the_build_job_on_both_platforms() -> None:
    build = COMBINED_KINDS["build"]
    assert build.job_image is not None
    assert build.job_image.name in job_images()
    for platform in PLATFORMS:
        members = {e for name in COMBINED_STEPS for e in KINDS[name].extras_on(platform)}
        assert set(build.extras_on(platform)) == members
        assert members <= set(build.job_image.extras)


def test_the_matrix_layout_takes_the_build_job_as_one_more_kind(tmp_path: Path) -> None:
    folder = project_with(tmp_path, {"jobs": "combined", "layout": "matrix"})
    _, github = generate(folder)
    jobs = github["jobs"]
    assert "build" in jobs and not {"data-test", "train", "evaluate", "export"} & set(jobs)
    assert (
        jobs["build"]["strategy"]["matrix"]["include"]
        == "${{ fromJSON(needs.plan.outputs.build) }}"
    )
    assert "build" in jobs["report"]["needs"] and "build" in jobs["deploy-staging"]["needs"]
    workflow = folder / ".github/workflows/mlops.yml"
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    assert gitlab_schema_errors(folder / ".gitlab-ci.yml") == []
    # The plan job's list for the build matrix names the model on a change to its files.
    out = tmp_path / "plan.json"
    result = run_cli(
        "plan", "--platform", "github", "--output", out, "--changed-file", "train.py", cwd=folder
    )
    assert result.code == 0, result.output
    assert MODEL in out.read_text("utf-8").split("build", 1)[1]


def test_include_mode_refuses_the_combined_layout(tmp_path: Path) -> None:
    folder = project_with(tmp_path, {"jobs": "combined"})
    before = (folder / ".gitlab-ci.yml").read_text("utf-8")
    result = run_cli("generate", "--mode", "include", cwd=folder)
    assert result.code == 2
    assert "runtime.jobs: combined needs --mode inline" in result.output
    assert "Traceback" not in result.output
    assert (folder / ".gitlab-ci.yml").read_text("utf-8") == before


def test_an_unknown_jobs_value_is_refused_at_its_line(tmp_path: Path) -> None:
    folder = project_with(tmp_path, {"jobs": "merged"})
    result = run_cli("validate", cwd=folder)
    assert result.code == 2
    assert "$.runtime.jobs" in result.output and "mlops.yaml:" in result.output


@pytest.mark.parametrize(
    ("jobs", "first", "then"), [("steps", "evaluate", "build"), ("combined", "build", "evaluate")]
)
def test_the_baseline_is_looked_for_in_the_layouts_job_then_the_others(
    jobs: str, first: str, then: str
) -> None:
    names = baseline_names(MODEL, jobs)
    assert [n.key for n in names] == [f"{MODEL}:{first}", f"{MODEL}:{then}"]
    assert [n.artifact for n in names] == [f"{MODEL}-{first}", f"{MODEL}-{then}"]
