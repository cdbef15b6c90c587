"""Render the job plan as GitHub Actions: an inline workflow, a thin caller of the
reusable workflow, and the reusable workflow itself (``on: workflow_call``).

Security habits every rendering keeps: ``permissions: {}`` at the top and the least per
job, actions pinned by full commit SHA, ``persist-credentials: false``, concurrency,
``timeout-minutes`` on every job, and no ``${{ }}`` expression inside ``run:`` (values
reach scripts through ``env:``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ci_mlops import __version__
from ci_mlops.generate.gitlab import command_line, installer_inputs
from ci_mlops.generate.kinds import (
    KINDS,
    JobKind,
    Trigger,
    github_job_id,
    image_reference,
    job_names,
    job_suffix,
    permission_reasons,
)
from ci_mlops.generate.plan import (
    UV_CACHE_DIR,
    UV_REQUIREMENT,
    Job,
    ModelPlan,
    Plan,
    install_commands,
    lock_file,
    snapshot_spec_path,
    templated_install,
)
from ci_mlops.spec.model import JobImages, Spec

# Actions are pinned by full commit SHA; the comment names the release it is.
PINS = {
    "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683": "v4.2.2",
    "actions/setup-python@42375524e23c412d93fb67b49958b491fce71c38": "v5.4.0",
    "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02": "v4.6.2",
    "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093": "v4.3.0",
    "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684": "v4.2.3",
}
CHECKOUT, SETUP_PYTHON, UPLOAD, DOWNLOAD, CACHE = PINS


def annotate_pins(text: str, spec: Spec | None = None) -> str:
    """Add the ``# vX.Y.Z`` comment after each pinned ``uses:`` line."""
    pins = dict(PINS)
    if spec is not None and spec.runtime.templates.github_sha:
        tpl = spec.runtime.templates
        pins[f"{tpl.github}/{REUSABLE_FILE}@{tpl.github_sha}"] = f"v{tpl.version}"
    lines = []
    for line in text.splitlines(keepends=True):
        ref = line.strip().removeprefix("- ").removeprefix("uses: ").strip()
        if ref in pins:
            line = line.rstrip("\n") + f" # {pins[ref]}\n"
        lines.append(line)
    return "".join(lines)


_PERMISSION_LINE = re.compile(r"^(\s+)([a-z-]+): (read|write)$")


def annotate_permissions(text: str, kinds: Mapping[str, JobKind] = KINDS) -> str:
    """Add a ``# why`` comment after each permission of a ``permissions:`` mapping: the
    reason the kind that holds it gives (see :class:`~ci_mlops.generate.kinds.Permission`)."""
    reasons = permission_reasons(kinds)
    lines, inside = [], None
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        if stripped.endswith("permissions:"):
            inside = len(stripped) - len(stripped.lstrip())
        elif inside is not None:
            match = _PERMISSION_LINE.match(stripped)
            if match and len(match.group(1)) > inside:
                reason = reasons[(match.group(2), match.group(3))]
                line = f"{stripped} # {reason}\n"
            else:
                inside = None
        lines.append(line)
    return "".join(lines)


_TAGGED_IMAGE = re.compile(r"^\s+image: [^\s@]+:[^\s@]+$")
# A job image without a digest is pinned by its tag, which names the ci-mlops release
# and the Python; zizmor's pedantic persona asks for a digest, which the spec gives
# through runtime.job_image_digests (then this comment is not written).
TAG_PINNED = (
    "# zizmor: ignore[unpinned-images] a release tag; runtime.job_image_digests pins digests"
)


def annotate_images(text: str) -> str:
    """Say beside each container image pinned by tag alone why it is not by digest."""
    return "".join(
        f"{line.rstrip(chr(10))} {TAG_PINNED}\n" if _TAGGED_IMAGE.match(line.rstrip("\n")) else line
        for line in text.splitlines(keepends=True)
    )


def annotate(text: str, spec: Spec | None = None, kinds: Mapping[str, JobKind] = KINDS) -> str:
    """The comments a generated workflow carries: action releases, permission reasons,
    and why a job image has no digest."""
    return annotate_images(annotate_permissions(annotate_pins(text, spec), kinds))


RETRAIN = "format('{0}{1}', inputs.retrain, github.event.client_payload.model)"
DISPATCH_TYPE = "ci-mlops-retrain"

PLATFORM = "github"


@dataclass(frozen=True)
class Values:
    """Real values for the inline workflow, ``${{ inputs.x }}`` for the reusable one."""

    model: str
    spec: str
    python: str
    install: str
    requirements: str | None
    runs_on: str
    default_branch: str
    reusable: bool = False
    installer: str = "pip"  # what installs in the jobs: pip or uv
    lock: str | None = None  # the hashed requirements file jobs with a checkout install
    # Where a job finds whether the model has a switchable kind (``inputs`` of the
    # reusable workflow, ``matrix`` of a matrix job), or None where that is known.
    switches: str | None = None
    job_images: JobImages | None = None  # runtime.job_images


def job_image(job: Job, v: Values) -> str | None:
    """The container image ``job`` runs in, or None when it runs on the runner."""
    return image_reference(job.descriptor, v.job_images, v.python)


def _condition(job: Job, mp: ModelPlan | None, v: Values) -> str | None:
    if mp is None:
        return None
    if v.reusable:
        wanted = f'contains(fromJSON(\'["", "all"]\'), {RETRAIN}) || {RETRAIN} == inputs.model'
        scheduled = (
            "inputs.schedule != '' && github.event.schedule == inputs.schedule && !inputs.drift"
        )
        drift_on = "github.event.schedule == inputs.schedule"
    else:
        wanted = f'contains(fromJSON(\'["", "all", "{v.model}"]\'), {RETRAIN})'
        scheduled = (
            f"github.event.schedule == '{mp.schedule}'" if mp.schedule and not mp.drift else ""
        )
        # Without a schedule of its own, the drift check runs on any scheduled run (as on
        # GitLab, where every schedule without MLOPS_RETRAIN runs the drift checks).
        drift_on = f"github.event.schedule == '{mp.schedule}'" if mp.schedule else ""
    model_runs = f"(github.event_name != 'schedule' && ({wanted}))"
    if scheduled:
        model_runs = f"({model_runs} || (github.event_name == 'schedule' && {scheduled}))"
    return _TRIGGER_CONDITIONS[job.descriptor.trigger](model_runs, drift_on, v)


def _on_change(model_runs: str, drift_on: str, v: Values) -> str:
    return model_runs


def _on_pull_request(model_runs: str, drift_on: str, v: Values) -> str:
    return "github.event_name == 'pull_request'"


def _on_default_branch(model_runs: str, drift_on: str, v: Values) -> str:
    branch = "inputs.default-branch" if v.reusable else f"'{v.default_branch}'"
    return f"github.event_name != 'pull_request' && github.ref_name == {branch} && {model_runs}"


def _on_schedule(model_runs: str, drift_on: str, v: Values) -> str:
    return "github.event_name == 'schedule'" + (f" && {drift_on}" if drift_on else "")


_TRIGGER_CONDITIONS: dict[Trigger, Callable[[str, str, Values], str]] = {
    "change": _on_change,
    "merge-request": _on_pull_request,
    "default-branch": _on_default_branch,
    "schedule": _on_schedule,
}


def _install_step(job: Job, v: Values) -> dict[str, Any]:
    extras = job.extras("github")
    env: dict[str, str] = {}
    checks_out = job.descriptor.checks_out(PLATFORM)
    if v.reusable:
        # One call for ci-mlops and the project's requirements, as inline; the installer
        # and the lock are inputs, read by the shell from the step's environment.
        lines = templated_install(
            job.kind, extras, requirements=job.runs_user_code, lock=checks_out
        )
        env["MLOPS_INSTALL"] = v.install
        env["MLOPS_INSTALLER"] = v.installer
        if checks_out:
            env["MLOPS_LOCK"] = v.lock or ""
        if job.runs_user_code:
            env["MLOPS_REQUIREMENTS"] = v.requirements or ""
    else:
        # One call for ci-mlops and the project's requirements, as on GitLab: one
        # resolution, one start-up. A job with a checkout installs the lock instead.
        lines = install_commands(
            v.install,
            extras,
            v.requirements if job.runs_user_code else None,
            installer=v.installer,
            lock=lock_file(v.lock, job.kind) if checks_out else None,
            in_job_image=job_image(job, v) is not None,
        )
    step: dict[str, Any] = {"name": "Install ci-mlops", "run": "\n".join(lines)}
    if env:
        step["env"] = env
    return step


def _setup_python(job: Job, v: Values) -> dict[str, Any]:
    step: dict[str, Any] = {"uses": SETUP_PYTHON, "with": {"python-version": v.python}}
    # Jobs with a write token use no cache, so a cache filled by a job that ran
    # pull-request code cannot reach a release or a comment.
    if job.descriptor.checks_out(PLATFORM) and v.installer == "pip" and not v.reusable:
        files = [f for f in (v.requirements, lock_file(v.lock, job.kind)) if f]
        if files:
            step["with"].update({"cache": "pip", "cache-dependency-path": "\n".join(files)})
    return step


def caches_uv(job: Job, v: Values) -> bool:
    """Whether ``job`` keeps uv's cache: a job with a checkout (a job with a write token
    restores no cache) on the runner (a job image brings its packages) where uv installs,
    or may (the reusable workflow learns its installer at run time)."""
    runs_on_runner = job_image(job, v) is None
    return (
        job.descriptor.checks_out(PLATFORM)
        and runs_on_runner
        and (v.installer == "uv" or v.reusable)
    )


def _uv_cache(job: Job, v: Values) -> dict[str, Any]:
    """uv's cache (setup-python caches pip's only), keyed like GitLab's: Python, the
    install setting with its pinned versions, the uv release, the requirements files.
    The reusable workflow learns these at run time: its key names the release, and its
    step runs only when the installer input is uv. Its path is the job's UV_CACHE_DIR."""
    if v.reusable:
        # hashFiles skips an empty pattern (an input left empty) and hashes every file
        # under a folder (a folder of per-job locks): @actions/glob, which it runs.
        prefix = f"uv-{v.python}-ci-mlops-{__version__}-"
        key = prefix + "${{ hashFiles(inputs.requirements, inputs.lock) }}"
        step = {"uses": CACHE, "with": {"path": UV_CACHE_DIR, "key": key, "restore-keys": prefix}}
        return {"if": "inputs.installer == 'uv'", **step}
    basis = "\n".join([v.install, UV_REQUIREMENT])
    prefix = f"uv-{v.python}-{hashlib.sha256(basis.encode()).hexdigest()[:12]}-"
    files = ", ".join(f"'{f}'" for f in (v.requirements, lock_file(v.lock, job.kind)) if f)
    key = prefix + (f"${{{{ hashFiles({files}) }}}}" if files else "")
    return {"uses": CACHE, "with": {"path": UV_CACHE_DIR, "key": key, "restore-keys": prefix}}


def render_job(job: Job, mp: ModelPlan | None, v: Values, spec_file: str) -> dict[str, Any]:
    """One GitHub job."""
    out: dict[str, Any] = {"name": f"{v.model}: {job.title}" if mp else job.title}
    cond = _condition(job, mp, v)
    if job.needs:
        out["needs"] = [job_suffix(n) if v.reusable else github_job_id(n) for n in job.needs]
    if cond:
        out["if"] = cond
    out["runs-on"] = v.runs_on
    out["timeout-minutes"] = job.timeout_minutes
    out["permissions"] = job.descriptor.github_grants
    image = job_image(job, v)
    if image:
        # The image's Python, with ci-mlops and the job's extras installed.
        out["container"] = {"image": image}
    if job.environment:
        out["environment"] = (
            {"name": job.environment, "url": job.environment_url}
            if job.environment_url
            else job.environment
        )
        out["concurrency"] = {
            "group": f"ci-mlops-deploy-{v.model}-{job.environment}",
            "cancel-in-progress": False,
        }
    isolated = not job.descriptor.checks_out(PLATFORM)
    env: dict[str, str] = {
        "MLOPS_SPEC": snapshot_spec_path(v.model) if isolated else v.spec,
        "MLOPS_WORKDIR": ".ci-mlops",
        "GX_ANALYTICS_ENABLED": "false",
    }
    if mp:
        env["MLOPS_MODEL"] = v.model
    if caches_uv(job, v):
        # uv's cache where the cache step looks, whatever XDG_CACHE_HOME the runner
        # sets. Relative: uv reads it from the workspace its steps run in, actions/cache
        # from GITHUB_WORKSPACE (a job's env cannot read the runner context, where
        # an absolute folder such as runner.temp is).
        env["UV_CACHE_DIR"] = UV_CACHE_DIR
    out["env"] = env
    out["steps"] = _steps(job, mp, v, isolated)
    return out


MLFLOW_ENV = {
    "MLFLOW_TRACKING_URI": "${{ vars.MLFLOW_TRACKING_URI }}",
    "MLFLOW_TRACKING_TOKEN": "${{ secrets.MLFLOW_TRACKING_TOKEN }}",
}


def _steps(job: Job, mp: ModelPlan | None, v: Values, isolated: bool) -> list[dict[str, Any]]:
    """Checkout, Python, caches, artifacts, install, the ci-mlops step, upload. A job
    without a checkout installs ci-mlops before any artifact is in its workspace."""
    steps: list[dict[str, Any]] = []
    if not isolated:
        steps.append({"uses": CHECKOUT, "with": {"persist-credentials": False}})
    in_image = job_image(job, v) is not None
    if not in_image:
        # A job image brings its Python, and what the install line would download.
        steps.append(_setup_python(job, v))
    if caches_uv(job, v):
        steps.append(_uv_cache(job, v))
    if job.descriptor.model_cache:
        steps.append(_model_cache(v))
    if isolated:
        steps.append(_install_step(job, v))
    # A need that uploads nothing (a deploy waits for the one before it) has no artifact
    # to download, and download-artifact fails on a name that was never uploaded.
    uploads = {j.key: j for j in mp.jobs if j.artifacts} if mp else {}
    for needed in (uploads[n] for n in job.needs if n in uploads):
        download: dict[str, Any] = {
            "uses": DOWNLOAD,
            "with": {
                "name": job_names(v.model, needed.kind).artifact,
                "path": f".ci-mlops/{v.model}",
            },
        }
        switch = needed.descriptor.template_input
        if v.switches and switch:
            # With the switch off the job is skipped and uploads nothing.
            download = {"if": f"{v.switches}.{switch.name}", **download}
        steps.append(download)
    if not isolated:
        steps.append(_install_step(job, v))
    run_step: dict[str, Any] = {"name": job.title, "run": command_line(job, isolated=isolated)}
    if job.descriptor.uses_token:
        run_step["env"] = {"GITHUB_TOKEN": "${{ github.token }}"}
    if "mlflow" in job.spec_extras:
        # The MLflow server (tracking, a registry baseline or deploy target) and its token,
        # given to this one step only: a repository variable and a secret.
        run_step["env"] = {**run_step.get("env", {}), **MLFLOW_ENV}
    steps.append(run_step)
    if job.artifacts and job.model:
        upload: dict[str, Any] = {
            "uses": UPLOAD,
            "with": {
                "name": job_names(v.model, job.kind).artifact,
                "path": f".ci-mlops/{v.model}/",
                "include-hidden-files": True,
                "if-no-files-found": "warn",
                "retention-days": 30,
            },
        }
        if job.always_keep_artifacts:
            upload = {"if": "always()", **upload}
        steps.append(upload)
    return steps


def _model_cache(v: Values) -> dict[str, Any]:
    # One moving cache entry per model: the train step compares its own input hash, so
    # restoring the newest model is always safe.
    return {
        "uses": CACHE,
        "with": {
            "path": f".ci-mlops/{v.model}/",
            "key": f"ci-mlops-{v.model}-model-${{{{ github.run_id }}}}",
            "restore-keys": f"ci-mlops-{v.model}-model-",
        },
    }


# The pull_request activity types GitHub triggers on when a workflow names none.
PULL_REQUEST_TYPES = ("opened", "synchronize", "reopened")


def triggers(spec: Spec, plan: Plan, workflow_file: str) -> dict[str, Any]:
    watched = sorted({p for mp in plan.models for p in mp.watched} | {workflow_file})
    on: dict[str, Any] = {
        "push": {"branches": [spec.runtime.default_branch], "paths": watched},
        "pull_request": {"paths": watched},
    }
    if any(m.override_labels for m in spec.models):
        # A label that overrides a gate is read from the event payload: adding it must
        # start a run that carries it (GitHub's default types, plus labeled).
        on["pull_request"]["types"] = [*PULL_REQUEST_TYPES, "labeled"]
    crons = sorted({mp.schedule for mp in plan.models if mp.schedule})
    if crons:
        on["schedule"] = [{"cron": c} for c in crons]
    on["workflow_dispatch"] = {
        "inputs": {
            "retrain": {
                "description": "Model to retrain even if nothing changed (a model name, or all)",
                "type": "string",
                "default": "",
                "required": False,
            }
        }
    }
    on["repository_dispatch"] = {"types": [DISPATCH_TYPE]}
    return on


def _workflow_head(spec: Spec, plan: Plan, workflow_file: str) -> dict[str, Any]:
    return {
        "name": "ci-mlops",
        "on": triggers(spec, plan, workflow_file),
        "permissions": {},
        "concurrency": {
            "group": "ci-mlops-${{ github.ref }}",
            "cancel-in-progress": "${{ github.event_name == 'pull_request' }}",
        },
        "env": {"MLOPS_RETRAIN": f"${{{{ {RETRAIN} }}}}"},
    }


def values_for(spec: Spec, model: str, spec_file: str) -> Values:
    rt = spec.runtime
    return Values(
        model=model,
        spec=spec_file,
        python=rt.python,
        install=rt.install,
        requirements=rt.requirements,
        runs_on=rt.runs_on,
        default_branch=rt.default_branch,
        installer=rt.installer,
        lock=rt.lock,
        job_images=rt.job_images,
    )


def render_inline(
    spec: Spec, plan: Plan, workflow_file: str = ".github/workflows/mlops.yml"
) -> dict[str, Any]:
    """The whole workflow with every job written out."""
    doc = _workflow_head(spec, plan, workflow_file)
    jobs: dict[str, Any] = {}
    validate = _validate_job(plan, "inline")
    jobs[github_job_id(validate.key)] = render_job(
        validate, None, values_for(spec, "", plan.spec_file), plan.spec_file
    )
    for mp in plan.models:
        v = values_for(spec, mp.model.name, plan.spec_file)
        for job in mp.jobs:
            jobs[github_job_id(job.key)] = render_job(job, mp, v, plan.spec_file)
    doc["jobs"] = jobs
    return doc


def _validate_job(plan: Plan, mode: str) -> Job:
    return replace(plan.validate_job("github", mode), key="ci-mlops-validate")


REUSABLE_FILE = ".github/workflows/mlops.yml"


def caller_permissions(plan: Plan) -> dict[str, str]:
    """What a caller grants the reusable workflow: every permission some kind of job of
    the plan asks for, at the highest level asked. GitHub refuses to start a reusable
    workflow one of whose jobs asks for more than its caller granted, even a job switched
    off, so the grant covers every kind; each job inside still holds only its own."""
    most: dict[str, str] = {}
    for kind in plan.kinds.values():
        for p in kind.github_permissions:
            if most.get(p.scope) != "write":
                most[p.scope] = p.level
    return dict(sorted(most.items()))


def reusable_values(spec: Spec) -> Values:
    return Values(
        model="${{ inputs.model }}",
        spec="${{ inputs.spec }}",
        python="${{ inputs.python-version }}",
        install="${{ inputs.install }}",
        requirements="${{ inputs.requirements }}",
        runs_on="${{ inputs.runs-on }}",
        default_branch="",
        reusable=True,
        installer="${{ inputs.installer }}",
        lock="${{ inputs.lock }}",
        switches="inputs",
    )


def reusable_inputs(spec: Spec, plan: Plan) -> dict[str, Any]:
    rt = spec.runtime
    switches = {
        s.name: {
            "description": s.github_description or s.description,
            "type": "boolean",
            "required": False,
            "default": s.default,
        }
        for s in plan.switches
    }

    def text(default: str, description: str) -> dict[str, Any]:
        return {"description": description, "type": "string", "required": False, "default": default}

    return {
        "model": {
            "description": "Model name, as in mlops.yaml.",
            "type": "string",
            "required": True,
        },
        "spec": text("mlops.yaml", "Path of the model spec."),
        "python-version": text(rt.python, "Python version of the jobs."),
        "install": text(
            rt.install, "pip arguments that install ci-mlops; {extras} is replaced per job."
        ),
        "requirements": text("", "Your requirements file, if any."),
        "installer": text(
            "pip", "What installs ci-mlops and your requirements: pip, or uv (installed with pip)."
        ),
        "lock": text(
            "",
            "A requirements file with hashes that jobs with a checkout install instead of "
            "install and requirements, or a folder of per-job locks ending in / "
            "(<folder><job>.txt, written by `ci-mlops lock`).",
        ),
        "runs-on": text(rt.runs_on, "Runner label."),
        "default-branch": text(rt.default_branch, "The branch that deploys."),
        "schedule": text(
            "", "The cron expression of the caller's schedule that retrains or checks drift."
        ),
        **switches,
        "retrain": text("", "Model to retrain even if nothing changed (a model name, or all)."),
    }


def render_reusable(spec: Spec, plan: Plan) -> dict[str, Any]:
    """The reusable workflow (``on: workflow_call``) for one model; ``plan`` is the plan
    of the symbolic model."""
    v = reusable_values(spec)
    mp = plan.models[0]
    jobs: dict[str, Any] = {}
    switchable = {j.key for j in mp.jobs if j.descriptor.template_input}
    for job in mp.jobs:
        rendered = render_job(job, mp, v, "${{ inputs.spec }}")
        switch = job.descriptor.template_input
        if switch:
            rendered["if"] = f"inputs.{switch.name} && {rendered['if']}"
        if switchable.intersection(job.needs):
            # A job it needs may be switched off; it then runs without it.
            rendered["if"] = f"!failure() && !cancelled() && {rendered['if']}"
        jobs[job_suffix(job.key)] = rendered
    return {
        "name": "ci-mlops",
        "on": {"workflow_call": {"inputs": reusable_inputs(spec, plan)}},
        "permissions": {},
        "env": {"MLOPS_RETRAIN": "${{ inputs.retrain }}"},
        "jobs": jobs,
    }


def render_caller(spec: Spec, plan: Plan, workflow_file: str = REUSABLE_FILE) -> dict[str, Any]:
    """A thin workflow that calls the released reusable workflow once per model."""
    from ci_mlops.errors import UsageError

    tpl = spec.runtime.templates
    if not tpl.github_sha:
        raise UsageError(
            "GitHub include mode pins the reusable workflow by commit SHA: set "
            "runtime.templates.github_sha in the spec (the commit of the ci-mlops release)"
        )
    doc = _workflow_head(spec, plan, workflow_file)
    del doc["env"]
    validate = _validate_job(plan, "include")
    jobs: dict[str, Any] = {
        github_job_id(validate.key): render_job(
            validate, None, values_for(spec, "", plan.spec_file), plan.spec_file
        )
    }
    rt = spec.runtime
    for mp in plan.models:
        jobs[mp.model.name] = {
            "uses": f"{tpl.github}/{REUSABLE_FILE}@{tpl.github_sha}",
            "permissions": caller_permissions(plan),
            "with": {
                "model": mp.model.name,
                "spec": plan.spec_file,
                "python-version": rt.python,
                "install": rt.install,
                "requirements": rt.requirements or "",
                **installer_inputs(spec),
                "runs-on": rt.runs_on,
                "default-branch": rt.default_branch,
                "schedule": mp.schedule or "",
                **mp.switches,
                "retrain": f"${{{{ {RETRAIN} }}}}",
            },
        }
    doc["jobs"] = jobs
    return doc
