"""The drift step: per-column statistics on the breast-cancer example and on synthetic
data, the dataset verdict, and retraining through a fake GitLab API."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ci_mlops.errors import CheckFailed, StepError, UsageError
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps import drift
from tests.fakes.env import gitlab_vars, start_gitlab
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import copy_example, run_cli


@pytest.fixture
def example(tmp_path: Path) -> Spec:
    return load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitLab]:
    """A fake GitLab, and this process's CI variables pointing at it."""
    api = start_gitlab()
    for name, value in gitlab_vars(api, mr_iid=None).items():
        monkeypatch.setenv(name, value)
    yield api
    api.stop()


def _with_drift(model: Model, **changes: Any) -> Model:
    assert model.retrain.drift is not None
    settings = dataclasses.replace(model.retrain.drift, **changes)
    return dataclasses.replace(model, retrain=dataclasses.replace(model.retrain, drift=settings))


SHIFTED = ("radius", "perimeter", "area", "texture", "concav", "compactness")


def _shifted(spec: Spec, name: str = "shifted.csv") -> str:
    """The example's current data with 21 of its 30 columns 30% larger."""
    frame = pd.read_csv(spec.root / "data/current.csv")
    for column in frame.columns:
        if any(word in column for word in SHIFTED):
            frame[column] = frame[column] * 1.3
    frame.to_csv(spec.root / "data" / name, index=False)
    return f"data/{name}"


def _by_column(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in summary["columns"]}


# -- the example ---------------------------------------------------------------------


def test_the_example_current_data_shows_no_dataset_drift(
    example: Spec, capsys: pytest.CaptureFixture[str]
) -> None:
    model = example.models[0]
    summary = drift.run(example, model, fail_on_drift=True)  # would raise on drift

    assert summary["compared_columns"] == 30  # every feature; the target is left out
    assert "target" not in _by_column(summary)
    assert summary["dataset_drift"] is False
    # 143 rows against 426: the noise floor of PSI over 30 bins is (30-1)(1/426+1/143) =
    # 0.27, far above the 0.1 threshold, so the KS test decides every column.
    for column in summary["columns"]:
        assert column["kind"] == "numeric"
        assert column["psi_judged"] is False
        assert column["psi_noise"] == pytest.approx(29 * (1 / 426 + 1 / 143), rel=1e-3)
    saved = json.loads((example.workdir(model) / "drift.json").read_text())
    assert saved["drifted_columns"] == summary["drifted_columns"]
    markdown = (example.workdir(model) / "drift.md").read_text()
    assert markdown.count("| numeric |") == 30
    assert "no dataset drift: 0 of 30 columns drifted" in capsys.readouterr().out


def test_the_two_percent_shift_moves_mean_radius_and_nothing_else(example: Spec) -> None:
    # current.csv is eval.csv without the target and with mean_radius scaled by ~1.02.
    model = example.models[0]
    shifted = _by_column(drift.run(example, model))
    unshifted = _by_column(drift.run(example, _with_drift(model, current="data/eval.csv")))

    radius, before = shifted["mean_radius"], unshifted["mean_radius"]
    assert radius["mean_current"] / before["mean_current"] == pytest.approx(1.02, abs=0.005)
    assert radius["psi"] > before["psi"]
    assert radius["ks_pvalue"] < before["ks_pvalue"]
    # Too small to call drift with 143 rows: the KS test does not reject.
    assert radius["drifted"] is False and radius["ks_pvalue"] > 0.05
    for name, column in shifted.items():
        if name != "mean_radius":
            assert column["psi"] == unshifted[name]["psi"]
            assert column["ks_pvalue"] == unshifted[name]["ks_pvalue"]


def test_a_strong_shift_is_dataset_drift(example: Spec) -> None:
    model = _with_drift(example.models[0], current=_shifted(example), retrain=False)
    summary = drift.run(example, model)

    columns = _by_column(summary)
    moved = {c for c in columns if any(word in c for word in SHIFTED)}
    assert len(moved) == 21
    assert set(summary["drifted_columns"]) <= moved  # nothing else is flagged
    assert len(summary["drifted_columns"]) >= 16
    assert summary["dataset_drift"] is True
    assert summary["share"] >= 0.5
    assert summary["retrain"]["triggered"] is False
    assert "not requested" in summary["retrain"]["message"]


def test_fail_on_drift_exits_1_after_writing_the_files(example: Spec) -> None:
    model = _with_drift(example.models[0], current=_shifted(example), retrain=False)
    with pytest.raises(CheckFailed, match=r"dataset drift: \d+ of 30 columns drifted"):
        drift.run(example, model, fail_on_drift=True)
    saved = json.loads((example.workdir(model) / "drift.json").read_text())
    assert saved["dataset_drift"] is True


# -- synthetic data: large samples and categorical columns ---------------------------


def _synthetic(tmp_path: Path, rows: int, shift: float, mix: list[float]) -> Spec:
    rng = np.random.default_rng(3)
    folder = tmp_path / "synthetic"
    (folder / "data").mkdir(parents=True)

    def frame(delta: float, weights: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "income": rng.normal(50 + delta * 10, 10, rows),
                "age": rng.normal(40, 12, rows),
                "plan": rng.choice(["basic", "plus", "pro"], rows, p=weights),
            }
        )

    frame(0, [0.5, 0.3, 0.2]).to_parquet(folder / "data/reference.parquet")
    frame(shift, mix).to_parquet(folder / "data/current.parquet")
    pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}).to_csv(folder / "data/eval.csv", index=False)
    (folder / "mlops.yaml").write_text(
        """version: 1
models:
  - name: churn
    framework: sklearn
    task: classification
    data:
      eval: {path: data/eval.csv, target: y}
    train: {command: python train.py}
    metrics: {accuracy: {min: 0.5}}
    retrain:
      drift: {reference: data/reference.parquet, current: data/current.parquet, retrain: false}
""",
        encoding="utf-8",
    )
    return load_spec(folder / "mlops.yaml", check_files=False)


def test_with_many_rows_psi_is_judged_and_catches_a_shift_of_0_4_sd(tmp_path: Path) -> None:
    spec = _synthetic(tmp_path, rows=20_000, shift=0.4, mix=[0.5, 0.3, 0.2])
    columns = _by_column(drift.run(spec, spec.models[0]))

    income, age = columns["income"], columns["age"]
    assert income["psi_judged"] and age["psi_judged"]
    assert income["psi"] > 0.1 and income["drifted"]
    assert any(r.startswith("PSI") for r in income["reasons"])
    assert age["psi"] < 0.02 and not age["drifted"]
    assert columns["plan"]["kind"] == "categorical" and not columns["plan"]["drifted"]


def test_a_categorical_shift_is_caught_by_chi_square_and_js_distance(tmp_path: Path) -> None:
    spec = _synthetic(tmp_path, rows=5_000, shift=0.0, mix=[0.2, 0.3, 0.5])
    plan = _by_column(drift.run(spec, spec.models[0]))["plan"]

    assert plan["kind"] == "categorical" and plan["categories"] == 3
    assert plan["chi2_pvalue"] < 1e-6
    assert plan["js_judged"] and plan["js_distance"] > 0.1
    assert len(plan["reasons"]) == 2


def test_psi_of_identical_samples_is_zero_and_grows_with_the_shift() -> None:
    values = np.random.default_rng(0).normal(size=5000)
    assert drift.population_stability_index(values, values) == (pytest.approx(0.0), 30)
    small, _ = drift.population_stability_index(values, values + 0.1)
    large, _ = drift.population_stability_index(values, values + 0.5)
    assert 0 < small < large


# -- bad input -----------------------------------------------------------------------


def test_a_model_without_a_drift_section_is_a_usage_error(tmp_path: Path) -> None:
    spec = load_spec(copy_example("diabetes", tmp_path) / "mlops.yaml")
    with pytest.raises(UsageError, match=r"no retrain\.drift section"):
        drift.run(spec, spec.models[0])


def test_a_column_named_in_the_spec_but_missing_names_the_file(example: Spec) -> None:
    model = _with_drift(example.models[0], columns=("mean_radius", "tumour_colour"))
    with pytest.raises(StepError, match=r"train\.csv: no column named 'tumour_colour'"):
        drift.run(example, model)


def test_a_missing_data_file_is_a_step_error(example: Spec) -> None:
    model = _with_drift(example.models[0], current="data/nowhere.csv")
    with pytest.raises(StepError, match=r"nowhere\.csv: data file not found"):
        drift.run(example, model)
    assert not (example.workdir(model) / "drift.json").exists()


# -- retraining ----------------------------------------------------------------------


def test_drift_in_a_gitlab_job_triggers_retraining(example: Spec, gitlab: FakeGitLab) -> None:
    model = _with_drift(example.models[0], current=_shifted(example))
    summary = drift.run(example, model)

    (pipeline,) = gitlab.pipelines
    assert pipeline["variables"]["MLOPS_RETRAIN"] == "breast-cancer"
    assert pipeline["ref"] == "main"
    assert pipeline["variables"]["MLOPS_RETRAIN_REASON"].startswith("drift in ")
    assert summary["retrain"] == {
        "triggered": True,
        "platform": "gitlab",
        "reference": pipeline["web_url"],
        "message": f"triggered: {pipeline['web_url']}",
    }
    saved = json.loads((example.workdir(model) / "drift.json").read_text())
    assert saved["retrain"]["reference"] == pipeline["web_url"]


def test_no_drift_triggers_nothing(example: Spec, gitlab: FakeGitLab) -> None:
    drift.run(example, example.models[0])
    assert gitlab.pipelines == []
    assert gitlab.calls("trigger") == []


def test_a_retraining_pipeline_does_not_trigger_itself_again(
    example: Spec, gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_RETRAIN", "breast-cancer")
    summary = drift.run(example, _with_drift(example.models[0], current=_shifted(example)))
    assert summary["dataset_drift"] is True
    assert gitlab.pipelines == []
    assert "already retrains" in summary["retrain"]["message"]


def test_on_a_laptop_drift_says_how_to_retrain(
    example: Spec, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = drift.run(example, _with_drift(example.models[0], current=_shifted(example)))
    assert summary["retrain"]["triggered"] is False
    assert "run `ci-mlops run --force --model breast-cancer` to retrain" in capsys.readouterr().out


# -- the command ---------------------------------------------------------------------


def test_the_drift_command_exit_codes(example: Spec) -> None:
    assert run_cli("drift", "--fail-on-drift", cwd=example.root).code == 0

    spec_file = example.root / "mlops.yaml"
    spec_file.write_text(
        spec_file.read_text().replace("current: data/current.csv", f"current: {_shifted(example)}")
    )
    result = run_cli("drift", "--fail-on-drift", cwd=example.root)
    assert result.code == 1, result.output
    assert "dataset drift" in result.output
    assert run_cli("drift", cwd=example.root).code == 0


def test_the_drift_command_triggers_gitlab_through_the_environment(
    example: Spec, gitlab: FakeGitLab
) -> None:
    spec_file = example.root / "mlops.yaml"
    spec_file.write_text(
        spec_file.read_text().replace("current: data/current.csv", f"current: {_shifted(example)}")
    )
    result = run_cli("drift", cwd=example.root, env=gitlab_vars(gitlab, mr_iid=None))
    assert result.code == 0, result.output
    assert [p["variables"]["MLOPS_RETRAIN"] for p in gitlab.pipelines] == ["breast-cancer"]
    assert "retraining triggered" in result.output


# -- missing values and non-finite numbers -------------------------------------------


def _nulls(tmp_path: Path, current: dict[str, Any], rows: int = 2000) -> Spec:
    """The synthetic spec, with current.parquet replaced by columns of ``current``."""
    spec = _synthetic(tmp_path, rows=rows, shift=0.0, mix=[0.5, 0.3, 0.2])
    reference = pd.read_parquet(spec.root / "data/reference.parquet")
    frame = reference.copy()
    for column, values in current.items():
        frame[column] = values
    frame.to_parquet(spec.root / "data/current.parquet")
    return spec


def test_a_column_that_became_entirely_null_drifts(tmp_path: Path) -> None:
    spec = _nulls(tmp_path, {"income": np.nan})
    summary = drift.run(spec, spec.models[0])
    income = _by_column(summary)["income"]

    assert income["kind"] == "empty" and income["drifted"]
    assert income["missing_reference"] == 0.0 and income["missing_current"] == 1.0
    assert "missing values 0.0% -> 100.0%" in income["reasons"]
    assert summary["drifted_columns"] == ["income"] and summary["compared_columns"] == 3


def test_a_rise_in_missing_values_drifts_though_the_rest_looks_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    spec = _synthetic(tmp_path, rows=4000, shift=0.0, mix=[0.5, 0.3, 0.2])
    current = pd.read_parquet(spec.root / "data/current.parquet")
    current.loc[rng.random(len(current)) < 0.3, "age"] = np.nan  # random rows: same shape
    current.to_parquet(spec.root / "data/current.parquet")
    age = _by_column(drift.run(spec, spec.models[0]))["age"]

    assert age["kind"] == "numeric" and age["drifted"]
    assert age["missing_pvalue"] < 1e-6
    assert age["reasons"][0].startswith("missing values 0.0% -> 3")
    assert not any(r.startswith(("PSI", "KS")) for r in age["reasons"])


def test_a_steady_share_of_missing_values_is_not_drift(tmp_path: Path) -> None:
    spec = _synthetic(tmp_path, rows=4000, shift=0.0, mix=[0.5, 0.3, 0.2])
    for name, seed in (("reference", 2), ("current", 3)):
        path = spec.root / f"data/{name}.parquet"
        frame = pd.read_parquet(path)
        frame.loc[np.random.default_rng(seed).random(len(frame)) < 0.05, "age"] = np.nan
        frame.to_parquet(path)
    age = _by_column(drift.run(spec, spec.models[0]))["age"]

    assert not age["drifted"] and age["missing_pvalue"] > 0.05


def test_drift_json_is_strict_json_when_the_data_holds_infinities(tmp_path: Path) -> None:
    spec = _synthetic(tmp_path, rows=500, shift=0.0, mix=[0.5, 0.3, 0.2])
    current = pd.read_parquet(spec.root / "data/current.parquet")
    current.loc[:10, "income"] = np.inf
    current.to_parquet(spec.root / "data/current.parquet")
    drift.run(spec, spec.models[0])

    def refuse(constant: str) -> None:
        raise AssertionError(f"drift.json holds {constant}, which is not JSON")

    raw = (spec.workdir(spec.models[0]) / "drift.json").read_text()
    income = _by_column(json.loads(raw, parse_constant=refuse))["income"]
    assert income["mean_current"] is None  # the mean of values with +inf is not a number
