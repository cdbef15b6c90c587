"""The evaluate step: score the trained model on the eval data, compare it with the
baseline and decide the quality gates.

Reads ``.ci-mlops/<model>/<model file>`` and the spec's eval data; writes metrics.json
(with bootstrap intervals, curve points for charts, and the sha256 of every plot and
record it wrote), slices.json and importance.json when the spec asks for them,
gates.json (the verdict, bound to the sha256 of the exact model file judged),
evaluate.junit.xml and plots/*.png. Everything is
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
from ci_mlops.records import GatesRecord, MetricsRecord, TrainRecord, require_sha256
from ci_mlops.spec.model import HIGHER_IS_BETTER, Model, Spec
from ci_mlops.steps import tracking
from ci_mlops.steps.datasets import Loaded, load_dataset
from ci_mlops.steps.gates import CHANGE_RULES, Check, Evidence, GateVerdict, apply_gates
from ci_mlops.steps.importance import Ranking
from ci_mlops.steps.resample import Resampled, Scorer
from ci_mlops.steps.slices import Slice

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Scores:
    """Metric values with how they were computed. ``notes`` says why a value is NaN."""

    values: dict[str, float]
    averaging: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    classes: list[Any] | None = None


@dataclass
class Insight:
    """What evaluate measures beyond the metrics: intervals and resampled changes,
    slices, permutation importance and its comparison with the baseline's, curves."""

    resampled: Resampled | None = None
    slices: list[Slice] = field(default_factory=list)
    ranking: Ranking | None = None
    comparison: dict[str, Any] = field(default_factory=dict)
    # Mean |SHAP| per feature and its comparison with the baseline's, or a note why none.
    shap: dict[str, Any] | None = None
    shap_order: list[str] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> Evidence:
        from ci_mlops.steps.slices import gated_values

        resampled = self.resampled
        return Evidence(
            changes=resampled.changes if resampled else {},
            paired=bool(resampled and resampled.paired),
            slices=gated_values(self.slices),
        )


def run(
    spec: Spec, model: Model, baseline: Path | None = None, baseline_model: Path | None = None
) -> dict[str, Any]:
    """Evaluate ``model``; ``baseline`` is a metrics.json to compare with instead of the
    platform's; ``baseline_model`` a model file of the same framework to score on the
    same rows instead (then change gates use a paired bootstrap). Raises GateFailed
    after writing every file when a gate fails."""
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
        theirs = None
        if baseline_model is not None:
            found, theirs = _baseline_model(spec, model, baseline_model, loaded, found)
        base = found if isinstance(found, Baseline) else None
        missing = found.reason if isinstance(found, MissingBaseline) else None
        insight = measure(spec, model, trained, loaded, y_true, predictions, scores, base, theirs)
        labels = request_labels(spec, model)
        verdict = apply_gates(
            model.gates,
            scores.values,
            base.metrics if base else None,
            model.if_no_baseline,
            missing=missing,
            evidence=insight.evidence(),
            extra=_importance_checks(model, insight, base, labels),
            labels=labels,
        )
        plots, notes = _plots(model, y_true, predictions, scores)
        for note in notes:
            log.warn(note)
        _write(workdir, model, sha, len(y_true), scores, found, verdict, plots, insight)
        # After the files it logs are written, before a failed gate is raised: a run
        # records failed evaluations too.
        tracking.log_evaluation(spec, model, scores.values, verdict.passed)
    print(format_table(model, scores.values, base, verdict))
    for check in [*verdict.warnings, *verdict.overrides]:
        log.warn(check.message)
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
    """Refuse a model file that is not the one training recorded in train.json
    (IntegrityError naming the file and both hashes)."""
    if not train_json.is_file():
        return
    recorded = TrainRecord.read(train_json.parent).model_sha256
    hint = "the model file changed after training; retrain with `ci-mlops train --force`"
    require_sha256(model_path, sha, recorded, str(train_json), hint=hint)


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


def subset(p: Predictions, rows: np.ndarray) -> Predictions:
    """The predictions for the eval rows at ``rows`` (repeats allowed)."""
    scores = p.scores[rows] if p.scores is not None else None
    return Predictions(p.values[rows], scores, p.classes, p.probabilities)


def scorer(model: Model, y_true: np.ndarray, p: Predictions, classes: list[Any] | None) -> Scorer:
    """Scores any selection of eval rows with every metric of the spec, in numpy where
    :mod:`ci_mlops.steps.fastmetrics` has the metric (resampling calls this hundreds of
    times); the classes stay those of the whole eval data, so a resample that lacks one
    is scored alike. A metric undefined on the rows is NaN."""
    import numpy as np

    from ci_mlops.steps import fastmetrics

    if model.task == "regression":
        fast = fastmetrics.regression(
            np.asarray(y_true, dtype=float), np.asarray(p.values, dtype=float)
        )
    else:
        fast = fastmetrics.classification(
            y_true, p.values, p.scores, classes or [], p.probabilities
        )

    def score(rows: np.ndarray) -> dict[str, float]:
        out = {}
        for name in model.metrics:
            if name in fast:
                out[name] = _fast(fast[name], rows)
            else:
                out[name] = _slow(model, name, y_true[rows], subset(p, rows), classes)
        return out

    return score


def _fast(metric: Callable[[np.ndarray], float], rows: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a NaN from an empty resample is the answer
        try:
            return metric(rows)
        except (ValueError, KeyError, ZeroDivisionError):
            return math.nan


def _slow(
    model: Model, name: str, y: np.ndarray, p: Predictions, classes: list[Any] | None
) -> float:
    if model.task == "regression":
        return _one_metric(_regression_functions(y, p.values)[name])[0]
    return _one_metric(_classification_functions(y, p, classes or [])[name])[0]


# --- insight: intervals, slices, importance, curves ---------------------------------


def measure(
    spec: Spec,
    model: Model,
    trained: Trained,
    loaded: Loaded,
    y_true: np.ndarray,
    p: Predictions,
    scores: Scores,
    base: Baseline | None,
    theirs: Predictions | None,
) -> Insight:
    """Everything the spec's ``evaluate`` section asks for, before anything is written."""
    settings = model.evaluation
    score = scorer(model, y_true, p, scores.classes)
    insight = Insight(curves=curves(model, y_true, p, scores.classes or []))
    if settings.bootstrap.samples:
        from ci_mlops.steps.resample import bootstrap

        with log.timed(f"bootstrap {settings.bootstrap.samples} resamples"):
            insight.resampled = bootstrap(
                score,
                len(y_true),
                settings.bootstrap.samples,
                settings.bootstrap.level,
                settings.bootstrap.seed,
                baseline=base.metrics if base else None,
                baseline_score=scorer(model, y_true, theirs, scores.classes) if theirs else None,
            )
    if settings.slices:
        from ci_mlops.steps.slices import compute_slices

        where = f"{spec.path}: models[{model.name}].evaluate.slices"
        insight.slices = compute_slices(
            loaded.frame, settings.slices, score, settings.min_slice_rows, where
        )
    if settings.importance is not None:
        insight.ranking = _importance(model, trained, loaded, y_true, scores)
        from ci_mlops.steps.importance import compare

        previous = list(base.importance) if base and base.importance else None
        insight.comparison = compare(insight.ranking.order, previous, settings.importance.top_k)
    if settings.shap:
        insight.shap, insight.shap_order = _shap(model, trained, loaded, base)
    return insight


def _shap(
    model: Model, trained: Trained, loaded: Loaded, base: Baseline | None
) -> tuple[dict[str, Any], list[str]]:
    """The shap record of importance.json and the features by mean |SHAP|; for a model
    SHAP cannot explain, a note (and no ranking)."""
    from ci_mlops.steps.importance import compare
    from ci_mlops.steps.shap_values import Unsupported, mean_abs_ranking

    # The framework's own model object: an estimator, or a LightGBM booster.
    native = getattr(trained, "estimator", None) or getattr(trained, "booster", None)
    try:
        if native is None:
            raise Unsupported(
                f"SHAP values are computed for tree models, not {model.framework} ones"
            )
        with log.timed("SHAP values"):
            ranking = mean_abs_ranking(native, loaded.features, model.evaluation.bootstrap.seed)
    except Unsupported as exc:
        log.info(f"no SHAP values: {exc}")
        return {"note": str(exc)}, []
    top_k = model.evaluation.importance.top_k if model.evaluation.importance else 5
    previous = list(base.shap) if base and base.shap else None
    record = {**ranking.to_dict(), "comparison": compare(ranking.order, previous, top_k)}
    return record, ranking.order


def _importance(
    model: Model, trained: Trained, loaded: Loaded, y_true: np.ndarray, scores: Scores
) -> Ranking:
    from ci_mlops.steps.importance import permutation_importance

    settings = model.evaluation.importance
    assert settings is not None
    metric = settings.metric or model.metrics[0]

    def score(frame: Any) -> float:
        p = trained.predict(frame)
        if model.task == "regression":
            functions = _regression_functions(y_true, p.values)
        else:
            functions = _classification_functions(y_true, p, scores.classes or [])
        return _one_metric(functions[metric])[0]

    with log.timed(f"permutation importance ({settings.repeats} repeats)"):
        ranking = permutation_importance(
            loaded.features,
            score,
            metric,
            HIGHER_IS_BETTER[metric],
            settings.repeats,
            settings.budget_seconds,
            seed=model.evaluation.bootstrap.seed,
        )
    if ranking.not_measured:
        log.warn(
            f"permutation importance stopped at its budget of {settings.budget_seconds:g}s: "
            f"{len(ranking.not_measured)} features not measured"
        )
    return ranking


def _importance_checks(
    model: Model, insight: Insight, base: Baseline | None, labels: frozenset[str]
) -> tuple[Check, ...]:
    from ci_mlops.steps.gates import importance_checks

    settings = model.evaluation.importance
    if settings is None or insight.ranking is None:
        return ()
    previous = list(base.importance) if base and base.importance else None
    return tuple(
        importance_checks(
            insight.ranking.order,
            previous,
            settings.top_k,
            settings.max_rank_shift,
            settings.stable_top_feature,
            settings.mode,
            settings.override_label,
            labels,
        )
    )


# Points on each curve recorded for the report's charts: enough to show its shape,
# few enough to stay readable as a table beside the chart.
CURVE_POINTS = 11


def curves(model: Model, y_true: np.ndarray, p: Predictions, classes: list[Any]) -> dict[str, Any]:
    """Curve points the report draws without an image host: the ROC curve of a binary
    classifier at fixed false-positive rates, or a regressor's mean prediction per
    decile of the actual value."""
    import numpy as np

    grid = np.linspace(0, 1, CURVE_POINTS)
    if model.task == "regression":
        actual = np.asarray(y_true, dtype=float)
        predicted = np.asarray(p.values, dtype=float)
        if not (np.isfinite(predicted).all() and len(actual) >= CURVE_POINTS):
            return {}
        order = np.argsort(actual, kind="stable")
        groups = np.array_split(order, CURVE_POINTS - 1)
        return {
            "calibration": {
                "actual": [round(float(actual[g].mean()), 6) for g in groups],
                "predicted": [round(float(predicted[g].mean()), 6) for g in groups],
            }
        }
    if len(classes) != 2 or p.scores is None or not np.isfinite(p.scores).all():
        return {}
    from sklearn.metrics import roc_curve

    positives = y_true == classes[1]
    if positives.all() or not positives.any():
        return {}
    fpr, tpr, _ = roc_curve(positives, p.scores[:, 1])
    # The highest true-positive rate reached at or below each false-positive rate.
    points = [float(tpr[fpr <= x + 1e-12].max()) for x in grid]
    return {
        "roc": {"fpr": [round(float(x), 3) for x in grid], "tpr": [round(v, 4) for v in points]}
    }


def _baseline_model(
    spec: Spec, model: Model, path: Path, loaded: Loaded, found: Baseline | MissingBaseline | None
) -> tuple[Baseline, Predictions]:
    """Score the baseline model file on this eval data: its metrics become the baseline
    (the same rows, so the change is the models' difference and not the data's), and its
    predictions pair the bootstrap."""
    if not path.is_file():
        raise StepError(f"{path}: baseline model file not found")
    data = path.read_bytes()
    source = Source(path, data, model.task, spec.root, model.model_class)
    trained = frameworks.load(model.framework, source)
    y_true, predictions = _predict(trained, loaded, model, spec.root)
    metrics = compute_metrics(model, y_true, predictions).values
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    importance = found.importance if isinstance(found, Baseline) else None
    shap = found.shap if isinstance(found, Baseline) else None
    digest = hashlib.sha256(data).hexdigest()[:12]
    label = f"model file {path.name} (sha256 {digest}) scored on this eval data"
    return Baseline(finite, label, importance, shap), predictions


def request_labels(spec: Spec, model: Model) -> frozenset[str]:
    """The merge/pull request's labels, asked of the platform only when one of the
    model's gates names an override label."""
    wanted = model.override_labels
    if not wanted:
        return frozenset()
    from ci_mlops.platforms import detect

    labels = detect(spec).request_labels()
    present = sorted(wanted & labels)
    if present:
        log.info(f"{model.name}: the request carries override label {', '.join(present)}")
    return labels


# --- baseline -----------------------------------------------------------------------


def resolve_baseline(
    spec: Spec, model: Model, path: Path | None
) -> Baseline | MissingBaseline | None:
    """The baseline to compare with: ``path`` if given; with ``baseline.from: registry``
    the version the last environment runs in the deploy target's registry; else the
    platform's (the default branch's run in CI), else the registry's (what it runs, on a
    laptop). None on a first run; MissingBaseline when one existed but cannot be had
    (change gates fail)."""
    if path is not None:
        found: Baseline | MissingBaseline | None = read_baseline_file(path, model)
    elif model.baseline_from == "registry":
        found = registry_baseline(spec, model)
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


def registry_baseline(spec: Spec, model: Model) -> Baseline | MissingBaseline | None:
    """The metrics.json published with the version the last environment (production)
    points at, after its files were re-hashed against what the registry recorded. None
    when nothing is deployed there yet (a first model)."""
    import tempfile

    from ci_mlops.platforms.detect import current_platform
    from ci_mlops.platforms.remote import parse_metrics
    from ci_mlops.registries import registry_for

    registry = registry_for(spec, model, current_platform())
    environment = model.deploy.environments[-1].name
    live = registry.live(model, environment)
    if live is None:
        log.info(f"{model.name}: nothing is deployed to {environment} in {registry.name}")
        return None
    where = f"{registry.name} registry: {model.name} {live.version} (live in {environment})"
    with tempfile.TemporaryDirectory(prefix="ci-mlops-baseline-") as folder:
        checked = registry.verify(model, live.version, into=Path(folder))
        path = (checked.folder or Path(folder)) / "metrics.json"
        if not path.is_file():
            return MissingBaseline(f"{where} holds no metrics.json")
        return Baseline(metrics=parse_metrics(path.read_bytes(), where), source=where)


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
    from ci_mlops.platforms.remote import parse_ranking

    return Baseline(
        metrics, f"file {path}", parse_ranking(data), parse_ranking(data, "shap_ranking")
    )


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
    insight: Insight,
) -> None:
    base = found if isinstance(found, Baseline) else None
    missing = found.reason if isinstance(found, MissingBaseline) else None
    for name, png in plots.items():
        atomic.write_bytes(workdir / "plots" / name, png)
    records = _write_records(workdir, model, insight)
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
        "intervals": insight.resampled.to_dict() if insight.resampled else None,
        # The order alone, so that the next run can compare with it as its baseline.
        "importance": _rankings(insight),
        "curves": insight.curves,
        # The report reads these records only while their bytes still match.
        "records": records,
    }
    # Through the record, so what is written is what its readers accept.
    MetricsRecord.from_json(atomic.finite(metrics)).write(workdir)
    atomic.write_bytes(workdir / "evaluate.junit.xml", junit_xml(model.name, verdict))
    atomic.write_text(workdir / "metrics.txt", metrics_report(model, scores, insight, verdict))
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
    GatesRecord.from_json(atomic.finite(gates)).write(workdir)


# How many features a metrics.json ranks: enough for any top_k, bounded for wide data.
RANKED = 100


def _rankings(insight: Insight) -> dict[str, Any] | None:
    """metrics.json's ``importance``: the permutation ranking and the mean |SHAP| one."""
    out: dict[str, Any] = {}
    if insight.ranking:
        out.update(metric=insight.ranking.metric, ranking=insight.ranking.order[:RANKED])
    if insight.shap_order:
        out["shap_ranking"] = insight.shap_order[:RANKED]
    return out or None


def _write_records(workdir: Path, model: Model, insight: Insight) -> dict[str, str]:
    """slices.json and importance.json, when measured; returns their sha256 by name.
    A record the spec no longer asks for is removed, so no stale one is reported."""
    documents: dict[str, Any] = {}
    if insight.slices:
        documents["slices.json"] = {
            "model": model.name,
            "columns": list(model.evaluation.slices),
            "min_rows": model.evaluation.min_slice_rows,
            "slices": [s.to_dict() for s in insight.slices],
        }
    if insight.ranking or insight.shap:
        documents["importance.json"] = {
            "model": model.name,
            **(insight.ranking.to_dict() if insight.ranking else {}),
            "top_k": model.evaluation.importance.top_k if model.evaluation.importance else None,
            "comparison": insight.comparison,
            # Its own key, so that permutation importance reads the same as before.
            **({"shap": insight.shap} if insight.shap else {}),
        }
    for name in ("slices.json", "importance.json"):
        if name in documents:
            atomic.write_json(workdir / name, documents[name])
        else:
            (workdir / name).unlink(missing_ok=True)
    return {name: atomic.artifact_sha256(workdir, name) for name in documents}


def metrics_report(model: Model, scores: Scores, insight: Insight, verdict: GateVerdict) -> str:
    """metrics.txt for GitLab's metrics report: each metric, its interval bounds and
    worst slice when measured, and the gates' verdict, as OpenMetrics gauges."""
    from ci_mlops.steps.openmetrics import document, family
    from ci_mlops.steps.slices import gated_values

    labels = {"model": model.name}
    intervals = insight.resampled.intervals if insight.resampled else {}
    worst = gated_values(insight.slices)
    families = []
    for name, value in scores.values.items():
        stem = f"ci_mlops_{name}"
        families.append(family(stem, f"{name} on the eval data", [(labels, value)]))
        if name in intervals:
            low, high = intervals[name]
            level = insight.resampled.level if insight.resampled else 0
            what = f"bootstrap {level:g} interval of {name}"
            families.append(
                family(f"{stem}_interval_low", f"lower end of the {what}", [(labels, low)])
            )
            families.append(
                family(f"{stem}_interval_high", f"upper end of the {what}", [(labels, high)])
            )
        if worst.get(name):
            pick = min if HIGHER_IS_BETTER[name] else max
            value = pick(worst[name].values())
            families.append(
                family(f"{stem}_worst_slice", f"{name} of the worst slice", [(labels, value)])
            )
    passed = 1.0 if verdict.passed else 0.0
    families.append(
        family("ci_mlops_gates_passed", "1 when every quality gate passed", [(labels, passed)])
    )
    return document(families)


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
        if check.warned:
            # JUnit knows no warnings: the case passes and says it is a warning.
            properties = ET.SubElement(case, "properties")
            ET.SubElement(properties, "property", name="mode", value="warn")
        if check.overridden:
            # It passes because of a label: the case says which, as its message does.
            properties = ET.SubElement(case, "properties")
            ET.SubElement(
                properties, "property", name="overridden_by_label", value=check.overridden
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
    if verdict.warnings:
        outcome += f", {len(verdict.warnings)} warning{'s' if len(verdict.warnings) != 1 else ''}"
    if verdict.overrides:
        outcome += f", {len(verdict.overrides)} overridden by label"
    return "\n".join([f"{model.name}: quality gates {outcome}", *lines])


def _gate_cell(verdict: GateVerdict, metric: str) -> str:
    checks = [c for c in verdict.checks if c.metric == metric]
    if not checks:
        return "-"
    failed = [c.rule for c in checks if not c.passed]
    if failed:
        return "FAIL " + ", ".join(failed)
    overridden = [c.rule for c in checks if c.overridden]
    if overridden:
        return "OVERRIDDEN " + ", ".join(overridden)
    warned = [c.rule for c in checks if c.warned]
    if warned:
        return "WARN " + ", ".join(warned)
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
