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

# The metric on the eval rows at the given positions (repeats allowed).
Metric = Callable[["np.ndarray"], float]


def classification(
    y: np.ndarray, p: np.ndarray, scores: np.ndarray | None, classes: list[Any], probabilities: bool
) -> dict[str, Metric]:
    """Metrics for ``classes`` (the positive class is the second of two, as evaluate's).
    What does not depend on the rows drawn (each row's log loss) is computed once."""
    binary = len(classes) == 2
    out: dict[str, Metric] = {"accuracy": lambda r: float((y[r] == p[r]).mean())}
    if binary:
        positive = classes[1]
        out["precision"] = lambda r: _binary(y[r], p[r], positive)[0]
        out["recall"] = lambda r: _binary(y[r], p[r], positive)[1]
        out["f1"] = lambda r: _binary(y[r], p[r], positive)[2]
        if scores is not None:
            truth, score = y == positive, scores[:, 1]
            out["roc_auc"] = lambda r: _auc(truth[r], score[r])
    else:
        out["precision"] = lambda r: _weighted(y[r], p[r], classes, 0)
        out["recall"] = lambda r: _weighted(y[r], p[r], classes, 1)
        out["f1"] = lambda r: _weighted(y[r], p[r], classes, 2)
    if probabilities and scores is not None:
        try:
            losses = _row_log_losses(y, scores, classes)
        except KeyError:  # a label the model has no column for: scikit-learn decides
            return out
        out["log_loss"] = lambda r: float(losses[r].mean())
    return out


def regression(y: np.ndarray, p: np.ndarray) -> dict[str, Metric]:
    return {
        "rmse": lambda r: float(math.sqrt(((y[r] - p[r]) ** 2).mean())),
        "mae": lambda r: float(abs(y[r] - p[r]).mean()),
        "r2": lambda r: _r2(y[r], p[r]),
        "mape": lambda r: _mape(y[r], p[r]),
    }


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


def _row_log_losses(y: np.ndarray, scores: np.ndarray, classes: list[Any]) -> np.ndarray:
    """Each row's log loss, clipped and normalised as scikit-learn does; the mean over
    any rows is their log loss."""
    import numpy as np

    eps = np.finfo(scores.dtype if scores.dtype.kind == "f" else float).eps
    clipped = np.clip(scores, eps, 1 - eps)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    index = {c: i for i, c in enumerate(classes)}
    columns = np.asarray([index[v] for v in y.tolist()])
    return np.asarray(-np.log(clipped[np.arange(len(y)), columns]))


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
