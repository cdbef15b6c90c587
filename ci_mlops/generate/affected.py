"""Which jobs of which models a pipeline run concerns, decided at run time.

The matrix layout (see :func:`uses_matrix`) writes no per-model rules into the committed
pipeline. Its plan job reads what started the run (a push, a merge/pull request, a
schedule, a retrain request, a run by hand) and the files the change touched, and
keeps the jobs the per-model layout's rules would have run. Both layouts therefore run
the same jobs for the same event; the matrix layout just decides it in one place.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ci_mlops.generate.kinds import Trigger, job_suffix
from ci_mlops.generate.plan import Job, ModelPlan, Plan
from ci_mlops.spec.model import Spec

Source = Literal["push", "merge-request", "schedule", "manual"]

# Specs with more models than this use the matrix layout unless the spec says otherwise:
# a per-model GitHub workflow of ~8 jobs a model reaches the 256 jobs of a run near 30
# models, and a per-model GitLab file of ~400 lines a model is past reviewing well
# before that.
MATRIX_ABOVE = 10

# Revisions git prints for "no commit" (a new branch's previous commit).
_NO_COMMIT = re.compile(r"^0*$")


def uses_matrix(spec: Spec) -> bool:
    """Whether ``spec``'s pipelines pick their models at run time."""
    if spec.runtime.layout == "auto":
        return len(spec.models) > MATRIX_ABOVE
    return spec.runtime.layout == "matrix"


@dataclass(frozen=True)
class Event:
    """What started a pipeline run, in terms both platforms share."""

    source: Source
    default_branch: bool  # the run is for the default branch
    retrain: str = ""  # a model name or "all": retrain it even if nothing changed
    # The cron expression of a GitHub schedule; None where every schedule counts (GitLab).
    schedule: str | None = None
    # Files the change touched; None when unknown (every model counts as changed).
    changed: tuple[str, ...] | None = None


@functools.lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a path glob as GitLab's ``rules:changes`` and GitHub's
    path filters read it: ``*`` stays within a folder, ``**/`` spans folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def touches(changed: Iterable[str], patterns: Iterable[str]) -> bool:
    """Whether any changed file matches any of ``patterns``."""
    regexes = [glob_regex(p) for p in patterns]
    return any(r.match(path) for path in changed for r in regexes)


def affected(mp: ModelPlan, event: Event, shared: tuple[str, ...]) -> bool:
    """Whether the change concerns the model: its code, data, the spec, or ``shared``
    files (the pipeline file itself)."""
    if event.changed is None:
        return True
    return touches(event.changed, (*mp.watched, *shared))


def _retrain_asked(mp: ModelPlan, event: Event) -> bool:
    if event.retrain in ("all", mp.model.name):
        return True
    # A schedule of a model that retrains on schedule rather than checking drift.
    return (
        event.source == "schedule"
        and not mp.drift
        and mp.schedule is not None
        and event.schedule == mp.schedule
    )


def _on_change(mp: ModelPlan, event: Event, shared: tuple[str, ...]) -> bool:
    if _retrain_asked(mp, event):
        return True
    if event.source == "manual":
        return not event.retrain
    return event.source in ("push", "merge-request") and affected(mp, event, shared)


def _on_merge_request(mp: ModelPlan, event: Event, shared: tuple[str, ...]) -> bool:
    return event.source == "merge-request" and affected(mp, event, shared)


def _on_default_branch(mp: ModelPlan, event: Event, shared: tuple[str, ...]) -> bool:
    if not event.default_branch or event.source == "merge-request":
        return False
    return _on_change(mp, event, shared)


def _on_schedule(mp: ModelPlan, event: Event, shared: tuple[str, ...]) -> bool:
    if event.source != "schedule" or event.retrain:
        return False
    # A model's drift check runs on its own schedule, or on any when it has none.
    return event.schedule is None or mp.schedule is None or event.schedule == mp.schedule


_RUNS: dict[Trigger, Callable[[ModelPlan, Event, tuple[str, ...]], bool]] = {
    "change": _on_change,
    "merge-request": _on_merge_request,
    "default-branch": _on_default_branch,
    "schedule": _on_schedule,
}


def selected_jobs(mp: ModelPlan, event: Event, shared: tuple[str, ...] = ()) -> list[Job]:
    """The jobs of one model this run concerns, with the jobs they need kept whole: a
    job whose need was left out would wait for nothing."""
    keep = [j for j in mp.jobs if _RUNS[j.descriptor.trigger](mp, event, shared)]
    keys = {j.key for j in keep}
    return [j for j in keep if all(n in keys for n in j.needs)]


def selection(plan: Plan, event: Event, shared: tuple[str, ...] = ()) -> dict[str, list[Job]]:
    """Model name -> the jobs this run concerns, for the models that have any."""
    out = {mp.model.name: selected_jobs(mp, event, shared) for mp in plan.models}
    return {name: jobs for name, jobs in out.items() if jobs}


def slots(plan: Plan) -> list[str]:
    """The kinds of job a model can have, one per deploy environment, in pipeline order:
    ``data-test``, ``train``, ..., ``deploy-staging``. Each is one matrix job."""
    order: dict[str, None] = {}
    for mp in plan.models:
        for job in mp.jobs:
            order[job_suffix(job.key)] = None
    return sorted(order, key=_slot_rank(plan))


def _slot_rank(plan: Plan) -> Callable[[str], tuple[int, int]]:
    kinds = list(plan.kinds)
    envs: dict[str, None] = {}
    for mp in plan.models:
        for env in mp.model.deploy.environments:
            envs[env.name] = None
    env_order = list(envs)

    def rank(slot: str) -> tuple[int, int]:
        for i, kind in enumerate(kinds):
            if slot == kind:
                return (i, -1)
            if slot.startswith(kind + "-") and slot[len(kind) + 1 :] in envs:
                return (i, env_order.index(slot[len(kind) + 1 :]))
        raise KeyError(slot)

    return rank


# --- what started the run, read from the platform's environment ------------------------

_GITLAB_SOURCES: dict[str, Source] = {
    "push": "push",
    "merge_request_event": "merge-request",
    "schedule": "schedule",
}
_GITHUB_SOURCES: dict[str, Source] = {
    "push": "push",
    "pull_request": "merge-request",
    "schedule": "schedule",
}


def gitlab_event(env: Mapping[str, str]) -> tuple[Event, str]:
    """The event of a GitLab pipeline and the revision its change is measured from."""
    source = _GITLAB_SOURCES.get(env.get("CI_PIPELINE_SOURCE", ""), "manual")
    base = (
        env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA", "")
        if source == "merge-request"
        else env.get("CI_COMMIT_BEFORE_SHA", "")
    )
    branch = env.get("CI_COMMIT_BRANCH", "")
    event = Event(
        source=source,
        default_branch=bool(branch) and branch == env.get("CI_DEFAULT_BRANCH"),
        retrain=env.get("MLOPS_RETRAIN", ""),
    )
    return event, base


def github_event(env: Mapping[str, str], default_branch: str) -> tuple[Event, str]:
    """The event of a GitHub workflow run and the revision its change is measured from:
    the pull request's base, or the commit before the push."""
    name = env.get("GITHUB_EVENT_NAME", "")
    source = _GITHUB_SOURCES.get(name, "manual")
    payload = _event_payload(env.get("GITHUB_EVENT_PATH", ""))
    pull = payload.get("pull_request")
    base = pull.get("base", {}).get("sha", "") if isinstance(pull, dict) else ""
    if source == "push":
        base = str(payload.get("before") or "")
    event = Event(
        source=source,
        default_branch=source != "merge-request" and env.get("GITHUB_REF_NAME") == default_branch,
        retrain=env.get("MLOPS_RETRAIN", ""),
        schedule=env.get("MLOPS_SCHEDULE") or None,
    )
    return event, str(base)


def _event_payload(path: str) -> dict[str, object]:
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {}


def changed_files(base: str, cwd: str) -> tuple[str, ...] | None:
    """Files changed since ``base`` (from its merge base with HEAD), or None when that
    cannot be told: no base (a new branch), or history too shallow to hold it. None runs
    every model, which is never wrong, only slower."""
    if not base or _NO_COMMIT.match(base):
        return None
    result = subprocess.run(
        # --relative: paths as the spec names them, from the spec's folder.
        ["git", "diff", "--name-only", "--no-renames", "--relative", f"{base}...HEAD"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(
            f"ci-mlops: cannot compare with {base} ({result.stderr.strip()}); running every model",
            file=sys.stderr,
        )
        return None
    return tuple(line for line in result.stdout.splitlines() if line)
