"""Bootstrap resampling of the eval rows: a confidence interval for every metric, and
resamples of the change against the baseline for the significance gates.

With 143 eval rows one changed prediction moves accuracy by 0.7 points, so a point
estimate cannot tell a worse model from a lucky draw. Resampling the rows with
replacement shows how much a metric moves by chance on data like this. When the
baseline model is at hand both models are scored on the *same* resampled rows (a
paired bootstrap): the rows both get right or wrong cancel out, and only the rows on
which they disagree decide, which is far more sensitive than comparing two intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# Scores the rows at the given positions: metric name -> value (NaN when undefined).
Scorer = Callable[["np.ndarray"], dict[str, float]]


@dataclass(frozen=True)
class Resampled:
    """Per metric: the interval at ``level`` and, against a baseline, the resampled
    changes ``value - baseline`` the significance gates judge."""

    level: float
    samples: int
    paired: bool
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    changes: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What metrics.json records: the intervals and, per metric, the interval of the
        change (the resamples themselves stay out: they are only for the gates)."""
        return {
            "level": self.level,
            "samples": self.samples,
            "paired": self.paired,
            "metrics": {k: _pair(v) for k, v in self.intervals.items()},
            "changes": {k: _pair(self.interval(v)) for k, v in self.changes.items()},
        }

    def interval(self, values: list[float]) -> tuple[float, float]:
        return percentile_interval(values, self.level)


def bootstrap(
    score: Scorer,
    n_rows: int,
    samples: int,
    level: float,
    seed: int,
    baseline: dict[str, float] | None = None,
    baseline_score: Scorer | None = None,
) -> Resampled:
    """Resample the ``n_rows`` eval rows ``samples`` times. ``baseline_score`` scores
    the baseline model on the same rows (paired); without it the changes are this
    run's resampled values minus the ``baseline`` point values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    changes: dict[str, list[float]] = {}
    for _ in range(samples):
        rows = rng.integers(0, n_rows, n_rows)
        mine = score(rows)
        theirs = baseline_score(rows) if baseline_score else baseline or {}
        for name, value in mine.items():
            values.setdefault(name, []).append(value)
            before = theirs.get(name)
            if before is not None and math.isfinite(value) and math.isfinite(before):
                changes.setdefault(name, []).append(value - before)
    intervals = {name: percentile_interval(v, level) for name, v in values.items()}
    return Resampled(level, samples, baseline_score is not None, intervals, changes)


def percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of the finite values (NaN, NaN when none): a
    resample can leave out a class, which makes roc_auc undefined on it."""
    import numpy as np

    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _pair(pair: tuple[float, float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in pair]
