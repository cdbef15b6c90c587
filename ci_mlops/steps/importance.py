"""Permutation importance: how much a metric worsens when one feature's values are
shuffled across the eval rows, breaking its link with the target.

It needs nothing but the model's predictions, so it works for every framework (a
scikit-learn pipeline, a booster, a TorchScript network) and measures the model as it
will be served. A feature the model ignores keeps its score when shuffled: importance
0, last place. The measurement stops at a time budget so that a wide table cannot make
CI slow; features not reached are listed as not measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# Scores predictions made on a (shuffled) copy of the eval features.
FrameScorer = Callable[["pd.DataFrame"], float]


@dataclass(frozen=True)
class Feature:
    """One feature's importance: the mean and spread of the metric's worsening."""

    name: str
    mean: float
    std: float


@dataclass(frozen=True)
class Ranking:
    """Features from most to least important, and those the budget did not reach."""

    metric: str
    score: float
    repeats: int
    seconds: float
    features: list[Feature] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)

    @property
    def order(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "score": _finite(self.score),
            "repeats": self.repeats,
            "seconds": round(self.seconds, 3),
            "features": [
                {"name": f.name, "mean": _finite(f.mean), "std": _finite(f.std)}
                for f in self.features
            ],
            "not_measured": self.not_measured,
        }


def permutation_importance(
    features: pd.DataFrame,
    score: FrameScorer,
    metric: str,
    higher_is_better: bool,
    repeats: int,
    budget_seconds: float,
    seed: int = 0,
) -> Ranking:
    """Shuffle each column ``repeats`` times and record the metric's worsening."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = time.monotonic()
    reference = score(features)
    measured: list[Feature] = []
    names = [str(c) for c in features.columns]
    for index, column in enumerate(features.columns):
        if time.monotonic() - start > budget_seconds:
            return _ranking(metric, reference, repeats, start, measured, names[index:])
        drops = []
        for _ in range(repeats):
            shuffled = features.copy()
            shuffled[column] = rng.permutation(features[column].to_numpy())
            after = score(shuffled)
            drops.append(reference - after if higher_is_better else after - reference)
        measured.append(Feature(str(column), float(np.mean(drops)), float(np.std(drops))))
    return _ranking(metric, reference, repeats, start, measured, [])


def _ranking(
    metric: str,
    reference: float,
    repeats: int,
    start: float,
    measured: list[Feature],
    left: list[str],
) -> Ranking:
    # NaN (a metric undefined on a shuffle) sorts last; ties keep the column order.
    ordered = sorted(measured, key=lambda f: -f.mean if math.isfinite(f.mean) else math.inf)
    return Ranking(metric, reference, repeats, time.monotonic() - start, ordered, left)


def compare(ranking: list[str], baseline: list[str] | None, top_k: int) -> dict[str, Any]:
    """Rank changes of the top ``top_k`` features of either run, and the features
    that entered or left the top ``top_k``."""
    if baseline is None:
        return {"baseline": False}
    mine, theirs = ranking[:top_k], baseline[:top_k]
    moves = {}
    for name in dict.fromkeys([*mine, *theirs]):
        now = ranking.index(name) + 1 if name in ranking else None
        before = baseline.index(name) + 1 if name in baseline else None
        moves[name] = {"rank": now, "baseline_rank": before}
    return {
        "baseline": True,
        "ranks": moves,
        "entered": [n for n in mine if n not in theirs],
        "left": [n for n in theirs if n not in mine],
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
