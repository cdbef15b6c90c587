"""Exact TreeSHAP for XGBoost, LightGBM and scikit-learn tree ensembles, checked
against answers known by construction: a feature the target ignores gets (nearly) no
SHAP value and ranks last, and each row's values plus the expected value add up to the
model's raw output."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from ci_mlops.steps.shap_values import Unsupported, contributions, mean_abs_ranking


def data(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``strong`` drives the target most, ``weak`` a little, ``noise`` not at all."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "noise": rng.normal(size=rows),
            "weak": rng.normal(size=rows),
            "strong": rng.normal(size=rows),
        }
    )
    return frame, 3.0 * frame["strong"].to_numpy() + 0.5 * frame["weak"].to_numpy()


def models() -> dict[str, tuple[object, np.ndarray]]:
    """name -> (fitted model, its raw output on the data)."""
    import lightgbm
    import xgboost
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier

    frame, y = data()
    label = (y > 0).astype(int)
    xgb = xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(frame, label)
    lgb = lightgbm.LGBMRegressor(n_estimators=30, verbose=-1).fit(frame, y)
    gbr = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(frame, y)
    rfc = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(frame, label)
    return {
        "xgboost": (xgb, xgb.predict(frame, output_margin=True)[:, None]),
        "lightgbm": (lgb, lgb.predict(frame, raw_score=True)[:, None]),
        "sklearn-gbr": (gbr, gbr.predict(frame)[:, None]),
        # A forest's raw output is its class probabilities: one output per class.
        "sklearn-forest": (rfc, rfc.predict_proba(frame)),
    }


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[object, np.ndarray]]:
    return models()


@pytest.mark.parametrize("name", ["xgboost", "lightgbm", "sklearn-gbr", "sklearn-forest"])
def test_values_plus_the_expected_value_are_the_raw_output(
    fitted: dict[str, tuple[object, np.ndarray]], name: str
) -> None:
    model, raw = fitted[name]
    frame, _ = data()
    found = contributions(model, frame)
    assert found.values.shape == (len(frame), raw.shape[1], 3)
    np.testing.assert_allclose(found.values.sum(axis=2) + found.expected, raw, atol=1e-4)


@pytest.mark.parametrize("name", ["xgboost", "lightgbm", "sklearn-gbr", "sklearn-forest"])
def test_a_feature_the_target_ignores_ranks_last_with_about_no_shap(
    fitted: dict[str, tuple[object, np.ndarray]], name: str
) -> None:
    model, _ = fitted[name]
    frame, _ = data()
    ranking = mean_abs_ranking(model, frame)
    assert ranking.order == ["strong", "weak", "noise"]
    values = dict(ranking.features)
    assert values["noise"] < 0.05 * values["strong"]
    assert ranking.rows == len(frame)
    assert "TreeSHAP" in ranking.method or "TreeExplainer" in ranking.method


def test_a_multiclass_booster_has_one_output_per_class() -> None:
    import xgboost

    frame, y = data()
    classes = np.digitize(y, [-1.0, 1.0])
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(frame, classes)
    found = contributions(model, frame)
    assert found.values.shape == (len(frame), 3, 3)
    margins = model.predict(frame, output_margin=True)
    np.testing.assert_allclose(found.values.sum(axis=2) + found.expected, margins, atol=1e-4)


def test_a_large_eval_set_is_explained_on_a_seeded_sample() -> None:
    import xgboost

    frame, y = data(rows=2500)
    model = xgboost.XGBRegressor(n_estimators=10, max_depth=3).fit(frame, y)
    first, second = mean_abs_ranking(model, frame, seed=3), mean_abs_ranking(model, frame, seed=3)
    assert first.rows == 1000
    assert first.features == second.features


def test_a_model_that_is_no_tree_gets_a_note() -> None:
    from sklearn.linear_model import LinearRegression

    frame, y = data()
    with pytest.raises(Unsupported, match="does not support LinearRegression"):
        contributions(LinearRegression().fit(frame, y), frame)
    with pytest.raises(Unsupported, match="tree models only, not list"):
        contributions([], frame)


def test_scikit_learn_trees_without_the_shap_library_get_a_note(
    fitted: dict[str, tuple[object, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # as if ci-mlops[shap] were not installed
    frame, _ = data()
    with pytest.raises(Unsupported, match=r"install ci-mlops\[shap\]"):
        contributions(fitted["sklearn-gbr"][0], frame)


def test_a_booster_refusing_the_data_gives_a_note(
    fitted: dict[str, tuple[object, np.ndarray]],
) -> None:
    frame, _ = data()
    with pytest.raises(Unsupported, match=r"^xgboost could not compute SHAP values: "):
        contributions(fitted["xgboost"][0], frame.drop(columns="weak"))
