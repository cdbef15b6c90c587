"""The spec's metrics in plain numpy, for the bootstrap's hundreds of resamples.

scikit-learn's metric functions validate their inputs on every call, which costs more
than the arithmetic: 200 resamples of six metrics took seconds where numpy takes
milliseconds. The point values in metrics.json stay scikit-learn's; these functions
give the same numbers (a test compares them on random data) and are used only to
resample. A metric without a numpy version here (multiclass ROC AUC) falls back to
scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# (y_true, predicted labels or values, class scores or None) -> value
Metric = Callable[["np.ndarray", "np.ndarray", "np.ndarray | None"], float]


def classification(classes: list[Any], probabilities: bool) -> dict[str, Metric]:
    """Metrics for ``classes`` (the positive class is the second of two, as evaluate's)."""
    binary = len(classes) == 2
    out: dict[str, Metric] = {"accuracy": lambda y, p, s: float((y == p).mean())}
    if binary:
        positive = classes[1]
        out["precision"] = lambda y, p, s: _binary(y, p, positive)[0]
        out["recall"] = lambda y, p, s: _binary(y, p, positive)[1]
        out["f1"] = lambda y, p, s: _binary(y, p, positive)[2]
        out["roc_auc"] = lambda y, p, s: _auc(y == positive, _need(s)[:, 1])
    else:
        out["precision"] = lambda y, p, s: _weighted(y, p, classes, 0)
        out["recall"] = lambda y, p, s: _weighted(y, p, classes, 1)
        out["f1"] = lambda y, p, s: _weighted(y, p, classes, 2)
    if probabilities:
        out["log_loss"] = lambda y, p, s: _log_loss(y, _need(s), classes)
    return out


def regression() -> dict[str, Metric]:
    return {
        "rmse": lambda y, p, s: float(math.sqrt(((y - p) ** 2).mean())),
        "mae": lambda y, p, s: float(abs(y - p).mean()),
        "r2": lambda y, p, s: _r2(y, p),
        "mape": lambda y, p, s: _mape(y, p),
    }


def _need(scores: np.ndarray | None) -> np.ndarray:
    if scores is None:
        raise ValueError("the model gives no class scores")
    return scores


def _binary(y: np.ndarray, p: np.ndarray, positive: Any) -> tuple[float, float, float]:
    """Precision, recall and F1 of the positive class; 0 where undefined (as
    scikit-learn's ``zero_division=0``)."""
    truth, said = y == positive, p == positive
    tp = float((truth & said).sum())
    predicted, actual = float(said.sum()), float(truth.sum())
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    both = precision + recall
    return precision, recall, (2 * precision * recall / both if both else 0.0)


def _weighted(y: np.ndarray, p: np.ndarray, classes: list[Any], which: int) -> float:
    """Support-weighted average over classes; a class absent from ``y`` weighs 0."""
    total, weighted = 0.0, 0.0
    for label in classes:
        support = float((y == label).sum())
        if support:
            weighted += support * _binary(y, p, label)[which]
            total += support
    return weighted / total if total else 0.0


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counting half (average ranks)."""
    import numpy as np

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        raise ValueError("only one class present")
    # Average rank of each distinct score: the ranks before it plus the middle of its run.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2
    ranks = average[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _log_loss(y: np.ndarray, scores: np.ndarray, classes: list[Any]) -> float:
    import numpy as np

    eps = np.finfo(scores.dtype if scores.dtype.kind == "f" else float).eps
    clipped = np.clip(scores, eps, 1 - eps)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    index = {c: i for i, c in enumerate(classes)}
    columns = np.asarray([index[v] for v in y.tolist()])
    return float(-np.log(clipped[np.arange(len(y)), columns]).mean())


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) < 2:
        return math.nan
    residual = float(((y - p) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:  # scikit-learn's force_finite: perfect is 1, anything else 0
        return 1.0 if residual == 0 else 0.0
    return 1 - residual / total


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    import numpy as np

    eps = np.finfo(np.float64).eps
    return float((abs(y - p) / np.maximum(abs(y), eps)).mean())
