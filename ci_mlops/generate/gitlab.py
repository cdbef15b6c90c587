"""Render the job plan as GitLab CI: an inline ``.gitlab-ci.yml``, a thin caller of the
CI/CD components, and the components themselves (``templates/``)."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ci_mlops import __version__
from ci_mlops.generate.kinds import Trigger, image_reference, job_names, job_suffix
from ci_mlops.generate.plan import (
    ISOLATED_CI_MLOPS,
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

PLATFORM = "gitlab"
RETRAIN_UNSET = '($MLOPS_RETRAIN == null || $MLOPS_RETRAIN == "")'
MANUAL_SOURCES = "/^(web|api|trigger|pipeline)$/"


@dataclass(frozen=True)
class Values:
    """What a rendering puts where a model's facts go: real values for the inline file,
    ``$[[ inputs.x ]]`` placeholders for the components."""

    model: str
    changes: Any  # a list of paths, or an input placeholder that expands to one
    image: str
    requirements: str | None
    install: str  # the spec's install setting
    tags: Any
    python: str
    component: bool = False
    installer: str = "pip"  # what installs in the jobs: pip or uv
    lock: str | None = None  # the hashed requirements file jobs with a checkout install
    # The plan job already chose the jobs (a child pipeline): no rules but manual ones.
    decided: bool = False
    job_images: JobImages | None = None  # runtime.job_images


def job_image(job: Job, v: Values) -> str | None:
    """The job image ``job`` runs in, or None when it runs in ``v.image``."""
    return image_reference(job.descriptor, v.job_images, v.python)


def workflow_rules() -> dict[str, Any]:
    """One pipeline per change: merge-request pipelines for branches with an open MR,
    branch pipelines otherwise."""
    return {
        "rules": [
            {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'},
            {
                "if": '$CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS && $CI_PIPELINE_SOURCE == "push"',
                "when": "never",
            },
            {"if": "$CI_COMMIT_BRANCH"},
        ]
    }


def _retrain_match(model: str) -> str:
    return f'$MLOPS_RETRAIN == "all" || $MLOPS_RETRAIN == "{model}"'


def _rules(job: Job, v: Values) -> list[dict[str, Any]]:
    """When a job runs. Model jobs: on a retrain request for the model, on a push or
    merge request that changes its code or data, or on a run started by hand or API.
    Scheduled pipelines run only drift checks unless they ask for a retrain."""
    if v.decided:
        return [{"when": "manual"}] if job.when == "manual" else [{"when": "on_success"}]
    rules: list[dict[str, Any]] = []
    switch = job.descriptor.template_input
    if v.component and switch:
        rules.append({"if": f'"$[[ inputs.{switch.name} ]]" != "true"', "when": "never"})
    if v.component:
        rules += _planned_rules(job)
    return rules + _TRIGGER_RULES[job.descriptor.trigger](job, v)


def _planned_rules(job: Job) -> list[dict[str, Any]]:
    """A component included by the matrix layout's child pipeline runs the jobs the plan
    job listed in its ``jobs`` input and no other: in a child pipeline the source is
    ``parent_pipeline``, so the rules below, which read the source, could not decide."""
    when = "manual" if job.when == "manual" else "on_success"
    listed = {"if": f'"$[[ inputs.jobs ]]" =~ /,{job_suffix(job.key)},/', "when": when}
    return [_drop_on_success(listed), {"if": '"$[[ inputs.jobs ]]" != ""', "when": "never"}]


def _on_schedule(job: Job, v: Values) -> list[dict[str, Any]]:
    return [{"if": f'$CI_PIPELINE_SOURCE == "schedule" && {RETRAIN_UNSET}'}]


def _on_merge_request(job: Job, v: Values) -> list[dict[str, Any]]:
    return [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "changes": {"paths": v.changes}}]


def _on_change(job: Job, v: Values) -> list[dict[str, Any]]:
    return _change_rules(
        job, v, '$CI_PIPELINE_SOURCE == "merge_request_event" || $CI_PIPELINE_SOURCE == "push"'
    )


def _on_default_branch(job: Job, v: Values) -> list[dict[str, Any]]:
    branch = {"if": "$CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH", "when": "never"}
    return [branch, *_change_rules(job, v, '$CI_PIPELINE_SOURCE == "push"')]


def _change_rules(job: Job, v: Values, sources: str) -> list[dict[str, Any]]:
    when = "manual" if job.when == "manual" else "on_success"
    rules: list[dict[str, Any]] = [
        {"if": _retrain_match(v.model), "when": when},
        {"if": '$CI_PIPELINE_SOURCE == "schedule"', "when": "never"},
        {"if": sources, "changes": {"paths": v.changes}, "when": when},
        {"if": f"$CI_PIPELINE_SOURCE =~ {MANUAL_SOURCES} && {RETRAIN_UNSET}", "when": when},
    ]
    return [_drop_on_success(r) for r in rules]


_TRIGGER_RULES: dict[Trigger, Callable[[Job, Values], list[dict[str, Any]]]] = {
    "change": _on_change,
    "merge-request": _on_merge_request,
    "default-branch": _on_default_branch,
    "schedule": _on_schedule,
}


def _drop_on_success(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if not (k == "when" and v == "on_success")}


def install_lines(job: Job, v: Values) -> list[str]:
    """One install call per job: ci-mlops with the job's extras, plus the project's
    requirements where the job runs its code. One call resolves both sets together (a
    conflict shows up here, not as a later call silently replacing what ci-mlops needs)
    and pays the installer's start-up and resolution once. A job with a checkout
    installs the lock instead, when the spec has one."""
    extras = job.extras("gitlab")
    user_code = job.runs_user_code and bool(v.requirements)
    checks_out = job.descriptor.checks_out(PLATFORM)
    if v.component:
        return templated_install(job.kind, extras, requirements=user_code, lock=checks_out)
    return install_commands(
        v.install,
        extras,
        str(v.requirements) if user_code else None,
        installer=v.installer,
        lock=lock_file(v.lock, job.kind) if checks_out else None,
        in_job_image=job_image(job, v) is not None,
    )


def _system_install(job: Job) -> list[str]:
    """The Debian packages the job needs besides Python (the spec's image is Debian's
    Python image by default)."""
    packages = job.descriptor.system_packages
    if not packages:
        return []
    return [
        "apt-get update -qq",
        shlex.join(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]),
    ]


# Where each installer keeps its cache in the job, and the variable that tells it so. uv
# is installed with pip, so a uv job keeps both: uv's own wheel is in pip's. GitLab keeps
# only paths inside the project folder. The paths are relative, read from the folder the
# install lines run in (the project folder): "$CI_PROJECT_DIR/..." names a folder
# outside the job's copy where CI_PROJECT_DIR is not the folder the job runs in, as
# under gitlab-ci-local's shell executor for jobs that name an image (there it is the
# Docker path /builds/<group>/<project>), so the caches stayed empty and GitLab
# reported that they matched no files.
INSTALLER_CACHES = {
    "pip": (("PIP_CACHE_DIR", ".cache/pip"),),
    "uv": (("PIP_CACHE_DIR", ".cache/pip"), ("UV_CACHE_DIR", UV_CACHE_DIR)),
}


def cache_key_prefix(v: Values) -> str:
    """The installer cache's key prefix: installer, Python, and a digest of what decides
    the downloads besides the requirements files (the install setting with its pinned
    ci-mlops version, the uv release), so a new pin starts a new cache instead of
    growing the old one."""
    if v.component:
        # A component's inputs arrive at run time; the release is in the key instead.
        return f"{v.installer}-{v.python}-ci-mlops-{__version__}"
    basis = "\n".join([v.install, UV_REQUIREMENT if v.installer == "uv" else ""])
    return f"{v.installer}-{v.python}-{hashlib.sha256(basis.encode()).hexdigest()[:12]}"


def _cache(job: Job, v: Values) -> list[dict[str, Any]]:
    if not job.descriptor.checks_out(PLATFORM):
        return []
    if job_image(job, v):
        # The image holds what the job installs: an installer cache would only cost
        # its restore and save.
        return _model_cache(job, v)
    # uv's jobs keep the folder holding both caches: uv writes to its cache in every
    # job, so the path always exists. pip writes only what it downloaded or built: a
    # job image that holds every package leaves .cache/pip missing (GitLab then warns
    # that it matched no files, and there was nothing to keep).
    # A component learns its installer at run time: it keeps the folder, which holds
    # pip's cache alone when pip installs.
    paths = [".cache/pip"] if v.installer == "pip" and not v.component else [".cache"]
    lock = lock_file(v.lock, job.kind)
    files = [f for f in (v.requirements, lock) if f] if not v.component else []
    key: str | dict[str, Any] = cache_key_prefix(v)
    if files:
        key = {"files": files, "prefix": key}
    caches: list[dict[str, Any]] = [{"key": key, "paths": paths, "policy": "pull-push"}]
    return caches + _model_cache(job, v)


def _model_cache(job: Job, v: Values) -> list[dict[str, Any]]:
    if not job.descriptor.model_cache:
        return []
    # The train step decides by its own input hash whether the cached model is still
    # good, so one cache per model is enough.
    return [
        {
            "key": f"ci-mlops-{v.model}-model",
            "paths": [f".ci-mlops/{v.model}/"],
            "policy": "pull-push",
        }
    ]


def render_job(
    job: Job, v: Values, spec_file: str, model_jobs: tuple[Job, ...] = ()
) -> dict[str, Any]:
    """One GitLab job; ``model_jobs`` are the jobs of its model (those it may need)."""
    name = v.model if job.model else None
    out: dict[str, Any] = {"stage": job.stage, "image": job_image(job, v) or v.image}
    if v.tags:
        out["tags"] = v.tags
    out["interruptible"] = job.descriptor.interruptible
    out["timeout"] = f"{job.timeout_minutes} minutes"
    isolated = not job.descriptor.checks_out(PLATFORM)
    variables: dict[str, str] = {}
    if isolated:
        # No clone or fetch: the job works from its artifacts alone.
        variables["GIT_STRATEGY"] = "none"
    else:
        variables |= installer_setup(job, v)[0]
    variables |= {
        # No request for pip's latest version and no progress bars in the job log.
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_PROGRESS_BAR": "off",
        "GX_ANALYTICS_ENABLED": "false",
        "MLOPS_WORKDIR": ".ci-mlops",
    }
    if v.component:
        variables["MLOPS_INSTALL"] = v.install
        variables["MLOPS_INSTALLER"] = v.installer
        if not isolated:
            variables["MLOPS_LOCK"] = v.lock or ""
        if job.runs_user_code:
            variables["MLOPS_REQUIREMENTS"] = v.requirements or ""
    out["variables"] = variables
    caches = _cache(job, v)
    if caches:
        out["cache"] = caches
    by_key = {j.key: j for j in model_jobs}
    out["needs"] = [_need(by_key[n], v) for n in job.needs]
    out["before_script"] = [*_system_install(job), *install_lines(job, v)]
    if job.model:
        variables["MLOPS_MODEL"] = v.model
    variables["MLOPS_SPEC"] = snapshot_spec_path(v.model) if isolated else spec_file
    out["script"] = [command_line(job, isolated=isolated)]
    if job.artifacts and name:
        out["artifacts"] = _artifacts(job, v.model)
    if job.environment:
        out["environment"] = {
            "name": f"{job.environment}/{v.model}",
            "deployment_tier": _tier(job.environment),
            "action": "start",
        }
        if job.environment_url:
            out["environment"]["url"] = job.environment_url
        out["resource_group"] = f"deploy-{v.model}-{job.environment}"
        # Keyless signing: an OIDC token for Sigstore, which names this project, its
        # pipeline file and ref; verification accepts only the default branch's.
        out["id_tokens"] = {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}
    if job.descriptor.gitlab_token_environment:
        # Only this job needs GITLAB_TOKEN (CI_JOB_TOKEN cannot post notes). Scoping the
        # variable to this environment keeps it out of every other generated job;
        # "prepare" records no deployment. The scope alone is no boundary against a
        # pipeline file that names the environment itself: the README says what is.
        out["environment"] = {"name": job.descriptor.gitlab_token_environment, "action": "prepare"}
    if job.when == "manual":
        out["allow_failure"] = True
    out["retry"] = {
        "max": 2,
        "when": ["runner_system_failure", "stuck_or_timeout_failure", "api_failure"],
    }
    if job.model:
        out["rules"] = _rules(job, v)
    else:
        out["rules"] = [
            {
                "if": '$CI_PIPELINE_SOURCE == "merge_request_event" || $CI_PIPELINE_SOURCE == "push"',
                "changes": {"paths": v.changes},
            }
        ]
    return out


def command_line(job: Job, *, isolated: bool = False) -> str:
    """The job's ci-mlops call, reading the model and spec from MLOPS_MODEL and
    MLOPS_SPEC so that inline jobs, components and reusable workflows run the same line.
    ``isolated`` runs it as a module of an isolated interpreter (jobs with write tokens)."""
    words = list(ISOLATED_CI_MLOPS) if isolated else ["ci-mlops"]
    previous = ""
    for arg in job.args:
        if previous == "--model":
            words.append('"$MLOPS_MODEL"')
        elif previous == "--spec":
            words.append('"$MLOPS_SPEC"')
        else:
            words.append(shlex.quote(arg))
        previous = arg
    return " ".join(words)


def _need(needed: Job, v: Values) -> str | dict[str, Any]:
    # In the components an input can switch a job off (ONNX export), so jobs after it
    # must not require it.
    if v.component and needed.descriptor.template_input:
        return {"job": needed.key, "optional": True}
    return needed.key


def _artifacts(job: Job, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": job_names(model, job.kind).artifact,
        "paths": [f".ci-mlops/{model}/"],
        "expire_in": "30 days",
    }
    if job.descriptor.expose_as:
        # GitLab refuses variables and globs in the paths of an exposed artifact; the
        # model folder is a plain directory path ending in "/", which it links to the
        # job's artifact browser.
        out["expose_as"] = f"{model} {job.descriptor.expose_as}"
    if job.always_keep_artifacts:
        out["when"] = "always"
    here: dict[str, Any] = {}
    junit = [f".ci-mlops/{model}/{name}" for name in job.descriptor.junit]
    if junit:
        # A job with one JUnit file names it; the combined layout's build job lists two.
        here["junit"] = junit[0] if len(junit) == 1 else junit
    if job.descriptor.metrics_report:
        here["metrics"] = f".ci-mlops/{model}/{job.descriptor.metrics_report}"
    if here:
        out["reports"] = here
    return out


def _tier(environment: str) -> str:
    known = ("production", "staging", "testing", "development")
    return environment if environment in known else "other"


def values_for(spec: Spec, mp: ModelPlan) -> Values:
    """The values of a model's jobs: the spec-wide ones, with the model's name, its
    watched paths and the project's requirements."""
    return replace(
        spec_values(spec, list(mp.watched)),
        model=mp.model.name,
        requirements=spec.runtime.requirements,
    )


def validate_job(spec: Spec, plan: Plan, mode: str) -> dict[str, Any]:
    """The job that fails when the committed pipeline no longer matches the spec."""
    job = plan.validate_job("gitlab", mode)
    v = spec_values(spec, changes=[plan.spec_file, ".gitlab-ci.yml"])
    return render_job(job, v, plan.spec_file)


def spec_values(spec: Spec, changes: list[str]) -> Values:
    """The values of a spec-wide job (no model, no requirements)."""
    rt = spec.runtime
    return Values(
        model="",
        changes=changes,
        image=rt.image,
        requirements=None,
        install=rt.install,
        tags=list(rt.tags),
        python=rt.python,
        installer=rt.installer,
        lock=rt.lock,
        job_images=rt.job_images,
    )


def installer_setup(job: Job, v: Values) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The installer's variables and the caches of a job that checks out the repository."""
    # uv links files from its cache into the environment where both share a file system
    # and copies them where not (a Docker executor's image and build volume). A
    # component sets both folders: its installer is an input, read at run time. A job
    # image holds the packages: nothing to cache.
    if job_image(job, v):
        variables: dict[str, str] = {}
    else:
        variables = dict(INSTALLER_CACHES["uv" if v.component else v.installer])
    return variables, _cache(job, v)


def render_inline(spec: Spec, plan: Plan) -> dict[str, Any]:
    """The whole ``.gitlab-ci.yml`` with every job written out."""
    doc: dict[str, Any] = {"stages": list(plan.stages), "workflow": workflow_rules()}
    doc[plan.validate.key] = validate_job(spec, plan, "inline")
    for mp in plan.models:
        v = values_for(spec, mp)
        for job in mp.jobs:
            doc[job.key] = render_job(job, v, plan.spec_file, mp.jobs)
    return doc


def component_inputs(spec: Spec, plan: Plan) -> dict[str, Any]:
    """The ``spec:inputs`` header of every component, with the spec defaults."""
    rt = spec.runtime
    switches = {
        s.name: {"type": "boolean", "default": s.default, "description": s.description}
        for s in plan.switches
    }
    return {
        "model": {
            "description": "Model name, as in mlops.yaml.",
            "regex": "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$",
        },
        "spec": {"default": "mlops.yaml", "description": "Path of the model spec."},
        "paths": {
            "type": "array",
            "default": ["**/*"],
            "description": "Files whose change runs the model's jobs (code and data).",
        },
        "image": {"default": rt.image, "description": "Job image."},
        "python": {"default": rt.python, "description": "Python version (cache key)."},
        "install": {
            "default": rt.install,
            "description": "pip arguments that install ci-mlops; {extras} is replaced per job.",
            "regex": "^[^$`'\"\\\\;&|<>]+$",
        },
        "requirements": {"default": "", "description": "Your requirements file, if any."},
        "installer": {
            "default": "pip",
            "options": ["pip", "uv"],
            "description": "What installs ci-mlops and your requirements: pip, or uv "
            "(installed with pip first).",
        },
        "lock": {
            "default": "",
            "description": "A requirements file with hashes that jobs with a checkout install "
            "instead of install and requirements, or a folder of per-job locks ending in / "
            "(<folder><job>.txt, written by `ci-mlops lock`).",
            # As runtime.lock allows: no $ (GitLab would expand it in the variable that
            # carries the value), no quotes or backslashes; the shell reads it quoted.
            "regex": "^[^$`'\"\\\\]*$",
        },
        "tags": {"type": "array", "default": [], "description": "Runner tags."},
        "jobs": {
            "default": "",
            "description": "Set by `ci-mlops plan` in a child pipeline: the jobs to run, "
            "as ,train,evaluate, (empty: the rules decide).",
            "regex": "^(,[a-z0-9-]+)*,?$",
        },
        **switches,
    }


def component_values(spec: Spec) -> Values:
    return Values(
        model="$[[ inputs.model ]]",
        changes="$[[ inputs.paths ]]",
        image="$[[ inputs.image ]]",
        requirements="$[[ inputs.requirements ]]",
        install="$[[ inputs.install ]]",
        tags="$[[ inputs.tags ]]",
        python="$[[ inputs.python ]]",
        component=True,
        installer="$[[ inputs.installer ]]",
        lock="$[[ inputs.lock ]]",
    )


def render_components(spec: Spec, plan: Plan) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Component name -> (spec header, jobs). ``plan`` is the plan of the symbolic model."""
    v = component_values(spec)
    header = {"spec": {"inputs": component_inputs(spec, plan)}}
    spec_file = "$[[ inputs.spec ]]"
    plan_jobs = plan.models[0].jobs
    rendered = {j.key: render_job(j, v, spec_file, plan_jobs) for j in plan_jobs}
    # One component per kind of job, with its jobs (one per environment for deploys).
    components: dict[str, dict[str, Any]] = {}
    for job in plan_jobs:
        components.setdefault(job.kind, {})[job.key] = rendered[job.key]
    out = {kind: (header, jobs) for kind, jobs in components.items()}
    out["pipeline"] = (header, rendered)
    return out


def caller_inputs(spec: Spec, mp: ModelPlan) -> dict[str, Any]:
    """The inputs a project passes to the pipeline component for one model."""
    rt = spec.runtime
    return {
        "model": mp.model.name,
        "spec": "mlops.yaml",
        "paths": list(mp.watched),
        "image": rt.image,
        "python": rt.python,
        "install": rt.install,
        "requirements": rt.requirements or "",
        **installer_inputs(spec),
        "tags": list(rt.tags),
        **mp.switches,
    }


def installer_inputs(spec: Spec) -> dict[str, str]:
    """The installer and lock inputs a caller passes, only where they differ from the
    templates' defaults (pip, no lock): a caller of a default spec then also works
    with a release of the templates that has no such inputs."""
    rt = spec.runtime
    out = {"installer": rt.installer} if rt.installer != "pip" else {}
    return out | ({"lock": rt.lock} if rt.lock else {})


def render_caller(spec: Spec, plan: Plan) -> dict[str, Any]:
    """A thin ``.gitlab-ci.yml`` that includes the released pipeline component per model."""
    tpl = spec.runtime.templates
    doc: dict[str, Any] = {"stages": list(plan.stages), "workflow": workflow_rules()}
    doc["include"] = []
    for mp in plan.models:
        inputs = caller_inputs(spec, mp)
        inputs["spec"] = plan.spec_file
        doc["include"].append(
            {"component": f"{tpl.gitlab}/pipeline@{tpl.version}", "inputs": inputs}
        )
    doc[plan.validate.key] = validate_job(spec, plan, "include")
    return doc
