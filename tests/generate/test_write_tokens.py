"""No code from the checkout runs where a write token lives: the committed pipelines, the
GitLab components and the GitHub reusable workflow, read as the platforms read them.

GitLab's report job (GITLAB_TOKEN) and GitHub's report and deploy jobs (a token that can
comment, publish releases and record deployments) fetch no code and restore no cache,
install ci-mlops before anything from the project is in their folder where the platform
lets them, and run it with ``python -I``. Evaluate, which loads the merge request's
model, holds no write token. The gitlab-ci-local run in ``tests/e2e/`` shows the same
with a merge request that commits a ``pip`` package, a ``ci_mlops`` shadow package,
``sitecustomize.py`` and a ``.pth``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.generate.write import GITHUB_FILE, GITLAB_FILE
from tests.generate.test_generate import EXAMPLE_NAMES
from tests.hardening.checks import github_token_problems, gitlab_token_problems
from tests.helpers import EXAMPLES, REPO

ISOLATED = "python -I -m ci_mlops "

# Each call of pip or uv in an install line: the interpreter and options before ``-m``.
_INSTALLER_CALL = re.compile(r"(\S+(?: -\w)*) -m (?:pip|uv) ")
# pip or uv started as a command of its own (a console script), not as a module.
_BARE_INSTALLER = re.compile(r"(?:^|[;&|(]\s*|\bthen |\belse )(?:pip3?|uv) ", re.M)


def installer_calls(lines: list[str]) -> list[str]:
    return _INSTALLER_CALL.findall("\n".join(lines))


def isolated_installs(lines: list[str]) -> bool:
    """Every pip and uv call of ``lines`` is a module of the isolated interpreter (the
    templates' lines choose between the two in the shell)."""
    text = "\n".join(lines)
    return all(c == "python -I" for c in installer_calls(lines)) and not _BARE_INSTALLER.search(
        text
    )


REUSABLE = REPO / ".github" / "workflows" / "mlops.yml"


def github_files() -> list[Path]:
    return [*(EXAMPLES / e / GITHUB_FILE for e in EXAMPLE_NAMES), REUSABLE]


def gitlab_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    """(file, job name, job) of every committed GitLab pipeline and component."""
    out = []
    for example in EXAMPLE_NAMES:
        doc = yaml.safe_load((EXAMPLES / example / GITLAB_FILE).read_text("utf-8"))
        out += [(example, k, j) for k, j in doc.items() if isinstance(j, dict) and "script" in j]
    for component in sorted((REPO / "templates").glob("*.yml")):
        _, jobs = yaml.safe_load_all(component.read_text("utf-8"))
        out += [(component.name, k, j) for k, j in jobs.items()]
    return out


def steps_of(job: dict[str, Any]) -> list[str]:
    """Each step as ``uses`` (without the pin) or its ``run`` text."""
    return [str(s.get("uses", "")).split("@")[0] or s["run"] for s in job["steps"]]


@pytest.mark.parametrize("path", github_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_github_jobs_with_a_write_token_check_nothing_out(path: Path) -> None:
    jobs = yaml.safe_load(path.read_text("utf-8"))["jobs"]
    writers = {
        job_id: job
        for job_id, job in jobs.items()
        if {"pull-requests", "contents"}
        & {k for k, v in job["permissions"].items() if v == "write"}
    }
    # Not vacuous: the report job and a deploy per environment hold write tokens.
    assert sum(job_id.endswith("report") for job_id in writers) == 1, sorted(writers)
    assert sum("deploy-" in job_id for job_id in writers) == 2, sorted(writers)
    for job_id, job in writers.items():
        assert github_token_problems(job_id, job) == []
        steps = steps_of(job)
        assert "actions/checkout" not in steps
        assert "cache" not in job["steps"][0].get("with", {})  # setup-python
        first_download = steps.index("actions/download-artifact")
        install = next(i for i, s in enumerate(steps) if "pip install" in s)
        assert install < first_download, steps  # installed into an empty workspace
        assert steps[install].startswith("python -I -m pip install ") or "set -f" in steps[install]
        (command,) = [s for s in steps if "ci_mlops" in s or "ci-mlops " in s]
        assert command.startswith(ISOLATED), command
        assert job["env"]["MLOPS_SPEC"].startswith(".ci-mlops/")
        assert job["env"]["MLOPS_SPEC"].endswith("/spec.yaml")


@pytest.mark.parametrize("path", github_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_github_evaluate_loads_the_model_with_a_read_only_token(path: Path) -> None:
    jobs = yaml.safe_load(path.read_text("utf-8"))["jobs"]
    (evaluate,) = [job for job_id, job in jobs.items() if job_id.endswith("evaluate")]
    assert set(evaluate["permissions"].values()) == {"read"}


@pytest.mark.parametrize("path", github_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_python_a_github_job_starts_is_isolated(path: Path) -> None:
    runs = [
        line
        for job in yaml.safe_load(path.read_text("utf-8"))["jobs"].values()
        for step in job["steps"]
        for line in str(step.get("run", "")).splitlines()
        if "python" in line
    ]
    assert runs
    assert all("python -I -m " in line for line in runs), runs


def test_every_permission_of_a_generated_workflow_says_why() -> None:
    for path in github_files():
        lines = path.read_text("utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() in ("permissions:",):
                j = i + 1
                while j < len(lines) and lines[j].startswith(line[: -len("permissions:")] + "  "):
                    assert " # " in lines[j], f"{path}:{j + 1}: {lines[j]}"
                    j += 1


def test_the_gitlab_report_job_fetches_no_code_and_runs_isolated() -> None:
    reports = [(f, k, j) for f, k, j in gitlab_jobs() if k.endswith(":report")]
    assert len(reports) == 4  # two examples, the report and the pipeline components
    for where, key, job in reports:
        assert gitlab_token_problems(key, job, "mlops.yaml") == [], where
        assert job["variables"]["GIT_STRATEGY"] == "none"
        assert "cache" not in job
        assert job["environment"] == {"name": "ci-mlops-report", "action": "prepare"}
        assert all(line.startswith(ISOLATED) for line in job["script"])
        assert installer_calls(job["before_script"]) and isolated_installs(job["before_script"])


def test_no_other_gitlab_job_receives_the_report_token_or_runs_pip_unisolated() -> None:
    for where, key, job in gitlab_jobs():
        if not key.endswith(":report"):
            assert (job.get("environment") or {}).get("name") != "ci-mlops-report", (where, key)
        assert isolated_installs(job.get("before_script", [])), (where, key)
    evaluate = [j for _, k, j in gitlab_jobs() if k.endswith(":evaluate")]
    assert evaluate and all("environment" not in j for j in evaluate)


def test_the_checks_catch_a_report_job_laid_out_the_old_way() -> None:
    """The checks above can fail: the report jobs as they were before (checkout, cache,
    ci-mlops's console script) are each caught."""
    jobs = yaml.safe_load((EXAMPLES / "breast-cancer" / GITHUB_FILE).read_text("utf-8"))["jobs"]
    report = jobs["breast-cancer-report"]
    old = {
        **report,
        "env": {**report["env"], "MLOPS_SPEC": "mlops.yaml"},
        "steps": [
            {"uses": "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"},
            {**report["steps"][0], "with": {"python-version": "3.11", "cache": "pip"}},
            *[s for s in report["steps"][1:] if s.get("name") != "Install ci-mlops"],
        ],
    }
    old["steps"].insert(-2, {"name": "Install ci-mlops", "run": "python -m pip install x"})
    old["steps"][-2] = {**old["steps"][-2], "run": "ci-mlops report --spec x --model y"}
    problems = github_token_problems("breast-cancer-report", old)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "holds a write token and checks out the repository",
        "holds a write token and restores a cache",
        "artifacts arrive before ci-mlops is installed",
        "runs ci-mlops without isolation",
        "reads the spec from outside the model folder",
    ]
    gitlab = yaml.safe_load((EXAMPLES / "breast-cancer" / GITLAB_FILE).read_text("utf-8"))
    job = gitlab["breast-cancer:report"]
    old_gitlab = {
        **job,
        "variables": {**job["variables"], "GIT_STRATEGY": "fetch", "MLOPS_SPEC": "mlops.yaml"},
        "cache": [{"key": "pip-3.11", "paths": [".cache/pip"]}],
        "script": ['ci-mlops report --spec "$MLOPS_SPEC" --model "$MLOPS_MODEL"'],
    }
    assert gitlab_token_problems("breast-cancer:report", old_gitlab, "mlops.yaml") == [
        "fetches the repository",
        "restores a cache",
        "MLOPS_SPEC is 'mlops.yaml'",
        "runs ci-mlops without isolation",
    ]
    train = {**gitlab["breast-cancer:train"], "environment": {"name": "ci-mlops-report"}}
    assert gitlab_token_problems("breast-cancer:train", train, "mlops.yaml") == [
        "names the report environment"
    ]
