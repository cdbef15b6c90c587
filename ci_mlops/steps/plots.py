"""Evaluation plots as PNG bytes: confusion matrix and ROC curve for classifiers,
predicted-vs-actual and residuals for regressors.

Plots are rendered in memory and written by the caller, so that a step that fails
half-way leaves the previous run's plots in place.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ci_mlops.frameworks.base import Predictions, first_line

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure


def _pyplot() -> Any:
    import matplotlib

    # Agg before pyplot: CI runners and laptops over SSH have no display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def classification_plots(
    y_true: np.ndarray, predictions: Predictions, classes: list[Any]
) -> tuple[dict[str, bytes], list[str]]:
    """``{file name: png}`` and notes on plots that were skipped."""
    plots: dict[str, bytes] = {}
    notes: list[str] = []
    _add(
        plots,
        notes,
        "confusion_matrix.png",
        lambda: _confusion(y_true, predictions.values, classes),
    )
    if predictions.scores is None:
        notes.append("roc_curve.png skipped: the model gives no class scores")
    else:
        scores = predictions.scores
        _add(plots, notes, "roc_curve.png", lambda: _roc(y_true, scores, classes))
    return plots, notes


def regression_plots(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[dict[str, bytes], list[str]]:
    """``{file name: png}`` and notes on plots that were skipped."""
    plots: dict[str, bytes] = {}
    notes: list[str] = []
    _add(plots, notes, "predicted_vs_actual.png", lambda: _predicted_vs_actual(y_true, y_pred))
    _add(plots, notes, "residuals.png", lambda: _residuals(y_true, y_pred))
    return plots, notes


def _add(plots: dict[str, bytes], notes: list[str], name: str, draw: Callable[[], Figure]) -> None:
    """Render one plot; a plot the data cannot support is skipped with a note."""
    plt = _pyplot()
    try:
        figure = draw()
    except ValueError as exc:  # sklearn's refusal, e.g. NaN scores or one class only
        plt.close("all")
        notes.append(f"{name} skipped: {first_line(exc)}")
        return
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
    plots[name] = buffer.getvalue()


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]) -> Figure:
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=axes, colorbar=False)
    axes.set_title("Confusion matrix (eval data)")
    return figure


def _roc(y_true: np.ndarray, scores: np.ndarray, classes: list[Any]) -> Figure:
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    # Binary: the curve of the positive (second) class; multiclass: one-vs-rest curves.
    shown = classes[1:] if len(classes) == 2 else classes
    for label in shown:
        column = classes.index(label)
        fpr, tpr, _ = roc_curve(y_true == label, scores[:, column])
        axes.plot(fpr, tpr, label=f"class {label} (AUC {auc(fpr, tpr):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set(xlabel="False positive rate", ylabel="True positive rate")
    title = "ROC curve" if len(classes) == 2 else "ROC curves, one class vs rest"
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    return figure


def _predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    import numpy as np

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.scatter(y_true, y_pred, s=12, alpha=0.7)
    finite = np.concatenate([y_true[np.isfinite(y_true)], y_pred[np.isfinite(y_pred)]])
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
    axes.set(xlabel="Actual", ylabel="Predicted", title="Predicted vs actual (eval data)")
    return figure


def _residuals(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.scatter(y_pred, y_true - y_pred, s=12, alpha=0.7)
    axes.axhline(0, linestyle="--", color="grey", linewidth=1)
    axes.set(xlabel="Predicted", ylabel="Actual - predicted", title="Residuals (eval data)")
    return figure
