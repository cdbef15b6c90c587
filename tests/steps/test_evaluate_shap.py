"""evaluate.shap through the CLI on trained examples: mean |SHAP| per feature recorded in
importance.json beside permutation importance, its ranking in metrics.json for the next
run to compare with, the comparison with a baseline's, and the report's folded section;
a model SHAP cannot explain gets a note, never a failure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.spec.check import load_spec
from ci_mlops.steps import report
from tests.steps.trained import clone, invoke, read_json, trained_example, workdir


def with_shap(folder: Path, **evaluate: Any) -> None:
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0]["evaluate"] = {"shap": True, "bootstrap": {"samples": 0}, **evaluate}
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")


def rendered(folder: Path) -> str:
    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]
    return report.render(spec, model, inputs=report.read_inputs(spec.workdir(model), model))


@pytest.fixture(scope="module")
def xgboost_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = trained_example("diabetes-xgboost", tmp_path_factory.mktemp("xgb"))
    with_shap(folder, importance={"repeats": 2, "top_k": 3})
    return folder


def test_shap_is_recorded_beside_permutation_importance(
    xgboost_example: Path, tmp_path: Path
) -> None:
    folder = clone(xgboost_example, tmp_path)
    assert invoke(folder, "evaluate").code == 0

    record = read_json(workdir(folder) / "importance.json")
    assert [f["name"] for f in record["features"]]  # permutation importance, as before
    shap = record["shap"]
    assert shap["method"] == "XGBoost TreeSHAP (pred_contribs)"
    eval_rows = len((folder / "data/eval.csv").read_text().splitlines()) - 1
    assert shap["rows"] == eval_rows
    names = [f["name"] for f in shap["features"]]
    assert sorted(names) == sorted(f["name"] for f in record["features"])
    values = [f["mean_abs"] for f in shap["features"]]
    assert values == sorted(values, reverse=True) and values[0] > 0
    assert shap["comparison"] == {"baseline": False}
    metrics = read_json(workdir(folder) / "metrics.json")
    assert metrics["importance"]["shap_ranking"] == names
    assert metrics["importance"]["ranking"] == [f["name"] for f in record["features"]]

    markdown = rendered(folder)
    assert "<details><summary><b>Mean |SHAP| per feature</b> (top 3)</summary>" in markdown
    assert f"| 1 | `{names[0]}` | {values[0]:.4g} | — |" in markdown


def test_shap_ranking_is_compared_with_the_baselines(xgboost_example: Path, tmp_path: Path) -> None:
    folder = clone(xgboost_example, tmp_path)
    assert invoke(folder, "evaluate").code == 0
    baseline = tmp_path / "baseline-metrics.json"
    shutil.copy(workdir(folder) / "metrics.json", baseline)

    assert invoke(folder, "evaluate", "--baseline", str(baseline)).code == 0

    comparison = read_json(workdir(folder) / "importance.json")["shap"]["comparison"]
    assert comparison["baseline"] is True
    assert comparison["entered"] == [] and comparison["left"] == []
    assert all(r["rank"] == r["baseline_rank"] for r in comparison["ranks"].values())
    markdown = rendered(folder)
    shap_part = markdown.split("Mean |SHAP| per feature", 1)[1]
    assert "The top features are the baseline's." in shap_part
    assert "| 1 | " in shap_part and " | 1 |" in shap_part.split("\n| 2 |")[0]


def test_a_model_shap_cannot_explain_gets_a_note_not_a_failure(tmp_path: Path) -> None:
    folder = trained_example("breast-cancer", tmp_path)  # a logistic regression pipeline
    with_shap(folder)

    result = invoke(folder, "evaluate")

    assert result.code == 0, result.stderr
    record = read_json(workdir(folder) / "importance.json")
    assert "features" not in record  # no permutation importance was asked for
    assert record["shap"]["note"].startswith("shap's TreeExplainer does not support Pipeline")
    assert "shap_ranking" not in (read_json(workdir(folder) / "metrics.json")["importance"] or {})
    assert "SHAP: shap's TreeExplainer does not support Pipeline" in rendered(folder)
