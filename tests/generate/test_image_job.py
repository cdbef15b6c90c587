"""The image job of a model that asks for a container image (deploy.image), and
environment URLs: generated for both platforms, inline and include, they pass the
platforms' schemas, zizmor and actionlint; only the image job may push images, and it
waits for the first environment's deploy only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.spec import load_spec
from tests.generate.test_generate import with_template_sha
from tests.hardening.checks import github_problems, gitlab_problems
from tests.helpers import copy_example, run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

NAME = "breast-cancer"
URL = "https://breast-cancer.staging.example.com"


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example opted in to the image job, generated inline and in include mode."""
    out = {}
    for mode in ("inline", "include"):
        project = copy_example(NAME, tmp_path_factory.mktemp(mode))
        spec_path = project / "mlops.yaml"
        spec = yaml.safe_load(spec_path.read_text("utf-8"))
        spec["models"][0]["deploy"] = {
            "image": {},
            "environments": [
                {"name": "staging", "url": URL},
                {"name": "production", "when": "manual"},
            ],
        }
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
        with_template_sha(spec_path)
        result = run_cli("generate", "--mode", mode, cwd=project)
        assert result.code == 0, result.output
        out[mode] = project
    return out


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text("utf-8")))


@pytest.mark.parametrize("mode", ["inline", "include"])
def test_generated_files_pass_schemas_zizmor_and_actionlint(
    projects: dict[str, Path], mode: str
) -> None:
    project = projects[mode]
    workflow = project / ".github/workflows/mlops.yml"
    assert gitlab_schema_errors(project / ".gitlab-ci.yml") == []
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    spec = load_spec(project / "mlops.yaml", check_files=False)
    assert gitlab_problems((project / ".gitlab-ci.yml").read_text(), spec, mode) == []
    assert github_problems(workflow.read_text(), spec, mode) == []


def test_gitlab_image_job_builds_after_the_first_deploy_with_buildah(
    projects: dict[str, Path],
) -> None:
    jobs = load(projects["inline"] / ".gitlab-ci.yml")
    job = jobs[f"{NAME}:image"]
    assert job["stage"] == "deploy"
    assert f"{NAME}:deploy-staging" in job["needs"]
    assert f"{NAME}:deploy-production" not in job["needs"]
    assert job["before_script"][:2] == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends buildah",
    ]
    assert job["script"] == ['ci-mlops image --spec "$MLOPS_SPEC" --model "$MLOPS_MODEL"']
    # It deploys nothing itself and signs nothing: no environment, no OIDC token.
    assert "environment" not in job and "id_tokens" not in job
    staging = jobs[f"{NAME}:deploy-staging"]["environment"]
    assert staging["url"] == URL
    assert "url" not in jobs[f"{NAME}:deploy-production"]["environment"]


def test_github_image_job_alone_may_push_packages(projects: dict[str, Path]) -> None:
    jobs = load(projects["inline"] / ".github/workflows/mlops.yml")["jobs"]
    job = jobs[f"{NAME}-image"]
    assert job["permissions"] == {
        "contents": "read",
        "packages": "write",
        "deployments": "write",
    }
    assert [j for j, body in jobs.items() if "packages" in body.get("permissions", {})] == [
        f"{NAME}-image"
    ]
    assert f"{NAME}-deploy-staging" in job["needs"]
    assert f"{NAME}-deploy-production" not in job["needs"]
    # A job holding a write token checks nothing out.
    assert not any("checkout" in str(step.get("uses", "")) for step in job["steps"])
    assert jobs[f"{NAME}-deploy-staging"]["environment"] == {"name": "staging", "url": URL}


def test_the_caller_switches_the_image_job_on_and_grants_what_it_needs(
    projects: dict[str, Path],
) -> None:
    gitlab = load(projects["include"] / ".gitlab-ci.yml")
    (include,) = gitlab["include"]
    assert include["inputs"]["build_image"] is True
    github = load(projects["include"] / ".github/workflows/mlops.yml")
    caller = github["jobs"][NAME]
    assert caller["with"]["build_image"] is True
    assert caller["permissions"]["packages"] == "write"


def test_models_without_an_image_section_get_no_image_job(tmp_path: Path) -> None:
    project = copy_example(NAME, tmp_path)
    assert run_cli("generate", cwd=project).code == 0
    assert not any(key.endswith(":image") for key in load(project / ".gitlab-ci.yml"))
