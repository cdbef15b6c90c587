"""What evaluate measures beyond the metrics, through the CLI on trained examples:
bootstrap intervals, significance against a baseline model scored on the same rows,
warn mode, slices with their gate, permutation importance with its baseline
comparison, and the records' sha256 in metrics.json."""

from __future__ import annotations

import hashlib
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.steps.trained import (
    clone,
    invoke,
    read_json,
    train_example,
    trained_example,
    workdir,
)


def set_model(folder: Path, **fields: Any) -> None:
    """Replace top-level fields of the example's (single) model in its spec."""
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0].update(fields)
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example("breast-cancer", tmp_path_factory.mktemp("bc"))


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example("churn", tmp_path_factory.mktemp("churn"))


# --- intervals and significance --------------------------------------------------------


def test_every_metric_gets_a_bootstrap_interval(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    assert invoke(folder, "evaluate").code == 0
    metrics = read_json(workdir(folder) / "metrics.json")
    intervals = metrics["intervals"]
    assert (intervals["level"], intervals["samples"], intervals["paired"]) == (0.95, 200, False)
    assert set(intervals["metrics"]) == set(metrics["metrics"])
    for name, (low, high) in intervals["metrics"].items():
        assert low <= metrics["metrics"][name] <= high, name
        assert high - low > 0.001, name  # 143 rows: no metric is known that precisely
    low, high = intervals["metrics"]["accuracy"]
    assert high - low < 0.1
    # The same seed gives the same intervals.
    assert invoke(folder, "evaluate").code == 0
    assert read_json(workdir(folder) / "metrics.json")["intervals"] == intervals


@pytest.fixture(scope="module")
def baseline_model(breast_cancer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's model trained with C=1.0 (140 of 143 eval rows right)."""
    target = tmp_path_factory.mktemp("baseline") / "model.joblib"
    shutil.copy(workdir(breast_cancer) / "model.joblib", target)
    return target


def gated_retrain(folder: Path, c: float, significance: float | None) -> None:
    gate: dict[str, Any] = {"max_drop": 0.0}
    if significance is not None:
        gate["significance"] = significance
    set_model(folder, metrics={"accuracy": gate})
    train_example(folder, C=c)


def test_a_wobble_against_the_baseline_model_passes_the_significance_gate(
    breast_cancer: Path, baseline_model: Path, tmp_path: Path
) -> None:
    # C=0.05 gets one eval row fewer right than C=1.0: accuracy 0.979 -> 0.972.
    folder = clone(breast_cancer, tmp_path)
    gated_retrain(folder, 0.05, None)
    strict = invoke(folder, "evaluate", "--baseline-model", str(baseline_model))
    assert strict.code == 1, strict.output  # by the point estimate alone it fails
    set_model(folder, metrics={"accuracy": {"max_drop": 0.0, "significance": 0.05}})
    result = invoke(folder, "evaluate", "--baseline-model", str(baseline_model))
    assert result.code == 0, result.output
    gates = read_json(workdir(folder) / "gates.json")
    check = gates["checks"][0]
    assert check["passed"] and check["change"] == pytest.approx(-1 / 143)
    assert check["p_value"] > 0.05
    assert "not significant (paired bootstrap p=" in check["message"]
    assert gates["baseline_source"].startswith("model file model.joblib (sha256 ")
    assert read_json(workdir(folder) / "metrics.json")["intervals"]["paired"] is True


def test_a_real_drop_against_the_baseline_model_fails_the_significance_gate(
    breast_cancer: Path, baseline_model: Path, tmp_path: Path
) -> None:
    # C=0.001 gets 13 rows fewer right: accuracy 0.979 -> 0.888.
    folder = clone(breast_cancer, tmp_path)
    gated_retrain(folder, 0.001, 0.05)
    result = invoke(folder, "evaluate", "--baseline-model", str(baseline_model))
    assert result.code == 1, result.output
    check = read_json(workdir(folder) / "gates.json")["checks"][0]
    assert not check["passed"] and check["p_value"] < 0.01
    assert "significant (paired bootstrap p=" in check["message"]
    changes = read_json(workdir(folder) / "metrics.json")["intervals"]["changes"]
    assert changes["accuracy"][1] < 0  # the whole interval of the change is a drop


def test_a_missing_baseline_model_is_bad_input(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    result = invoke(folder, "evaluate", "--baseline-model", str(tmp_path / "nope.joblib"))
    assert result.code == 2
    assert "nope.joblib: baseline model file not found" in result.stderr


def test_warn_mode_passes_and_says_so_in_junit(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    set_model(folder, metrics={"accuracy": {"min": 0.999, "mode": "warn"}, "f1": {"min": 0.5}})
    result = invoke(folder, "evaluate")
    assert result.code == 0, result.output
    assert "quality gates passed, 1 warning" in result.stdout
    assert "accuracy" in result.stderr and "[warn only]" in result.stderr
    suite = ET.parse(workdir(folder) / "evaluate.junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    case = suite.findall("testcase")[0]
    assert case.get("name") == "accuracy min 0.999"
    modes = [p.get("value") for p in case.iter("property") if p.get("name") == "mode"]
    assert modes == ["warn"]
    out = case.find("system-out")
    assert out is not None and out.text and out.text.endswith("[warn only]")


# --- slices ---------------------------------------------------------------------------


def test_slices_are_recorded_and_gated(churn: Path, tmp_path: Path) -> None:
    folder = clone(churn, tmp_path)
    spec = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))
    metrics = spec["models"][0]["metrics"]
    metrics["accuracy"] = {"worst_slice": 0.0, "max_slice_gap": 0.0}
    set_model(folder, metrics=metrics, evaluate={"slices": ["contract", "tenure_months"]})
    result = invoke(folder, "evaluate")
    assert result.code == 1, result.output  # slices are never exactly equal
    wd = workdir(folder)
    record = read_json(wd / "slices.json")
    contracts = [s for s in record["slices"] if s["column"] == "contract"]
    # The churn data leaves some contracts empty: they are a slice of their own.
    assert sorted(s["slice"] for s in contracts) == [
        "missing",
        "month-to-month",
        "one-year",
        "two-year",
    ]
    n_rows = read_json(wd / "metrics.json")["n_samples"]
    assert sum(s["rows"] for s in contracts) == n_rows
    tenure = [s for s in record["slices"] if s["column"] == "tenure_months"]
    assert len(tenure) == 4 and all(s["slice"].startswith("[") for s in tenure)  # quartiles
    recorded = read_json(wd / "metrics.json")["records"]
    assert recorded["slices.json"] == hashlib.sha256((wd / "slices.json").read_bytes()).hexdigest()
    checks = {c["rule"]: c for c in read_json(wd / "gates.json")["checks"]}
    worst = min(s["metrics"]["accuracy"] for s in record["slices"] if s["gated"])
    assert checks["worst_slice"]["passed"] and checks["worst_slice"]["value"] == worst
    assert not checks["max_slice_gap"]["passed"]


def test_an_unknown_slice_column_is_bad_input(churn: Path, tmp_path: Path) -> None:
    folder = clone(churn, tmp_path)
    set_model(folder, evaluate={"slices": ["region"]})
    result = invoke(folder, "evaluate")
    assert result.code == 2
    assert "evaluate.slices: column 'region' is not in the eval data" in result.stderr


# --- importance -----------------------------------------------------------------------


def test_importance_is_recorded_and_compared_with_the_baseline(
    breast_cancer: Path, tmp_path: Path
) -> None:
    folder = clone(breast_cancer, tmp_path)
    importance = {"repeats": 2, "top_k": 3, "metric": "roc_auc", "stable_top_feature": True}
    set_model(folder, evaluate={"importance": importance})
    assert invoke(folder, "evaluate").code == 0
    wd = workdir(folder)
    record = read_json(wd / "importance.json")
    assert record["metric"] == "roc_auc" and record["repeats"] == 2
    assert len(record["features"]) == 30 and record["not_measured"] == []
    means = [f["mean"] for f in record["features"]]
    assert means == sorted(means, reverse=True) and means[0] > 0
    metrics = read_json(wd / "metrics.json")
    ranking = metrics["importance"]["ranking"]
    assert ranking == [f["name"] for f in record["features"]]
    assert record["comparison"] == {"baseline": False}
    # This run's metrics.json as the next run's baseline: same model, same ranking.
    baseline = tmp_path / "baseline.json"
    shutil.copy(wd / "metrics.json", baseline)
    assert invoke(folder, "evaluate", "--baseline", str(baseline)).code == 0
    comparison = read_json(wd / "importance.json")["comparison"]
    assert comparison["baseline"] is True and comparison["entered"] == []
    top = ranking[0]
    assert comparison["ranks"][top] == {"rank": 1, "baseline_rank": 1}
    # A baseline whose top feature was another one fails stable_top_feature.
    moved = read_json(baseline)
    moved["importance"]["ranking"] = [ranking[-1], *ranking[:-1]]
    baseline.write_text(__import__("json").dumps(moved))
    result = invoke(folder, "evaluate", "--baseline", str(baseline))
    assert result.code == 1
    assert f"the most important feature is now {top}, not {ranking[-1]}" in result.stderr


def test_importance_stops_at_its_budget(breast_cancer: Path, tmp_path: Path) -> None:
    folder = clone(breast_cancer, tmp_path)
    set_model(folder, evaluate={"importance": {"repeats": 1, "budget_seconds": 0.000001}})
    result = invoke(folder, "evaluate")
    assert result.code == 0, result.output
    record = read_json(workdir(folder) / "importance.json")
    assert len(record["features"]) + len(record["not_measured"]) == 30
    assert record["not_measured"], record
    assert "features not measured" in result.stderr


def test_records_the_spec_no_longer_asks_for_are_removed(churn: Path, tmp_path: Path) -> None:
    folder = clone(churn, tmp_path)
    set_model(folder, evaluate={"slices": ["contract"]})
    assert invoke(folder, "evaluate").code in (0, 1)
    assert (workdir(folder) / "slices.json").is_file()
    set_model(folder, evaluate={})
    invoke(folder, "evaluate")
    assert not (workdir(folder) / "slices.json").exists()
    assert read_json(workdir(folder) / "metrics.json")["records"] == {}


# --- GitLab's metrics report ------------------------------------------------------------


def test_metrics_txt_is_openmetrics_with_every_metric(churn: Path, tmp_path: Path) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    folder = clone(churn, tmp_path)
    set_model(folder, evaluate={"slices": ["contract"]})
    invoke(folder, "evaluate")
    wd = workdir(folder)
    text = (wd / "metrics.txt").read_text("utf-8")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    metrics = read_json(wd / "metrics.json")
    for name, value in metrics["metrics"].items():
        (sample,) = families[f"ci_mlops_{name}"].samples
        assert sample.labels == {"model": "churn"}
        assert sample.value == pytest.approx(value, rel=1e-5)
        low, high = metrics["intervals"]["metrics"][name]
        assert families[f"ci_mlops_{name}_interval_low"].samples[0].value == pytest.approx(
            low, rel=1e-5
        )
        assert families[f"ci_mlops_{name}_interval_high"].samples[0].value == pytest.approx(
            high, rel=1e-5
        )
    gated = [s for s in read_json(wd / "slices.json")["slices"] if s["gated"]]
    worst = min(s["metrics"]["accuracy"] for s in gated)
    assert families["ci_mlops_accuracy_worst_slice"].samples[0].value == pytest.approx(
        worst, rel=1e-5
    )
    passed = read_json(wd / "gates.json")["passed"]
    assert families["ci_mlops_gates_passed"].samples[0].value == (1.0 if passed else 0.0)


def test_openmetrics_labels_and_help_are_escaped() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from ci_mlops.steps.openmetrics import document, family

    hostile = 'a"b\\c\nd'
    text = document([family("x", hostile, [({"model": hostile}, float("nan"))])])
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.documentation == hostile
    assert parsed.samples[0].labels == {"model": hostile}
    assert parsed.samples[0].value != parsed.samples[0].value  # NaN
