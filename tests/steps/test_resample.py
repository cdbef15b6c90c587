"""Bootstrap intervals with known answers: the interval of a proportion matches the
normal approximation, a paired bootstrap of identical models has no spread, and
undefined resamples are left out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ci_mlops.steps.resample import bootstrap, percentile_interval


def test_the_interval_of_a_proportion_matches_the_normal_approximation() -> None:
    right = np.array([1] * 900 + [0] * 100)
    resampled = bootstrap(lambda rows: {"accuracy": float(right[rows].mean())}, 1000, 1000, 0.95, 0)
    low, high = resampled.intervals["accuracy"]
    half = 1.96 * math.sqrt(0.9 * 0.1 / 1000)  # 0.0186
    assert low == pytest.approx(0.9 - half, abs=0.004)
    assert high == pytest.approx(0.9 + half, abs=0.004)
    assert resampled.changes == {} and not resampled.paired


def test_paired_changes_of_identical_models_are_all_zero() -> None:
    right = np.array([1, 0, 1, 1] * 50)

    def score(rows: np.ndarray) -> dict[str, float]:
        return {"accuracy": float(right[rows].mean())}

    resampled = bootstrap(score, 200, 100, 0.9, 3, baseline_score=score)
    assert resampled.paired and set(resampled.changes["accuracy"]) == {0.0}
    # Unpaired against a point baseline the same model's changes do spread.
    unpaired = bootstrap(score, 200, 100, 0.9, 3, baseline={"accuracy": 0.75})
    assert len(set(unpaired.changes["accuracy"])) > 5
    assert (
        unpaired.to_dict()["changes"]["accuracy"][0]
        < 0
        < unpaired.to_dict()["changes"]["accuracy"][1]
    )


def test_undefined_resamples_are_left_out() -> None:
    assert percentile_interval([math.nan, 1.0, 2.0, 3.0], 0.5) == (1.5, 2.5)
    low, high = percentile_interval([math.nan], 0.95)
    assert math.isnan(low) and math.isnan(high)
