"""The evaluate step through the CLI on trained copies of the examples: real metrics,
files, plots, baselines from a file and from the local registry, failing gates, and
bad input (missing or corrupt model, wrong target, tampered model, bad baseline)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.frameworks import Predictions
from ci_mlops.spec.check import load_spec
from ci_mlops.steps import evaluate
from tests.helpers import Result
from tests.steps.trained import (
    PNG_MAGIC,
    clone,
    invoke,
    read_json,
    train_behind_the_back,
    train_example,
    trained_example,
    workdir,
)


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example("breast-cancer", tmp_path_factory.mktemp("bc"))


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example("diabetes", tmp_path_factory.mktemp("diabetes"))


@pytest.fixture(scope="module")
def evaluated_bc(
    breast_cancer: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Result]:
    folder = clone(breast_cancer, tmp_path_factory.mktemp("bc-evaluated"))
    return folder, invoke(folder, "evaluate")


@pytest.fixture(scope="module")
def evaluated_diabetes(
    diabetes: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Result]:
    folder = clone(diabetes, tmp_path_factory.mktemp("diabetes-evaluated"))
    return folder, invoke(folder, "evaluate")


def write_baseline(path: Path, metrics: dict[str, float], model: str) -> Path:
    path.write_text(json.dumps({"model": model, "metrics": metrics}))
    return path


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, f"{path}: only {len(data)} bytes"


# --- passing runs ---------------------------------------------------------------------


def test_breast_cancer_passes_with_real_metrics(evaluated_bc: tuple[Path, Result]) -> None:
    folder, result = evaluated_bc
    assert result.code == 0, result.output
    metrics = read_json(workdir(folder) / "metrics.json")
    values = metrics["metrics"]
    assert set(values) == {"accuracy", "roc_auc", "f1", "log_loss", "precision", "recall"}
    assert values["accuracy"] > 0.93 and values["roc_auc"] > 0.97 and values["f1"] > 0.93
    assert 0 < values["log_loss"] < 0.3
    assert metrics["n_samples"] == 143 and metrics["task"] == "classification"
    assert metrics["classes"] == [0, 1]
    assert metrics["averaging"]["f1"] == "binary, positive class 1"
    model_file = workdir(folder) / "model.joblib"
    assert metrics["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()


def test_breast_cancer_verdict_is_bound_to_the_model_hash(
    evaluated_bc: tuple[Path, Result],
) -> None:
    folder, result = evaluated_bc
    gates = read_json(workdir(folder) / "gates.json")
    sha = hashlib.sha256((workdir(folder) / "model.joblib").read_bytes()).hexdigest()
    assert gates["passed"] is True and gates["model_sha256"] == sha
    # 7 rules in the spec; the first run has no baseline and the spec lets that pass.
    assert len(gates["checks"]) == 7 and gates["no_baseline"] is True
    assert gates["baseline_source"] is None
    assert "no baseline: first run" in result.stderr
    change_checks = [c for c in gates["checks"] if c["rule"] in ("max_drop", "max_relative_drop")]
    assert len(change_checks) == 3
    assert all(c["passed"] and "no baseline" in c["message"] for c in change_checks)


def test_breast_cancer_junit_has_one_testcase_per_check(evaluated_bc: tuple[Path, Result]) -> None:
    folder, _ = evaluated_bc
    suite = ET.parse(workdir(folder) / "evaluate.junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:2] == ["accuracy min 0.93", "accuracy max_drop 0.02"]
    assert len(cases) == 7 and suite.get("failures") == "0"
    assert sum(c.find("skipped") is not None for c in cases) == 3  # change rules, no baseline


def test_breast_cancer_plots_are_real_pngs(evaluated_bc: tuple[Path, Result]) -> None:
    folder, _ = evaluated_bc
    plots = workdir(folder) / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["confusion_matrix.png", "roc_curve.png"]
    for png in plots.iterdir():
        assert_png(png)


def test_stdout_has_a_metrics_table(evaluated_bc: tuple[Path, Result]) -> None:
    folder, result = evaluated_bc
    values = read_json(workdir(folder) / "metrics.json")["metrics"]
    assert result.stdout.startswith("breast-cancer: quality gates passed")
    row = next(line for line in result.stdout.splitlines() if line.startswith("accuracy"))
    assert f"{values['accuracy']:.4g}" in row and "ok min, max_drop (no baseline)" in row


def test_diabetes_passes_with_real_metrics(evaluated_diabetes: tuple[Path, Result]) -> None:
    folder, result = evaluated_diabetes
    assert result.code == 0, result.output
    values = read_json(workdir(folder) / "metrics.json")["metrics"]
    assert set(values) == {"rmse", "mae", "r2", "mape"}
    assert 30 < values["rmse"] < 65 and 20 < values["mae"] < 52 and 0.35 < values["r2"] < 1
    assert values["mae"] <= values["rmse"]
    assert read_json(workdir(folder) / "gates.json")["passed"] is True
    plots = workdir(folder) / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["predicted_vs_actual.png", "residuals.png"]
    for png in plots.iterdir():
        assert_png(png)


# --- baselines and failing gates ------------------------------------------------------


def test_a_much_better_baseline_fails_every_change_gate(diabetes: Path, tmp_path: Path) -> None:
    folder = clone(diabetes, tmp_path)
    better = write_baseline(
        tmp_path / "better.json", {"rmse": 40.0, "r2": 0.7, "mae": 30.0}, "diabetes"
    )
    result = invoke(folder, "evaluate", "--baseline", str(better))
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert "2 of 5 quality gate checks failed" in result.stderr
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(failed_lines) == 2
    assert any(
        line.startswith("  - rmse got worse by") and "max_relative_drop 5%" in line
        for line in failed_lines
    )
    assert any(
        line.startswith("  - r2 got worse by") and "max_drop 0.03" in line for line in failed_lines
    )
    # Files are written before the failure, so the report can show it.
    gates = read_json(workdir(folder) / "gates.json")
    assert gates["passed"] is False and gates["no_baseline"] is False
    assert gates["baseline_source"] == f"file {better}"
    assert sorted((c["metric"], c["rule"]) for c in gates["checks"] if not c["passed"]) == [
        ("r2", "max_drop"),
        ("rmse", "max_relative_drop"),
    ]
    metrics = read_json(workdir(folder) / "metrics.json")
    assert metrics["baseline"] == {
        "source": f"file {better}",
        "metrics": {"rmse": 40.0, "r2": 0.7, "mae": 30.0},
    }
    suite = ET.parse(workdir(folder) / "evaluate.junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "2"


def test_a_slightly_worse_run_within_the_drops_passes(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    first = invoke(folder, "evaluate")
    values = read_json(workdir(folder) / "metrics.json")["metrics"]
    # A baseline a little better than this run, but within every allowed drop.
    close = {"accuracy": values["accuracy"] + 0.01, "roc_auc": 1.0, "f1": values["f1"] * 1.02}
    result = invoke(
        folder,
        "evaluate",
        "--baseline",
        str(write_baseline(tmp_path / "b.json", close, "breast-cancer")),
    )
    assert (first.code, result.code) == (0, 0), result.output
    gates = read_json(workdir(folder) / "gates.json")
    assert gates["passed"] and not gates["no_baseline"]
    drop = next(c for c in gates["checks"] if (c["metric"], c["rule"]) == ("accuracy", "max_drop"))
    assert drop["change"] == pytest.approx(-0.01) and "got worse by 0.01" in drop["message"]


def test_the_local_registry_supplies_the_baseline(breast_cancer: Path, tmp_path: Path) -> None:
    from ci_mlops.registries import registry_for

    folder = clone(breast_cancer, tmp_path)
    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]
    stored = write_baseline(
        tmp_path / "metrics.json", {"accuracy": 1.0, "roc_auc": 1.0, "f1": 1.0}, model.name
    )
    published = registry_for(spec, model, "local").publish(
        model,
        model.version,
        {"metrics.json": stored, "model.joblib": workdir(folder) / "model.joblib"},
    )
    result = invoke(folder, "evaluate")
    assert result.code == 1, result.output
    assert f"baseline: local registry breast-cancer {published.version}" in result.stderr
    failed = [c for c in read_json(workdir(folder) / "gates.json")["checks"] if not c["passed"]]
    assert [(c["metric"], c["rule"], c["baseline"]) for c in failed] == [
        ("accuracy", "max_drop", 1.0)
    ]


def test_a_crippled_model_fails_its_minimums(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    train_example(folder, C=1e-6)
    result = invoke(folder, "evaluate")
    assert result.code == 1, result.output
    gates = read_json(workdir(folder) / "gates.json")
    failed = {(c["metric"], c["rule"]) for c in gates["checks"] if not c["passed"]}
    assert {("accuracy", "min"), ("f1", "min"), ("log_loss", "max")} <= failed
    for metric, rule in failed:
        assert any(
            line.startswith(f"  - {metric} ") and rule in line
            for line in result.stderr.splitlines()
        )
    assert read_json(workdir(folder) / "metrics.json")["metrics"]["accuracy"] < 0.9


# --- bad input ------------------------------------------------------------------------


def test_a_corrupt_model_file_exits_2_and_keeps_earlier_results(
    breast_cancer: Path, tmp_path: Path
) -> None:
    folder = clone(breast_cancer, tmp_path)
    assert invoke(folder, "evaluate").code == 0
    before = {
        name: (workdir(folder) / name).read_bytes() for name in ("metrics.json", "gates.json")
    }
    model_file = workdir(folder) / "model.joblib"
    model_file.write_bytes(b"this is not a pickle")
    # Without train.json the hash is not checked, so the loader itself must refuse it.
    (workdir(folder) / "train.json").unlink()
    result = invoke(folder, "evaluate")
    assert result.code == 2
    assert "Traceback" not in result.output
    assert f"{model_file}: cannot load the model with joblib" in result.stderr
    assert {name: (workdir(folder) / name).read_bytes() for name in before} == before


def test_a_missing_model_file_exits_2(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    (workdir(folder) / "model.joblib").unlink()
    result = invoke(folder, "evaluate")
    assert result.code == 2
    assert "model.joblib: model file not found (run `ci-mlops train` first)" in result.stderr
    assert not (workdir(folder) / "metrics.json").exists()


def test_a_wrong_target_column_exits_2(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    data = yaml.safe_load((folder / "mlops.yaml").read_text())
    data["models"][0]["data"]["eval"]["target"] = "diagnosis"
    (folder / "mlops.yaml").write_text(yaml.safe_dump(data))
    result = invoke(folder, "evaluate")
    assert result.code == 2
    assert "data/eval.csv: no column named 'diagnosis'" in result.stderr
    assert "Traceback" not in result.output
    assert not (workdir(folder) / "gates.json").exists()


def test_a_model_changed_after_training_is_refused(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    model_file = workdir(folder) / "model.joblib"
    trained = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert read_json(workdir(folder) / "train.json")["model_sha256"] == trained
    train_behind_the_back(folder, C=0.5)  # a different model in the same place
    actual = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert actual != trained
    result = invoke(folder, "evaluate")
    # One integrity error, as deploy and the registries raise it: a check that failed.
    assert result.code == 1
    assert (
        f"{model_file}: sha256 {actual} does not match {trained} in "
        f"{workdir(folder) / 'train.json'}; the model file changed after training; retrain "
        "with `ci-mlops train --force`"
    ) in result.stderr
    assert "Traceback" not in result.output
    assert not (workdir(folder) / "gates.json").exists()


def test_a_model_without_train_json_is_still_evaluated(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    (workdir(folder) / "train.json").unlink()  # e.g. a model file put there by hand
    assert invoke(folder, "evaluate").code == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read baseline metrics"),
        ("[1, 2]", "expected a JSON object"),
        ('{"metrics": {"accuracy": "high"}}', "metrics.accuracy: expected a number, not 'high'"),
        ('{"metrics": 3}', "metrics: expected an object"),
    ],
)
def test_a_bad_baseline_file_exits_2(
    breast_cancer: Path, tmp_path: Path, content: str, message: str
) -> None:
    folder = clone(breast_cancer, tmp_path)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(content)
    result = invoke(folder, "evaluate", "--baseline", str(baseline))
    assert result.code == 2
    assert f"{baseline}: {message}" in result.stderr
    assert not (workdir(folder) / "metrics.json").exists()


def test_a_missing_baseline_file_exits_2(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    result = invoke(folder, "evaluate", "--baseline", str(tmp_path / "nope.json"))
    assert result.code == 2 and "nope.json: cannot read baseline metrics" in result.stderr


def test_pytorch_without_torch_says_what_to_install(
    breast_cancer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = clone(breast_cancer, tmp_path)
    data = yaml.safe_load((folder / "mlops.yaml").read_text())
    data["models"][0]["framework"] = "pytorch"
    (folder / "mlops.yaml").write_text(yaml.safe_dump(data))
    (workdir(folder) / "model.pt").write_bytes(b"weights")
    (workdir(folder) / "train.json").unlink()  # it describes the scikit-learn model
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    result = invoke(folder, "evaluate")
    assert result.code == 2
    assert "model.pt: framework pytorch needs PyTorch" in result.stderr
    assert "pip install 'ci-mlops[torch]'" in result.stderr


# --- other frameworks and tasks -------------------------------------------------------


@pytest.mark.parametrize("zipmap", [True, False])
def test_an_onnx_model_scores_like_the_native_one(
    evaluated_bc: tuple[Path, Result], tmp_path: Path, zipmap: bool
) -> None:
    import joblib
    from skl2onnx import to_onnx

    source, _ = evaluated_bc
    folder = clone(source, tmp_path)
    native = read_json(workdir(folder) / "metrics.json")["metrics"]
    data = yaml.safe_load((folder / "mlops.yaml").read_text())
    data["models"][0]["framework"] = "onnx"
    (folder / "mlops.yaml").write_text(yaml.safe_dump(data))
    estimator = joblib.load(workdir(folder) / "model.joblib")
    sample = __import__("pandas").read_csv(folder / "data/eval.csv").drop(columns=["target"])
    onnx_model = to_onnx(
        estimator, sample.to_numpy(dtype="float32")[:1], options={"zipmap": zipmap}
    )
    (workdir(folder) / "model.onnx").write_bytes(onnx_model.SerializeToString())
    (workdir(folder) / "train.json").unlink()  # it describes the scikit-learn model
    result = invoke(folder, "evaluate")
    assert result.code == 0, result.output
    values = read_json(workdir(folder) / "metrics.json")["metrics"]
    for name in ("accuracy", "precision", "recall", "f1"):
        assert values[name] == pytest.approx(native[name], abs=0.01), name
    assert values["roc_auc"] == pytest.approx(native["roc_auc"], abs=1e-3)
    assert values["log_loss"] == pytest.approx(native["log_loss"], rel=1e-3)


def iris_folder(tmp_path: Path) -> Path:
    """A three-class classifier on scikit-learn's bundled iris data."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).frame
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    folder = tmp_path / "iris"
    (folder / "data").mkdir(parents=True)
    frame.iloc[::2].to_csv(folder / "data/train.csv", index=False)
    frame.iloc[1::2].to_csv(folder / "data/eval.csv", index=False)
    spec = {
        "version": 1,
        "models": [
            {
                "name": "iris",
                "framework": "sklearn",
                "task": "classification",
                "data": {"eval": {"path": "data/eval.csv", "target": "target"}},
                "train": {"command": "python train.py"},
                "metrics": {
                    name: {"min": 0.8}
                    for name in ("accuracy", "precision", "recall", "f1", "roc_auc")
                }
                | {"log_loss": {"max": 0.5}},
            }
        ],
    }
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec))
    train = frame.iloc[::2]
    model = LogisticRegression(max_iter=1000).fit(train.drop(columns=["target"]), train["target"])
    (folder / ".ci-mlops/iris").mkdir(parents=True)
    joblib.dump(model, folder / ".ci-mlops/iris/model.joblib")
    return folder


def test_multiclass_uses_weighted_and_one_vs_rest_averages(tmp_path: Path) -> None:
    folder = iris_folder(tmp_path)
    result = invoke(folder, "evaluate")
    assert result.code == 0, result.output
    metrics = read_json(workdir(folder) / "metrics.json")
    assert metrics["classes"] == [0, 1, 2]
    assert metrics["averaging"]["f1"] == "weighted average over classes (by support)"
    assert metrics["averaging"]["roc_auc"].startswith("one-vs-rest, weighted")
    assert metrics["metrics"]["accuracy"] > 0.9 and metrics["metrics"]["roc_auc"] > 0.95
    assert_png(workdir(folder) / "plots/roc_curve.png")


# --- metric computation on its own ----------------------------------------------------


def spec_model(folder: Path) -> Any:
    return load_spec(folder / "mlops.yaml", check_files=False).models[0]


def test_one_row_leaves_r2_undefined_and_says_why(diabetes: Path) -> None:
    import numpy as np

    scores = evaluate.compute_metrics(
        spec_model(diabetes), np.array([100.0]), Predictions(np.array([110.0]))
    )
    assert scores.values["rmse"] == pytest.approx(10.0) and scores.values["mae"] == pytest.approx(
        10.0
    )
    assert math.isnan(scores.values["r2"]) and "r2" in scores.notes


def test_non_finite_predictions_make_every_regression_metric_nan(diabetes: Path) -> None:
    import numpy as np

    scores = evaluate.compute_metrics(
        spec_model(diabetes), np.array([1.0, 2.0, 3.0]), Predictions(np.array([1.0, np.nan, 3.0]))
    )
    assert all(math.isnan(v) for v in scores.values.values())
    assert scores.notes["rmse"] == "the model predicted 1 non-finite values"


def test_a_classifier_without_probabilities_has_no_log_loss(breast_cancer: Path) -> None:
    import numpy as np

    y = np.array([0, 1, 1, 0])
    scores = evaluate.compute_metrics(
        spec_model(breast_cancer), y, Predictions(np.array([0, 1, 0, 0]), classes=[0, 1])
    )
    assert scores.values["accuracy"] == 0.75 and scores.values["precision"] == 1.0
    assert scores.values["recall"] == 0.5
    assert math.isnan(scores.values["log_loss"]) and math.isnan(scores.values["roc_auc"])
    assert "no class scores" in scores.notes["log_loss"]


def test_a_nan_metric_fails_its_gate_and_is_written_as_null(diabetes: Path, tmp_path: Path) -> None:
    folder = clone(diabetes, tmp_path)
    for name in ("eval_features.csv", "eval_labels.csv"):  # keep the header and one row
        path = folder / "data" / name
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
    result = invoke(folder, "evaluate")
    assert result.code == 1, result.output
    metrics = read_json(workdir(folder) / "metrics.json")
    assert metrics["metrics"]["r2"] is None and metrics["n_samples"] == 1
    assert "r2" in metrics["notes"]
    assert "  - r2 is NaN (undefined on the eval data): min fails" in result.stderr
