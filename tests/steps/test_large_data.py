"""Data past one machine's memory: the pandas path checks a table in chunks when its
expectations add up row by row and refuses early (exit 2) when they do not; the Spark
path reads files and folders of parts. Both count exactly the failing rows planted in
generated data, and drift on Spark gives the verdicts and numbers drift on pandas gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ci_mlops.cli import main
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import parse_size
from ci_mlops.steps import drift
from ci_mlops.steps.datasets import memory_fit

ROWS = 6_000
OUT_OF_RANGE = 37  # amount above 100
NOT_IN_SET = 23  # city outside the known ones
NULLS = 11  # score missing
EXPECTATIONS = """\
        expectations:
          - expect_column_values_to_be_between: {column: amount, min_value: 0, max_value: 100}
          - expect_column_values_to_be_in_set: {column: city, value_set: [oslo, lima, pune]}
          - expect_column_values_to_not_be_null: {column: score}
          - expect_column_to_exist: {column: label}
"""


def table(seed: int = 7) -> pd.DataFrame:
    """ROWS rows with exactly OUT_OF_RANGE, NOT_IN_SET and NULLS bad values, spread out."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.uniform(0, 100, ROWS).round(3),
            "city": rng.choice(["oslo", "lima", "pune"], ROWS),
            "score": rng.normal(0, 1, ROWS).round(4),
            "label": rng.integers(0, 2, ROWS),
        }
    )
    picks = rng.permutation(ROWS)
    frame.loc[picks[:OUT_OF_RANGE], "amount"] = 150.5
    frame.loc[picks[OUT_OF_RANGE : OUT_OF_RANGE + NOT_IN_SET], "city"] = "rome"
    frame.loc[picks[-NULLS:], "score"] = np.nan
    return frame


def write_spec(
    folder: Path, path: str, data_extra: str = "", expectations: str = EXPECTATIONS
) -> Path:
    spec = folder / "mlops.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: big\n    framework: sklearn\n    task: classification\n"
        f"    data:\n{data_extra}      eval:\n        path: {path}\n        target: label\n"
        f"{expectations}    train:\n      command: python train.py\n"
        "    metrics:\n      accuracy: {}\n",
        encoding="utf-8",
    )
    return spec


def data_test(spec: Path) -> tuple[int, str, dict[str, Any] | None]:
    result = CliRunner().invoke(main, ["data-test", "--spec", str(spec)])
    out = spec.parent / ".ci-mlops" / "big" / "data-test.json"
    summary = json.loads(out.read_text()) if out.exists() else None
    return result.exit_code, result.stdout + result.stderr, summary


def assert_planted_counts(summary: dict[str, Any]) -> None:
    report = summary["datasets"]["eval"]
    assert report["rows"] == ROWS
    counts = {e["name"]: e["unexpected_count"] for e in report["expectations"]}
    assert counts == {
        "expect_column_values_to_be_between": OUT_OF_RANGE,
        "expect_column_values_to_be_in_set": NOT_IN_SET,
        "expect_column_values_to_not_be_null": NULLS,
        "expect_column_to_exist": None,
    }
    verdicts = [e["passed"] for e in report["expectations"]]
    assert verdicts == [False, False, False, True]


def test_sizes_parse_in_decimal_and_binary_units() -> None:
    assert parse_size("4GiB") == 4 * 2**30
    assert parse_size("500 MB") == 500 * 10**6
    assert parse_size("1.5KiB") == 1536
    assert parse_size("10B") == 10


def test_memory_estimate_is_close_to_what_pandas_takes(tmp_path: Path) -> None:
    frame = table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    ds = load_spec(write_spec(tmp_path, "t.csv"), check_files=False).models[0].eval_data

    fit = memory_fit(tmp_path / "t.csv", ds)

    actual = pd.read_csv(tmp_path / "t.csv").memory_usage(deep=True).sum()
    assert 0.8 * actual <= fit.estimate <= 1.25 * actual


def test_pandas_checks_a_table_too_large_for_its_memory_in_chunks(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)
    # 64 KiB of memory against a ~600 KiB table: several chunks of 1,000 rows.
    code, output, summary = data_test(write_spec(tmp_path, "t.csv", "      max_memory: 64KiB\n"))

    assert code == 1, output
    assert summary is not None
    assert summary["datasets"]["eval"]["engine"] == "pandas"
    assert summary["datasets"]["eval"]["chunks"] == ROWS // 1_000
    assert_planted_counts(summary)
    amount = summary["datasets"]["eval"]["expectations"][0]
    assert amount["unexpected_percent"] == pytest.approx(100 * OUT_OF_RANGE / ROWS)
    assert amount["partial_unexpected_list"][:1] == [150.5]


def test_chunked_counts_equal_whole_table_counts(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)
    whole = data_test(write_spec(tmp_path, "t.csv"))[2]
    chunked = data_test(write_spec(tmp_path, "t.csv", "      max_memory: 64KiB\n"))[2]

    assert whole is not None and chunked is not None
    assert "chunks" not in whole["datasets"]["eval"]
    # Examples come from the first chunks that hold some, not the whole table's first.
    strip = ("partial_unexpected_list", "details", "message", "unexpected_percent")
    for a, b in zip(
        whole["datasets"]["eval"]["expectations"],
        chunked["datasets"]["eval"]["expectations"],
        strict=True,
    ):
        assert {k: v for k, v in a.items() if k not in strip} == {
            k: v for k, v in b.items() if k not in strip
        }
        assert a["unexpected_percent"] == pytest.approx(b["unexpected_percent"])


def test_a_whole_table_check_on_too_large_data_is_refused_early(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)
    mean = "          - expect_column_mean_to_be_between: {column: amount, min_value: 0}\n"
    spec = write_spec(tmp_path, "t.csv", "      max_memory: 64KiB\n", EXPECTATIONS + mean)

    code, output, summary = data_test(spec)

    assert code == 2
    assert summary is None  # nothing written
    assert "Traceback" not in output
    line = output.strip().splitlines()[-1]
    size = (tmp_path / "t.csv").stat().st_size
    assert f"{size / 1024:,.1f} KiB on disk" in line
    assert "more than 64.0 KiB (data.max_memory)" in line
    assert "expect_column_mean_to_be_between need the whole table" in line
    assert "engine: spark" in line


def test_other_steps_refuse_too_large_data_instead_of_running_out_of_memory(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)
    spec = load_spec(write_spec(tmp_path, "t.csv", "      max_memory: 64KiB\n"))
    from ci_mlops.errors import StepError
    from ci_mlops.steps.datasets import load_dataset

    with pytest.raises(StepError, match=r"t\.csv: .* in memory .* engine: spark"):
        load_dataset(tmp_path, spec.models[0].eval_data)


def test_spark_counts_the_planted_rows(tmp_path: Path, spark_session: object) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)

    code, output, summary = data_test(write_spec(tmp_path, "t.csv", "      engine: spark\n"))

    assert code == 1, output
    assert summary is not None
    assert summary["datasets"]["eval"]["engine"] == "spark"
    assert_planted_counts(summary)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_folder_of_parts_is_read_by_spark(
    tmp_path: Path, spark_session: object, fmt: str
) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    frame = table()
    for i, chunk in enumerate(frame.iloc[k : k + 2_000] for k in range(0, ROWS, 2_000)):
        if fmt == "csv":
            chunk.to_csv(parts / f"part-{i}.csv", index=False)
        else:
            chunk.to_parquet(parts / f"part-{i}.parquet", index=False)
    spec = write_spec(tmp_path, "parts")
    assert load_spec(spec)  # a folder is a valid path

    code, output, summary = data_test(spec)

    assert code == 1, output
    assert summary is not None
    assert summary["datasets"]["eval"]["engine"] == "spark"
    assert_planted_counts(summary)


# --- drift --------------------------------------------------------------------------


def drift_spec(folder: Path, reference: str, current: str, engine: str) -> Path:
    spec = folder / "mlops.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: big\n    framework: sklearn\n    task: classification\n"
        f"    data:\n      engine: {engine}\n      eval:\n        path: {reference}\n"
        "        target: label\n    train:\n      command: python train.py\n"
        "    metrics:\n      accuracy: {}\n    retrain:\n      drift:\n"
        f"        reference: {reference}\n        current: {current}\n        retrain: false\n",
        encoding="utf-8",
    )
    return spec


@pytest.mark.parametrize("rows", [800, 12_000], ids=["exact-ks", "asymptotic-ks"])
def test_drift_on_spark_matches_drift_on_pandas(
    tmp_path: Path, spark_session: object, rows: int
) -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, rows).round(3),
            "moved": rng.normal(0, 1, rows).round(3),
            "kind": rng.choice(["a", "b", "c"], rows),
            "small": rng.integers(0, 4, rows),
            "label": rng.integers(0, 2, rows),
        }
    )
    current = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, rows).round(3),
            "moved": rng.normal(0.4, 1.2, rows).round(3),
            "kind": rng.choice(["a", "b", "c"], rows, p=[0.6, 0.2, 0.2]),
            "small": rng.integers(0, 4, rows),
            "label": rng.integers(0, 2, rows),
        }
    )
    current.loc[: rows // 10, "steady"] = np.nan  # a feed that started sending nulls
    reference.to_csv(tmp_path / "ref.csv", index=False)
    current.to_csv(tmp_path / "cur.csv", index=False)

    summaries = {}
    for engine in ("pandas", "spark"):
        spec = load_spec(drift_spec(tmp_path, "ref.csv", "cur.csv", engine))
        summaries[engine] = drift.run(spec, spec.models[0])

    on_pandas, on_spark = summaries["pandas"], summaries["spark"]
    assert on_spark["drifted_columns"] == on_pandas["drifted_columns"]
    assert set(on_pandas["drifted_columns"]) == {"steady", "moved", "kind"}
    assert on_spark["dataset_drift"] == on_pandas["dataset_drift"]
    for a, b in zip(on_pandas["columns"], on_spark["columns"], strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (a["column"], key)
            else:
                assert b[key] == value, (a["column"], key)


def test_drift_reads_a_folder_of_parts_with_spark(tmp_path: Path, spark_session: object) -> None:
    frame = table()
    frame.to_csv(tmp_path / "ref.csv", index=False)
    parts = tmp_path / "current"
    parts.mkdir()
    for i, chunk in enumerate((frame.iloc[: ROWS // 2], frame.iloc[ROWS // 2 :])):
        chunk.to_parquet(parts / f"part-{i}.parquet", index=False)
    spec = load_spec(drift_spec(tmp_path, "ref.csv", "current", "pandas"))

    summary = drift.run(spec, spec.models[0])

    assert summary["current"]["rows"] == ROWS
    assert summary["drifted_columns"] == []  # the same rows on both sides


def test_validate_accepts_a_folder_of_parts_and_locates_a_bad_size(tmp_path: Path) -> None:
    parts = tmp_path / "events"
    parts.mkdir()
    table().iloc[:10].to_csv(parts / "part-0.csv", index=False)
    write_spec(tmp_path, "events/", "      engine: spark\n      max_memory: 2GiB\n")
    ok = CliRunner().invoke(main, ["validate", "--spec", str(tmp_path / "mlops.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "warning" not in ok.output  # a folder is not sniffed as a CSV file

    write_spec(tmp_path, "events/", "      max_memory: 2 gigs\n")
    bad = CliRunner().invoke(main, ["validate", "--spec", str(tmp_path / "mlops.yaml")])
    assert bad.exit_code == 2
    assert "mlops.yaml:7:" in bad.output and "$.models[0].data.max_memory" in bad.output
    assert "Traceback" not in bad.output
