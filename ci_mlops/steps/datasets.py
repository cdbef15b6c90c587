"""Load a spec dataset into pandas: one file, or separate feature and label files."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ci_mlops.errors import StepError
from ci_mlops.spec.model import Dataset

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Loaded:
    """A dataset in memory. ``frame`` holds every column (features and target);
    ``target`` names the target column, or is None when the dataset has none."""

    frame: pd.DataFrame
    target: str | None

    @property
    def features(self) -> pd.DataFrame:
        return self.frame.drop(columns=[self.target]) if self.target else self.frame

    @property
    def labels(self) -> pd.Series:
        if not self.target:
            raise StepError("this dataset has no target column")
        return self.frame[self.target]


def read_table(path: Path, dataset: Dataset) -> pd.DataFrame:
    """Read one CSV or Parquet file with the dataset's format options."""
    import pandas as pd

    if not path.is_file():
        raise StepError(f"{path}: data file not found")
    try:
        if dataset.format == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep=dataset.delimiter, header=0 if dataset.header else None)
    except MemoryError:
        raise too_large(path) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        if out_of_memory(exc):
            raise too_large(path) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"{path}: cannot read as {dataset.format}: {first}") from None


def out_of_memory(exc: Exception) -> bool:
    """pandas reports running out of memory as MemoryError, as OSError ENOMEM (reading
    the file) or as a ParserError of its C tokenizer."""
    return getattr(exc, "errno", None) == errno.ENOMEM or "out of memory" in str(exc)


def too_large(path: Path) -> StepError:
    """A data file that does not fit in this machine's memory, with its size."""
    size = path.stat().st_size
    return StepError(
        f"{path}: {size:,} bytes ({size / 1024**2:,.0f} MiB) do not fit in the memory "
        "available to this job; give the job more memory or point the spec at a sample"
    )


def load_dataset(root: Path, dataset: Dataset, *, need_target: bool = True) -> Loaded:
    """Load ``dataset`` (paths relative to ``root``); check that the target exists."""
    if dataset.path:
        frame = read_table(root / dataset.path, dataset)
        frame.columns = [str(c) for c in frame.columns]
        target = dataset.target
        if target and target not in frame.columns:
            raise StepError(_missing(root / dataset.path, target, list(frame.columns)))
        if need_target and not target:
            raise StepError(
                f"{root / dataset.path}: the spec names no target column for this dataset"
            )
        return Loaded(frame, target)
    assert dataset.features and dataset.labels
    features = read_table(root / dataset.features, dataset)
    labels = read_table(root / dataset.labels, dataset)
    features.columns = [str(c) for c in features.columns]
    labels.columns = [str(c) for c in labels.columns]
    target = dataset.target or str(labels.columns[0])
    if target not in labels.columns:
        raise StepError(_missing(root / dataset.labels, target, list(labels.columns)))
    if len(features) != len(labels):
        raise StepError(
            f"{root / dataset.features}: {len(features)} rows, but {root / dataset.labels} has {len(labels)}"
        )
    if target in features.columns:
        raise StepError(f"{root / dataset.features}: already has a column named {target!r}")
    frame = features.assign(**{target: labels[target].to_numpy()})
    return Loaded(frame, target)


def _missing(path: Path, column: str, columns: list[str]) -> str:
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return f"{path}: no column named {column!r} (columns: {shown})"
