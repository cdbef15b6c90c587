"""Each framework's example runs end to end through `ci-mlops run`, and its ONNX model
predicts what the native model predicts, recomputed here from the files alone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from tests.helpers import FRAMEWORK_EXAMPLES, REPO, Result, copy_example, run_cli

pytestmark = pytest.mark.slow

# The training scripts run `python`: make it this interpreter, with its libraries.
PATH_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
CONVERTERS = {
    "sklearn": "skl2onnx",
    "pytorch": "torch",
    "xgboost": "onnxmltools",
    "lightgbm": "onnxmltools",
}


def cli(project: Path, *args: str) -> Result:
    return run_cli(*args, cwd=project, env=PATH_ENV)


@pytest.fixture(scope="session")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every framework example, run once through the whole local pipeline."""
    projects = {}
    for framework, example in FRAMEWORK_EXAMPLES.items():
        project = copy_example(example, tmp_path_factory.mktemp(framework))
        result = cli(project, "run")
        assert result.code == 0, result.output
        projects[framework] = project
    return projects


def project_copy(ran: dict[str, Path], framework: str, tmp_path: Path) -> Path:
    """A private copy of a run example, with its trained model and records."""
    import shutil

    target = tmp_path / ran[framework].name
    shutil.copytree(ran[framework], target)
    return target


def model_dir(project: Path) -> Path:
    (folder,) = (project / ".ci-mlops").iterdir()
    return folder


def read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def eval_frame(project: Path) -> tuple[pd.DataFrame, str]:
    spec = __import__("yaml").safe_load((project / "mlops.yaml").read_text())
    data = spec["models"][0]["data"]["eval"]
    frame = pd.read_csv(project / data["path"])
    return frame.drop(columns=[data["target"]]), spec["models"][0]["task"]


def onnx_outputs(folder: Path, features: pd.DataFrame, record: dict[str, Any]) -> list[Any]:
    """Run model.onnx as a caller would, from what export.json says its inputs are."""
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feed = {}
    for spec in record["inputs"]:
        if spec["type"] == "tensor(string)":
            column = features[[spec["name"]]]
            feed[spec["name"]] = (
                column.astype(object).where(column.notna(), spec["missing"]).to_numpy()
            )
        elif spec["width"] == 1 and spec["name"] in features.columns:
            feed[spec["name"]] = features[[spec["name"]]].to_numpy(np.float32)
        else:
            assert spec["width"] == features.shape[1]
            feed[spec["name"]] = features.to_numpy(np.float32)
    return session.run(None, feed)  # type: ignore[no-any-return]


def native_outputs(framework: str, folder: Path, project: Path, features: pd.DataFrame) -> Any:
    """What the trained model says, loaded here with its own library."""
    if framework == "sklearn":
        import joblib

        return joblib.load(folder / "model.joblib").predict_proba(features)
    if framework == "pytorch":
        import torch

        sys.path.insert(0, str(project))
        try:
            from net import WineNet  # the example's own network class
        finally:
            sys.path.remove(str(project))
        net = WineNet()
        net.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        with torch.no_grad():
            return net.eval()(torch.tensor(features.to_numpy(np.float32))).numpy()
    if framework == "xgboost":
        import xgboost

        regressor = xgboost.XGBRegressor()
        regressor.load_model(folder / "model.ubj")
        return regressor.predict(features).reshape(-1, 1)
    import lightgbm

    positive = lightgbm.Booster(model_file=str(folder / "model.txt")).predict(features)
    return np.column_stack([1 - positive, positive])


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_EXAMPLES))
def test_the_example_runs_end_to_end(ran: dict[str, Path], framework: str) -> None:
    project = ran[framework]
    folder = model_dir(project)
    record = read(folder / "export.json")
    gates = read(folder / "gates.json")
    assert record["passed"] is True and gates["passed"] is True
    assert record["framework"] == framework
    assert record["converter"].startswith(CONVERTERS[framework])
    assert record["model_sha256"] == read(folder / "train.json")["model_sha256"]
    assert (folder / "report.md").read_text("utf-8").count("parity") >= 1
    assert list((project / ".mlops-registry").glob("*/versions/*/model.onnx"))
    latency = record["latency"]
    assert latency["native_batch1_ms"] > 0 and latency["onnx_batch1_ms"] > 0


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_EXAMPLES))
def test_onnx_parity_recomputed_from_the_files(ran: dict[str, Path], framework: str) -> None:
    project = ran[framework]
    folder = model_dir(project)
    record = read(folder / "export.json")
    features, task = eval_frame(project)
    outputs = onnx_outputs(folder, features, record)
    onnx_values = outputs[1] if task == "classification" and len(outputs) > 1 else outputs[0]
    native = native_outputs(framework, folder, project, features)
    gap = float(np.abs(np.asarray(onnx_values).reshape(native.shape) - native).max())
    assert gap == pytest.approx(record["max_abs_diff"], rel=1e-5, abs=1e-9)
    assert gap <= record["tolerance"]


def test_mixed_table_takes_one_typed_input_per_column(ran: dict[str, Path]) -> None:
    record = read(model_dir(ran["sklearn"]) / "export.json")
    types = {i["name"]: i["type"] for i in record["inputs"]}
    assert types == {
        "tenure_months": "tensor(float)",
        "monthly_charges": "tensor(float)",
        "contract": "tensor(string)",
        "payment_method": "tensor(string)",
        "support_calls": "tensor(float)",
    }


def test_mixed_table_parity_holds_with_and_without_missing_values(ran: dict[str, Path]) -> None:
    import joblib

    project = ran["sklearn"]
    folder = model_dir(project)
    record = read(folder / "export.json")
    features, _ = eval_frame(project)
    native = joblib.load(folder / "model.joblib")
    gaps = features.isna().any(axis=1)
    assert 20 < gaps.sum() < len(features) - 20, "the eval data needs both kinds of rows"
    for rows in (features[gaps], features[~gaps]):
        labels, probabilities = onnx_outputs(folder, rows, record)
        assert np.abs(probabilities - native.predict_proba(rows)).max() < record["tolerance"]
        assert np.array_equal(labels, native.predict(rows))


def test_a_model_no_converter_handles_names_it_and_what_to_use(
    ran: dict[str, Path], tmp_path: Path
) -> None:
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    project = project_copy(ran, "sklearn", tmp_path)
    folder = model_dir(project)
    pipeline = joblib.load(folder / "model.joblib")
    train = pd.read_csv(project / "data/train.csv")
    pipeline.steps[-1] = ("classifier", HistGradientBoostingClassifier(max_iter=10))
    pipeline.fit(train.drop(columns=["churned"]), train["churned"])
    joblib.dump(pipeline, folder / "model.joblib")
    (folder / "train.json").unlink()  # no record: the file is judged as it is
    before = (folder / "export.json").read_bytes()

    result = cli(project, "export")

    assert result.code == 2, result.output
    assert "model.joblib: skl2onnx cannot convert HistGradientBoostingClassifier" in result.stderr
    assert "use GradientBoostingClassifier" in result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / "export.json").read_bytes() == before


@pytest.mark.parametrize("step", ["evaluate", "export"])
def test_a_pickled_torch_module_is_refused_not_unpickled(
    ran: dict[str, Path], tmp_path: Path, step: str
) -> None:
    import torch

    project = project_copy(ran, "pytorch", tmp_path)
    folder = model_dir(project)
    sys.path.insert(0, str(project))
    try:
        from net import WineNet
    finally:
        sys.path.remove(str(project))
    torch.save(WineNet(), folder / "model.pt")  # the whole module: a pickle of code
    (folder / "train.json").unlink()

    result = cli(project, step)

    assert result.code == 2, result.output
    assert "model.pt: cannot load it as a state dict of net:WineNet" in result.stderr
    assert "only weights are loaded" in result.stderr


def test_no_loader_ever_unpickles_torch_objects() -> None:
    sources = "\n".join(p.read_text("utf-8") for p in (REPO / "ci_mlops").rglob("*.py"))
    assert "weights_only=True" in sources
    assert "weights_only=False" not in sources


@pytest.mark.parametrize(
    ("framework", "library"), [("xgboost", "XGBoost"), ("lightgbm", "LightGBM")]
)
def test_a_corrupt_tree_model_is_bad_input(
    ran: dict[str, Path], tmp_path: Path, framework: str, library: str
) -> None:
    project = project_copy(ran, framework, tmp_path)
    folder = model_dir(project)
    (model_file,) = folder.glob("model.[ut][bx][jt]")
    model_file.write_bytes(b"\x00\x01 not a model")
    (folder / "train.json").unlink()

    result = cli(project, "evaluate")

    assert result.code == 2, result.output
    assert f"{model_file.name}: cannot load the model with {library}" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_opset_onnxmltools_cannot_write_says_which_it_can(
    ran: dict[str, Path], tmp_path: Path
) -> None:
    project = project_copy(ran, "lightgbm", tmp_path)
    spec = project / "mlops.yaml"
    spec.write_text(spec.read_text().replace("opset: 15", "opset: 17"))

    result = cli(project, "export")

    assert result.code == 2, result.output
    assert "onnxmltools" in result.stderr and "converts up to opset 15" in result.stderr


def test_the_exported_mixed_table_model_evaluates_like_the_native_one(
    ran: dict[str, Path], tmp_path: Path
) -> None:
    """framework: onnx feeds a graph with string inputs and missing values the same way
    export does, so the exported churn model scores what the pipeline scored."""
    project = project_copy(ran, "sklearn", tmp_path)
    folder = model_dir(project)
    native = read(folder / "metrics.json")["metrics"]
    spec = project / "mlops.yaml"
    spec.write_text(spec.read_text().replace("framework: sklearn", "framework: onnx"))
    (folder / "train.json").unlink()  # the model file is now model.onnx, judged as it is

    result = cli(project, "evaluate")

    assert result.code == 0, result.output
    scored = read(folder / "metrics.json")["metrics"]
    assert scored.keys() == native.keys()
    for name, value in native.items():
        assert scored[name] == pytest.approx(value, abs=1e-5), name
