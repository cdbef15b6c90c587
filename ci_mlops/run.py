"""``ci-mlops run``: the job plan the generator renders, run on this machine.

Jobs run in dependency order, in this process, and the run stops at the first failing
job. A job whose inputs (the files it reads and its part of the spec) are unchanged since
its last successful run, and whose outputs are still there, is skipped: that is what makes
a second run cheap. Training keeps its own cache (see ``steps/train.py``)."""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ci_mlops import atomic, log
from ci_mlops.errors import MlopsError, StepError, UsageError
from ci_mlops.generate.kinds import KINDS
from ci_mlops.generate.plan import Job, build_plan
from ci_mlops.records import GatesRecord, MetricsRecord, Record
from ci_mlops.spec.model import Model, Spec

if TYPE_CHECKING:
    from ci_mlops.registries import Registry

# The steps this runner runs: every kind with a step module for it, in pipeline order.
LOCAL_KINDS = tuple(k.name for k in KINDS.values() if k.local_step)
CACHE_FILE = "run-cache.json"
R = TypeVar("R", bound=Record)


class LocalStep(Protocol):
    """A step module as this runner calls it (its ``run_local``)."""

    def run_local(
        self, spec: Spec, model: Model, *, environment: str | None, force: bool
    ) -> None: ...


def run_pipeline(
    spec: Spec, *, steps: Iterable[str] = (), models: list[Model], force: bool = False
) -> int:
    """Run the selected steps (default: all local ones) for ``models``; return 0."""
    wanted = _wanted_kinds(tuple(steps))
    # One step after the other here, whatever ``runtime.jobs`` makes of them in CI.
    plan = build_plan(spec, spec.path.name, KINDS)
    selected = {m.name for m in models}
    jobs = [j for mp in plan.models if mp.model.name in selected for j in mp.jobs]
    jobs = [j for j in jobs if j.descriptor.name in wanted and _runs_locally(j)]
    started = time.perf_counter()
    for number, job in enumerate(jobs, 1):
        model = spec.model(job.model or "")
        _run_job(spec, model, job, f"[{number}/{len(jobs)}]", force=force)
    log.info(f"pipeline finished in {time.perf_counter() - started:.1f}s")
    for model in models:
        print(summary(spec, model))
    return 0


def _wanted_kinds(steps: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in steps if s not in LOCAL_KINDS]
    if unknown:
        raise UsageError(f"unknown step {unknown[0]!r} (steps: {', '.join(LOCAL_KINDS)})")
    return steps or LOCAL_KINDS


def _runs_locally(job: Job) -> bool:
    if not job.descriptor.local_step:
        return False
    if job.when == "manual":
        where = f" --environment {job.environment}" if job.environment else ""
        log.info(
            f"{job.key}: manual in CI, skipped here; run "
            f"`ci-mlops {job.kind} --model {job.model}{where}`"
        )
        return False
    return True


def _run_job(spec: Spec, model: Model, job: Job, counter: str, *, force: bool) -> None:
    label = f"{counter} {job.key}"
    # A job for an environment deploys: nothing to do when the model already runs there.
    if job.environment and not force and _already_live(spec, model, job.environment):
        log.info(f"{label}: this model is already live in {job.environment}, skipped")
        return
    fingerprint = _fingerprint(spec, model, job)
    if not force and fingerprint and _cached(spec, model, job, fingerprint):
        log.info(f"{label}: inputs unchanged, skipped (cached)")
        return
    log.info(f"{label} ...")
    start = time.perf_counter()
    try:
        _step(job).run_local(spec, model, environment=job.environment, force=force)
    except MlopsError:
        log.info(f"{label}: failed after {time.perf_counter() - start:.1f}s")
        raise
    log.info(f"{label}: ok ({time.perf_counter() - start:.1f}s)")
    if fingerprint:
        _remember(spec, model, job, fingerprint)


def _step(job: Job) -> LocalStep:
    """The step module that runs ``job``, imported only now: steps import heavy libraries."""
    assert job.descriptor.local_step, job.key
    return cast(LocalStep, importlib.import_module(job.descriptor.local_step))


def _fingerprint(spec: Spec, model: Model, job: Job) -> str | None:
    """A hash of everything ``job`` reads; None for jobs this runner does not skip by
    fingerprint (training decides for itself; a deploy is skipped when the model is
    already live)."""
    if not job.descriptor.produces:
        return None
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(model), sort_keys=True, default=str).encode())
    digest.update(job.kind.encode())
    workdir = spec.workdir(model)
    files = [spec.root / f for f in model.data_files]
    files += [workdir / name.format(model=model.model_file) for name in job.descriptor.reads]
    first = model.deploy.environments[0].name
    if job.descriptor.reads_baseline and not _already_live(spec, model, first):
        # The baseline is an input too, unless it is this very model: judged against
        # itself it passes whatever passed without a baseline, so both count as none.
        # Only environments with a version: "no baseline yet" must hash like "this very
        # model".
        for env, version in _live_versions(spec, model):
            digest.update(f"{env}={version}".encode())
    for path in files:
        digest.update(str(path).encode())
        digest.update(atomic.sha256_file(path).encode() if path.is_file() else b"-")
    return digest.hexdigest()


def _already_live(spec: Spec, model: Model, environment: str | None) -> bool:
    """Whether the registry's ``environment`` runs exactly the model in the model
    folder now."""
    model_file = spec.workdir(model) / model.model_file
    if environment is None or not model_file.is_file():
        return False
    try:
        live = _registry(spec, model).live(model, environment)
    except MlopsError:
        return False
    sha = live.files.get(model.model_file) if live else None
    return bool(sha) and sha == atomic.sha256_file(model_file)


def _live_versions(spec: Spec, model: Model) -> list[tuple[str, str]]:
    """(environment, version) for each environment the registry has a version in."""
    registry = _registry(spec, model)
    found = []
    for env in model.deploy.environments:
        try:
            live = registry.live(model, env.name)
        except MlopsError:
            continue
        if live is not None:
            found.append((env.name, live.version))
    return found


def _cache_path(spec: Spec, model: Model) -> Path:
    return spec.workdir(model) / CACHE_FILE


def _read_cache(spec: Spec, model: Model) -> dict[str, Any]:
    return _read_json(_cache_path(spec, model))


def _cached(spec: Spec, model: Model, job: Job, fingerprint: str) -> bool:
    if _read_cache(spec, model).get(job.kind) != fingerprint:
        return False
    workdir = spec.workdir(model)
    return all((workdir / name).is_file() for name in job.descriptor.produces)


def _remember(spec: Spec, model: Model, job: Job, fingerprint: str) -> None:
    cache = _read_cache(spec, model)
    cache[job.kind] = fingerprint
    atomic.write_json(_cache_path(spec, model), cache)


# How many metrics the summary shows: the gated ones first, then the rest.
SUMMARY_METRICS = 4


def summary(spec: Spec, model: Model) -> str:
    """A few lines per model for the end of a run: the verdict, the key metrics and
    where the report, the ONNX model and the registry entry are (the report itself is
    in report.md, not in the terminal)."""
    workdir = spec.workdir(model)
    lines = [f"{model.name}: {_verdict(workdir)}"]
    metrics = _read(MetricsRecord, workdir)
    values = metrics.metrics if isinstance(metrics, MetricsRecord) else {}
    gated = [
        g.metric
        for g in model.gates
        if (g.min, g.max, g.max_drop, g.max_relative_drop) != (None,) * 4
    ]
    names = list(dict.fromkeys([*gated, *model.metrics]))[:SUMMARY_METRICS]
    shown = [f"{n} {values[n]:.4g}" for n in names if isinstance(values.get(n), int | float)]
    if shown:
        lines.append(f"  {'metrics:':<16}{', '.join(shown)}")
    shown_files = (
        ("report", workdir / "report.md"),
        ("data docs", workdir / "data-docs" / "index.html"),
        ("ONNX model", workdir / "model.onnx"),
    )
    for label, path in shown_files:
        if path.is_file():
            lines.append(f"  {label + ':':<16}{_rel(path)}")
    live = _live_entry(spec, model)
    if live:
        lines.append(f"  {'registry entry:':<16}{live}")
    return "\n".join(lines)


def _verdict(workdir: Path) -> str:
    gates = _read(GatesRecord, workdir)
    if not isinstance(gates, GatesRecord):
        return "not evaluated"
    return "gates passed" if gates.passed else "gates FAILED"


def _read(kind: type[R], workdir: Path) -> R | None:
    """The record when the step wrote a readable one; the summary says less otherwise."""
    try:
        return kind.read(workdir)
    except StepError:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _live_entry(spec: Spec, model: Model) -> str | None:
    registry = _registry(spec, model)
    for env in model.deploy.environments:
        try:
            live = registry.live(model, env.name)
        except MlopsError:
            continue
        if live is not None:
            where = Path(live.location)
            shown = _rel(where) if where.exists() else live.location
            return f"{shown} ({env.name})"
    return None


def _registry(spec: Spec, model: Model) -> Registry:
    """The registry this runner's deploy jobs publish to (``deploy.target``)."""
    from ci_mlops.platforms.detect import current_platform
    from ci_mlops.registries import registry_for

    return registry_for(spec, model, current_platform())


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
