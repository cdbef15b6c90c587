"""Apache Spark for data past one machine's memory: the session, and datasets read as
Spark DataFrames with the same options and column names as the pandas reader.

The session comes from Spark's own configuration, so the same step runs in local mode
on a laptop and on any cluster in production: ``SPARK_REMOTE`` (Spark Connect, e.g.
Databricks), ``PYSPARK_SUBMIT_ARGS`` (``--master yarn ...``, EMR), or
``$SPARK_HOME/conf/spark-defaults.conf``; with none of them, ``local[*]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ci_mlops import log
from ci_mlops.errors import StepError
from ci_mlops.spec.model import Dataset

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

PARQUET_SUFFIXES = (".parquet", ".pq")


def uses_spark(root: Path, dataset: Dataset) -> bool:
    """Spark reads the dataset when the spec says so or its path is a folder of parts."""
    if dataset.engine:
        return dataset.engine == "spark"
    return bool(dataset.path) and (root / str(dataset.path)).is_dir()


def session() -> SparkSession:
    """The process's Spark session, made once from Spark's standard configuration."""
    # PySpark prints its own start-up chatter through py4j's logger.
    logging.getLogger("py4j").setLevel(logging.ERROR)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise StepError(
            "engine spark needs pyspark and a Java runtime: pip install 'ci-mlops[spark]'"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    with log.timed("spark: starting a session"):
        try:
            # Progress bars would fill CI logs; everything else comes from Spark's own
            # configuration.
            builder = SparkSession.builder.appName("ci-mlops")
            return builder.config("spark.ui.showConsoleProgress", "false").getOrCreate()
        except Exception as exc:  # Java missing or the cluster unreachable: say which
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StepError(f"spark: cannot start a session: {first}") from None


def read_dataset(root: Path, dataset: Dataset) -> DataFrame:
    """The dataset as one DataFrame of features and target (paths relative to ``root``)."""
    spark = session()
    if dataset.path:
        frame = read_named(spark, root / dataset.path, dataset, dataset.columns)
        if dataset.target and dataset.target not in frame.columns:
            raise StepError(f"{root / dataset.path}: no column named {dataset.target!r}")
        return frame
    assert dataset.features and dataset.labels
    features = read_named(spark, root / dataset.features, dataset, dataset.columns)
    labels = read_named(spark, root / dataset.labels, dataset, ())
    target = dataset.target or ("target" if not dataset.header else labels.columns[0])
    labels = labels.toDF(target, *labels.columns[1:]).select(target)
    return _side_by_side(features, labels)


def read_named(
    spark: SparkSession, path: Path, dataset: Dataset, names: tuple[str, ...]
) -> DataFrame:
    """Read a file or a folder of parts; name the columns as the pandas reader does:
    ``names`` when given, else the header row, else ``0, 1, ...``."""
    if not path.exists():
        raise StepError(f"{path}: data file or folder not found")
    if _format(path, dataset) == "parquet":
        frame = spark.read.parquet(str(path))
    else:
        frame = spark.read.csv(
            str(path), header=dataset.header, sep=dataset.delimiter, inferSchema=True
        )
    if names:
        if len(names) != len(frame.columns):
            raise StepError(
                f"{path}: {len(frame.columns)} columns, but 'columns' names {len(names)}"
            )
        return frame.toDF(*names)
    if not dataset.header and _format(path, dataset) == "csv":
        return frame.toDF(*(str(i) for i in range(len(frame.columns))))
    return frame


def _format(path: Path, dataset: Dataset) -> str:
    """A folder's parts decide its format when the spec names a CSV default."""
    if path.is_dir() and dataset.format == "csv":
        parts = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
        if parts and all(p.suffix.lower() in PARQUET_SUFFIXES for p in parts):
            return "parquet"
    return dataset.format


def _side_by_side(features: DataFrame, labels: DataFrame) -> DataFrame:
    """Join two files row by row: Spark keeps no row order across a join, so each side
    is numbered by its position first."""
    from pyspark.sql.types import LongType, StructField

    def numbered(frame: DataFrame) -> DataFrame:
        schema = frame.schema.add(StructField("__row", LongType(), False))
        rows = frame.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1]))
        return frame.sparkSession.createDataFrame(rows, schema)

    left, right = numbered(features), numbered(labels)
    counts = (left.count(), right.count())
    if counts[0] != counts[1]:
        raise StepError(f"features: {counts[0]} rows, but labels have {counts[1]}")
    return left.join(right, "__row").orderBy("__row").drop("__row")
