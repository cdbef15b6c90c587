"""Slices with a known answer: a model wrong on half of one region's rows and right
everywhere else passes its overall accuracy gate and fails the worst-slice gate,
through the same scorer, slicing and gates evaluate uses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_mlops.frameworks import Predictions
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Gate
from ci_mlops.steps.evaluate import scorer
from ci_mlops.steps.gates import Evidence, apply_gates
from ci_mlops.steps.slices import compute_slices, gated_values, slice_labels
from tests.helpers import EXAMPLES


def test_a_model_worse_on_one_slice_fails_worst_slice_while_overall_passes() -> None:
    model = load_spec(EXAMPLES / "churn" / "mlops.yaml", check_files=False).models[0]
    rng = np.random.default_rng(0)
    regions = np.array(["eu"] * 40 + ["us"] * 180 + ["apac"] * 180)
    y = rng.integers(0, 2, len(regions))
    predicted = y.copy()
    eu = np.flatnonzero(regions == "eu")
    predicted[eu[::2]] = 1 - predicted[eu[::2]]  # wrong on half of eu's rows
    scores = np.c_[1.0 - predicted, predicted.astype(float)]
    p = Predictions(predicted, scores, [0, 1], True)
    frame = pd.DataFrame({"region": regions})

    slices = compute_slices(frame, ("region",), scorer(model, y, p, [0, 1]), 10, "spec")
    assert [(s.label, s.rows) for s in slices] == [("apac", 180), ("eu", 40), ("us", 180)]
    by_label = {s.label: s.metrics["accuracy"] for s in slices}
    assert by_label == {"apac": 1.0, "eu": 0.5, "us": 1.0}

    overall = float((predicted == y).mean())
    assert overall == pytest.approx(0.95)
    gate = Gate("accuracy", min=0.9, worst_slice=0.8)
    evidence = Evidence(slices=gated_values(slices))
    verdict = apply_gates((gate,), {"accuracy": overall}, None, "pass", None, evidence)
    by_rule = {c.rule: c for c in verdict.checks}
    assert by_rule["min"].passed
    assert not by_rule["worst_slice"].passed and by_rule["worst_slice"].value == 0.5
    assert "worst slice region=eu" in by_rule["worst_slice"].message


def test_small_slices_are_shown_but_not_gated() -> None:
    model = load_spec(EXAMPLES / "churn" / "mlops.yaml", check_files=False).models[0]
    y = np.array([1, 0, 1, 1, 0, 1])
    p = Predictions(y.copy(), np.c_[1.0 - y, y.astype(float)], [0, 1], True)
    frame = pd.DataFrame({"plan": ["a", "a", "a", "a", "b", None]})
    slices = compute_slices(frame, ("plan",), scorer(model, y, p, [0, 1]), 3, "spec")
    assert [(s.label, s.rows, s.gated) for s in slices] == [
        ("a", 4, True),
        ("b", 1, False),
        ("missing", 1, False),
    ]
    assert set(gated_values(slices)["accuracy"]) == {"plan=a"}


def test_numeric_columns_with_many_values_are_cut_into_quartiles() -> None:
    labels = slice_labels(pd.Series(np.arange(100, dtype=float)))
    assert len(set(labels)) == 4
    assert labels[0] == "[-0.001, 24.75]" and labels[-1] == "[74.25, 99]"
    few = slice_labels(pd.Series([1, 2, 2, 3]))
    assert list(few) == ["1", "2", "2", "3"]
