"""The job kinds: one descriptor per step, from which the plan, both renderers, the
templates and ``ci-mlops run`` take every fact about a job, and the one place that names
jobs and artifacts for the platform adapters that look them up."""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

import ci_mlops
from ci_mlops.cli import main
from ci_mlops.generate import github, gitlab
from ci_mlops.generate.kinds import (
    COMBINED_KINDS,
    KINDS,
    PLATFORMS,
    READ_REPOSITORY,
    STAGES,
    JobKind,
    Permission,
    TemplateInput,
    baseline_names,
    job_names,
    permission_reasons,
    producer,
)
from ci_mlops.generate.plan import Plan, build_plan
from ci_mlops.generate.templates import symbolic
from ci_mlops.generate.write import GITHUB_FILE, GITLAB_FILE
from ci_mlops.run import LOCAL_KINDS
from ci_mlops.spec import load_spec
from ci_mlops.spec.model import Spec
from tests.hardening.checks import github_token_problems, schema_errors
from tests.helpers import EXAMPLES, FRAMEWORK_EXAMPLES

PACKAGE = Path(ci_mlops.__file__).parent
# Step commands that are no job of their own, and why.
NOT_JOBS = {
    "retrain": "the drift job starts retraining when it finds drift",
    "package": "the image job packages the version before it builds",
    "gates": "suggests gates on a laptop (--suggest); evaluate applies them in pipelines",
}


# --- the table ------------------------------------------------------------------------


def step_commands() -> set[str]:
    """CLI commands that run a step module of ci_mlops.steps."""
    steps = {p.stem for p in (PACKAGE / "steps").glob("*.py")}
    return {name for name in main.commands if name.replace("-", "_") in steps}


def test_every_step_the_cli_exposes_has_a_descriptor() -> None:
    per_model = {k.name for k in KINDS.values() if k.per_model}
    # The combined layout's build job is a kind of its own table.
    combined = {k.name for k in COMBINED_KINDS.values()} - set(KINDS)
    assert combined == {"build"}
    assert step_commands() - set(NOT_JOBS) == per_model | combined
    # Each job runs the command its kind is named after; the one spec-wide job runs
    # `generate --check`.
    assert per_model <= set(main.commands)
    (validate,) = (k for k in KINDS.values() if not k.per_model)
    assert build_plan(load_spec(EXAMPLES / "diabetes" / "mlops.yaml")).validate.args[:1] == (
        "generate",
    )
    assert validate.name == "validate"


def test_the_descriptors_agree_with_each_other() -> None:
    names = list(KINDS)
    assert names == [k.name for k in KINDS.values()]
    assert STAGES == ("validate", "data", "train", "evaluate", "report", "deploy", "monitor")
    for position, kind in enumerate(KINDS.values()):
        # The stage order is the kinds' order: no kind goes back to an earlier stage.
        assert STAGES.index(kind.stage) >= max(
            (STAGES.index(k.stage) for k in list(KINDS.values())[:position]), default=0
        ), kind.name
        # Jobs wait only for jobs before them: the table is in pipeline order.
        assert set(kind.needs) <= set(names[:position]), kind.name
        assert set(kind.no_checkout) <= set(PLATFORMS), kind.name
    switches = [k.template_input.name for k in KINDS.values() if k.template_input]
    assert len(switches) == len(set(switches))
    records = [r for k in KINDS.values() for r in k.produces]
    assert len(records) == len(set(records)), "two kinds write the same record"
    assert producer("metrics.json").name == "evaluate"


def test_ci_mlops_run_runs_every_kind_with_a_step_module() -> None:
    # Every step but the image build (it pushes to the platform's container registry)
    # and the drift check (it starts retraining on a platform): CI only.
    per_model = [k.name for k in KINDS.values() if k.per_model]
    assert [*LOCAL_KINDS, "image", "drift"] == per_model
    for kind in KINDS.values():
        if not kind.local_step:
            continue
        run_local = importlib.import_module(kind.local_step).run_local
        parameters = inspect.signature(run_local).parameters
        assert list(parameters) == ["spec", "model", "environment", "force"], kind.name


# Comparisons of a kind (or its name) with something: what renderers must not do.
BRANCH_ON_KIND = re.compile(r"(?<!for )\bkind\s*(==|!=|\bin\b|\bnot in\b)")
KIND_LITERAL = re.compile(
    r"(==|!=|\bin)\s*\(?\s*\"(" + "|".join(map(re.escape, KINDS)) + r")\"", re.MULTILINE
)


@pytest.mark.parametrize(
    "rel",
    [
        "generate/plan.py",
        "generate/gitlab.py",
        "generate/github.py",
        "generate/templates.py",
        "generate/write.py",
        "run.py",
    ],
)
def test_renderers_and_the_runner_never_branch_on_a_kind_name(rel: str) -> None:
    source = (PACKAGE / rel).read_text("utf-8")
    assert BRANCH_ON_KIND.findall(source) == []
    assert KIND_LITERAL.findall(source) == []


@pytest.mark.parametrize(
    "rel",
    sorted(
        str(p.relative_to(PACKAGE))
        for folder in ("platforms", "registries")
        for p in (PACKAGE / folder).glob("*.py")
    ),
)
def test_platform_adapters_do_not_spell_job_or_artifact_names(rel: str) -> None:
    source = (PACKAGE / rel).read_text("utf-8")
    spelled = re.compile(r"f\"\{[^}]+\}[:-](" + "|".join(map(re.escape, KINDS)) + r")\b")
    assert spelled.findall(source) == []


# --- names ----------------------------------------------------------------------------


def test_one_function_names_a_job_on_both_platforms_and_its_artifact() -> None:
    names = job_names("churn", "deploy", "staging")
    assert (names.key, names.github, names.artifact) == (
        "churn:deploy-staging",
        "churn-deploy-staging",
        "churn-deploy",
    )


@pytest.mark.parametrize("example", ["breast-cancer", "diabetes", *FRAMEWORK_EXAMPLES.values()])
def test_the_baseline_names_are_the_names_the_committed_pipelines_use(example: str) -> None:
    folder = EXAMPLES / example
    model = load_spec(folder / "mlops.yaml").models[0].name
    names = baseline_names(model)[0]
    gitlab_job = yaml.safe_load((folder / GITLAB_FILE).read_text())[names.key]
    assert gitlab_job["artifacts"]["name"] == names.artifact
    # The job that writes metrics.json, which is what the adapters read from it.
    assert gitlab_job["script"][0].startswith(f"ci-mlops {producer('metrics.json').name} ")
    github_job = yaml.safe_load((folder / GITHUB_FILE).read_text())["jobs"][names.github]
    uploads = [
        s["with"]["name"] for s in github_job["steps"] if "upload-artifact" in s.get("uses", "")
    ]
    assert uploads == [names.artifact]


# --- a new kind is a descriptor: no renderer changes ---------------------------------

LINT = JobKind(
    name="lint-model",
    stage="evaluate",
    title="Lint the model",
    extras=("ml",),
    needs=("train",),
    loads_model=True,
    keep_failed_artifacts=True,
    junit=("lint.junit.xml",),
    template_input=TemplateInput("lint", True, "Lint the model."),
    produces=("lint.json",),
)
# A job that comments on merge requests: it holds a write token on both platforms.
NOTIFY = JobKind(
    name="notify",
    stage="report",
    title="Tell the reviewers",
    extras=("platform",),
    needs=("lint-model",),
    trigger="merge-request",
    uploads=False,
    no_checkout=("gitlab", "github"),
    github_permissions=(
        READ_REPOSITORY,
        Permission("pull-requests", "write", "post and update the report comment"),
    ),
)


def with_new_kinds(*, lint: JobKind = LINT) -> dict[str, JobKind]:
    """A copy of the table with LINT after export, NOTIFY after report, and deploys that
    also wait for the lint."""
    out: dict[str, JobKind] = {}
    for name, kind in KINDS.items():
        if kind.per_environment:
            kind = replace(kind, needs=(*kind.needs, lint.name))
        out[name] = kind
        out.update({"export": {lint.name: lint}, "report": {NOTIFY.name: NOTIFY}}.get(name, {}))
    return out


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(EXAMPLES / "breast-cancer" / "mlops.yaml")


@pytest.fixture(scope="module")
def plan(spec: Spec) -> Plan:
    return build_plan(spec, kinds=with_new_kinds())


def test_a_new_kind_renders_as_a_gitlab_job(spec: Spec, plan: Plan) -> None:
    doc = gitlab.render_inline(spec, plan)
    assert schema_errors("gitlab-ci", doc) == []
    lint = doc["breast-cancer:lint-model"]
    assert lint["stage"] == "evaluate"
    assert lint["needs"] == ["breast-cancer:train"]
    assert lint["script"] == ['ci-mlops lint-model --spec "$MLOPS_SPEC" --model "$MLOPS_MODEL"']
    # Its extras and the framework's, since it loads the model; no user requirements.
    assert "ci-mlops[ml]==" in lint["before_script"][0]
    assert "-r" not in lint["before_script"][0].split()
    assert lint["artifacts"]["name"] == "breast-cancer-lint-model"
    assert lint["artifacts"]["when"] == "always"
    assert lint["artifacts"]["reports"] == {"junit": ".ci-mlops/breast-cancer/lint.junit.xml"}
    assert "breast-cancer:lint-model" in doc["breast-cancer:deploy-staging"]["needs"]

    notify = doc["breast-cancer:notify"]
    assert notify["stage"] == "report"
    assert notify["variables"]["GIT_STRATEGY"] == "none"
    assert notify["variables"]["MLOPS_SPEC"] == ".ci-mlops/breast-cancer/spec.yaml"
    assert "cache" not in notify and "artifacts" not in notify
    assert notify["script"][0].startswith("python -I -m ci_mlops notify ")
    assert notify["rules"] == [
        {
            "if": '$CI_PIPELINE_SOURCE == "merge_request_event"',
            "changes": {"paths": list(plan.models[0].watched)},
        }
    ]


def test_a_new_kind_renders_as_a_github_job(spec: Spec, plan: Plan) -> None:
    doc = github.render_inline(spec, plan)
    assert schema_errors("github-workflows", doc) == []
    lint = doc["jobs"]["breast-cancer-lint-model"]
    assert lint["name"] == "breast-cancer: Lint the model"
    assert lint["needs"] == ["breast-cancer-train"]
    assert lint["permissions"] == {"contents": "read"}
    steps = lint["steps"]
    assert "env" not in steps[-2], "a job without permissions gets no token"
    assert steps[-1]["with"]["name"] == "breast-cancer-lint-model"
    assert steps[-1]["if"] == "always()"
    downloads = [s["with"]["name"] for s in steps if "download-artifact" in s.get("uses", "")]
    assert downloads == ["breast-cancer-train"]
    staging = doc["jobs"]["breast-cancer-deploy-staging"]
    assert "breast-cancer-lint-model" in staging["needs"]
    assert "breast-cancer-lint-model" in [
        s["with"]["name"] for s in staging["steps"] if "download-artifact" in s.get("uses", "")
    ]

    notify = doc["jobs"]["breast-cancer-notify"]
    assert notify["if"] == "github.event_name == 'pull_request'"
    assert notify["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert notify["steps"][-1]["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    assert github_token_problems("breast-cancer-notify", notify) == []


def test_a_new_kind_gets_its_component_and_switch_in_the_templates() -> None:
    spec, _ = symbolic("$[[ inputs.model ]]", "$[[ inputs.spec ]]")
    plan = build_plan(spec, "$[[ inputs.spec ]]", kinds=with_new_kinds())
    components = gitlab.render_components(spec, plan)
    assert set(components) == {*(k for k in with_new_kinds() if k != "validate"), "pipeline"}
    head, jobs = components["lint-model"]
    assert head["spec"]["inputs"]["lint"] == {
        "type": "boolean",
        "default": True,
        "description": "Lint the model.",
    }
    (lint,) = jobs.values()
    assert lint["rules"][0] == {"if": '"$[[ inputs.lint ]]" != "true"', "when": "never"}
    _, deploys = components["deploy"]
    staging = deploys["$[[ inputs.model ]]:deploy-staging"]
    assert {"job": "$[[ inputs.model ]]:lint-model", "optional": True} in staging["needs"]


def test_a_new_kind_gets_its_switch_in_the_reusable_workflow() -> None:
    spec, _ = symbolic("${{ inputs.model }}", "${{ inputs.spec }}")
    plan = build_plan(spec, "${{ inputs.spec }}", kinds=with_new_kinds())
    doc = github.render_reusable(spec, plan)
    assert schema_errors("github-workflows", doc) == []
    assert doc["on"]["workflow_call"]["inputs"]["lint"]["default"] is True
    jobs = doc["jobs"]
    assert jobs["lint-model"]["if"].startswith("inputs.lint && ")
    # Whoever needs a job that can be switched off runs without it.
    assert jobs["notify"]["if"].startswith("!failure() && !cancelled() && ")
    downloads: list[dict[str, Any]] = [
        s for s in jobs["notify"]["steps"] if "download-artifact" in s.get("uses", "")
    ]
    assert [(s.get("if"), s["with"]["name"]) for s in downloads] == [
        ("inputs.lint", "${{ inputs.model }}-lint-model")
    ]


def test_callers_pass_whether_the_model_has_the_new_kind(spec: Spec) -> None:
    absent = replace(LINT, present=lambda model: False)
    for kinds, expected in ((with_new_kinds(), True), (with_new_kinds(lint=absent), False)):
        plan = build_plan(spec, kinds=kinds)
        assert gitlab.caller_inputs(spec, plan.models[0])["lint"] is expected
        has_job = any(j.kind == "lint-model" for j in plan.models[0].jobs)
        assert has_job is expected


def test_a_caller_grants_what_the_new_kinds_hold(spec: Spec) -> None:
    publish = replace(
        NOTIFY,
        name="publish-image",
        github_permissions=(
            Permission("packages", "write", "push the model's container image to GHCR"),
        ),
        needs=(),
    )
    plan = build_plan(spec, kinds={**with_new_kinds(), publish.name: publish})
    granted = github.caller_permissions(plan)
    assert granted["packages"] == "write"
    # The most any job holds: deploys write contents, which other jobs only read.
    assert granted["contents"] == "write"
    # The image job pushes to GHCR: callers grant packages: write even for a model
    # without one (GitHub checks the grant before it skips the job); the report job's
    # check run needs checks: write.
    assert github.caller_permissions(build_plan(spec)) == {
        "actions": "write",
        "checks": "write",
        "contents": "write",
        "deployments": "write",
        "id-token": "write",
        "packages": "write",
        "pull-requests": "write",
    }


def test_a_new_stage_takes_its_place_in_the_stage_list(spec: Spec) -> None:
    audit = replace(LINT, name="audit", stage="audit", template_input=None, produces=())
    kinds = {**{k: v for k, v in KINDS.items() if k != "drift"}, "audit": audit}
    kinds["drift"] = KINDS["drift"]

    plan = build_plan(spec, kinds=kinds)

    assert gitlab.render_inline(spec, plan)["stages"] == [*STAGES[:-1], "audit", "monitor"]
    assert build_plan(spec).stages == STAGES


def test_each_permission_carries_its_reason_into_the_workflow(spec: Spec) -> None:
    why = "push the model's image to the registry of the organisation"
    publish = replace(
        NOTIFY,
        name="publish",
        github_permissions=(READ_REPOSITORY, Permission("attestations", "write", why)),
        needs=(),
    )
    kinds = {**KINDS, publish.name: publish}
    plan = build_plan(spec, kinds=kinds)

    text = github.annotate(yaml.safe_dump(github.render_inline(spec, plan)), spec, kinds)

    assert f"attestations: write # {why}" in text
    assert "contents: read # read the repository" in text
    assert permission_reasons(kinds)[("attestations", "write")] == why


def test_one_permission_has_one_reason() -> None:
    other = Permission("contents", "read", "something else")
    kinds = {**KINDS, "odd": replace(NOTIFY, name="odd", github_permissions=(other,))}
    with pytest.raises(ValueError, match="odd: contents: read has a second reason"):
        permission_reasons(kinds)
    reasons = permission_reasons()
    assert {scope for scope, _ in reasons} >= {"contents", "actions", "checks", "id-token"}
