"""``ci-mlops gates --suggest``: quality gates calibrated on what the model achieves.

A newcomer does not know what accuracy their model reaches, so hand-picked bounds either
fail a good first run or protect nothing. This trains once (or reuses the model already
trained from the same inputs), evaluates it, and proposes for every metric of the spec a
bound a margin worse than the value reached, plus a limit on the change against the
default branch's model. Each proposed gate carries a comment saying from which value and
model it was calibrated, so a reader knows it is measured, not chosen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ci_mlops import log
from ci_mlops.errors import GateFailed
from ci_mlops.records import MetricsRecord
from ci_mlops.spec.edit import GateEdit, set_gates
from ci_mlops.spec.model import HIGHER_IS_BETTER, Gate, Model, Spec

# A bound sits this fraction of the value's size worse than the value reached: wide
# enough for a retrain's noise, narrow enough to catch a broken model.
MARGIN = 0.05
# Limits on the change against the baseline, when the spec sets none: an absolute drop
# for scores between 0 and 1, a relative one for errors, whose scale is the data's.
MAX_DROP = 0.02
MAX_RELATIVE_DROP = 0.05
_UNIT_SCORES = ("accuracy", "precision", "recall", "f1", "roc_auc", "r2")


@dataclass(frozen=True)
class Suggestion:
    """The gate proposed for one metric and the value it was calibrated on."""

    model_index: int
    gate: Gate
    value: float
    model_sha256: str

    def as_edit(self, day: str) -> GateEdit:
        rules = {
            k: v
            for k in ("min", "max", "max_drop", "max_relative_drop")
            if (v := getattr(self.gate, k)) is not None
        }
        comment = f"calibrated {day}: {self.value:.4g} by model {self.model_sha256[:12]}"
        return GateEdit(self.model_index, self.gate.metric, rules, comment)


def suggest(spec: Spec, models: list[Model]) -> list[Suggestion]:
    """Train (unless cached) and evaluate each model; the gates its metrics support."""
    out: list[Suggestion] = []
    for model in models:
        values, sha = _measure(spec, model)
        index = spec.models.index(model)
        for gate in model.gates:
            value = values.get(gate.metric)
            if isinstance(value, int | float) and math.isfinite(value):
                out.append(Suggestion(index, calibrated(gate, float(value)), float(value), sha))
            else:
                log.warn(f"{model.name}: {gate.metric} has no value to calibrate on; left as it is")
    return out


def _measure(spec: Spec, model: Model) -> tuple[dict[str, float], str]:
    from ci_mlops.steps import evaluate, train

    train.run(spec, model)
    try:
        evaluate.run(spec, model)
    except GateFailed as exc:
        # The metrics are written before the verdict: what the gates say now is the
        # very thing being replaced.
        log.info(f"{model.name}: the current gates fail ({exc}); suggesting new ones")
    metrics = MetricsRecord.read(spec.workdir(model))
    values = {k: v for k, v in metrics.metrics.items() if v is not None}
    return values, metrics.model_sha256 or ""


def calibrated(gate: Gate, value: float) -> Gate:
    """``gate`` with a bound ``MARGIN`` worse than ``value`` (rounded away from it, to
    three significant digits) and a change limit unless it already has one."""
    higher = HIGHER_IS_BETTER[gate.metric]
    margin = MARGIN * max(abs(value), 1e-9)
    bound = _round(value - margin if higher else value + margin, down=higher)
    has_change = gate.max_drop is not None or gate.max_relative_drop is not None
    unit = gate.metric in _UNIT_SCORES
    return Gate(
        metric=gate.metric,
        min=bound if higher else None,
        max=None if higher else bound,
        max_drop=gate.max_drop if has_change else (MAX_DROP if unit else None),
        max_relative_drop=(
            gate.max_relative_drop if has_change else (None if unit else MAX_RELATIVE_DROP)
        ),
    )


def _round(value: float, *, down: bool) -> float:
    if value == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 2)
    rounded = (math.floor if down else math.ceil)(value / scale) * scale
    return float(f"{rounded:.6g}")


def as_yaml(spec: Spec, suggestions: list[Suggestion]) -> str:
    """The suggestions as the ``metrics:`` block of each model, ready to paste."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    lines: list[str] = []
    for index in sorted({s.model_index for s in suggestions}):
        lines.append(f"# {spec.models[index].name}")
        lines.append("metrics:")
        for s in (s for s in suggestions if s.model_index == index):
            edit = s.as_edit(day)
            lines.append(f"  {s.gate.metric}: {edit.flow()}   # {edit.comment}")
    return "\n".join(lines)


def write(spec_path: Path, suggestions: list[Suggestion]) -> None:
    """Put the suggested gates into the spec file itself, keeping everything else."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    set_gates(spec_path, [s.as_edit(day) for s in suggestions])
