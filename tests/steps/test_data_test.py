"""The data-test step, end to end through the CLI on copies of the examples: passing
data, nulls, out-of-range values, missing columns, spec mistakes and missing files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from ci_mlops.cli import main
from ci_mlops.errors import StepError
from ci_mlops.spec.check import load_spec
from ci_mlops.steps import data_test
from tests.helpers import EXAMPLE_NAMES, Result, copy_example, make_key_pair, run_cli


def invoke(folder: Path, *args: str) -> Result:
    """Run ``ci-mlops data-test`` in-process (GX is imported once per test session)."""
    spec = str(folder / "mlops.yaml")
    result = CliRunner().invoke(main, ["data-test", "--spec", spec, *args])
    return Result(result.exit_code, result.stdout, result.stderr)


def results(folder: Path) -> dict[str, Any]:
    name = load_spec(folder / "mlops.yaml").models[0].name
    loaded: dict[str, Any] = json.loads(
        (folder / ".ci-mlops" / name / "data-test.json").read_text()
    )
    return loaded


def junit(folder: Path) -> ET.Element:
    name = load_spec(folder / "mlops.yaml").models[0].name
    return ET.parse(folder / ".ci-mlops" / name / "data-test.junit.xml").getroot()


def edit_spec(folder: Path, change: Any) -> None:
    path = folder / "mlops.yaml"
    data = yaml.safe_load(path.read_text())
    change(data["models"][0])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def failed_entries(folder: Path, role: str) -> list[dict[str, Any]]:
    return [e for e in results(folder)["datasets"][role]["expectations"] if not e["passed"]]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_examples_pass_and_write_json_and_junit(tmp_path: Path, name: str) -> None:
    folder = copy_example(name, tmp_path)
    res = invoke(folder)
    assert res.code == 0, res.output
    model = load_spec(folder / "mlops.yaml").models[0]
    expected = {role: len(ds.expectations) for role, ds in model.datasets.items()}

    summary = results(folder)
    assert summary["passed"] is True
    assert summary["statistics"]["evaluated_expectations"] == sum(expected.values())
    assert summary["statistics"]["unsuccessful_expectations"] == 0
    for role, count in expected.items():
        report = summary["datasets"][role]
        assert len(report["expectations"]) == count
        assert report["rows"] == len(pd.read_csv(folder / model.datasets[role].files[0]))
        assert all(e["passed"] for e in report["expectations"])

    root = junit(folder)
    assert root.tag == "testsuites"
    assert int(root.get("tests", "-1")) == sum(expected.values())
    assert root.get("failures") == "0"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {f"{name}.{role}" for role in expected}
    for role, count in expected.items():
        suite = suites[f"{name}.{role}"]
        assert int(suite.get("tests", "-1")) == count
        assert len(suite.findall("testcase")) == count
        assert not suite.findall("testcase/failure")
    assert f"data-test {name}/eval" in res.stderr
    # The spec travels in the model folder to the jobs that check nothing out.
    snapshot = folder / ".ci-mlops" / name / "spec.yaml"
    assert snapshot.read_bytes() == (folder / "mlops.yaml").read_bytes()


def test_the_deploy_public_key_travels_with_the_spec_copy(tmp_path: Path) -> None:
    """Deploy jobs check nothing out and read the spec copy: the public key the spec
    names must be beside it, at the same relative path."""
    folder = copy_example("breast-cancer", tmp_path)
    _, public = make_key_pair(folder / "keys")
    spec_file = folder / "mlops.yaml"
    text = spec_file.read_text()
    assert "    deploy:\n" in text
    spec_file.write_text(
        text.replace(
            "    deploy:\n",
            f"    deploy:\n      signing: {{public_key: keys/{public.name}}}\n",
            1,
        )
    )

    res = invoke(folder)

    assert res.code == 0, res.output
    copied = folder / ".ci-mlops" / "breast-cancer" / "keys" / public.name
    assert copied.read_bytes() == public.read_bytes()


def test_nulls_fail_with_column_and_count(tmp_path: Path) -> None:
    folder = copy_example("diabetes", tmp_path)
    path = folder / "data" / "eval_features.csv"
    frame = pd.read_csv(path)
    frame.loc[[3, 10, 20], "bmi"] = None
    frame.to_csv(path, index=False)

    res = invoke(folder)
    assert res.code == 1, res.output
    line = (
        f"eval: expect_column_values_to_not_be_null(column=bmi): 3 unexpected of {len(frame)} rows"
    )
    assert line in res.stderr
    assert "Traceback" not in res.output
    [entry] = failed_entries(folder, "eval")
    assert entry["unexpected_count"] == 3
    assert entry["unexpected_percent"] == pytest.approx(300 / len(frame))
    assert failed_entries(folder, "train") == []
    failures = junit(folder).findall(".//failure")
    assert len(failures) == 1
    assert "3 unexpected" in failures[0].get("message", "")
    assert results(folder)["statistics"]["unsuccessful_expectations"] == 1


def test_out_of_range_values_fail_with_examples(tmp_path: Path) -> None:
    folder = copy_example("diabetes", tmp_path)
    path = folder / "data" / "train_features.csv"
    frame = pd.read_csv(path)
    frame.loc[[0, 5], "age"] = [130, 7]
    frame.to_csv(path, index=False)

    res = invoke(folder)
    assert res.code == 1, res.output
    assert (
        f"train: expect_column_values_to_be_between(column=age, max_value=100, min_value=18): "
        f"2 unexpected of {len(frame)} rows" in res.stderr
    )
    [entry] = failed_entries(folder, "train")
    assert entry["kwargs"] == {"column": "age", "min_value": 18, "max_value": 100}
    assert sorted(entry["partial_unexpected_list"]) == [7, 130]
    [failure] = junit(folder).findall(".//failure")
    assert "age" in failure.get("message", "") or "age" in (failure.text or "")


def test_unexpected_examples_are_capped(tmp_path: Path) -> None:
    folder = copy_example("diabetes", tmp_path)
    path = folder / "data" / "train_features.csv"
    frame = pd.read_csv(path)
    frame["age"] = range(200, 200 + len(frame))
    frame.to_csv(path, index=False)

    assert invoke(folder).code == 1
    [entry] = failed_entries(folder, "train")
    assert entry["unexpected_count"] == len(frame)
    assert len(entry["partial_unexpected_list"]) == data_test.EXAMPLES


def test_missing_column_fails_naming_it(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    for name in ("train.csv", "eval.csv"):
        path = folder / "data" / name
        pd.read_csv(path).drop(columns=["mean_radius"]).to_csv(path, index=False)

    res = invoke(folder)
    assert res.code == 1, res.output
    assert (
        "eval: expect_column_values_to_not_be_null(column=mean_radius): no column named 'mean_radius'"
        in res.stderr
    )
    assert "missing 1 column: mean_radius" in res.stderr
    train_failed = {e["name"] for e in failed_entries(folder, "train")}
    assert "expect_table_columns_to_match_set" in train_failed
    assert "expect_column_values_to_be_between" in train_failed
    root = junit(folder)
    assert int(root.get("failures", "0")) == len(train_failed) + 1


def test_unknown_expectation_is_a_located_one_line_error(tmp_path: Path) -> None:
    folder = copy_example("diabetes", tmp_path)
    spec = folder / "mlops.yaml"
    text = spec.read_text()
    spec.write_text(
        text.replace("expect_column_values_to_be_in_set", "expect_column_values_to_be_in_sett")
    )
    line_no = next(
        i for i, line in enumerate(spec.read_text().splitlines(), 1) if "in_sett" in line
    )

    # A real process: what a user sees, with no traceback anywhere.
    res = run_cli("data-test", "--spec", spec, cwd=folder)
    assert res.code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert f"mlops.yaml:{line_no}:" in errors[0]
    assert "'diabetes'" in errors[0]
    assert "train data" in errors[0]
    assert "expect_column_values_to_be_in_sett" in errors[0]
    assert "did you mean expect_column_values_to_be_in_set?" in errors[0]
    assert not (folder / ".ci-mlops" / "diabetes" / "data-test.json").exists()


def test_bad_arguments_are_a_located_error(tmp_path: Path) -> None:
    folder = copy_example("diabetes", tmp_path)

    def bad(model: dict[str, Any]) -> None:
        model["data"]["eval"]["expectations"].append(
            {
                "expect_column_values_to_be_between": {
                    "column": "age",
                    "min_value": "young",
                    "colour": 1,
                }
            }
        )

    edit_spec(folder, bad)
    res = invoke(folder)
    assert res.code == 2, res.output
    [error] = [line for line in res.stderr.splitlines() if "error" in line]
    assert "mlops.yaml:" in error
    assert "$.models[0].data.eval.expectations[1]" in error
    assert "expect_column_values_to_be_between: bad arguments" in error
    assert "min_value" in error and "colour" in error
    assert not (folder / ".ci-mlops").exists()


def files_below(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the Data Docs site too) and its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_missing_data_file_keeps_earlier_results(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    assert invoke(folder).code == 0
    out = folder / ".ci-mlops" / "breast-cancer"
    before = files_below(out)
    spec = load_spec(folder / "mlops.yaml")
    (folder / "data" / "eval.csv").unlink()

    res = invoke(folder)
    assert res.code == 2
    assert "data/eval.csv" in res.stderr
    # The step itself, given a spec loaded before the file vanished, names the file too.
    with pytest.raises(StepError, match=r"data/eval\.csv: data file not found"):
        data_test.run(spec, spec.models[0])
    assert files_below(out) == before


def test_dataset_without_expectations_is_still_loaded(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    edit_spec(folder, lambda m: m["data"]["eval"].pop("expectations"))
    res = invoke(folder)
    assert res.code == 0, res.output
    assert "data-test breast-cancer/eval: 143 rows, no expectations" in res.stderr
    assert results(folder)["datasets"]["eval"]["expectations"] == []
    suite = next(
        s for s in junit(folder).iter("testsuite") if s.get("name") == "breast-cancer.eval"
    )
    assert suite.get("tests") == "0"

    edit_spec(folder, lambda m: m["data"]["eval"].update(target="diagnosis"))
    res = invoke(folder)
    assert res.code == 2
    assert "eval.csv: no column named 'diagnosis'" in res.stderr


def test_failure_message_for_values_ignoring_nulls() -> None:
    entry = {
        "unexpected_count": 2,
        "element_count": 10,
        "missing_count": 2,
        "unexpected_percent": 25.0,
        "partial_unexpected_list": [99, 99],
    }
    assert data_test.failure_message(entry) == "2 unexpected of 8 non-null values (25.0%), e.g. 99"
    assert (
        data_test.label("expect_x", {"min_value": 1, "column": "a"})
        == "expect_x(column=a, min_value=1)"
    )
