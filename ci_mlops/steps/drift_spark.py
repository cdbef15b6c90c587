"""Drift statistics on Apache Spark: the same numbers as the pandas path (drift.py),
computed where the data lives. Only counts, quantile edges and histograms come back to
the driver; the verdicts are drift.py's.

- Missing values: counts of nulls (and NaN in floating columns) per side.
- Categorical columns (not numeric, boolean, or at most 10 distinct values on both
  sides together): value counts per side.
- PSI: exact quantiles of the reference (Spark's ``percentile``, linear interpolation
  like numpy's default), then each side's histogram over those edges.
- Kolmogorov-Smirnov: up to 10,000 values a side, scipy's exact test on the collected
  values, as ks_2samp chooses; above, the statistic D from both empirical distribution
  functions and Smirnov's asymptotic p-value, which is what ks_2samp computes there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ci_mlops.steps.drift import (
    CATEGORICAL_MAX_UNIQUE,
    PSI_BINS,
    ColumnStats,
    Numeric,
    Sample,
    psi_of_counts,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# scipy's ks_2samp uses the exact distribution up to this many values on each side.
KS_EXACT_MAX = 10_000


def column_stats(reference: Sample, current: Sample, column: str) -> ColumnStats:
    ref, cur = reference.frame, current.frame
    counts = [_missing_present(frame, column) for frame in (ref, cur)]
    ref_vals, cur_vals = (_present(frame, column) for frame in (ref, cur))
    n_ref, n_cur = counts[0][1], counts[1][1]
    stats = ColumnStats(n_ref, n_cur, counts)
    if not n_ref or not n_cur:
        return stats
    if _is_categorical(ref_vals, cur_vals, column):
        return ColumnStats(
            n_ref, n_cur, counts, categories=(_counts(ref_vals, column), _counts(cur_vals, column))
        )
    return ColumnStats(
        n_ref, n_cur, counts, numeric=_numeric(ref_vals, cur_vals, column, n_ref, n_cur)
    )


def _is_nan_able(frame: DataFrame, column: str) -> bool:
    from pyspark.sql.types import DoubleType, FloatType

    return isinstance(frame.schema[column].dataType, DoubleType | FloatType)


def _missing_expr(frame: DataFrame, column: str) -> Column:
    from pyspark.sql import functions as F

    col = F.col(f"`{column}`")
    return (col.isNull() | F.isnan(col)) if _is_nan_able(frame, column) else col.isNull()


def _missing_present(frame: DataFrame, column: str) -> tuple[int, int]:
    from pyspark.sql import functions as F

    row = frame.agg(
        F.sum(F.when(_missing_expr(frame, column), 1).otherwise(0)).alias("missing"),
        F.count(F.lit(1)).alias("rows"),
    ).first()
    assert row is not None
    missing = int(row["missing"] or 0)
    return missing, int(row["rows"]) - missing


def _present(frame: DataFrame, column: str) -> DataFrame:
    return frame.select(f"`{column}`").where(~_missing_expr(frame, column))


def _is_categorical(ref: DataFrame, cur: DataFrame, column: str) -> bool:
    from pyspark.sql.types import BooleanType, NumericType

    types = [side.schema[column].dataType for side in (ref, cur)]
    if not all(isinstance(t, NumericType) for t in types):
        return True
    if any(isinstance(t, BooleanType) for t in types):
        return True
    both = ref.union(cur).distinct().limit(CATEGORICAL_MAX_UNIQUE + 1)
    return both.count() <= CATEGORICAL_MAX_UNIQUE


def _counts(frame: DataFrame, column: str) -> dict[str, int]:
    rows = frame.groupBy(f"`{column}`").count().collect()
    return {_label(r[0]): int(r[1]) for r in rows}


def _label(value: Any) -> str:
    # pandas names categories with str(): 1.0, True; keep the same labels.
    return str(value)


def _numeric(ref: DataFrame, cur: DataFrame, column: str, n_ref: int, n_cur: int) -> Numeric:
    import numpy as np
    from pyspark.sql import functions as F

    col = F.col(f"`{column}`").cast("double")
    ref, cur = ref.select(col.alias("v")), cur.select(col.alias("v"))
    probs = np.linspace(0, 1, PSI_BINS + 1)
    quantiles = ref.agg(F.percentile("v", F.array(*[F.lit(float(p)) for p in probs]))).first()
    assert quantiles is not None
    edges = np.unique(np.array(quantiles[0], dtype=float))[1:-1]
    bins = len(edges) + 1
    expected, actual = (_histogram(side, edges, bins) for side in (ref, cur))
    means = [float(side.agg(F.avg("v")).first()[0]) for side in (ref, cur)]  # type: ignore[index]
    return Numeric(
        psi_of_counts(expected, actual),
        bins,
        _ks_pvalue(ref, cur, n_ref, n_cur),
        means[0],
        means[1],
        n_ref,
        n_cur,
    )


def _histogram(frame: DataFrame, edges: Any, bins: int) -> Any:
    """Counts per bin, bin i holding values v with edges[i-1] <= v < edges[i] (numpy's
    searchsorted(side="right"))."""
    import numpy as np
    from pyspark.sql import functions as F

    index = sum((F.when(F.col("v") >= float(e), 1).otherwise(0) for e in edges), F.lit(0))
    rows = frame.groupBy(index.alias("bin")).count().collect()
    counts = np.zeros(bins, dtype=float)
    for row in rows:
        counts[int(row["bin"])] = int(row["count"])
    return counts


def _ks_pvalue(ref: DataFrame, cur: DataFrame, n_ref: int, n_cur: int) -> float:
    from scipy.stats import kstwo

    if max(n_ref, n_cur) <= KS_EXACT_MAX:
        import numpy as np
        from scipy.stats import ks_2samp

        values = [np.array([r[0] for r in side.collect()], dtype=float) for side in (ref, cur)]
        return float(ks_2samp(values[0], values[1]).pvalue)
    m, n = sorted([float(n_ref), float(n_cur)], reverse=True)
    return float(kstwo.sf(_ks_statistic(ref, cur, n_ref, n_cur), round(m * n / (m + n))))


def _ks_statistic(ref: DataFrame, cur: DataFrame, n_ref: int, n_cur: int) -> float:
    """The largest gap between the two empirical distribution functions, evaluated at
    every distinct value (where they jump)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sides = ref.select("v", F.lit(1).alias("r"), F.lit(0).alias("c")).union(
        cur.select("v", F.lit(0).alias("r"), F.lit(1).alias("c"))
    )
    per_value = sides.groupBy("v").agg(F.sum("r").alias("r"), F.sum("c").alias("c"))
    upto = Window.orderBy("v").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    gaps = per_value.select(
        F.abs(F.sum("r").over(upto) / n_ref - F.sum("c").over(upto) / n_cur).alias("gap")
    )
    row = gaps.agg(F.max("gap")).first()
    return float(row[0]) if row is not None else 0.0
