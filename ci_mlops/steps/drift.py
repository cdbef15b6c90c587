"""Drift: compare recent data with the data the model was trained on, column by column,
and start retraining when enough columns moved.

Numeric columns get the population stability index (PSI) over 30 quantile bins of the
reference and the two-sample Kolmogorov-Smirnov test; categorical ones (text, booleans,
or at most 10 distinct values) the chi-square test of homogeneity and the Jensen-Shannon
distance (base 2, so between 0 and 1). A column drifts when a distance reaches its
threshold or a test's p-value falls to its threshold; the dataset drifts when the share
of drifting columns reaches ``share``.

Small samples. PSI and the Jensen-Shannon distance grow with sampling noise alone. With
B bins (or categories) and samples of n and m rows, their expected value between two
samples of the very same data is about (B-1)(1/n + 1/m) for PSI and
sqrt((B-1)(1/n + 1/m) / (8 ln 2)) for the distance. With 30 bins, 426 reference rows
and 143 current ones that is 0.27, so "PSI >= 0.1" would flag every column of unchanged
data. A distance is therefore judged only where that noise floor is at most half its
threshold; elsewhere the column is judged by its test, which accounts for sample size,
and drift.json says so (``psi_judged`` / ``js_judged``).

Missing values. Every column is also judged on its share of missing values, by the
chi-square test of homogeneity on (missing, present) counts against ``chi2_pvalue``: a
feed that starts sending nulls is drift even when the values that remain look alike. A
column with values on one side and none on the other always drifts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci_mlops import atomic, log
from ci_mlops.errors import CheckFailed, StepError, UsageError
from ci_mlops.spec.model import Dataset, Drift, Model, Spec
from ci_mlops.steps.datasets import read_like
from ci_mlops.steps.markdown import text

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PSI_BINS = 30
EPSILON = 1e-4  # stands in for an empty bin's share, so PSI stays finite
CATEGORICAL_MAX_UNIQUE = 10
NOISE_MARGIN = 0.5  # judge a distance only when its noise floor is at most half the threshold


@dataclass(frozen=True)
class Sample:
    """One side of the comparison: the file (or folder) it came from and its rows, a
    pandas DataFrame, or a Spark DataFrame when ``spark`` is set."""

    path: Path
    frame: Any
    rows: int
    spark: bool = False


def run(
    spec: Spec, model: Model, *, fail_on_drift: bool = False, platform: str | None = None
) -> dict[str, Any]:
    """Compare the spec's current data with its reference data; write drift.json and
    drift.md; trigger retraining when the dataset drifted and the spec asks for it.

    Raises CheckFailed after writing the files when drift was found and
    ``fail_on_drift`` is set."""
    drift = _settings(spec, model)
    dataset = model.train_data or model.eval_data
    paths = (spec.root / drift.reference, spec.root / drift.current)
    # Both sides on one engine, so that each statistic is computed the same way.
    on_spark = dataset.engine == "spark" or any(p.is_dir() for p in paths)
    reference, current = (_load(p, dataset, on_spark=on_spark) for p in paths)
    columns = _columns(drift, model, reference, current)
    results = [_compare(reference, current, column, drift) for column in columns]
    summary = _summarise(spec, model, drift, reference, current, results)
    _write(spec, model, summary)
    print(_text_summary(summary))
    if summary["dataset_drift"]:
        summary["retrain"] = _retrain(spec, model, drift, summary, platform)
        _write(spec, model, summary)
    if summary["dataset_drift"] and fail_on_drift:
        raise CheckFailed(f"{model.name}: {_headline(summary)}")
    return summary


# --- inputs -------------------------------------------------------------------------


def _settings(spec: Spec, model: Model) -> Drift:
    drift = model.retrain.drift
    if drift is None:
        raise UsageError(
            f"{spec.path}: model {model.name} has no retrain.drift section "
            "(reference and current data to compare)"
        )
    return drift


def _load(path: Path, dataset: Dataset, *, on_spark: bool) -> Sample:
    """Read a CSV or Parquet file (by its extension) through the same reader as the
    other steps, with the options of the model's training data, so that its columns
    carry the names the model was trained with. Spark reads it when the model's data
    says engine: spark, or when either side is a folder of parts."""
    if on_spark:
        from ci_mlops.steps import spark

        # Each statistic is one Spark job over the data: keep it after the first read.
        frame = spark.read_named(spark.session(), path, _like(path, dataset), ()).cache()
        rows = frame.count()
        if not rows:
            raise StepError(f"{path}: no rows")
        return Sample(path, frame, rows, spark=True)
    frame = read_like(path, dataset)
    if frame.empty:
        raise StepError(f"{path}: no rows")
    return Sample(path, frame, len(frame))


def _like(path: Path, dataset: Dataset) -> Dataset:
    """The dataset's reading options for another file: its format by its extension."""
    # A folder's parts decide its format (spark.read_named looks); a file's extension
    # decides a file's, as read_like does.
    fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    return replace(dataset, format=fmt)


def _columns(drift: Drift, model: Model, reference: Sample, current: Sample) -> list[str]:
    """The spec's columns, or every column both files share except the target."""
    if drift.columns:
        for side in (reference, current):
            missing = [c for c in drift.columns if c not in side.frame.columns]
            if missing:
                raise StepError(
                    f"{side.path}: no column named {missing[0]!r} (retrain.drift.columns)"
                )
        return list(drift.columns)
    targets = {ds.target for ds in model.datasets.values() if ds.target}
    shared = [c for c in reference.frame.columns if c in current.frame.columns and c not in targets]
    if not shared:
        raise StepError(f"{current.path}: shares no column with {reference.path}")
    return shared


# --- per-column statistics ----------------------------------------------------------


def _compare(reference: Sample, current: Sample, column: str, drift: Drift) -> dict[str, Any]:
    if reference.spark or current.spark:
        from ci_mlops.steps.drift_spark import column_stats
    else:
        column_stats = _pandas_stats
    stats = column_stats(reference, current, column)
    base: dict[str, Any] = {"column": column, "n_reference": stats.n_ref, "n_current": stats.n_cur}
    missing = _missing(stats.missing, drift)
    if not stats.n_ref or not stats.n_cur:
        empty = [
            p.name for p, n in ((reference.path, stats.n_ref), (current.path, stats.n_cur)) if not n
        ]
        result: dict[str, Any] = {
            "kind": "empty",
            "drifted": False,
            "reasons": [f"no values in {' or '.join(empty)}"],
        }
    elif stats.categories is not None:
        result = _categorical(*stats.categories, drift)
    else:
        assert stats.numeric is not None
        result = _numeric(stats.numeric, drift)
    reasons = [*missing.pop("reasons"), *result.pop("reasons")]
    drifted = bool(result.pop("drifted")) or bool(missing["missing_drifted"])
    if result["kind"] == "empty" and not missing["missing_drifted"]:
        reasons = reasons[-1:]  # empty on both sides: nothing moved
    return {**base, **result, **missing, "drifted": drifted, "reasons": reasons}


@dataclass(frozen=True)
class Numeric:
    """What the numeric tests need of one column, however it was computed."""

    psi: float
    bins: int
    ks_pvalue: float
    mean_reference: float
    mean_current: float
    n_ref: int
    n_cur: int


@dataclass(frozen=True)
class ColumnStats:
    """One column's counts on both sides: (missing, present) per side, and either the
    value counts of a categorical column or the numeric statistics."""

    n_ref: int
    n_cur: int
    missing: list[tuple[int, int]]
    categories: tuple[dict[str, int], dict[str, int]] | None = None
    numeric: Numeric | None = None


def _pandas_stats(reference: Sample, current: Sample, column: str) -> ColumnStats:
    from scipy.stats import ks_2samp

    ref = reference.frame[column].dropna()
    cur = current.frame[column].dropna()
    counts = []
    for sample in (reference, current):
        missing = int(sample.frame[column].isna().sum())
        counts.append((missing, len(sample.frame) - missing))
    stats = ColumnStats(len(ref), len(cur), counts)
    if ref.empty or cur.empty:
        return stats
    if _is_categorical(ref, cur):
        ref_counts = ref.astype(str).value_counts().to_dict()
        cur_counts = cur.astype(str).value_counts().to_dict()
        return replace(stats, categories=(ref_counts, cur_counts))
    ref_values, cur_values = ref.to_numpy(float), cur.to_numpy(float)
    psi, bins = population_stability_index(ref_values, cur_values)
    numeric = Numeric(
        psi,
        bins,
        float(ks_2samp(ref_values, cur_values).pvalue),
        float(ref_values.mean()),
        float(cur_values.mean()),
        len(ref),
        len(cur),
    )
    return replace(stats, numeric=numeric)


def _missing(counts: list[tuple[int, int]], drift: Drift) -> dict[str, Any]:
    """The change in the column's share of missing values (see the module docstring)."""
    from scipy.stats import chi2_contingency

    (ref_missing, ref_present), (cur_missing, cur_present) = counts
    share_ref = ref_missing / (ref_missing + ref_present)
    share_cur = cur_missing / (cur_missing + cur_present)
    one_side_empty = (ref_present == 0) != (cur_present == 0)
    if ref_missing + cur_missing == 0 or ref_present + cur_present == 0:
        p_value = 1.0  # nothing missing anywhere, or nothing present anywhere
    else:
        p_value = float(chi2_contingency([list(counts[0]), list(counts[1])]).pvalue)
    reasons = []
    if one_side_empty or p_value <= drift.chi2_pvalue:
        reasons.append(
            f"missing values {share_ref:.1%} -> {share_cur:.1%} "
            f"(chi-square p {p_value:.2g} <= {drift.chi2_pvalue:g})"
            if not one_side_empty
            else f"missing values {share_ref:.1%} -> {share_cur:.1%}"
        )
    return {
        "missing_reference": share_ref,
        "missing_current": share_cur,
        "missing_pvalue": p_value,
        "missing_drifted": bool(reasons),
        "reasons": reasons,
    }


def _is_categorical(ref: pd.Series, cur: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if not (is_numeric_dtype(ref) and is_numeric_dtype(cur)):
        return True
    if is_bool_dtype(ref) or is_bool_dtype(cur):
        return True
    distinct = len(set(ref.unique()) | set(cur.unique()))
    return distinct <= CATEGORICAL_MAX_UNIQUE


def _numeric(stats: Numeric, drift: Drift) -> dict[str, Any]:
    psi, bins, ks_p = stats.psi, stats.bins, stats.ks_pvalue
    noise = (bins - 1) * (1 / stats.n_ref + 1 / stats.n_cur)
    judged = noise <= NOISE_MARGIN * drift.psi_threshold
    reasons = []
    if judged and psi >= drift.psi_threshold:
        reasons.append(f"PSI {psi:.3f} >= {drift.psi_threshold:g}")
    if ks_p <= drift.ks_pvalue:
        reasons.append(f"KS p {ks_p:.2g} <= {drift.ks_pvalue:g}")
    return {
        "kind": "numeric",
        "drifted": bool(reasons),
        "reasons": reasons,
        "psi": round(psi, 6),
        "psi_bins": bins,
        "psi_noise": round(noise, 6),
        "psi_judged": judged,
        "ks_pvalue": ks_p,
        "mean_reference": stats.mean_reference,
        "mean_current": stats.mean_current,
    }


def population_stability_index(ref: np.ndarray, cur: np.ndarray) -> tuple[float, int]:
    """PSI of ``cur`` against ``ref`` over up to 30 quantile bins of ``ref``; returns the
    index and the number of bins (fewer when the reference has ties)."""
    import numpy as np

    edges = np.unique(np.quantile(ref, np.linspace(0, 1, PSI_BINS + 1)))[1:-1]
    bins = len(edges) + 1
    expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=bins)
    actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins)
    return psi_of_counts(expected, actual), bins


def psi_of_counts(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two histograms over the same bins (counts, not shares)."""
    import numpy as np

    expected = expected / expected.sum()
    actual = actual / actual.sum()
    expected = np.where(expected == 0, EPSILON, expected)
    actual = np.where(actual == 0, EPSILON, actual)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _categorical(
    ref_counts: dict[str, int], cur_counts: dict[str, int], drift: Drift
) -> dict[str, Any]:
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    n_ref, n_cur = sum(ref_counts.values()), sum(cur_counts.values())
    categories = sorted(set(ref_counts) | set(cur_counts))
    table = np.array(
        [[ref_counts.get(c, 0) for c in categories], [cur_counts.get(c, 0) for c in categories]]
    )
    chi2_p = float(chi2_contingency(table).pvalue) if len(categories) > 1 else 1.0
    distance = float(jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2))
    noise = math.sqrt((len(categories) - 1) * (1 / n_ref + 1 / n_cur) / (8 * math.log(2)))
    judged = noise <= NOISE_MARGIN * drift.js_threshold
    reasons = []
    if chi2_p <= drift.chi2_pvalue:
        reasons.append(f"chi-square p {chi2_p:.2g} <= {drift.chi2_pvalue:g}")
    if judged and distance >= drift.js_threshold:
        reasons.append(f"JS distance {distance:.3f} >= {drift.js_threshold:g}")
    return {
        "kind": "categorical",
        "drifted": bool(reasons),
        "reasons": reasons,
        "categories": len(categories),
        "chi2_pvalue": chi2_p,
        "js_distance": round(distance, 6),
        "js_noise": round(noise, 6),
        "js_judged": judged,
    }


# --- verdict and output -------------------------------------------------------------


def _summarise(
    spec: Spec,
    model: Model,
    drift: Drift,
    reference: Sample,
    current: Sample,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    # A column empty on both sides says nothing; one that emptied on one side drifted.
    judged = [r for r in results if r["kind"] != "empty" or r["drifted"]]
    drifted = [r["column"] for r in judged if r["drifted"]]
    share = len(drifted) / len(judged) if judged else 0.0
    return {
        "model": model.name,
        "reference": {"path": drift.reference, "rows": reference.rows},
        "current": {"path": drift.current, "rows": current.rows},
        "thresholds": {
            "psi": drift.psi_threshold,
            "ks_pvalue": drift.ks_pvalue,
            "chi2_pvalue": drift.chi2_pvalue,
            "js": drift.js_threshold,
            "share": drift.share,
        },
        "columns": results,
        "drifted_columns": drifted,
        "compared_columns": len(judged),
        "share": share,
        "dataset_drift": bool(drifted) and share >= drift.share,
        "retrain": None,
    }


def _headline(summary: dict[str, Any]) -> str:
    count, total = len(summary["drifted_columns"]), summary["compared_columns"]
    verdict = "dataset drift" if summary["dataset_drift"] else "no dataset drift"
    return (
        f"{verdict}: {count} of {total} columns drifted ({summary['share']:.0%}; "
        f"the threshold is {summary['thresholds']['share']:.0%})"
    )


def _text_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['model']}: {_headline(summary)}"]
    for result in summary["columns"]:
        if result["drifted"]:
            lines.append(f"  {result['column']}: {'; '.join(result['reasons'])}")
    unjudged = [
        r for r in summary["columns"] if r.get("psi_judged") is False or r.get("js_judged") is False
    ]
    if unjudged:
        lines.append(
            f"  ({len(unjudged)} columns judged by their test only: too few rows for PSI/JS "
            "distance to rise above sampling noise)"
        )
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any]) -> str:
    """drift.md: the verdict and one table row per column, drifting columns first."""
    rows = sorted(summary["columns"], key=lambda r: (not r["drifted"], r["column"]))
    table = ["| column | kind | PSI / JS | test p-value | drifted |", "|---|---|---:|---:|---|"]
    for r in rows:
        if r["kind"] == "numeric":
            distance = f"{r['psi']:.3f}" + ("" if r["psi_judged"] else " (noise)")
            test = f"KS {r['ks_pvalue']:.3g}"
        elif r["kind"] == "categorical":
            distance = f"{r['js_distance']:.3f}" + ("" if r["js_judged"] else " (noise)")
            test = f"chi² {r['chi2_pvalue']:.3g}"
        else:
            distance, test = "", ""
        mark = "**yes** (" + "; ".join(r["reasons"]) + ")" if r["drifted"] else "no"
        table.append(f"| {text(r['column'])} | {r['kind']} | {distance} | {test} | {mark} |")
    head = [
        f"## Drift: {summary['model']}",
        "",
        f"**{_headline(summary)[0].upper() + _headline(summary)[1:]}.**",
        "",
        f"Reference `{summary['reference']['path']}` ({summary['reference']['rows']} rows), "
        f"current `{summary['current']['path']}` ({summary['current']['rows']} rows). "
        '"(noise)": too few rows for the distance to mean anything; the test decides.',
        "",
    ]
    retrain = summary.get("retrain")
    tail = ["", f"Retraining: {retrain['message']}"] if retrain else []
    return "\n".join([*head, *table, *tail]) + "\n"


def _write(spec: Spec, model: Model, summary: dict[str, Any]) -> None:
    workdir = spec.workdir(model)
    atomic.write_json(workdir / "drift.json", summary)
    atomic.write_text(workdir / "drift.md", render_markdown(summary))


# --- retraining ---------------------------------------------------------------------


def _retrain(
    spec: Spec, model: Model, drift: Drift, summary: dict[str, Any], platform_name: str | None
) -> dict[str, Any]:
    from ci_mlops.platforms import detect

    reason = (
        f"drift in {len(summary['drifted_columns'])} of {summary['compared_columns']} columns: "
        + ", ".join(summary["drifted_columns"][:10])
    )
    if not drift.retrain:
        return {"triggered": False, "message": "not requested (retrain.drift.retrain is false)"}
    if os.environ.get("MLOPS_RETRAIN") == model.name:
        # This pipeline is already the retraining one: triggering again would loop.
        message = "not triggered: this pipeline already retrains the model"
        log.warn(f"{model.name}: drift found; {message}")
        return {"triggered": False, "message": message}
    platform = detect(spec, platform_name)
    if not platform.can_trigger:
        message = f"drift found; run `ci-mlops run --force --model {model.name}` to retrain"
        print(message)
        return {"triggered": False, "message": message}
    where = platform.trigger_retrain(model, reason)
    print(f"{model.name}: retraining triggered: {where}")
    return {
        "triggered": True,
        "platform": platform.name,
        "reference": where,
        "message": f"triggered: {where}",
    }
