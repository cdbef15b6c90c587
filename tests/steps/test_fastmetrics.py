"""The numpy metrics the bootstrap resamples with give scikit-learn's numbers: on
random labels, scores and values, on resamples that lack a class, with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as m

from ci_mlops.steps import fastmetrics


def probabilities(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    raw = rng.random((n, k))
    return raw / raw.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = ["no", "yes"]
    y = rng.choice(classes, 80)
    scores = probabilities(rng, 80, 2).round(1)  # rounded: many tied scores
    predicted = np.where(scores[:, 1] > 0.5, "yes", "no")
    fast = fastmetrics.classification(y, predicted, scores, classes, probabilities=True)
    everything = np.arange(80)
    expected = {
        "accuracy": m.accuracy_score(y, predicted),
        "precision": m.precision_score(y, predicted, pos_label="yes", zero_division=0),
        "recall": m.recall_score(y, predicted, pos_label="yes", zero_division=0),
        "f1": m.f1_score(y, predicted, pos_label="yes", zero_division=0),
        "roc_auc": m.roc_auc_score(y == "yes", scores[:, 1]),
        "log_loss": m.log_loss(y, scores, labels=classes),
    }
    for name, value in expected.items():
        assert fast[name](everything) == pytest.approx(value, abs=1e-12), name
    # A resample (rows repeated, some left out) gives scikit-learn's value on those rows.
    rows = rng.integers(0, 80, 80)
    resampled = m.log_loss(y[rows], scores[rows], labels=classes)
    assert fast["log_loss"](rows) == pytest.approx(resampled, abs=1e-12)
    assert fast["roc_auc"](rows) == pytest.approx(
        m.roc_auc_score(y[rows] == "yes", scores[rows, 1])
    )


@pytest.mark.parametrize("seed", range(5))
def test_weighted_multiclass_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = [0, 1, 2, 3]
    y = rng.choice([0, 1, 2], 60)  # class 3 never occurs: weight 0
    predicted = rng.choice(classes, 60)
    fast = fastmetrics.classification(y, predicted, None, classes, probabilities=False)
    for name, function in (
        ("precision", m.precision_score),
        ("recall", m.recall_score),
        ("f1", m.f1_score),
    ):
        value = function(y, predicted, average="weighted", zero_division=0)
        assert fast[name](np.arange(60)) == pytest.approx(value, abs=1e-12), name
    assert "roc_auc" not in fast and "log_loss" not in fast  # scikit-learn does those


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 30, 50)
    predicted = y + rng.normal(0, 10, 50)
    fast = fastmetrics.regression(y, predicted)
    expected = {
        "rmse": m.root_mean_squared_error(y, predicted),
        "mae": m.mean_absolute_error(y, predicted),
        "r2": m.r2_score(y, predicted),
        "mape": m.mean_absolute_percentage_error(y, predicted),
    }
    for name, value in expected.items():
        assert fast[name](np.arange(50)) == pytest.approx(value, rel=1e-12), name


def test_undefined_cases_agree() -> None:
    one_class = np.array([1, 1, 1])
    scores = probabilities(np.random.default_rng(0), 3, 2)
    fast = fastmetrics.classification(one_class, one_class, scores, [0, 1], probabilities=True)
    with pytest.raises(ValueError, match="one class"):
        fast["roc_auc"](np.arange(3))
    zeros = np.array([0, 0])
    assert fastmetrics.classification(zeros, zeros, None, [0, 1], False)["precision"](
        np.arange(2)
    ) == m.precision_score(zeros, zeros, zero_division=0)
    assert math.isnan(fastmetrics.regression(np.array([1.0]), np.array([2.0]))["r2"](np.arange(1)))
    same = np.array([3.0, 3.0])
    assert fastmetrics.regression(same, same)["r2"](np.arange(2)) == m.r2_score(same, same)
    off = np.array([2.0, 3.0])
    assert fastmetrics.regression(same, off)["r2"](np.arange(2)) == m.r2_score(same, off)
    # A label the model has no column for: log_loss is left to scikit-learn.
    odd = np.array([0, 7, 1])
    assert "log_loss" not in fastmetrics.classification(odd, odd, scores, [0, 1], True)
