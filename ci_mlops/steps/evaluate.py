"""The evaluate step: score the trained model on the eval data, compare it with the
baseline and decide the quality gates.

Reads ``.ci-mlops/<model>/<model file>`` and the spec's eval data; writes metrics.json
(with the sha256 of every plot it drew), gates.json (the verdict, bound to the sha256 of
the exact model file judged), evaluate.junit.xml and plots/*.png. Everything is
computed before anything is written, so bad input (exit 2) leaves the previous run's
files intact; a failed gate (exit 1) is raised after the files are written, so the
report can show why.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci_mlops import atomic, frameworks, log
from ci_mlops.errors import GateFailed, StepError
from ci_mlops.frameworks import Predictions, Source, Trained
from ci_mlops.frameworks.base import first_line
from ci_mlops.platforms.base import Baseline, MissingBaseline
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps.datasets import Loaded, load_dataset
from ci_mlops.steps.gates import CHANGE_RULES, GateVerdict, apply_gates
from ci_mlops.steps.records import read_record

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Scores:
    """Metric values with how they were computed. ``notes`` says why a value is NaN."""

    values: dict[str, float]
    averaging: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    classes: list[Any] | None = None


def run(spec: Spec, model: Model, baseline: Path | None = None) -> dict[str, Any]:
    """Evaluate ``model``; ``baseline`` is a metrics.json to compare with instead of the
    platform's. Raises GateFailed after writing every file when a gate fails."""
    workdir = spec.workdir(model)
    model_path = workdir / model.model_file
    with log.timed(f"evaluate {model.name}"):
        data, sha = read_model(model_path)
        check_integrity(workdir / "train.json", model_path, sha)
        source = Source(model_path, data, model.task, spec.root, model.model_class)
        trained = frameworks.load(model.framework, source)
        loaded = load_dataset(spec.root, model.eval_data)
        y_true, predictions = _predict(trained, loaded, model, spec.root)
        scores = compute_metrics(model, y_true, predictions)
        found = resolve_baseline(spec, model, baseline)
        base = found if isinstance(found, Baseline) else None
        missing = found.reason if isinstance(found, MissingBaseline) else None
        verdict = apply_gates(
            model.gates,
            scores.values,
            base.metrics if base else None,
            model.if_no_baseline,
            missing=missing,
        )
        plots, notes = _plots(model, y_true, predictions, scores)
        for note in notes:
            log.warn(note)
        _write(workdir, model, sha, len(y_true), scores, found, verdict, plots)
    print(format_table(model, scores.values, base, verdict))
    if not verdict.passed:
        raise GateFailed(_failure_message(model, verdict))
    return {"model": model.name, "passed": True, "metrics": scores.values, "model_sha256": sha}


# --- inputs -------------------------------------------------------------------------


def read_model(path: Path) -> tuple[bytes, str]:
    """The model file's bytes and their sha256; a file-named StepError when unreadable."""
    if not path.is_file():
        raise StepError(f"{path}: model file not found (run `ci-mlops train` first)")
    data = atomic.read_artifact(path.parent, path.name)
    return data, hashlib.sha256(data).hexdigest()


def check_integrity(train_json: Path, model_path: Path, sha: str) -> None:
    """Refuse a model file that is not the one training recorded in train.json."""
    if not train_json.is_file():
        return
    recorded = read_record(train_json).get("model_sha256")
    if recorded and recorded != sha:
        raise StepError(
            f"{model_path}: sha256 is {sha}, but {train_json} recorded {recorded}: the model "
            "file changed after training; retrain with `ci-mlops train --force`"
        )


def _predict(
    trained: Trained, loaded: Loaded, model: Model, root: Path
) -> tuple[np.ndarray, Predictions]:
    eval_file = root / (model.eval_data.path or model.eval_data.features or "")
    if len(loaded.frame) == 0:
        raise StepError(f"{eval_file}: the eval data has no rows")
    y_true = loaded.labels.to_numpy()
    if model.task == "regression":
        try:
            y_true = y_true.astype(float)
        except ValueError:
            raise StepError(f"{eval_file}: target {loaded.target!r} is not numeric") from None
    try:
        predictions = trained.predict(loaded.features)
    except StepError:
        raise
    except Exception as exc:  # the user's model can fail in any way; name the inputs
        raise StepError(
            f"{eval_file}: the model cannot predict on the eval data: {first_line(exc)}"
        ) from None
    if len(predictions.values) != len(y_true):
        raise StepError(
            f"{eval_file}: the model returned {len(predictions.values)} predictions for {len(y_true)} rows"
        )
    return y_true, predictions


# --- metrics ------------------------------------------------------------------------


class _Undefined(Exception):
    """A metric that cannot be computed for this model or data; becomes NaN."""


def compute_metrics(model: Model, y_true: np.ndarray, predictions: Predictions) -> Scores:
    """Every metric the spec names. A metric the data cannot define is NaN, with a note
    saying why, so that its gate fails rather than the step crashing."""
    if model.task == "regression":
        scores = Scores({}, {"mape": "mean absolute percentage error as a fraction (0.1 = 10%)"})
        functions = _regression_functions(y_true, predictions.values)
    else:
        classes = _classes(y_true, predictions)
        scores = Scores({}, _averaging(classes), classes=classes)
        functions = _classification_functions(y_true, predictions, classes)
    for name in model.metrics:
        scores.values[name], note = _one_metric(functions[name])
        if note:
            scores.notes[name] = note
    scores.averaging = {k: v for k, v in scores.averaging.items() if k in model.metrics}
    return scores


def _one_metric(function: Callable[[], float]) -> tuple[float, str | None]:
    """A metric's value, or NaN and why. sklearn answers some undefined cases (r2 of
    one row) with a warning and NaN: the warning becomes the note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = float(function())
        except (ValueError, _Undefined) as exc:
            return math.nan, first_line(exc)
    if math.isnan(value):
        reason = first_line(Exception(str(caught[-1].message))) if caught else None
        return value, reason or "undefined on the eval data"
    return value, None


def _regression_functions(y_true: np.ndarray, raw: np.ndarray) -> dict[str, Callable[[], float]]:
    import numpy as np
    from sklearn import metrics as m

    y_pred = np.asarray(raw, dtype=float)
    bad = int((~np.isfinite(y_pred)).sum())

    def guarded(function: Callable[[Any, Any], float]) -> Callable[[], float]:
        def compute() -> float:
            if bad:
                raise _Undefined(f"the model predicted {bad} non-finite values")
            return function(y_true, y_pred)

        return compute

    return {
        "rmse": guarded(m.root_mean_squared_error),
        "mae": guarded(m.mean_absolute_error),
        "r2": guarded(m.r2_score),
        "mape": guarded(m.mean_absolute_percentage_error),
    }


def _classes(y_true: np.ndarray, predictions: Predictions) -> list[Any]:
    found = predictions.classes or sorted(set(y_true.tolist()) | set(predictions.values.tolist()))
    # numpy scalars to plain Python, so they compare and serialise as the labels read.
    return [c.item() if hasattr(c, "item") else c for c in found]


def _averaging(classes: list[Any]) -> dict[str, str]:
    if len(classes) == 2:
        binary = f"binary, positive class {classes[1]!r}"
        return {
            "precision": binary,
            "recall": binary,
            "f1": binary,
            "roc_auc": f"binary, score of class {classes[1]!r}",
        }
    weighted = "weighted average over classes (by support)"
    return {
        "precision": weighted,
        "recall": weighted,
        "f1": weighted,
        "roc_auc": "one-vs-rest, weighted average over classes (by support)",
    }


def _classification_functions(
    y_true: np.ndarray, p: Predictions, classes: list[Any]
) -> dict[str, Callable[[], float]]:
    from sklearn import metrics as m

    binary = len(classes) == 2
    avg: dict[str, Any] = (
        {"average": "binary", "pos_label": classes[1]} if binary else {"average": "weighted"}
    )

    def scores(need_probabilities: bool) -> np.ndarray:
        if p.scores is None:
            raise _Undefined("the model gives no class scores (no predict_proba)")
        if need_probabilities and not p.probabilities:
            raise _Undefined("the model gives no class probabilities (no predict_proba)")
        return p.scores

    def roc_auc() -> float:
        if binary:
            return m.roc_auc_score(y_true == classes[1], scores(False)[:, 1])
        return m.roc_auc_score(
            y_true, scores(True), multi_class="ovr", average="weighted", labels=classes
        )

    return {
        "accuracy": lambda: m.accuracy_score(y_true, p.values),
        "precision": lambda: m.precision_score(y_true, p.values, zero_division=0, **avg),
        "recall": lambda: m.recall_score(y_true, p.values, zero_division=0, **avg),
        "f1": lambda: m.f1_score(y_true, p.values, zero_division=0, **avg),
        "roc_auc": roc_auc,
        "log_loss": lambda: m.log_loss(y_true, scores(True), labels=classes),
    }


# --- baseline -----------------------------------------------------------------------


def resolve_baseline(
    spec: Spec, model: Model, path: Path | None
) -> Baseline | MissingBaseline | None:
    """The baseline to compare with: ``path`` if given, else the platform's (the default
    branch's run in CI), else the registry's (what it runs, on a laptop). None on a
    first run; MissingBaseline when one existed but cannot be had (change gates fail)."""
    if path is not None:
        found: Baseline | MissingBaseline | None = read_baseline_file(path, model)
    else:
        from ci_mlops.platforms import detect
        from ci_mlops.registries import registry_for

        platform = detect(spec)
        found = platform.fetch_baseline(model)
        if found is None:
            found = registry_for(spec, model, platform.name).baseline(model)
    if found is None:
        log.info("no baseline: first run")
    elif isinstance(found, MissingBaseline):
        log.warn(
            f"no baseline: {found.reason}; change gates fail (baseline.if_missing is for first runs)"
        )
    else:
        log.info(f"baseline: {found.source}")
    return found


def read_baseline_file(path: Path, model: Model) -> Baseline:
    """Baseline metrics from a metrics.json (or a flat ``{metric: value}`` object)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise StepError(f"{path}: cannot read baseline metrics: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise StepError(f"{path}: expected a JSON object (a metrics.json)")
    raw = data.get("metrics", data)
    if not isinstance(raw, dict):
        raise StepError(f"{path}: metrics: expected an object of metric values")
    if data.get("model") not in (None, model.name):
        log.warn(f"{path} holds metrics of model {data['model']!r}, not {model.name!r}")
    metrics: dict[str, float] = {}
    for name, value in raw.items():
        if value is None:  # a NaN written as null: nothing to compare with
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StepError(f"{path}: metrics.{name}: expected a number, not {value!r:.40}")
        if not math.isfinite(value):  # JSON's NaN/Infinity extensions: nothing to compare
            raise StepError(f"{path}: metrics.{name}: expected a finite number, not {value!r}")
        metrics[name] = float(value)
    return Baseline(metrics, f"file {path}")


# --- outputs ------------------------------------------------------------------------


def _plots(
    model: Model, y_true: np.ndarray, p: Predictions, scores: Scores
) -> tuple[dict[str, bytes], list[str]]:
    from ci_mlops.steps import plots

    if model.task == "regression":
        import numpy as np

        return plots.regression_plots(y_true, np.asarray(p.values, dtype=float))
    return plots.classification_plots(y_true, p, scores.classes or [])


def _write(
    workdir: Path,
    model: Model,
    sha: str,
    n_samples: int,
    scores: Scores,
    found: Baseline | MissingBaseline | None,
    verdict: GateVerdict,
    plots: dict[str, bytes],
) -> None:
    base = found if isinstance(found, Baseline) else None
    missing = found.reason if isinstance(found, MissingBaseline) else None
    for name, png in plots.items():
        atomic.write_bytes(workdir / "plots" / name, png)
    metrics = {
        "model": model.name,
        "task": model.task,
        "model_sha256": sha,
        "metrics": {k: _json_number(v) for k, v in scores.values.items()},
        "n_samples": n_samples,
        "baseline": {"source": base.source, "metrics": base.metrics} if base else None,
        "baseline_missing": missing,
        "averaging": scores.averaging,
        "notes": scores.notes,
        "classes": scores.classes,
        # The report uploads only these files, and only while their bytes still match.
        "plots": {f"plots/{name}": hashlib.sha256(png).hexdigest() for name, png in plots.items()},
    }
    atomic.write_json(workdir / "metrics.json", metrics)
    atomic.write_bytes(workdir / "evaluate.junit.xml", junit_xml(model.name, verdict))
    gates = {
        "model": model.name,
        "model_sha256": sha,
        # Deploy publishes metrics.json only with these bytes.
        "metrics_sha256": atomic.artifact_sha256(workdir, "metrics.json"),
        "baseline_source": base.source if base else None,
        "baseline_missing": missing,
        "if_no_baseline": model.if_no_baseline,
        **verdict.to_dict(),
    }
    # Last: deploy trusts gates.json, so it never pairs with a half-written run.
    atomic.write_json(workdir / "gates.json", gates)


def junit_xml(model_name: str, verdict: GateVerdict) -> bytes:
    """One testcase per gate check; a change check with no baseline that the policy
    lets pass is reported as skipped."""
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"ci-mlops evaluate {model_name}",
        tests=str(len(verdict.checks)),
        failures=str(len(verdict.failed)),
        errors="0",
        skipped=str(sum(_skipped(c) for c in verdict.checks)),
    )
    for check in verdict.checks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"ci-mlops.evaluate.{model_name}",
            name=f"{check.metric} {check.rule} {check.threshold:g}",
        )
        if not check.passed:
            ET.SubElement(
                case, "failure", message=check.message, type="GateFailed"
            ).text = check.message
        elif _skipped(check):
            ET.SubElement(case, "skipped", message=check.message)
        ET.SubElement(case, "system-out").text = check.message
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def _skipped(check: Any) -> bool:
    return bool(check.passed and check.rule in CHANGE_RULES and check.baseline is None)


def format_table(
    model: Model, values: dict[str, float], base: Baseline | None, verdict: GateVerdict
) -> str:
    """A plain-text table of metrics, baseline, change and gate result."""
    rows = [("metric", "this run", "baseline", "change", "gate")]
    for name, value in values.items():
        before = base.metrics.get(name) if base else None
        change = "" if before is None else f"{value - before:+.4g}"
        rows.append(
            (
                name,
                f"{value:.4g}",
                "" if before is None else f"{before:.4g}",
                change,
                _gate_cell(verdict, name),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = len(verdict.failed)
    total = len(verdict.checks)
    outcome = "passed" if verdict.passed else f"FAILED ({failed} of {total} checks)"
    return "\n".join([f"{model.name}: quality gates {outcome}", *lines])


def _gate_cell(verdict: GateVerdict, metric: str) -> str:
    checks = [c for c in verdict.checks if c.metric == metric]
    if not checks:
        return "-"
    failed = [c.rule for c in checks if not c.passed]
    if failed:
        return "FAIL " + ", ".join(failed)
    return "ok " + ", ".join(c.rule + (" (no baseline)" if _skipped(c) else "") for c in checks)


def _failure_message(model: Model, verdict: GateVerdict) -> str:
    failed = verdict.failed
    head = f"{model.name}: {len(failed)} of {len(verdict.checks)} quality gate checks failed:"
    return "\n".join([head, *(f"  - {c.message}" for c in failed)])


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an undefined metric is written as null (see "notes")."""
    return value if math.isfinite(value) else None


def run_local(spec: Spec, model: Model, *, environment: str | None, force: bool) -> None:
    """What ``ci-mlops run`` calls for this step's job. Evaluate against the platform's baseline (on a laptop, the local registry's)."""
    run(spec, model, baseline=None)
