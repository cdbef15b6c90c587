"""Quality gates: bounds, changes against a baseline in both metric directions, the
no-baseline policy, NaN values, and that every failure is reported."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ci_mlops.spec.model import HIGHER_IS_BETTER, Gate
from ci_mlops.steps.gates import Check, Evidence, apply_gates, importance_checks


def one(gate: Gate, value: float, baseline: float | None = None, policy: str = "pass") -> Check:
    base = None if baseline is None else {gate.metric: baseline}
    verdict = apply_gates((gate,), {gate.metric: value}, base, policy)
    assert len(verdict.checks) == 1
    assert verdict.passed == verdict.checks[0].passed
    return verdict.checks[0]


# metric, rule, threshold, value, baseline, expected pass
CASES = [
    # bounds
    ("accuracy", "min", 0.9, 0.95, None, True),
    ("accuracy", "min", 0.9, 0.9, None, True),
    ("accuracy", "min", 0.9, 0.899, None, False),
    ("rmse", "max", 50.0, 49.0, None, True),
    ("rmse", "max", 50.0, 50.0, None, True),
    ("rmse", "max", 50.0, 50.5, None, False),
    ("r2", "min", 0.0, -0.2, None, False),
    # absolute drop, higher is better: accuracy falling is worse
    ("accuracy", "max_drop", 0.02, 0.93, 0.95, True),  # exactly 0.02 despite float rounding
    ("accuracy", "max_drop", 0.02, 0.92, 0.95, False),
    ("accuracy", "max_drop", 0.0, 0.99, 0.95, True),  # improvement
    ("accuracy", "max_drop", 0.0, 0.95, 0.95, True),  # unchanged
    # absolute drop, lower is better: rmse rising is worse
    ("rmse", "max_drop", 2.0, 52.0, 50.0, True),
    ("rmse", "max_drop", 2.0, 52.5, 50.0, False),
    ("rmse", "max_drop", 0.0, 40.0, 50.0, True),  # a big fall is an improvement
    ("log_loss", "max_drop", 0.01, 0.30, 0.20, False),
    # relative drop, both directions
    ("f1", "max_relative_drop", 0.05, 0.855, 0.9, True),  # -5% exactly
    ("f1", "max_relative_drop", 0.05, 0.85, 0.9, False),  # -5.6%
    ("mae", "max_relative_drop", 0.10, 44.0, 40.0, True),  # +10% exactly
    ("mae", "max_relative_drop", 0.10, 44.5, 40.0, False),
    ("mae", "max_relative_drop", 0.0, 30.0, 40.0, True),
    # relative to |baseline| when the baseline is negative (r2 can be)
    ("r2", "max_relative_drop", 0.5, -0.3, -0.2, True),  # worse by 0.1 = 50% of |-0.2|
    ("r2", "max_relative_drop", 0.5, -0.35, -0.2, False),
    ("r2", "max_relative_drop", 0.5, 0.1, -0.2, True),
    # relative to a baseline of zero
    ("r2", "max_relative_drop", 0.5, 0.0, 0.0, True),
    ("r2", "max_relative_drop", 0.5, 0.1, 0.0, True),
    ("r2", "max_relative_drop", 0.5, -0.001, 0.0, False),
    ("mape", "max_relative_drop", 10.0, 0.001, 0.0, False),
    ("mape", "max_relative_drop", 0.1, 0.0, 0.0, True),
]


@pytest.mark.parametrize(("metric", "rule", "threshold", "value", "baseline", "expected"), CASES)
def test_rule_table(
    metric: str, rule: str, threshold: float, value: float, baseline: float | None, expected: bool
) -> None:
    check = one(Gate(metric, **{rule: threshold}), value, baseline)
    assert check.passed is expected, check.message
    assert (check.metric, check.rule, check.threshold, check.value) == (
        metric,
        rule,
        threshold,
        value,
    )
    assert check.baseline == baseline
    assert check.message.startswith(metric)


def test_change_is_signed_value_minus_baseline() -> None:
    assert one(Gate("rmse", max_drop=1.0), 52.0, 50.0).change == pytest.approx(2.0)
    assert one(Gate("accuracy", max_drop=1.0), 0.9, 0.95).change == pytest.approx(-0.05)
    relative = one(Gate("accuracy", max_relative_drop=1.0), 0.9, 0.8)
    assert relative.change == pytest.approx(0.125)
    assert one(Gate("r2", max_relative_drop=1.0), 0.1, -0.2).change == pytest.approx(1.5)
    assert one(Gate("accuracy", min=0.5), 0.9, 0.8).change is None


def test_zero_baseline_gives_an_infinite_relative_change_and_says_why() -> None:
    check = one(Gate("r2", max_relative_drop=0.5), -0.001, 0.0)
    assert check.change == -math.inf
    assert "baseline of 0" in check.message and "max_drop" in check.message
    assert check.to_dict()["change"] is None  # JSON has no infinity


def test_messages_say_which_way_and_by_how_much() -> None:
    assert one(Gate("accuracy", min=0.9), 0.85).message == "accuracy 0.85 is below min 0.9"
    assert one(Gate("rmse", max=50), 51).message == "rmse 51 is above max 50"
    drop = one(Gate("accuracy", max_drop=0.02), 0.9, 0.95).message
    assert drop == "accuracy got worse by 0.05 from baseline 0.95 to 0.9 (max_drop 0.02)"
    better = one(Gate("rmse", max_relative_drop=0.05), 40.0, 50.0).message
    assert better == "rmse improved by 20% from baseline 50 to 40 (max_relative_drop 5%)"
    worse = one(Gate("rmse", max_relative_drop=0.05), 60.0, 50.0).message
    assert "got worse by 20%" in worse


def test_every_failure_is_collected_across_metrics_and_rules() -> None:
    gates = (
        Gate("accuracy", min=0.95, max_drop=0.01),
        Gate("f1", min=0.5, max_relative_drop=0.01),
        Gate("log_loss", max=0.2, max_drop=0.05),
        Gate("precision"),  # reported only: no checks
    )
    metrics = {"accuracy": 0.90, "f1": 0.80, "log_loss": 0.40, "precision": 0.7}
    baseline = {"accuracy": 0.96, "f1": 0.90, "log_loss": 0.10, "precision": 0.9}
    verdict = apply_gates(gates, metrics, baseline, "pass")
    assert not verdict.passed
    assert [(c.metric, c.rule) for c in verdict.checks] == [
        ("accuracy", "min"),
        ("accuracy", "max_drop"),
        ("f1", "min"),
        ("f1", "max_relative_drop"),
        ("log_loss", "max"),
        ("log_loss", "max_drop"),
    ]
    assert [(c.metric, c.rule) for c in verdict.failed] == [
        ("accuracy", "min"),
        ("accuracy", "max_drop"),
        ("f1", "max_relative_drop"),
        ("log_loss", "max"),
        ("log_loss", "max_drop"),
    ]
    assert not verdict.no_baseline


def test_all_passing_gives_a_passing_verdict() -> None:
    gates = (Gate("rmse", max=60, max_relative_drop=0.05), Gate("r2", min=0.3, max_drop=0.03))
    verdict = apply_gates(gates, {"rmse": 55.0, "r2": 0.45}, {"rmse": 54.0, "r2": 0.46}, "fail")
    assert verdict.passed and verdict.failed == [] and len(verdict.checks) == 4


@pytest.mark.parametrize(("policy", "expected"), [("pass", True), ("fail", False)])
def test_no_baseline_policy_decides_change_rules_only(policy: str, expected: bool) -> None:
    gates = (Gate("accuracy", min=0.9, max_drop=0.01), Gate("f1", max_relative_drop=0.1))
    verdict = apply_gates(gates, {"accuracy": 0.95, "f1": 0.9}, None, policy)
    assert verdict.no_baseline
    assert verdict.passed is expected
    by_rule = {(c.metric, c.rule): c for c in verdict.checks}
    assert by_rule["accuracy", "min"].passed  # bounds never need a baseline
    for key in (("accuracy", "max_drop"), ("f1", "max_relative_drop")):
        check = by_rule[key]
        assert check.passed is expected
        assert check.baseline is None and check.change is None
        assert "no baseline" in check.message and f"if_missing: {policy}" in check.message


def test_without_change_rules_a_missing_baseline_is_not_flagged() -> None:
    verdict = apply_gates((Gate("accuracy", min=0.9),), {"accuracy": 0.95}, None, "fail")
    assert verdict.passed and not verdict.no_baseline


@pytest.mark.parametrize("policy", ["pass", "fail"])
def test_metric_missing_from_the_baseline_counts_as_no_baseline(policy: str) -> None:
    gates = (Gate("accuracy", max_drop=0.01), Gate("roc_auc", max_drop=0.01))
    verdict = apply_gates(gates, {"accuracy": 0.95, "roc_auc": 0.99}, {"accuracy": 0.95}, policy)
    accuracy, roc_auc = verdict.checks
    assert accuracy.passed and accuracy.baseline == 0.95
    assert roc_auc.baseline is None and "no baseline" in roc_auc.message
    assert roc_auc.passed is (policy == "pass")
    assert verdict.no_baseline


def test_a_nan_baseline_value_cannot_be_compared() -> None:
    check = one(Gate("accuracy", max_drop=0.01), 0.9, math.nan, policy="fail")
    assert not check.passed and check.baseline is None and "no baseline" in check.message


def test_nan_value_fails_every_rule_on_that_metric_with_a_clear_message() -> None:
    gates = (
        Gate("r2", min=-10.0, max=10.0, max_drop=100.0, max_relative_drop=100.0),
        Gate("rmse", max=60),
    )
    verdict = apply_gates(gates, {"r2": math.nan, "rmse": 10.0}, {"r2": 0.4}, "pass")
    nan_checks = [c for c in verdict.checks if c.metric == "r2"]
    assert len(nan_checks) == 4
    assert all(not c.passed and "NaN" in c.message for c in nan_checks)
    assert [c.passed for c in verdict.checks if c.metric == "rmse"] == [True]
    assert not verdict.passed
    assert nan_checks[0].to_dict()["value"] is None


def test_a_metric_that_was_not_computed_fails_its_rules() -> None:
    verdict = apply_gates((Gate("roc_auc", min=0.9),), {}, None, "pass")
    assert not verdict.passed
    assert verdict.checks[0].message == "roc_auc was not computed: min fails"


def test_infinite_worsening_fails_and_infinite_improvement_passes() -> None:
    assert not one(Gate("log_loss", max_drop=1.0), math.inf, 0.2).passed
    assert one(Gate("log_loss", max_drop=1.0), 0.2, math.inf).passed


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="if_no_baseline"):
        apply_gates((), {}, None, "maybe")


def test_to_dict_has_the_gates_json_fields() -> None:
    verdict = apply_gates((Gate("accuracy", min=0.9),), {"accuracy": 0.95}, None, "pass")
    data = verdict.to_dict()
    assert data == {
        "passed": True,
        "no_baseline": False,
        "checks": [
            {
                "metric": "accuracy",
                "rule": "min",
                "threshold": 0.9,
                "value": 0.95,
                "baseline": None,
                "change": None,
                "passed": True,
                "message": "accuracy 0.95 is at or above min 0.9",
                "p_value": None,
                "warned": False,
                "overridden": None,
            }
        ],
    }


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
threshold = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(
    metric=st.sampled_from(sorted(HIGHER_IS_BETTER)),
    rule=st.sampled_from(["max_drop", "max_relative_drop"]),
    limit=threshold,
    base=finite,
    value=finite,
    step=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
def test_improving_a_metric_never_turns_a_pass_into_a_fail(
    metric: str, rule: str, limit: float, base: float, value: float, step: float
) -> None:
    gate = Gate(metric, **{rule: limit})
    better = value + step if HIGHER_IS_BETTER[metric] else value - step
    if one(gate, value, base).passed:
        assert one(gate, better, base).passed


@given(
    metric=st.sampled_from(sorted(HIGHER_IS_BETTER)),
    low=st.none() | finite,
    high=st.none() | finite,
    drop=st.none() | threshold,
    relative=st.none() | threshold,
    value=finite,
    base=st.none() | finite,
    policy=st.sampled_from(["pass", "fail"]),
)
def test_verdict_is_the_conjunction_of_one_check_per_rule(
    metric: str,
    low: float | None,
    high: float | None,
    drop: float | None,
    relative: float | None,
    value: float,
    base: float | None,
    policy: str,
) -> None:
    gate = Gate(metric, min=low, max=high, max_drop=drop, max_relative_drop=relative)
    baseline = None if base is None else {metric: base}
    verdict = apply_gates((gate,), {metric: value}, baseline, policy)
    assert len(verdict.checks) == sum(x is not None for x in (low, high, drop, relative))
    assert verdict.passed == all(c.passed for c in verdict.checks)
    assert verdict.failed == [c for c in verdict.checks if not c.passed]


# --- significance, warn mode, slices, importance ---------------------------------------


def paired_accuracy_changes(mine: list[int], theirs: list[int], samples: int = 400) -> list[float]:
    """Paired bootstrap changes of accuracy from per-row correctness (1 right, 0 wrong),
    through the same resampler evaluate uses."""
    import numpy as np

    from ci_mlops.steps.resample import bootstrap

    a, b = np.asarray(mine), np.asarray(theirs)
    resampled = bootstrap(
        lambda rows: {"accuracy": float(a[rows].mean())},
        len(a),
        samples,
        0.95,
        seed=1,
        baseline_score=lambda rows: {"accuracy": float(b[rows].mean())},
    )
    assert resampled.paired
    return resampled.changes["accuracy"]


def correctness(n: int, wrong: set[int]) -> list[int]:
    return [0 if i in wrong else 1 for i in range(n)]


def judge(gate: Gate, mine: list[int], theirs: list[int]) -> Check:
    value, before = sum(mine) / len(mine), sum(theirs) / len(theirs)
    evidence = Evidence(changes={"accuracy": paired_accuracy_changes(mine, theirs)}, paired=True)
    verdict = apply_gates(
        (gate,), {"accuracy": value}, {"accuracy": before}, "pass", None, evidence
    )
    return verdict.checks[0]


BASE_WRONG = set(range(0, 300, 10))  # 30 of 300 rows wrong: accuracy 0.9


def test_a_random_wobble_between_equal_models_is_not_significant() -> None:
    # Two rows the baseline got right are now wrong, one it got wrong is now right:
    # accuracy 0.9 -> 0.8967, the kind of difference a retrain with another seed makes.
    theirs = correctness(300, BASE_WRONG)
    mine = correctness(300, (BASE_WRONG - {0}) | {1, 2})
    strict = judge(Gate("accuracy", max_drop=0.0), mine, theirs)
    assert not strict.passed  # by point estimates the wobble fails
    noisy = judge(Gate("accuracy", max_drop=0.0, significance=0.05), mine, theirs)
    assert noisy.passed, noisy.message
    assert noisy.p_value is not None and noisy.p_value > 0.05
    assert "not significant (paired bootstrap p=" in noisy.message


def test_a_real_drop_is_significant() -> None:
    # 24 more wrong rows and none fixed: accuracy 0.9 -> 0.82.
    theirs = correctness(300, BASE_WRONG)
    mine = correctness(300, BASE_WRONG | set(range(1, 241, 10)))
    check = judge(Gate("accuracy", max_drop=0.0, significance=0.05), mine, theirs)
    assert not check.passed
    assert check.p_value is not None and check.p_value < 0.01
    assert "significant (paired bootstrap p=" in check.message


def test_significance_applies_to_relative_drops_and_lower_is_better_metrics() -> None:
    gate = Gate("rmse", max_relative_drop=0.1, significance=0.05)
    # rmse 10 -> 12 (+20%) but the resamples straddle no change: not significant.
    wobble = Evidence(changes={"rmse": [-1.0, 0.5, 2.0, 3.0, -0.5] * 20})
    verdict = apply_gates((gate,), {"rmse": 12.0}, {"rmse": 10.0}, "pass", None, wobble)
    assert verdict.passed, verdict.checks[0].message
    # Every resample is at least +15%: significant.
    drop = Evidence(changes={"rmse": [1.5, 2.0, 2.5, 3.0] * 25})
    verdict = apply_gates((gate,), {"rmse": 12.0}, {"rmse": 10.0}, "pass", None, drop)
    assert not verdict.passed
    assert verdict.checks[0].p_value == pytest.approx(1 / 101)


def test_without_resamples_the_point_estimate_decides() -> None:
    gate = Gate("accuracy", max_drop=0.0, significance=0.05)
    verdict = apply_gates((gate,), {"accuracy": 0.89}, {"accuracy": 0.9}, "pass")
    assert not verdict.passed and verdict.checks[0].p_value is None


def test_warn_mode_reports_without_failing() -> None:
    gate = Gate("accuracy", min=0.95, max_drop=0.01, mode="warn")
    verdict = apply_gates((gate,), {"accuracy": 0.9}, {"accuracy": 0.96}, "pass")
    assert verdict.passed
    assert [c.rule for c in verdict.warnings] == ["min", "max_drop"]
    assert all(c.passed and c.warned and c.message.endswith("[warn only]") for c in verdict.checks)
    assert verdict.failed == []


def test_a_model_worse_on_one_slice_fails_the_worst_slice_gate() -> None:
    gate = Gate("accuracy", min=0.85, worst_slice=0.8, max_slice_gap=0.1)
    slices = {"accuracy": {"region=eu": 0.6, "region=us": 0.97, "region=apac": 0.95}}
    verdict = apply_gates((gate,), {"accuracy": 0.9}, None, "pass", None, Evidence(slices=slices))
    by_rule = {c.rule: c for c in verdict.checks}
    assert by_rule["min"].passed
    assert not by_rule["worst_slice"].passed
    assert by_rule["worst_slice"].value == 0.6
    assert "worst slice region=eu is 0.6" in by_rule["worst_slice"].message
    assert not by_rule["max_slice_gap"].passed
    assert by_rule["max_slice_gap"].value == pytest.approx(0.37)


def test_worst_slice_follows_the_metric_direction() -> None:
    gate = Gate("rmse", worst_slice=50.0)
    ok = Evidence(slices={"rmse": {"plan=a": 40.0, "plan=b": 50.0}})
    bad = Evidence(slices={"rmse": {"plan=a": 40.0, "plan=b": 55.0}})
    assert apply_gates((gate,), {"rmse": 45.0}, None, "pass", None, ok).passed
    verdict = apply_gates((gate,), {"rmse": 45.0}, None, "pass", None, bad)
    assert not verdict.passed and "plan=b" in verdict.checks[0].message


def test_slice_rules_with_no_judged_slice_pass_and_say_so() -> None:
    verdict = apply_gates((Gate("f1", worst_slice=0.9),), {"f1": 0.95}, None, "pass")
    assert verdict.passed
    assert verdict.checks[0].message == "f1: no slice large enough to judge; slice rules pass"


def test_importance_rank_shift_and_top_feature() -> None:
    baseline = ["a", "b", "c", "d", "e"]
    moved = ["b", "c", "d", "a", "e"]
    checks = importance_checks(moved, baseline, 3, 2, True)
    by_rule = {c.rule: c for c in checks}
    assert not by_rule["max_rank_shift"].passed
    assert by_rule["max_rank_shift"].value == 3  # a: rank 1 -> 4
    assert "feature a moved 3 ranks" in by_rule["max_rank_shift"].message
    assert not by_rule["stable_top_feature"].passed
    assert "is now b, not a" in by_rule["stable_top_feature"].message
    same = importance_checks(["a", "c", "b", "d"], baseline, 3, 1, True)
    assert all(c.passed for c in same)
    warned = importance_checks(moved, baseline, 3, 2, True, mode="warn")
    assert all(c.passed and c.warned for c in warned)
    assert all(c.passed for c in importance_checks(moved, None, 3, 0, True))


# --- override labels ---------------------------------------------------------------


def test_a_failed_gate_passes_as_overridden_when_the_request_carries_its_label() -> None:
    gate = Gate("accuracy", max_drop=0.01, override_label="metric-drop-approved")
    metrics, base = {"accuracy": 0.90}, {"accuracy": 0.95}

    without = apply_gates((gate,), metrics, base, "pass", labels=frozenset({"other"}))
    labelled = apply_gates(
        (gate,), metrics, base, "pass", labels=frozenset({"metric-drop-approved"})
    )

    assert not without.passed and without.checks[0].overridden is None
    assert labelled.passed
    check = labelled.checks[0]
    assert check.passed and check.overridden == "metric-drop-approved"
    assert check.message.endswith("[overridden by label metric-drop-approved]")
    assert labelled.overrides == [check] and labelled.failed == []
    assert check.to_dict()["overridden"] == "metric-drop-approved"


def test_a_label_overrides_only_the_gate_that_names_it() -> None:
    gates = (
        Gate("accuracy", min=0.99, override_label="ok-accuracy"),
        Gate("f1", min=0.99),
    )
    verdict = apply_gates(
        gates, {"accuracy": 0.9, "f1": 0.9}, None, "pass", labels=frozenset({"ok-accuracy"})
    )
    assert not verdict.passed
    assert [c.metric for c in verdict.failed] == ["f1"]
    assert [c.metric for c in verdict.overrides] == ["accuracy"]


def test_a_passing_or_warned_check_is_not_marked_overridden() -> None:
    labels = frozenset({"go"})
    passing = apply_gates(
        (Gate("accuracy", min=0.5, override_label="go"),),
        {"accuracy": 0.9},
        None,
        "pass",
        labels=labels,
    )
    warned = apply_gates(
        (Gate("accuracy", min=0.99, mode="warn", override_label="go"),),
        {"accuracy": 0.9},
        None,
        "pass",
        labels=labels,
    )
    assert passing.overrides == [] and passing.checks[0].message.endswith("min 0.5")
    assert warned.overrides == [] and warned.warnings == warned.checks


def test_importance_gates_take_an_override_label() -> None:
    ranking, baseline = ["b", "a", "c"], ["a", "b", "c"]
    plain = importance_checks(ranking, baseline, 3, 0, True, override_label="imp-ok")
    labelled = importance_checks(
        ranking, baseline, 3, 0, True, override_label="imp-ok", labels=frozenset({"imp-ok"})
    )
    assert [c.passed for c in plain] == [False, False]
    assert [c.passed for c in labelled] == [True, True]
    assert [c.overridden for c in labelled] == ["imp-ok", "imp-ok"]
    assert (
        "is now b, not a (stable_top_feature) [overridden by label imp-ok]" in labelled[1].message
    )
