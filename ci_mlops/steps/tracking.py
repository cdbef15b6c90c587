"""Experiment tracking: every evaluation of a model whose spec sets ``tracking.server``
becomes one MLflow run, so that a pipeline leaves a record that outlives its artifacts.

A run holds the model's training params and spec facts (params), every metric and the
gate verdict as ``gates_passed`` (metrics), the verdict, the baseline and the links to
the commit, branch, merge/pull request and pipeline (tags; on GitLab also
``gitlab.CI_JOB_ID``, by which GitLab links the run to its job), and metrics.json,
gates.json, data-test.json and the plots (artifacts, each at the run's top level:
GitLab refuses directories in ``log_artifact``).

Where the run went is written to ``tracking.json`` in the model's folder, bound to the
model file's sha256, and the report links it. Tracking is a record, not a gate: when the
server is not configured, or does not answer, the evaluation warns and stands.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

from ci_mlops import log
from ci_mlops.errors import PlatformError
from ci_mlops.records import GatesRecord, TrackingRecord
from ci_mlops.spec.model import Model, Spec

RECORD = TrackingRecord.FILE
# Step files logged with the run, when present.
LOGGED_FILES = ("metrics.json", "gates.json", "data-test.json")
# MLflow refuses longer param values (and GitLab stores 255 characters of them).
_PARAM_LIMIT = 250
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+$")


def log_evaluation(spec: Spec, model: Model, metrics: dict[str, float], passed: bool) -> str | None:
    """Log this evaluation of ``model`` as a run when its spec asks for tracking; return
    the run's link (or id), or None when nothing was logged. Never raises for the
    server's sake: a failure is a warning, and the evaluation's verdict stands."""
    workdir = spec.workdir(model)
    (workdir / RECORD).unlink(missing_ok=True)  # never leave an earlier run's link behind
    if not model.tracking.enabled:
        return None
    from ci_mlops.registries.mlflow_client import tracking_uri

    uri = tracking_uri(model.tracking.server)
    if uri is None:
        where = (
            "CI_API_V4_URL and CI_PROJECT_ID (set in GitLab jobs) or MLFLOW_TRACKING_URI"
            if model.tracking.server == "gitlab"
            else "MLFLOW_TRACKING_URI"
        )
        log.warn(
            f"{model.name}: tracking.server is {model.tracking.server}, but {where} is not set: evaluation not logged"
        )
        return None
    try:
        record = _log(spec, model, uri, metrics, passed)
    except PlatformError as exc:
        log.warn(f"{model.name}: evaluation not logged: {exc}")
        return None
    record.write(workdir)
    log.info(f"{model.name}: evaluation logged as run {record.run_id} ({record.url or uri})")
    return record.url or record.run_id


def _log(
    spec: Spec, model: Model, uri: str, metrics: dict[str, float], passed: bool
) -> TrackingRecord:
    from mlflow.entities import Metric, Param, RunTag

    from ci_mlops.registries.mlflow_client import (
        Connection,
        ci_context,
        experiment,
        public_uri,
        tags,
    )

    workdir = spec.workdir(model)
    gates = GatesRecord.read(workdir)
    connection = Connection(uri, model.tracking.server)
    client = connection.client
    experiment_id = experiment(connection, model.experiment)
    context = ci_context(spec.root)
    run_tags = tags(
        {
            **context,
            "ci_mlops.model": model.name,
            "ci_mlops.model_sha256": gates.model_sha256,
            "ci_mlops.gates": "passed" if passed else "failed",
            "ci_mlops.baseline": gates.baseline_source or "none",
        }
    )
    sha = gates.model_sha256[:12]
    run = connection.call(
        f"create_run({model.experiment})",
        lambda: client.create_run(
            experiment_id, run_name=f"evaluate {model.name} {sha}".strip(), tags=run_tags
        ),
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    values = {k: v for k, v in metrics.items() if math.isfinite(v)}
    values["gates_passed"] = 1.0 if passed else 0.0
    values.update(_data_test_metrics(_read(workdir / "data-test.json")))
    connection.call(
        f"log_batch({run_id})",
        lambda: client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in sorted(values.items())],
            params=[Param(k, v) for k, v in sorted(_params(model).items())],
            tags=[RunTag("ci_mlops.data_tests", _data_test_verdict(workdir))],
        ),
    )
    for path in _artifacts(workdir):
        connection.call(
            f"log_artifact({run_id}, {path.name})",
            partial(client.log_artifact, run_id, str(path)),
        )
    connection.call(f"set_terminated({run_id})", lambda: client.set_terminated(run_id))
    return TrackingRecord(
        model=model.name,
        model_sha256=gates.model_sha256,
        server=model.tracking.server,
        tracking_uri=public_uri(uri),
        experiment=model.experiment,
        experiment_id=experiment_id,
        run_id=run_id,
        url=run_url(model.tracking.server, uri, experiment_id, run_id),
    )


def run_url(server: str, uri: str, experiment_id: str, run_id: str) -> str | None:
    """Where people see the run: the MLflow UI's page, or GitLab's experiment page (its
    candidate pages are addressed by an id the MLflow API does not return)."""
    from ci_mlops.registries.mlflow_client import public_uri

    if server == "gitlab":
        project = os.environ.get("CI_PROJECT_URL", "").rstrip("/")
        url = f"{project}/-/ml/experiments/{experiment_id}" if project else None
    else:
        url = f"{public_uri(uri)}/#/experiments/{experiment_id}/runs/{run_id}"
    return url if url and _SAFE_URL.fullmatch(url) else None


def _params(model: Model) -> dict[str, str]:
    """The training params and the spec facts that tell runs apart, as MLflow strings."""
    params = {
        "framework": model.framework,
        "task": model.task,
        "version": model.version,
        "train.command": model.train.command,
        **{
            f"train.{k}": json.dumps(v) if not isinstance(v, str) else v
            for k, v in model.train.params.items()
        },
    }
    return {k: v[:_PARAM_LIMIT] for k, v in params.items()}


def _data_test_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Per dataset: 1.0 when its data tests passed, and how many expectations failed."""
    datasets = report.get("datasets")
    out: dict[str, float] = {}
    for role, entry in (datasets if isinstance(datasets, dict) else {}).items():
        if not isinstance(entry, dict):
            continue
        name = re.sub(r"[^A-Za-z0-9_]", "_", str(role))
        expectations = entry.get("expectations")
        failed = [e for e in expectations or [] if isinstance(e, dict) and not _passed(e)]
        out[f"data_test.{name}.passed"] = 1.0 if _passed(entry) else 0.0
        out[f"data_test.{name}.failed_expectations"] = float(len(failed))
    return out


def _data_test_verdict(workdir: Path) -> str:
    report = _read(workdir / "data-test.json")
    if not report:
        return "not run"
    return "passed" if _passed(report) else "failed"


def _passed(entry: dict[str, Any]) -> bool:
    # data-test.json says "passed"; files written before it did say "success".
    return entry.get("passed", entry.get("success")) is True


def _artifacts(workdir: Path) -> list[Path]:
    """The step files and plots to log, only regular files inside the model's folder."""
    found = [workdir / name for name in LOGGED_FILES]
    found += sorted((workdir / "plots").glob("*.png"))
    return [p for p in found if p.is_file() and not p.is_symlink()]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
