"""ONNX export: parity with the native model on both examples, checked independently
against the written model.onnx; unsupported estimators, a too-strict tolerance, a model
changed after training, an opset onnxruntime cannot run, and missing torch."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from ci_mlops.atomic import sha256_file
from ci_mlops.cli import main
from ci_mlops.errors import IntegrityError, StepError
from ci_mlops.records import ExportRecord
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps import export
from ci_mlops.steps.datasets import load_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ("breast-cancer", "diabetes")


def train_example(folder: Path, example: str) -> Path:
    """Copy an example into ``folder`` and train it with its own script, the way
    `ci-mlops train` runs it; return the copied spec's path."""
    shutil.copytree(EXAMPLES / example, folder, ignore=shutil.ignore_patterns(".ci-mlops"))
    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]
    workdir = spec.workdir(model)
    workdir.mkdir(parents=True)
    train = model.train_data
    assert train is not None
    env = {
        **os.environ,
        "MLOPS_MODEL_PATH": str(workdir / model.model_file),
        "MLOPS_TRAIN_DATA": str(folder / (train.path or train.features or "")),
        "MLOPS_TRAIN_LABELS": str(folder / train.labels) if train.labels else "",
        "MLOPS_TARGET": train.target or "",
        "MLOPS_PARAMS": json.dumps(model.train.params),
    }
    subprocess.run(
        [sys.executable, "train.py"], cwd=folder, env=env, check=True, capture_output=True
    )
    return folder / "mlops.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each example, trained once per module."""
    root = tmp_path_factory.mktemp("trained")
    return {name: train_example(root / name, name) for name in NAMES}


@pytest.fixture
def project(trained: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A private copy of each trained example (spec path), safe to change."""
    out = {}
    for name, spec_path in trained.items():
        shutil.copytree(spec_path.parent, tmp_path / name)
        out[name] = tmp_path / name / "mlops.yaml"
    return out


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def spec_and_model(spec_path: Path) -> tuple[Spec, Model, Path]:
    spec = load_spec(spec_path)
    model = spec.models[0]
    return spec, model, spec.workdir(model)


def read(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_export_matches_native_model(project: dict[str, Path], name: str) -> None:
    result = cli("export", "--spec", str(project[name]))
    assert result.exit_code == 0, result.output + result.stderr
    spec, model, workdir = spec_and_model(project[name])
    record = read(workdir / "export.json")
    onnx_path = workdir / "model.onnx"

    assert record["passed"] is True
    assert record["onnx_sha256"] == sha256_file(onnx_path)
    assert record["model_sha256"] == sha256_file(workdir / "model.joblib")
    onnx.checker.check_model(onnx.load(onnx_path), full_check=True)

    # Recompute parity from the files alone: the step's numbers must be the real ones.
    loaded = load_dataset(spec.root, model.eval_data)
    native = joblib.load(workdir / "model.joblib")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input": loaded.features.to_numpy(np.float32)})
    assert record["n_samples"] == len(loaded.frame)
    assert record["outputs"] == [o.name for o in session.get_outputs()]
    if model.task == "classification":
        labels, probabilities = outputs
        expected = np.abs(probabilities - native.predict_proba(loaded.features)).max()
        assert record["label_mismatches"] == 0
        assert np.array_equal(labels, native.predict(loaded.features))
    else:
        expected = np.abs(outputs[0].ravel() - native.predict(loaded.features)).max()
        assert record["label_mismatches"] is None
    assert isinstance(record["max_abs_diff"], float)
    assert record["max_abs_diff"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert 0 < record["max_abs_diff"] <= model.export.tolerance

    latency = record["latency"]
    assert isinstance(latency, dict)
    for key in ("native_batch1_ms", "onnx_batch1_ms", "native_full_ms", "onnx_full_ms"):
        assert latency[key] > 0
    ratio = latency["native_batch1_ms"] / latency["onnx_batch1_ms"]
    assert latency["batch1_speedup"] == pytest.approx(ratio, rel=0.01)
    assert "parity ok" in result.output and f"{record['n_samples']} rows" in result.output


def test_unsupported_estimator_is_bad_input_and_keeps_earlier_files(
    project: dict[str, Path],
) -> None:
    from sklearn.semi_supervised import LabelSpreading

    spec_path = project["breast-cancer"]
    assert cli("export", "--spec", str(spec_path)).exit_code == 0
    spec, model, workdir = spec_and_model(spec_path)
    before = {n: (workdir / n).read_bytes() for n in ("model.onnx", "export.json")}

    train = load_dataset(spec.root, model.datasets["train"])
    joblib.dump(LabelSpreading().fit(train.features, train.labels), workdir / "model.joblib")
    result = cli("export", "--spec", str(spec_path))

    assert result.exit_code == 2
    assert "model.joblib: skl2onnx cannot convert LabelSpreading:" in result.stderr
    assert "Traceback" not in result.stderr
    assert {n: (workdir / n).read_bytes() for n in before} == before


def test_parity_beyond_tolerance_fails_the_check(project: dict[str, Path]) -> None:
    spec_path = project["breast-cancer"]
    text = spec_path.read_text()
    assert "tolerance: 0.0001" in text
    spec_path.write_text(text.replace("tolerance: 0.0001", "tolerance: 1.0e-12"))

    result = cli("export", "--spec", str(spec_path))

    assert result.exit_code == 1, result.output + result.stderr
    assert "ONNX parity failed" in result.stderr
    record = read(spec_and_model(spec_path)[2] / "export.json")
    assert record["passed"] is False
    assert record["tolerance"] == 1e-12
    assert isinstance(record["max_abs_diff"], float) and record["max_abs_diff"] > 1e-12
    assert "exceeds the tolerance" in str(record["message"])


def test_export_off_writes_skipped(project: dict[str, Path]) -> None:
    spec_path = project["diabetes"]
    spec_path.write_text(
        spec_path.read_text().replace("    export:\n", "    export:\n      onnx: false\n")
    )
    spec, model, workdir = spec_and_model(spec_path)
    assert model.export.onnx is False

    assert export.run(spec, model) == ExportRecord(skipped=True)
    assert read(workdir / "export.json") == {"skipped": True}
    assert not (workdir / "model.onnx").exists()


def test_model_changed_after_training_is_refused(project: dict[str, Path]) -> None:
    spec, model, workdir = spec_and_model(project["diabetes"])
    (workdir / "train.json").write_text(json.dumps({"model_sha256": "0" * 64}))
    actual = sha256_file(workdir / "model.joblib")

    with pytest.raises(IntegrityError) as caught:
        export.run(spec, model)

    error = caught.value
    assert (error.path, error.expected, error.actual) == (
        workdir / "model.joblib",
        "0" * 64,
        actual,
    )
    assert [c.recorded_in for c in error.changes] == [str(workdir / "train.json")]
    assert str(error).endswith("the model changed after training (run `ci-mlops train` again)")
    assert not (workdir / "export.json").exists()


def test_opset_onnxruntime_cannot_run_is_refused(project: dict[str, Path]) -> None:
    spec, model, workdir = spec_and_model(project["diabetes"])
    pinned = dataclasses.replace(model, export=dataclasses.replace(model.export, opset=99))

    with pytest.raises(
        StepError, match=r"export\.opset 99 is not supported by the installed onnxruntime"
    ):
        export.run(spec, pinned)
    assert not (workdir / "model.onnx").exists()


def test_pytorch_without_torch_says_what_to_install(
    project: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, model, workdir = spec_and_model(project["diabetes"])
    torch_model = dataclasses.replace(model, framework="pytorch")
    (workdir / "model.pt").write_bytes(b"not loaded: torch is missing")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail

    with pytest.raises(StepError, match=r"model\.pt: .*install .ci-mlops\[torch\]."):
        export.run(spec, torch_model)


def test_non_numeric_eval_column_is_bad_input(project: dict[str, Path]) -> None:
    spec, model, _ = spec_and_model(project["diabetes"])
    features = spec.root / "data" / "eval_features.csv"
    frame = pd.read_csv(features)
    frame["site"] = "clinic-a"
    frame.to_csv(features, index=False)

    with pytest.raises(StepError, match=r"eval_features\.csv: column\(s\) 'site' are not numeric"):
        export.run(spec, model)


def test_onnx_model_is_checked_as_it_is(project: dict[str, Path]) -> None:
    spec_path = project["breast-cancer"]
    assert cli("export", "--spec", str(spec_path)).exit_code == 0
    spec, model, workdir = spec_and_model(spec_path)
    as_onnx = dataclasses.replace(model, framework="onnx")
    onnx_bytes = (workdir / "model.onnx").read_bytes()

    record = export.run(spec, as_onnx)

    assert record.passed is True and record.max_abs_diff == 0.0
    assert record.onnx_sha256 == record.model_sha256 == sha256_file(workdir / "model.onnx")
    assert (workdir / "model.onnx").read_bytes() == onnx_bytes
    assert record.latency is not None
    assert record.latency["onnx_batch1_ms"] > 0 and record.latency["batch1_speedup"] is None
    assert ExportRecord.read(workdir) == record
