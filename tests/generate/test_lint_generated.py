"""Every generated file, for every example, both platforms and both modes, and every
published template, passes the platforms' schemas, zizmor and actionlint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ci_mlops.generate import gitlab
from ci_mlops.generate.kinds import STAGES
from ci_mlops.generate.plan import build_plan
from ci_mlops.generate.templates import interpolate, render_templates
from ci_mlops.spec import load_spec
from tests.generate.test_generate import EXAMPLE_NAMES, with_template_sha
from tests.helpers import EXAMPLES, FRAMEWORK_EXAMPLES, REPO, copy_example, run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

CASES = [(e, m) for e in EXAMPLE_NAMES for m in ("inline", "include")]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each example generated in each mode, in its own folder."""
    out = {}
    for example, mode in CASES:
        project = copy_example(example, tmp_path_factory.mktemp(f"{example}-{mode}"))
        with_template_sha(project / "mlops.yaml")
        result = run_cli("generate", "--mode", mode, cwd=project)
        assert result.code == 0, result.output
        out[(example, mode)] = project
    return out


@pytest.mark.parametrize(("example", "mode"), CASES)
def test_gitlab_file_matches_gitlab_schema(
    generated: dict[tuple[str, str], Path], example: str, mode: str
) -> None:
    assert gitlab_schema_errors(generated[(example, mode)] / ".gitlab-ci.yml") == []


@pytest.mark.parametrize(("example", "mode"), CASES)
def test_github_workflow_passes_schema_zizmor_and_actionlint(
    generated: dict[tuple[str, str], Path], example: str, mode: str
) -> None:
    workflow = generated[(example, mode)] / ".github/workflows/mlops.yml"
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []


def test_framework_examples_committed_pipelines_pass_schemas_zizmor_and_actionlint() -> None:
    """The examples of the other frameworks differ from the two above in their jobs'
    extras and model files; their committed files are checked in one batch."""
    folders = [EXAMPLES / e for e in FRAMEWORK_EXAMPLES.values()]
    workflows = [f / ".github/workflows/mlops.yml" for f in folders]
    for folder, workflow in zip(folders, workflows, strict=True):
        assert gitlab_schema_errors(folder / ".gitlab-ci.yml") == [], folder.name
        assert github_workflow_errors(workflow) == [], folder.name
    assert zizmor_findings(workflows) == []
    assert actionlint_findings(workflows) == []


def test_published_templates_are_current() -> None:
    for rel, text in render_templates().items():
        committed = REPO / rel
        assert committed.is_file(), f"{rel} is missing: run `python -m ci_mlops.generate.templates`"
        assert committed.read_text("utf-8") == text, (
            f"{rel} is stale: run `python -m ci_mlops.generate.templates`"
        )


def test_reusable_workflow_passes_schema_zizmor_and_actionlint() -> None:
    reusable = REPO / ".github/workflows/mlops.yml"
    assert github_workflow_errors(reusable) == []
    assert zizmor_findings([reusable]) == []
    assert actionlint_findings([reusable]) == []


@pytest.mark.parametrize("component", sorted(p.name for p in (REPO / "templates").glob("*.yml")))
@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_components_with_an_examples_inputs_match_gitlab_schema(
    tmp_path: Path, component: str, example: str
) -> None:
    spec = load_spec(REPO / "examples" / example / "mlops.yaml")
    inputs = gitlab.caller_inputs(spec, build_plan(spec).models[0])
    jobs = interpolate((REPO / "templates" / component).read_text(), inputs)
    assert jobs, component
    target = tmp_path / ".gitlab-ci.yml"
    target.write_text(yaml.safe_dump({"stages": list(STAGES), **jobs}, sort_keys=False))
    assert gitlab_schema_errors(target) == []


def _projection(job: dict[str, object]) -> dict[str, object]:
    """What a job does, leaving out how it installs ci-mlops and the rules on the
    component's own inputs (switches that turn export and drift off, the jobs a child
    pipeline lists): once interpolated, their conditions start with a quoted value."""
    rules = [r for r in job.get("rules", []) if not str(r.get("if", "")).startswith('"')]  # type: ignore[attr-defined]
    needs = [n if isinstance(n, str) else n["job"] for n in job["needs"]]  # type: ignore[attr-defined,index]
    variables = {
        k: v
        for k, v in job["variables"].items()
        # How it installs: the install setting, installer, lock and requirements, and
        # the installers' cache folders (a component keeps both: its installer is an input).
        if not k.startswith("MLOPS_INSTALL")
        and k not in ("MLOPS_REQUIREMENTS", "MLOPS_LOCK", "PIP_CACHE_DIR", "UV_CACHE_DIR")
    }  # type: ignore[attr-defined]
    return {
        "stage": job["stage"],
        "script": job["script"],
        "needs": needs,
        "rules": rules,
        "artifacts": job.get("artifacts"),
        "environment": job.get("environment"),
        "resource_group": job.get("resource_group"),
        "variables": variables,
        "image": job["image"],
        "timeout": job["timeout"] if job["stage"] != "train" else None,
    }


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_pipeline_component_runs_the_same_jobs_as_the_inline_file(example: str) -> None:
    spec = load_spec(REPO / "examples" / example / "mlops.yaml")
    plan = build_plan(spec)
    inline = gitlab.render_inline(spec, plan)
    jobs = interpolate(
        (REPO / "templates/pipeline.yml").read_text(), gitlab.caller_inputs(spec, plan.models[0])
    )
    expected = {k: v for k, v in inline.items() if k.startswith(f"{example}:")}
    # GitLab drops the jobs whose switch the caller turned off (their rules say never).
    for kind in plan.kinds.values():
        switch = kind.template_input
        if switch and not plan.models[0].switches[switch.name]:
            jobs.pop(f"{example}:{kind.name}")
    assert list(jobs) == list(expected)
    for key in expected:
        assert _projection(jobs[key]) == _projection(expected[key]), key
