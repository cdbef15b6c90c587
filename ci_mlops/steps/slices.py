"""Metrics per slice of the eval data: per value of each declared column (per quartile
for numeric columns with many values), so that a model that got worse for one region
or plan shows it even when the overall metric holds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ci_mlops.errors import StepError
from ci_mlops.steps.resample import Scorer

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# A numeric column with more distinct values than this is cut into quartiles.
MAX_VALUES = 10
QUANTILES = 4


@dataclass(frozen=True)
class Slice:
    """One slice: which column and value, how many eval rows, the metrics on them, and
    whether it has enough rows to be gated."""

    column: str
    label: str
    rows: int
    metrics: dict[str, float]
    gated: bool

    @property
    def name(self) -> str:
        return f"{self.column}={self.label}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "slice": self.label,
            "rows": self.rows,
            "gated": self.gated,
            "metrics": {k: v if math.isfinite(v) else None for k, v in self.metrics.items()},
        }


def compute_slices(
    frame: pd.DataFrame, columns: tuple[str, ...], score: Scorer, min_rows: int, where: str
) -> list[Slice]:
    """Every slice of every column, in column order then by label. ``where`` names the
    spec field for the message when a column is not in the eval data."""
    import numpy as np

    out = []
    for column in columns:
        if column not in frame.columns:
            known = ", ".join(map(str, frame.columns[:20]))
            raise StepError(f"{where}: column {column!r} is not in the eval data ({known})")
        labels = slice_labels(frame[column])
        for label in sorted(set(labels), key=_order):
            rows = np.flatnonzero(labels == label)
            out.append(Slice(column, label, len(rows), score(rows), len(rows) >= min_rows))
    return out


def slice_labels(column: pd.Series) -> np.ndarray:
    """A label per row: the value itself, or its quartile's range for a numeric column
    with many values (its edges written short, so the label reads in a table)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) and column.nunique() > MAX_VALUES:
        bins = pd.qcut(column, QUANTILES, duplicates="drop")
        return np.asarray(
            [
                f"[{b.left:.4g}, {b.right:.4g}]" if isinstance(b, pd.Interval) else "missing"
                for b in bins
            ]
        )
    return np.asarray(["missing" if pd.isna(v) else str(v) for v in column])


def _order(label: str) -> tuple[int, float, str]:
    """Quartiles by their lower edge, then values as text, then the missing slice."""
    if label == "missing":
        return (2, 0.0, label)
    if label.startswith("[") and "," in label:
        try:
            return (0, float(label[1:].split(",", 1)[0]), label)
        except ValueError:
            pass
    return (1, 0.0, label)


def gated_values(slices: list[Slice]) -> dict[str, dict[str, float]]:
    """Per metric, the value of every slice large enough to be judged."""
    out: dict[str, dict[str, float]] = {}
    for item in slices:
        if item.gated:
            for metric, value in item.metrics.items():
                out.setdefault(metric, {})[item.name] = value
    return out
