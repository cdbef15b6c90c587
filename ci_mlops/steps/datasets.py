"""Load a spec dataset into pandas: one file, or separate feature and label files."""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ci_mlops.errors import StepError
from ci_mlops.spec.model import Dataset
from ci_mlops.spec.sniff import is_number

if TYPE_CHECKING:
    import pandas as pd

# The name a headerless labels file's one column takes when the spec names no target.
DEFAULT_TARGET = "target"


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
        frame = read_named(root / dataset.path, dataset, dataset.columns)
        target = dataset.target
        if target and target not in frame.columns:
            raise StepError(_missing(root / dataset.path, target, list(frame.columns)))
        if need_target and not target:
            raise StepError(
                f"{root / dataset.path}: the spec names no target column for this dataset"
            )
        return Loaded(frame, target)
    assert dataset.features and dataset.labels
    features = read_named(root / dataset.features, dataset, dataset.columns)
    labels, target = _labels(root / dataset.labels, dataset)
    if len(features) != len(labels):
        raise StepError(
            f"{root / dataset.features}: {len(features)} rows, but {root / dataset.labels} has {len(labels)}"
        )
    if target in features.columns:
        raise StepError(
            f"{root / dataset.features}: already has a column named {target!r}, the target "
            "taken from the labels file; name the feature columns with 'columns' or rename one"
        )
    frame = features.assign(**{target: labels[target].to_numpy()})
    return Loaded(frame, target)


def read_named(path: Path, dataset: Dataset, names: tuple[str, ...]) -> pd.DataFrame:
    """Read one file and name its columns: ``names`` when given (they replace a header
    row), else the header row, else the column positions ``0, 1, ...``."""
    frame = read_table(path, dataset)
    if names:
        if len(names) != len(frame.columns):
            raise StepError(
                f"{path}: {len(frame.columns)} columns, but 'columns' names {len(names)} "
                f"(read with delimiter {dataset.delimiter!r}; is that the file's separator?)"
            )
        frame.columns = list(names)
    else:
        frame.columns = [str(c) for c in frame.columns]
    return frame


def _labels(path: Path, dataset: Dataset) -> tuple[pd.DataFrame, str]:
    """The labels file and the target column in it. A headerless labels file has one
    column, which takes the target's name."""
    if dataset.header or dataset.format != "csv":
        labels = read_named(path, dataset, ())
        target = dataset.target or str(labels.columns[0])
        if target not in labels.columns:
            raise StepError(_missing(path, target, list(labels.columns)))
        return labels, target
    labels = read_table(path, dataset)
    if len(labels.columns) != 1:
        raise StepError(
            f"{path}: {len(labels.columns)} columns with delimiter {dataset.delimiter!r}; "
            "a labels file without a header row must hold one column"
        )
    target = dataset.target or DEFAULT_TARGET
    labels.columns = [target]
    return labels, target


def target_name(root: Path, dataset: Dataset) -> str | None:
    """The target column as :func:`load_dataset` names it, without reading the data:
    the spec's, else a labels file's first header cell, else (headerless labels)
    ``target``."""
    if dataset.target or not dataset.labels or dataset.format != "csv":
        return dataset.target
    if not dataset.header:
        return DEFAULT_TARGET
    import csv

    try:
        with (root / dataset.labels).open(newline="", encoding="utf-8") as handle:
            first = next(csv.reader(handle, delimiter=dataset.delimiter), [])
    except (OSError, UnicodeDecodeError):
        return None
    return first[0] if first else None


def read_like(path: Path, dataset: Dataset) -> pd.DataFrame:
    """Read a file shaped like ``dataset`` (drift samples): its delimiter and header,
    its column names when the widths fit (the features alone, or followed by the target)."""
    fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    frame = read_named(path, replace(dataset, format=fmt), ())
    if fmt == "csv" and dataset.columns:
        names = list(dataset.columns)
        if dataset.labels and dataset.target:
            names_with_target = [*names, dataset.target]
            if len(frame.columns) == len(names_with_target):
                names = names_with_target
        if len(frame.columns) == len(names):
            frame.columns = names
    return frame


def _missing(path: Path, column: str, columns: list[str]) -> str:
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    hint = ""
    if columns and all(is_number(c) for c in columns):
        hint = "; the column names look like data: if the file has no header row, set header: false"
    return f"{path}: no column named {column!r} (columns: {shown}){hint}"


def describe_loaded(root: Path, dataset: Dataset, expected: int | None = None) -> str:
    """One line saying what the steps read from ``dataset``: rows, feature columns and
    target; StepError when it cannot be read, or its feature columns are none or not
    the ``expected`` number."""
    loaded = load_dataset(root, dataset)
    files = " + ".join(dataset.files)
    width = len(loaded.features.columns)
    if width == 0 or (expected is not None and width != expected):
        shown = "" if expected is None else f", the file shows {expected}"
        raise StepError(
            f"{files}: read as {width} feature columns besides the target {loaded.target!r}{shown}"
        )
    return (
        f"{files}: {len(loaded.frame)} rows, {width} feature column{'s' * (width != 1)} "
        f"and target {loaded.target!r}"
    )
