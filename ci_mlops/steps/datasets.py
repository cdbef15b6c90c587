"""Load a spec dataset into pandas: one file, or separate feature and label files."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
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
# Reading a CSV holds the parsed columns and the parser's buffers at once, and checks
# make masks and copies: a table needs about twice its own size while a step works on it.
PEAK_FACTOR = 2.0
# How much of a CSV is parsed to learn how large its rows become in memory.
SAMPLE_BYTES = 1 << 20


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
    """Read one CSV or Parquet file with the dataset's format options; refuse one whose
    estimated size in memory exceeds what the job may use, before reading it."""
    import pandas as pd

    if path.is_dir():
        raise StepError(f"{path}: a folder of parts; read it with engine: spark")
    if not path.is_file():
        raise StepError(f"{path}: data file not found")
    fit = memory_fit(path, dataset)
    if not fit.fits:
        raise StepError(fit.refusal())
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


@dataclass(frozen=True)
class MemoryFit:
    """A file's estimated size in memory against the memory a step may use."""

    path: Path
    file_bytes: int
    estimate: int  # bytes the parsed table takes in pandas
    budget: int  # bytes a step may use: data.max_memory, else what the machine has free
    row_bytes: float  # bytes one parsed row takes
    from_setting: bool  # the budget is the spec's data.max_memory

    @property
    def fits(self) -> bool:
        return self.estimate * PEAK_FACTOR <= self.budget

    def chunk_rows(self) -> int:
        """Rows per chunk so that a handful of chunks fit in the budget at once."""
        return max(1_000, int(self.budget / (PEAK_FACTOR * 8) / max(self.row_bytes, 1.0)))

    def refusal(self, why: str = "") -> str:
        limit = "data.max_memory" if self.from_setting else "the memory available to this job"
        return (
            f"{self.path}: {_size(self.file_bytes)} on disk, about {_size(self.estimate)} in "
            f"memory (x{PEAK_FACTOR:g} while checked), more than {_size(self.budget)} "
            f"({limit}){why}; set engine: spark on the dataset (or data.engine: spark) "
            "to read it with Apache Spark"
        )


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} TiB"  # pragma: no cover - the loop returns at GiB


def memory_fit(path: Path, dataset: Dataset) -> MemoryFit:
    """Estimate ``path``'s size in pandas from its size on disk and a parsed sample."""
    size = path.stat().st_size
    if dataset.format == "parquet":
        rows, estimate = _parquet_estimate(path)
    else:
        rows, estimate = _csv_estimate(path, dataset, size)
    budget = dataset.max_memory or available_memory()
    row_bytes = estimate / rows if rows else 0.0
    return MemoryFit(path, size, estimate, budget, row_bytes, dataset.max_memory is not None)


def _csv_estimate(path: Path, dataset: Dataset, size: int) -> tuple[int, int]:
    """(rows, bytes in memory), scaled from the first SAMPLE_BYTES of the file."""
    import pandas as pd

    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if len(head) < size:
        head = head[: head.rfind(b"\n") + 1] or head
    try:
        sample = pd.read_csv(
            io.BytesIO(head), sep=dataset.delimiter, header=0 if dataset.header else None
        )
    except (ValueError, pd.errors.ParserError):
        return 0, size  # unreadable sample: read_table reports the real error
    memory = int(sample.memory_usage(deep=True).sum())
    scale = size / max(len(head), 1)
    return int(len(sample) * scale), int(memory * scale)


def _parquet_estimate(path: Path) -> tuple[int, int]:
    """(rows, bytes) from the file's metadata: its row groups' uncompressed sizes."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError):
        return 0, path.stat().st_size  # read_table reports the real error
    total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return meta.num_rows, total


def available_memory() -> int:
    """Bytes this process can still take: the machine's available memory, or less when
    a cgroup (a container's limit) allows less."""
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(free, 0)


def iter_chunks(root: Path, dataset: Dataset, rows: int) -> Iterator[pd.DataFrame]:
    """The dataset in frames of ``rows`` rows, named as :func:`load_dataset` names them;
    only one chunk (of each file) is in memory at a time."""
    if dataset.path:
        yield from _chunks_named(root / dataset.path, dataset, dataset.columns, rows)
        return
    assert dataset.features and dataset.labels
    target = target_name(root, dataset) or DEFAULT_TARGET
    names = () if dataset.header or dataset.format != "csv" else (target,)
    features = _chunks_named(root / dataset.features, dataset, dataset.columns, rows)
    labels = _chunks_named(root / dataset.labels, dataset, names, rows)
    for left, right in zip(features, labels, strict=False):
        if len(left) != len(right):
            raise StepError(f"{root / dataset.features}: row count differs from {dataset.labels}")
        yield left.assign(**{target: right[target].to_numpy()})


def _chunks_named(
    path: Path, dataset: Dataset, names: tuple[str, ...], rows: int
) -> Iterator[pd.DataFrame]:
    import pandas as pd

    if dataset.format == "parquet":
        import pyarrow.parquet as pq

        parts: Iterator[pd.DataFrame] = (
            b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=rows)
        )
    else:
        header = 0 if dataset.header else None
        parts = pd.read_csv(path, sep=dataset.delimiter, header=header, chunksize=rows)
    for frame in parts:
        yield _name(path, dataset, frame, names)


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
    return _name(path, dataset, read_table(path, dataset), names)


def _name(
    path: Path, dataset: Dataset, frame: pd.DataFrame, names: tuple[str, ...]
) -> pd.DataFrame:
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
