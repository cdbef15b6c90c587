"""Permutation importance on a real scikit-learn model with known answers: a feature
the model cannot use ranks last with importance 0, the feature that decides ranks
first, and the comparison with a baseline's ranking names what moved."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from ci_mlops.steps.importance import compare, permutation_importance


def test_a_feature_made_irrelevant_by_construction_ranks_last() -> None:
    rng = np.random.default_rng(0)
    n = 600
    signal = rng.normal(size=n)
    weak = rng.normal(size=n)
    labels = (signal + 0.3 * weak + rng.normal(scale=0.3, size=n) > 0).astype(int)
    # In training the column is constant, so the fitted model gives it weight 0; in the
    # eval data it varies, so a model that used it would be hurt by shuffling it.
    train = pd.DataFrame({"noise": np.zeros(n), "signal": signal, "weak": weak})
    model = LogisticRegression().fit(train, labels)
    assert model.coef_[0][0] == 0
    eval_frame = train.assign(noise=rng.normal(size=n))

    ranking = permutation_importance(
        eval_frame,
        lambda frame: accuracy_score(labels, model.predict(frame)),
        "accuracy",
        higher_is_better=True,
        repeats=3,
        budget_seconds=60,
    )
    assert ranking.order == ["signal", "weak", "noise"]
    last = ranking.features[-1]
    assert (last.mean, last.std) == (0.0, 0.0)
    assert ranking.features[0].mean > 0.2  # shuffling the signal costs most of the accuracy
    assert ranking.not_measured == []


def test_lower_is_better_metrics_rank_by_their_rise() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=200), "unused": rng.normal(size=200)})
    target = 3 * frame["x"].to_numpy()

    def rmse(data: pd.DataFrame) -> float:
        return float(np.sqrt(np.mean((3 * data["x"].to_numpy() - target) ** 2)))

    ranking = permutation_importance(frame, rmse, "rmse", False, 2, 60)
    assert ranking.order == ["x", "unused"]
    assert ranking.features[0].mean > 1 and ranking.features[1].mean == 0


def test_comparison_names_rank_moves_and_the_top_k_changes() -> None:
    comparison = compare(["b", "a", "d", "c"], ["a", "b", "c", "d"], top_k=2)
    assert comparison["ranks"] == {
        "b": {"rank": 1, "baseline_rank": 2},
        "a": {"rank": 2, "baseline_rank": 1},
    }
    assert comparison["entered"] == [] and comparison["left"] == []
    moved = compare(["d", "a", "b"], ["a", "b", "c"], top_k=2)
    assert moved["entered"] == ["d"] and moved["left"] == ["b"]
    assert moved["ranks"]["b"] == {"rank": 3, "baseline_rank": 2}
    assert compare(["a"], None, 2) == {"baseline": False}
