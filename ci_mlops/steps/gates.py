"""Quality gates: judge a model's metrics against fixed bounds and against a baseline.

Pure Python on purpose (no numpy): the verdict logic is the part of ci-mlops people
must be able to read and trust, and it is tested on its own.

Rules per metric, each optional:

- ``min`` / ``max``: bounds on the value itself.
- ``max_drop``: the largest allowed worsening against the baseline, in the metric's
  own units. "Worsening" follows the metric's direction (accuracy down, rmse up).
- ``max_relative_drop``: the same, as a fraction of ``|baseline|``.

- ``significance``: change rules fail only when the drop beyond their threshold is
  statistically significant at this level, judged on bootstrap resamples of the change
  (:class:`Evidence`); without resamples the point estimate decides, as before.
- ``worst_slice`` / ``max_slice_gap``: the metric's worst slice and its gap to the best.
- ``mode: warn``: a rule that does not hold is reported (``warned``) but passes.
- ``override_label``: when the merge/pull request carries this label, a rule that does
  not hold is reported as overridden by it (``overridden``) and passes.

A value exactly on a threshold passes (within float rounding, so that 0.95 - 0.93 is
not judged larger than 0.02). Every rule is checked and every failure is reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ci_mlops.spec.model import Gate

RULES = ("min", "max", "max_drop", "max_relative_drop")
CHANGE_RULES = ("max_drop", "max_relative_drop")
SLICE_RULES = ("worst_slice", "max_slice_gap")


@dataclass(frozen=True)
class Evidence:
    """What evaluate measured beyond point values, for the rules that need it.

    ``changes`` holds, per metric, bootstrap resamples of ``value - baseline``: paired
    (both models scored on the same resampled rows) when ``paired``, else this run's
    resampled values minus the baseline's point value. ``slices`` holds, per metric,
    the value of every slice large enough to be judged."""

    changes: dict[str, list[float]] = field(default_factory=dict)
    paired: bool = False
    slices: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One rule of one gate, as judged. ``change`` is the signed change the rule
    compared: ``value - baseline`` for max_drop, that divided by ``|baseline|`` for
    max_relative_drop, None for bounds and when there is no baseline."""

    metric: str
    rule: str
    threshold: float
    value: float | None
    baseline: float | None
    change: float | None
    passed: bool
    message: str
    # Share of resamples in which the rule held (one-sided bootstrap p-value); None
    # when no significance level was asked for or nothing was resampled.
    p_value: float | None = None
    # The rule did not hold but its gate is in warn mode, so ``passed`` is True.
    warned: bool = False
    # The rule did not hold but the request carries this override label of its gate,
    # so ``passed`` is True.
    overridden: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_number(val) for key, val in asdict(self).items()}


@dataclass(frozen=True)
class GateVerdict:
    """Every check of every gate. ``no_baseline`` is True when a change rule had no
    baseline value to compare with (first run, or a metric the baseline lacks)."""

    passed: bool
    checks: list[Check] = field(default_factory=list)
    no_baseline: bool = False

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.warned]

    @property
    def overrides(self) -> list[Check]:
        return [c for c in self.checks if c.overridden]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "no_baseline": self.no_baseline,
            "checks": [c.to_dict() for c in self.checks],
        }


def apply_gates(
    gates: tuple[Gate, ...],
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
    if_no_baseline: str,
    missing: str | None = None,
    evidence: Evidence | None = None,
    extra: tuple[Check, ...] = (),
    labels: frozenset[str] = frozenset(),
) -> GateVerdict:
    """Judge ``metrics`` by ``gates``; ``baseline`` holds the metrics to compare with.

    ``if_no_baseline`` ("pass" or "fail") decides change rules that have nothing to
    compare with. ``missing`` says why a baseline that once existed is gone (expired):
    then change rules fail whatever ``if_no_baseline`` says, with that reason. A metric
    missing from ``metrics`` or NaN fails every rule on it. ``evidence`` feeds the
    significance and slice rules; ``extra`` are checks judged elsewhere (importance).
    ``labels`` are the merge/pull request's labels, for gates with an override label.
    """
    if if_no_baseline not in ("pass", "fail"):
        raise ValueError(f"if_no_baseline must be 'pass' or 'fail', not {if_no_baseline!r}")
    evidence = evidence or Evidence()
    checks: list[Check] = []
    for gate in gates:
        value = metrics.get(gate.metric)
        before = _baseline_value(baseline, gate.metric)
        for rule in RULES:
            threshold = getattr(gate, rule)
            if threshold is not None:
                check = _check(gate, rule, float(threshold), value, before, if_no_baseline)
                check = _unavailable(check, missing) if missing else check
                check = _warn(gate.mode, _significant(gate, check, evidence))
                checks.append(override(gate.override_label, labels, check))
        checks += [
            override(gate.override_label, labels, _warn(gate.mode, c))
            for c in slice_checks(gate, evidence.slices)
        ]
    checks += extra
    no_baseline = any(c.rule in CHANGE_RULES and c.baseline is None for c in checks)
    return GateVerdict(all(c.passed for c in checks), checks, no_baseline)


def _warn(mode: str, check: Check) -> Check:
    """In warn mode a rule that does not hold is reported, and passes."""
    if mode != "warn" or check.passed:
        return check
    return replace(check, passed=True, warned=True, message=f"{check.message} [warn only]")


def override(label: str | None, labels: frozenset[str], check: Check) -> Check:
    """A rule that does not hold passes when the request carries the gate's override
    label: someone allowed to label the request accepted the change, and the check
    still says so."""
    if label is None or check.passed or label not in labels:
        return check
    message = f"{check.message} [overridden by label {label}]"
    return replace(check, passed=True, overridden=label, message=message)


def _significant(gate: Gate, check: Check, evidence: Evidence) -> Check:
    """A failed change rule stands only if the resamples show the drop beyond the
    threshold at the gate's level: the p-value is the share of resamples (plus one, the
    usual correction) in which the rule held."""
    level = gate.significance
    samples = evidence.changes.get(gate.metric)
    if level is None or check.rule not in CHANGE_RULES or check.baseline is None:
        return check
    if not samples or check.value is None or math.isnan(check.value):
        return check
    held = sum(_holds(gate, check, delta) for delta in samples)
    p_value = (held + 1) / (len(samples) + 1)
    kind = "paired bootstrap" if evidence.paired else "bootstrap"
    if check.passed:
        return replace(check, p_value=p_value)
    if p_value <= level:
        note = f"; significant ({kind} p={p_value:.3g} <= {level:g})"
        return replace(check, p_value=p_value, message=check.message + note)
    note = f"; not significant ({kind} p={p_value:.3g} > {level:g}): passes"
    return replace(check, passed=True, p_value=p_value, message=check.message + note)


def _holds(gate: Gate, check: Check, delta: float) -> bool:
    """Whether the change rule holds for one resampled change ``delta``."""
    assert check.baseline is not None
    worse = -delta if gate.higher_is_better else delta
    if check.rule == "max_relative_drop":
        if check.baseline == 0:
            return not worse > 0
        worse /= abs(check.baseline)
    return worse <= check.threshold or _close(worse, check.threshold)


def slice_checks(gate: Gate, slices: dict[str, dict[str, float]]) -> list[Check]:
    """The worst-slice bound and the best-to-worst gap of one metric's slices."""
    values = {k: v for k, v in slices.get(gate.metric, {}).items() if not math.isnan(v)}
    name, out = gate.metric, []
    if not values:
        if gate.worst_slice is not None or gate.max_slice_gap is not None:
            message = f"{name}: no slice large enough to judge; slice rules pass"
            out.append(Check(name, "slices", 0.0, None, None, None, True, message))
        return out
    pick = min if gate.higher_is_better else max
    worst = pick(values, key=values.__getitem__)
    best = (max if gate.higher_is_better else min)(values, key=values.__getitem__)
    if gate.worst_slice is not None:
        limit = gate.worst_slice
        ok = worsening(gate.higher_is_better, values[worst], limit) <= 0 or _close(
            values[worst], limit
        )
        verb = "within" if ok else "beyond"
        message = (
            f"{name} of worst slice {worst} is {_f(values[worst])}, {verb} worst_slice {_f(limit)}"
        )
        out.append(Check(name, "worst_slice", limit, values[worst], None, None, ok, message))
    if gate.max_slice_gap is not None:
        gap = abs(values[best] - values[worst])
        ok = gap <= gate.max_slice_gap or _close(gap, gate.max_slice_gap)
        message = f"{name} gap between best slice {best} ({_f(values[best])}) and worst slice {worst} ({_f(values[worst])}) is {_f(gap)} (max_slice_gap {_f(gate.max_slice_gap)})"
        out.append(Check(name, "max_slice_gap", gate.max_slice_gap, gap, None, None, ok, message))
    return out


def importance_checks(
    ranking: list[str],
    baseline: list[str] | None,
    top_k: int,
    max_rank_shift: int | None,
    stable_top_feature: bool,
    mode: str = "fail",
    override_label: str | None = None,
    labels: frozenset[str] = frozenset(),
) -> list[Check]:
    """Gates on how the features' importance ranks moved against the baseline's: the
    largest rank move among the baseline's top ``top_k`` features, and whether the most
    important feature is still the same. No baseline ranking: nothing to judge (passes).
    A failed one passes, marked overridden, when ``labels`` hold ``override_label``."""
    out = []
    if max_rank_shift is not None:
        out.append(_rank_shift_check(ranking, baseline, top_k, max_rank_shift))
    if stable_top_feature:
        out.append(_top_feature_check(ranking, baseline))
    return [override(override_label, labels, _warn(mode, c)) for c in out]


def _rank_shift_check(
    ranking: list[str], baseline: list[str] | None, top_k: int, limit: int
) -> Check:
    rule = "max_rank_shift"
    if not baseline:
        return Check(
            "importance",
            rule,
            limit,
            None,
            None,
            None,
            True,
            f"importance {rule}: no baseline ranking to compare with",
        )
    shifts = {
        f: abs(ranking.index(f) - i) if f in ranking else len(ranking)
        for i, f in enumerate(baseline[:top_k])
    }
    feature = max(shifts, key=shifts.__getitem__)
    shift = shifts[feature]
    ok = shift <= limit
    message = f"importance: feature {feature} moved {shift} ranks (max_rank_shift {limit})"
    return Check("importance", rule, limit, float(shift), None, None, ok, message)


def _top_feature_check(ranking: list[str], baseline: list[str] | None) -> Check:
    rule = "stable_top_feature"
    if not baseline or not ranking:
        return Check(
            "importance",
            rule,
            0.0,
            None,
            None,
            None,
            True,
            f"importance {rule}: no baseline ranking to compare with",
        )
    ok = ranking[0] == baseline[0]
    verb = "is still" if ok else f"is now {ranking[0]}, not"
    message = f"importance: the most important feature {verb} {baseline[0]} (stable_top_feature)"
    return Check("importance", rule, 0.0, None, None, None, ok, message)


def _unavailable(check: Check, missing: str) -> Check:
    """A change rule judged against a baseline that exists no more: it fails."""
    if check.rule not in CHANGE_RULES or check.baseline is not None or check.value is None:
        return check
    message = f"{check.metric} {check.rule}: no baseline to compare with: {missing}"
    return replace(check, passed=False, message=message)


def worsening(higher_is_better: bool, value: float, baseline: float) -> float:
    """How much worse ``value`` is than ``baseline``; negative when it is better."""
    return baseline - value if higher_is_better else value - baseline


def _baseline_value(baseline: dict[str, float] | None, metric: str) -> float | None:
    """The baseline's value for ``metric``; None when it has none (NaN counts as none:
    nothing can be compared with it)."""
    if baseline is None:
        return None
    raw = baseline.get(metric)
    if raw is None or not isinstance(raw, int | float) or math.isnan(raw):
        return None
    return float(raw)


# How a value bound reads when it holds and when it does not.
_BOUND_WORDS = {"min": ("at or above", "below"), "max": ("at or below", "above")}


def _check(
    gate: Gate,
    rule: str,
    threshold: float,
    value: float | None,
    baseline: float | None,
    if_no_baseline: str,
) -> Check:
    name = gate.metric
    if value is None or math.isnan(value):
        why = "was not computed" if value is None else "is NaN (undefined on the eval data)"
        return Check(
            name, rule, threshold, value, baseline, None, False, f"{name} {why}: {rule} fails"
        )
    if rule in _BOUND_WORDS:
        within = value >= threshold if rule == "min" else value <= threshold
        ok = within or _close(value, threshold)
        passed_words, failed_words = _BOUND_WORDS[rule]
        verb = f"is {passed_words if ok else failed_words} {rule}"
        return Check(
            name,
            rule,
            threshold,
            value,
            baseline,
            None,
            ok,
            f"{name} {_f(value)} {verb} {_f(threshold)}",
        )
    if baseline is None:
        ok = if_no_baseline == "pass"
        message = (
            f"{name} {rule}: no baseline to compare with (baseline.if_missing: {if_no_baseline})"
        )
        return Check(name, rule, threshold, value, None, None, ok, message)
    return _change_check(gate, rule, threshold, value, baseline)


def _change_check(gate: Gate, rule: str, threshold: float, value: float, baseline: float) -> Check:
    name = gate.metric
    worse = worsening(gate.higher_is_better, value, baseline)
    delta = value - baseline
    if rule == "max_drop":
        ok = not math.isnan(worse) and (worse <= threshold or _close(worse, threshold))
        message = f"{name} {_moved(worse, _f(abs(delta)))} from baseline {_f(baseline)} to {_f(value)} (max_drop {_f(threshold)})"
        return Check(name, rule, threshold, value, baseline, delta, ok, message)
    if baseline == 0:
        # Relative to zero, any worsening is infinitely large and no worsening is none.
        ok = not worse > 0
        relative = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        message = f"{name} {_moved(worse, _f(abs(delta)))} from baseline 0 to {_f(value)}; relative to a baseline of 0 {'nothing' if ok else 'every worsening'} exceeds max_relative_drop {_pct(threshold)} (use max_drop for metrics near 0)"
        return Check(name, rule, threshold, value, baseline, relative, ok, message)
    relative = delta / abs(baseline)
    relative_worse = worse / abs(baseline)
    ok = not math.isnan(relative_worse) and (
        relative_worse <= threshold or _close(relative_worse, threshold)
    )
    message = f"{name} {_moved(worse, _pct(abs(relative)))} from baseline {_f(baseline)} to {_f(value)} (max_relative_drop {_pct(threshold)})"
    return Check(name, rule, threshold, value, baseline, relative, ok, message)


def _moved(worse: float, amount: str) -> str:
    if math.isnan(worse):
        return "cannot be compared"
    if worse > 0:
        return f"got worse by {amount}"
    if worse < 0:
        return f"improved by {amount}"
    return "is unchanged"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _f(x: float) -> str:
    return f"{x:.6g}"


def _pct(x: float) -> str:
    return f"{x * 100:.4g}%"


def _json_number(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null so strict parsers read the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
