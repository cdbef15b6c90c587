"""SHAP values of tree models: how much each feature moved each prediction away from
the model's average output, and their mean magnitude per feature as a ranking.

Exact TreeSHAP, never a sampling approximation: XGBoost (``pred_contribs=True``) and
LightGBM (``pred_contrib=True``) compute it themselves; scikit-learn tree ensembles
go through the ``shap`` library's ``TreeExplainer`` (the ``shap`` extra). The values of
a row sum, with the expected value, to the model's raw output (margin, log-odds or the
prediction), which is what makes them an explanation rather than a score. Any other
model, or a scikit-learn tree without the library, gets a one-line note instead: SHAP
is insight, never a reason for evaluate to fail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Rows explained at most: TreeSHAP costs rows x trees x leaves x depth, and the mean
# magnitude settles well before a large eval set ends. A seeded sample, so reruns agree.
MAX_ROWS = 1000


@dataclass(frozen=True)
class Contributions:
    """Per row, output and feature the SHAP value, and per row and output the expected
    value they start from: ``values`` is (rows, outputs, features), ``expected`` is
    (rows, outputs); one output for regression and binary models, one per class else."""

    values: np.ndarray
    expected: np.ndarray
    method: str


@dataclass(frozen=True)
class ShapRanking:
    """Features by mean |SHAP| (over rows and outputs), most important first."""

    method: str
    rows: int
    seconds: float
    features: list[tuple[str, float]] = field(default_factory=list)

    @property
    def order(self) -> list[str]:
        return [name for name, _ in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "features": [{"name": n, "mean_abs": v} for n, v in self.features],
        }


class Unsupported(Exception):
    """Why a model gets no SHAP values: one line for the report."""


def contributions(model: Any, frame: pd.DataFrame) -> Contributions:
    """Exact TreeSHAP values of ``model`` (the framework's estimator or booster) on
    ``frame``; Unsupported says why there are none."""
    module = type(model).__module__.split(".")[0]
    explain = {"xgboost": _xgboost, "lightgbm": _lightgbm, "sklearn": _sklearn}.get(module)
    if explain is None:
        raise Unsupported(
            f"SHAP values are computed for tree models only, not {type(model).__name__}"
        )
    try:
        return explain(model, frame)
    except Unsupported:
        raise
    except Exception as exc:  # a booster refusing the data (names, types): a note
        raise Unsupported(f"{module} could not compute SHAP values: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def mean_abs_ranking(model: Any, frame: pd.DataFrame, seed: int = 0) -> ShapRanking:
    """Mean |SHAP| per feature over (a seeded sample of at most MAX_ROWS of) ``frame``."""
    import numpy as np

    start = time.monotonic()
    if len(frame) > MAX_ROWS:
        frame = frame.sample(n=MAX_ROWS, random_state=seed)
    found = contributions(model, frame)
    means = np.abs(found.values).mean(axis=(0, 1))
    names = [str(c) for c in frame.columns]
    # Stable: ties keep the column order.
    order = sorted(range(len(names)), key=lambda i: -float(means[i]))
    return ShapRanking(
        method=found.method,
        rows=len(frame),
        seconds=time.monotonic() - start,
        features=[(names[i], float(means[i])) for i in order],
    )


def _split(raw: np.ndarray, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, outputs, width + 1) from a booster's contributions, whose last column per
    output is the expected value: values and expected apart."""
    shaped = raw.reshape(rows, -1, width + 1)
    return shaped[:, :, :width], shaped[:, :, width]


def _xgboost(model: Any, frame: pd.DataFrame) -> Contributions:
    import numpy as np
    import xgboost

    booster = model.get_booster() if hasattr(model, "get_booster") else model
    raw = np.asarray(booster.predict(xgboost.DMatrix(frame), pred_contribs=True), dtype=float)
    values, expected = _split(raw, len(frame), frame.shape[1])
    return Contributions(values, expected, "XGBoost TreeSHAP (pred_contribs)")


def _lightgbm(model: Any, frame: pd.DataFrame) -> Contributions:
    import numpy as np

    booster = model.booster_ if hasattr(model, "booster_") else model
    raw = np.asarray(booster.predict(frame, pred_contrib=True), dtype=float)
    values, expected = _split(raw, len(frame), frame.shape[1])
    return Contributions(values, expected, "LightGBM TreeSHAP (pred_contrib)")


def _sklearn(model: Any, frame: pd.DataFrame) -> Contributions:
    import numpy as np

    try:
        import shap
    except ImportError:
        raise Unsupported(
            "SHAP values of scikit-learn models need the shap library: install ci-mlops[shap]"
        ) from None
    try:
        explainer = shap.TreeExplainer(model)
        explained = explainer(frame, check_additivity=False)
    except Exception as exc:  # shap's InvalidModelError, or a model it half supports
        raise Unsupported(
            f"shap's TreeExplainer does not support {type(model).__name__}: {_first_line(exc)}"
        ) from None
    values = np.asarray(explained.values, dtype=float)
    expected = np.asarray(explained.base_values, dtype=float)
    # (rows, features) for one output, (rows, features, outputs) for several.
    values = values[:, None, :] if values.ndim == 2 else values.transpose(0, 2, 1)
    expected = np.broadcast_to(expected.reshape(len(frame), -1), values.shape[:2])
    return Contributions(values, np.array(expected), f"shap {shap.__version__} TreeExplainer")
