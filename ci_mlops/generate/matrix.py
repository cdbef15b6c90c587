"""The matrix layout: pipelines whose size does not grow with the number of models.

A plan job (``ci-mlops plan``) decides at run time which models a run concerns (see
:mod:`ci_mlops.generate.affected`). On GitHub each kind of job is one matrix job over
the models the plan job lists; on GitLab the plan job writes a child pipeline with the
jobs of just those models, rendered by the same code as the per-model file, and a
trigger job runs it. The committed files hold no job per model, only the path filters
that say which changes concern any model at all.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from ci_mlops import atomic
from ci_mlops.generate import github, gitlab
from ci_mlops.generate.affected import (
    Event,
    changed_files,
    github_event,
    gitlab_event,
    glob_regex,
    selection,
    slots,
)
from ci_mlops.generate.kinds import READ_ONLY, STAGES, github_job_id, job_suffix
from ci_mlops.generate.plan import (
    Job,
    ModelPlan,
    Plan,
    build_plan,
    install_commands,
    lock_file,
)
from ci_mlops.generate.yamlout import dump
from ci_mlops.spec.model import Spec

GITHUB_PLAN = "plan"
CALLS = "models"  # the include-mode job that calls the reusable workflow per model
GITLAB_PLAN = "ci-mlops:plan"
GITLAB_TRIGGER = "ci-mlops:models"
# The hidden job that holds the plan job's and the triggers' rules once: their path
# filters are the one part of the committed file that grows with the models.
GITLAB_WHEN = ".ci-mlops:when"
PARENT_STAGES = ("validate", "plan", "models")
# Where the GitLab plan job writes the child pipeline (a job artifact).
CHILD_FILE = ".ci-mlops/pipeline.yml"
# GitLab reads at most 150 includes per pipeline: in include mode, where each model of a
# child pipeline is one include of the pipeline component, the models are spread over
# as many child pipelines as that takes.
INCLUDES_PER_CHILD = 150
MATRIX_MODEL = "${{ matrix.model }}"
PLAN_TIMEOUT = 10

# Variables of the parent pipeline a child pipeline does not receive by itself: a child
# pipeline's source is "parent_pipeline" and only trigger variables that are forwarded
# reach it. The plan job writes their values into the child pipeline.
FORWARDED = ("MLOPS_RETRAIN", "CI_MERGE_REQUEST_IID", "CI_MERGE_REQUEST_PROJECT_ID")


def slot_members(plan: Plan) -> dict[str, list[tuple[ModelPlan, Job]]]:
    """Each matrix job (``train``, ``deploy-staging``) and the models' jobs it stands for."""
    out: dict[str, list[tuple[ModelPlan, Job]]] = {s: [] for s in slots(plan)}
    for mp in plan.models:
        for job in mp.jobs:
            out[job_suffix(job.key)].append((mp, job))
    return out


def _stand_in(slot: str, members: list[tuple[ModelPlan, Job]]) -> Job:
    """One job that stands for the slot's jobs of every model: it waits for every slot
    any of them waits for, runs as long as the longest may, and installs the framework
    extras (and those their specs add) of all: one install line for the whole matrix."""
    first = members[0][1]
    needs = dict.fromkeys(job_suffix(n) for _, j in members for n in j.needs)
    frameworks = sorted({j.framework_extra for _, j in members if j.framework_extra})
    spec_extras = dict.fromkeys(e for _, j in members for e in j.spec_extras)
    return replace(
        first,
        key=f"{MATRIX_MODEL}:{slot}",
        needs=tuple(f"{MATRIX_MODEL}:{n}" for n in needs),
        timeout_minutes=max(j.timeout_minutes for _, j in members),
        framework_extra=",".join(frameworks) or None,
        spec_extras=tuple(spec_extras),
    )


def minimal_paths(patterns: set[str]) -> list[str]:
    """``patterns`` without the files another pattern already covers (a model's data
    under its own folder), sorted: one line or two per model in the committed file."""
    globs = sorted(p for p in patterns if any(c in p for c in "*?["))
    # One alternation: matched in C, not a Python loop over every glob per path.
    covered = re.compile("|".join(f"(?:{glob_regex(g).pattern})" for g in globs) or "(?!)")
    return sorted(p for p in patterns if p in globs or not covered.match(p))


# --- GitHub ------------------------------------------------------------------------------


def _slot_condition(job: Job, slot: str, spec: Spec) -> str:
    # A failed leg stops the next kind for every model (as a stage does); a kind with no
    # model this run (skipped) does not.
    cond = f"!failure() && !cancelled() && needs.{GITHUB_PLAN}.outputs.{slot} != '[]'"
    if job.descriptor.trigger == "schedule":
        # The plan decides this too; a job that may dispatch workflows says it itself.
        return f"github.event_name == 'schedule' && {cond}"
    if job.descriptor.trigger == "default-branch":
        # The plan decides this too; a deploy also says it itself.
        branch = spec.runtime.default_branch
        cond += f" && github.event_name != 'pull_request' && github.ref_name == '{branch}'"
    return cond


def github_plan_job(spec: Spec, plan: Plan, outputs: list[str]) -> dict[str, Any]:
    """The job that reads the change and lists each matrix job's models. It installs
    ci-mlops alone, as the validate job does, and runs where that one does."""
    rt = spec.runtime
    image = github.job_image(plan.validate, github.values_for(spec, "", plan.spec_file))
    install = install_commands(
        rt.install,
        (),
        installer=rt.installer,
        lock=lock_file(rt.lock, plan.validate.kind),
        in_job_image=image is not None,
    )
    job: dict[str, Any] = {
        "name": "Pick the models this run concerns",
        "runs-on": rt.runs_on,
        "timeout-minutes": PLAN_TIMEOUT,
        "permissions": {p.scope: p.level for p in READ_ONLY},
        "outputs": {o: f"${{{{ steps.plan.outputs.{o} }}}}" for o in outputs},
        "env": {"MLOPS_SPEC": plan.spec_file, "MLOPS_SCHEDULE": "${{ github.event.schedule }}"},
    }
    if image:
        job["container"] = {"image": image}
    job["steps"] = [
        # The whole history: the change is measured from the merge base.
        {"uses": github.CHECKOUT, "with": {"persist-credentials": False, "fetch-depth": 0}},
        *([] if image else [{"uses": github.SETUP_PYTHON, "with": {"python-version": rt.python}}]),
        {"name": "Install ci-mlops", "run": "\n".join(install)},
        {
            "id": "plan",
            "name": "Pick the models",
            "run": 'ci-mlops plan --spec "$MLOPS_SPEC" --platform github',
        },
    ]
    return job


def github_inline(spec: Spec, plan: Plan, workflow_file: str) -> dict[str, Any]:
    """The workflow of the matrix layout: validate, plan, one matrix job per kind."""
    doc = github._workflow_head(spec, plan, workflow_file)
    for event in ("push", "pull_request"):
        doc["on"][event]["paths"] = minimal_paths(set(doc["on"][event]["paths"]))
    members = slot_members(plan)
    stand_ins = {s: _stand_in(s, m) for s, m in members.items()}
    first = plan.models[0]
    smp = replace(first, jobs=tuple(stand_ins.values()))
    v = replace(github.values_for(spec, MATRIX_MODEL, plan.spec_file), switches="matrix")
    validate = github._validate_job(plan, "inline")
    jobs: dict[str, Any] = {
        github_job_id(validate.key): github.render_job(
            validate, None, github.values_for(spec, "", plan.spec_file), plan.spec_file
        ),
        GITHUB_PLAN: github_plan_job(spec, plan, list(members)),
    }
    for slot, job in stand_ins.items():
        out = github.render_job(job, smp, v, plan.spec_file)
        rendered: dict[str, Any] = {"name": out.pop("name")}
        rendered["needs"] = [GITHUB_PLAN, *(job_suffix(n) for n in job.needs)]
        rendered["if"] = _slot_condition(job, slot, spec)
        out.pop("needs", None)
        out.pop("if", None)
        rendered["strategy"] = {
            "fail-fast": False,
            "matrix": {"include": f"${{{{ fromJSON(needs.{GITHUB_PLAN}.outputs.{slot}) }}}}"},
        }
        jobs[slot] = rendered | out
    doc["jobs"] = jobs
    return doc


def github_caller(spec: Spec, plan: Plan, workflow_file: str) -> dict[str, Any]:
    """Include mode of the matrix layout: one call of the reusable workflow per model
    the plan job lists, as a matrix; the reusable workflow decides the jobs as always."""
    doc = github.render_caller(spec, plan, workflow_file)
    for event in ("push", "pull_request"):
        doc["on"][event]["paths"] = minimal_paths(set(doc["on"][event]["paths"]))
    names = {mp.model.name for mp in plan.models}
    call = doc["jobs"][plan.models[0].model.name]
    jobs = {k: v for k, v in doc["jobs"].items() if k not in names}
    jobs[GITHUB_PLAN] = github_plan_job(spec, plan, [CALLS])
    # The caller has no workflow-level env (the reusable workflow takes the retrain
    # request as an input), so the plan job is given it itself: without it a request to
    # retrain one model reads as a run by hand and calls the workflow for every model.
    jobs[GITHUB_PLAN]["env"]["MLOPS_RETRAIN"] = f"${{{{ {github.RETRAIN} }}}}"
    call["with"] |= {
        "model": MATRIX_MODEL,
        "schedule": "${{ matrix.schedule }}",
        **{s.name: f"${{{{ matrix.{s.name} }}}}" for s in plan.switches},
    }
    jobs[CALLS] = {
        "needs": [GITHUB_PLAN],
        "if": f"needs.{GITHUB_PLAN}.outputs.{CALLS} != '[]'",
        "strategy": {
            "fail-fast": False,
            "matrix": {"include": f"${{{{ fromJSON(needs.{GITHUB_PLAN}.outputs.{CALLS}) }}}}"},
        },
        **call,
    }
    doc["jobs"] = jobs
    return doc


def github_outputs(plan: Plan, chosen: Mapping[str, list[Job]]) -> dict[str, str]:
    """Each matrix job's models as the JSON its ``matrix.include`` reads: the model's
    name and its switches (whether it exports to ONNX, checks drift); ``models`` lists
    every chosen model with its schedule, for the calls of the reusable workflow."""
    by_name = {mp.model.name: mp for mp in plan.models}
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in slots(plan)}
    out[CALLS] = []
    for name, jobs in chosen.items():
        mp = by_name[name]
        for job in jobs:
            out[job_suffix(job.key)].append({"model": name, **mp.switches})
        out[CALLS].append({"model": name, "schedule": mp.schedule or "", **mp.switches})
    return {s: json.dumps(rows, separators=(",", ":")) for s, rows in out.items()}


# --- GitLab ------------------------------------------------------------------------------


def _gitlab_rules(plan: Plan) -> list[dict[str, Any]]:
    """When the plan job (and the child pipeline) run: changes to any model's files, a
    schedule, or a run by hand, by API or by a retrain trigger."""
    watched = minimal_paths({p for mp in plan.models for p in mp.watched} | {".gitlab-ci.yml"})
    return [
        {"if": '$CI_PIPELINE_SOURCE == "schedule"'},
        {"if": f"$CI_PIPELINE_SOURCE =~ {gitlab.MANUAL_SOURCES}"},
        {
            "if": '$CI_PIPELINE_SOURCE == "merge_request_event" || $CI_PIPELINE_SOURCE == "push"',
            "changes": {"paths": watched},
        },
    ]


def child_count(plan: Plan, mode: str) -> int:
    """How many child pipelines the plan job writes: one, or in include mode one per
    ``INCLUDES_PER_CHILD`` models."""
    return 1 if mode == "inline" else math.ceil(len(plan.models) / INCLUDES_PER_CHILD)


def child_paths(first: str, count: int) -> list[str]:
    """``.ci-mlops/pipeline.yml``, ``.ci-mlops/pipeline-2.yml``, ...: the child files."""
    path = PurePosixPath(first)
    return [first] + [str(path.with_stem(f"{path.stem}-{i}")) for i in range(2, count + 1)]


def trigger_names(count: int) -> list[str]:
    return [GITLAB_TRIGGER] + [f"{GITLAB_TRIGGER}-{i}" for i in range(2, count + 1)]


def gitlab_parent(spec: Spec, plan: Plan, mode: str = "inline") -> dict[str, Any]:
    """The committed ``.gitlab-ci.yml`` of the matrix layout: validate, the plan job, and
    the trigger of each child pipeline it writes."""
    rt = spec.runtime
    doc: dict[str, Any] = {"stages": list(PARENT_STAGES), "workflow": gitlab.workflow_rules()}
    doc[plan.validate.key] = gitlab.validate_job(spec, plan, mode)
    count = child_count(plan, mode)
    files = child_paths(CHILD_FILE, count)
    command = 'ci-mlops plan --spec "$MLOPS_SPEC" --platform gitlab'
    if mode == "include":
        command += " --mode include"
    doc[GITLAB_WHEN] = {"rules": _gitlab_rules(plan)}
    # The plan job installs ci-mlops alone, as the validate job does.
    values = gitlab.spec_values(spec, changes=[])
    installer_variables, caches = gitlab.installer_setup(plan.validate, values)
    image = gitlab.job_image(plan.validate, values) or rt.image
    job: dict[str, Any] = {"extends": GITLAB_WHEN, "stage": "plan", "image": image}
    if rt.tags:
        job["tags"] = list(rt.tags)
    job |= {
        "interruptible": True,
        "timeout": f"{PLAN_TIMEOUT} minutes",
        "variables": {
            # The whole history: the change is measured from the merge base.
            "GIT_DEPTH": "0",
            **installer_variables,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_PROGRESS_BAR": "off",
            "MLOPS_SPEC": plan.spec_file,
        },
        "cache": caches,
        "needs": [],
        "before_script": gitlab.install_lines(plan.validate, values),
        "script": [f"{command} --output {shlex.quote(CHILD_FILE)}"],
        "artifacts": {"paths": files, "expire_in": "30 days"},
        "retry": {
            "max": 2,
            "when": ["runner_system_failure", "stuck_or_timeout_failure", "api_failure"],
        },
    }
    doc[GITLAB_PLAN] = job
    for name, file in zip(trigger_names(count), files, strict=True):
        doc[name] = {
            "extends": GITLAB_WHEN,
            "stage": "models",
            "needs": [GITLAB_PLAN],
            "trigger": {
                "include": [{"artifact": file, "job": GITLAB_PLAN}],
                "strategy": "depend",
            },
        }
    return doc


def gitlab_child(
    spec: Spec, plan: Plan, chosen: Mapping[str, list[Job]], env: Mapping[str, str]
) -> dict[str, Any]:
    """The child pipeline of the chosen jobs. Jobs of one kind share a hidden job and
    each model's job holds only what differs (its name, paths, needs), so a change that
    concerns every model still gives a file GitLab accepts."""
    doc = _child_head(env)
    hidden: dict[str, dict[str, Any]] = {}
    jobs: dict[str, Any] = {}
    for mp in plan.models:
        if mp.model.name not in chosen:
            continue
        v = replace(gitlab.values_for(spec, mp), decided=True)
        for job in chosen[mp.model.name]:
            rendered = gitlab.render_job(job, v, plan.spec_file, mp.jobs)
            name = f".ci-mlops:{job_suffix(job.key)}"
            base = hidden.setdefault(name, rendered)
            jobs[job.key] = _extending(name, base, rendered)
    if not jobs:
        jobs["ci-mlops:nothing"] = _nothing(spec)
    return doc | hidden | jobs


def _child_head(env: Mapping[str, str]) -> dict[str, Any]:
    """The stages, and the parent's variables a child pipeline does not receive."""
    doc: dict[str, Any] = {"stages": list(STAGES)}
    forwarded = {k: env[k] for k in FORWARDED if env.get(k)}
    if forwarded:
        # Not expanded: the values are data (a retrain request's model name), never
        # references to other variables.
        doc["variables"] = {k: {"value": v, "expand": False} for k, v in forwarded.items()}
    return doc


def gitlab_children_included(
    spec: Spec, plan: Plan, chosen: Mapping[str, list[Job]], env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Include mode: child pipelines that include the released pipeline component once
    per chosen model, its ``jobs`` input naming the jobs to run, at most
    ``INCLUDES_PER_CHILD`` models each; a child with no model says so in its one job."""
    tpl = spec.runtime.templates
    includes = []
    for mp in plan.models:
        if mp.model.name not in chosen:
            continue
        inputs = gitlab.caller_inputs(spec, mp) | {"spec": plan.spec_file}
        listed = ",".join(job_suffix(j.key) for j in chosen[mp.model.name])
        inputs["jobs"] = f",{listed},"
        includes.append({"component": f"{tpl.gitlab}/pipeline@{tpl.version}", "inputs": inputs})
    out = []
    for i in range(child_count(plan, "include")):
        part = includes[i * INCLUDES_PER_CHILD : (i + 1) * INCLUDES_PER_CHILD]
        doc = _child_head(env)
        out.append(doc | {"include": part} if part else doc | {"ci-mlops:nothing": _nothing(spec)})
    return out


def _extending(name: str, base: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """``job`` as ``extends: name`` plus what differs from ``base``. GitLab merges
    mappings key by key and replaces lists, so this is exact when both have the same
    mapping keys at every level; otherwise the job is written out whole."""
    if not _same_shape(base, job):
        return job
    return {"extends": name, **_difference(base, job)}


def _difference(base: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """What of ``job`` differs from ``base``: whole lists, mappings key by key."""
    out: dict[str, Any] = {}
    for key, value in job.items():
        if base[key] == value:
            continue
        both = isinstance(value, dict) and isinstance(base[key], dict)
        out[key] = _difference(base[key], value) if both else value
    return out


def _same_shape(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_shape(a[k], b[k]) for k in a)
    return True


def _nothing(spec: Spec) -> dict[str, Any]:
    # A child pipeline needs one job; this one says why there is nothing else.
    job: dict[str, Any] = {"stage": "validate", "image": spec.runtime.image}
    if spec.runtime.tags:
        job["tags"] = list(spec.runtime.tags)
    job["variables"] = {"GIT_STRATEGY": "none"}
    job["script"] = ["echo 'No model is concerned by this change.'"]
    return job


# --- the plan job ------------------------------------------------------------------------


def summary(plan: Plan, chosen: Mapping[str, list[Job]]) -> str:
    names = ", ".join(chosen) if len(chosen) <= 10 else f"{', '.join(list(chosen)[:10])}, ..."
    return f"ci-mlops plan: {len(chosen)} of {len(plan.models)} models" + (
        f" ({names})" if chosen else ""
    )


def choose(plan: Plan, event: Event, pipeline_file: str) -> dict[str, list[Job]]:
    """The jobs of the run; a change to the pipeline file concerns every model."""
    return selection(plan, event, shared=(pipeline_file,))


def write_github_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    """Append the outputs to ``$GITHUB_OUTPUT`` (one ``name=value`` line each)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(f"{k}={v}\n" for k, v in outputs.items())


def run_plan(
    spec: Spec,
    *,
    platform: str,
    output: Path | None,
    changed: tuple[str, ...] | None,
    env: Mapping[str, str] | None = None,
    mode: str = "inline",
) -> int:
    """The plan job: read what started the run and what changed, then write the child
    pipeline (GitLab, to ``output``; in include mode one or more, see
    :func:`child_paths`) or the matrix job outputs (GitHub, to ``$GITHUB_OUTPUT``, or to
    ``output`` when given). ``changed`` replaces the files ``git diff`` would name."""
    env = os.environ if env is None else env
    plan = build_plan(spec, spec.path.name)
    if platform == "gitlab":
        event, base = gitlab_event(env)
        pipeline_file = ".gitlab-ci.yml"
    else:
        event, base = github_event(env, spec.runtime.default_branch)
        pipeline_file = ".github/workflows/mlops.yml"
    if changed is None and event.source in ("push", "merge-request"):
        changed = changed_files(base, str(spec.root))
    chosen = choose(plan, replace(event, changed=changed), pipeline_file)
    print(summary(plan, chosen))
    if platform == "gitlab":
        if mode == "include":
            docs = gitlab_children_included(spec, plan, chosen, env)
        else:
            docs = [gitlab_child(spec, plan, chosen, env)]
        for target, doc in zip(
            child_paths(str(output or CHILD_FILE), len(docs)), docs, strict=True
        ):
            atomic.write_text(Path(target), dump(doc))
            print(f"{target}: written")
        return 0
    outputs = github_outputs(plan, chosen)
    sink = output or (Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None)
    if sink is None:
        print("\n".join(f"{k}={v}" for k, v in outputs.items()))
    else:
        write_github_outputs(sink, outputs)
    return 0
