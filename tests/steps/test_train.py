"""The train step: the example training scripts through the CLI, the input-hash cache
and what invalidates it, failures and timeouts that keep the earlier model, and the
environment the training command sees."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from ci_mlops.atomic import sha256_file
from ci_mlops.cli import main
from ci_mlops.errors import StepError
from ci_mlops.spec.check import load_spec
from ci_mlops.steps import train
from tests.helpers import Result, copy_example

PYTHON = shlex.quote(sys.executable)


@pytest.fixture(autouse=True)
def venv_python_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python train.py` must find this interpreter (and its scikit-learn), as it
    would in a CI job whose image has the requirements installed."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def invoke(folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    spec = str(folder / "mlops.yaml")
    result = CliRunner(env=env).invoke(main, ["train", "--spec", spec, *args])
    return Result(result.exit_code, result.stdout, result.stderr)


def record(folder: Path, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / ".ci-mlops" / name / "train.json").read_text())
    return loaded


def edit_model(folder: Path, change: Any) -> None:
    path = folder / "mlops.yaml"
    data = yaml.safe_load(path.read_text())
    change(data["models"][0])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# --- the diabetes example, trained once for the module -----------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The diabetes example after one real `ci-mlops train`."""
    folder = copy_example("diabetes", tmp_path_factory.mktemp("trained"))
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = invoke(folder, env=env)
    assert res.code == 0, res.output
    return folder


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained example, model and train.json included."""
    return Path(shutil.copytree(trained, tmp_path / "diabetes"))


def test_first_train_writes_model_and_record(trained: Path) -> None:
    out = trained / ".ci-mlops" / "diabetes"
    rec = record(trained, "diabetes")
    assert rec["skipped"] is False
    assert rec["model_sha256"] == sha256_file(out / "model.joblib")
    assert rec["command"] == "python train.py"
    assert rec["params"] == {"n_estimators": 150, "max_depth": 2, "learning_rate": 0.05}
    assert rec["duration_seconds"] > 0
    assert rec["trained_at"].endswith("+00:00")
    spec = load_spec(trained / "mlops.yaml")
    assert rec["input_hash"] == train.input_hash(spec, spec.models[0])
    # The model really is the example's regressor, written through MLOPS_MODEL_PATH.
    import joblib

    assert type(joblib.load(out / "model.joblib")).__name__ == "GradientBoostingRegressor"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_unchanged_inputs_skip_training(project: Path) -> None:
    before = record(project, "diabetes")
    res = invoke(project)
    assert res.code == 0, res.output
    assert "inputs unchanged (hash " + before["input_hash"][:8] in res.stderr
    assert "--force to retrain" in res.stderr
    assert "trained on" not in res.output  # the script did not run
    after = record(project, "diabetes")
    assert after["skipped"] is True
    assert after["model_sha256"] == before["model_sha256"]
    assert after["input_hash"] == before["input_hash"]
    assert after["trained_at"] == before["trained_at"]


@pytest.mark.slow
def test_a_changed_model_file_is_not_trusted(project: Path) -> None:
    path = project / ".ci-mlops" / "diabetes" / "model.joblib"
    path.write_bytes(b"tampered")
    res = invoke(project)
    assert res.code == 0, res.output
    assert record(project, "diabetes")["skipped"] is False
    assert sha256_file(path) == record(project, "diabetes")["model_sha256"]
    assert path.read_bytes() != b"tampered"


@pytest.mark.slow
def test_a_mistyped_train_json_is_no_cache_and_is_rewritten(project: Path) -> None:
    path = project / ".ci-mlops" / "diabetes" / "train.json"
    path.write_text(json.dumps({**record(project, "diabetes"), "input_hash": 7}))
    res = invoke(project)
    assert res.code == 0, res.output
    assert f"{path}: input_hash: expected a string, found an integer; training again" in res.stderr
    assert record(project, "diabetes")["skipped"] is False
    assert isinstance(record(project, "diabetes")["input_hash"], str)


@pytest.mark.slow
def test_changing_one_data_row_retrains(project: Path) -> None:
    before = record(project, "diabetes")
    labels = project / "data" / "train_labels.csv"
    frame = pd.read_csv(labels)
    frame.loc[0, "progression"] += 1
    frame.to_csv(labels, index=False)
    res = invoke(project)
    assert res.code == 0, res.output
    assert "trained on 331 rows" in res.stdout
    after = record(project, "diabetes")
    assert after["skipped"] is False
    assert after["input_hash"] != before["input_hash"]
    assert after["model_sha256"] != before["model_sha256"]


@pytest.mark.slow
def test_changing_a_param_retrains(project: Path) -> None:
    before = record(project, "diabetes")
    edit_model(project, lambda m: m["train"]["params"].update(n_estimators=20))
    res = invoke(project)
    assert res.code == 0, res.output
    after = record(project, "diabetes")
    assert after["skipped"] is False
    assert after["params"]["n_estimators"] == 20
    assert after["input_hash"] != before["input_hash"]
    assert after["model_sha256"] != before["model_sha256"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env"),
    [(("--force",), {}), ((), {"MLOPS_RETRAIN": "diabetes"})],
    ids=["force", "MLOPS_RETRAIN"],
)
def test_forcing_retrains(project: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
    before = record(project, "diabetes")
    res = invoke(project, *args, env=env)
    assert res.code == 0, res.output
    assert "trained on 331 rows" in res.stdout
    after = record(project, "diabetes")
    assert after["skipped"] is False
    assert after["trained_at"] >= before["trained_at"]
    assert after["input_hash"] == before["input_hash"]
    # Same data, params and seed: the same model again.
    assert after["model_sha256"] == before["model_sha256"]


def test_retrain_variable_values(monkeypatch: pytest.MonkeyPatch, trained: Path) -> None:
    model = load_spec(trained / "mlops.yaml").models[0]
    assert train.force_reason(model, True) == "--force"
    for value in ("1", "true", "TRUE", "all", "diabetes", "churn, diabetes"):
        monkeypatch.setenv("MLOPS_RETRAIN", value)
        assert train.force_reason(model, False) == f"MLOPS_RETRAIN={value}", value
    for value in ("", "0", "false", "churn", "diabetes-v2"):
        monkeypatch.setenv("MLOPS_RETRAIN", value)
        assert train.force_reason(model, False) is None, value


def test_input_hash_follows_code_not_bytecode_or_outputs(project: Path) -> None:
    def digest() -> str:
        spec = load_spec(project / "mlops.yaml")
        return train.input_hash(spec, spec.models[0])

    (project / "src" / "__pycache__").mkdir(parents=True)
    (project / "src" / "features.py").write_text("SCALE = 1\n")
    edit_model(project, lambda m: m.update(paths=["train.py", "src"]))
    first = digest()
    (project / "src" / "__pycache__" / "features.cpython-311.pyc").write_bytes(b"\x00")
    (project / ".ci-mlops" / "diabetes" / "metrics.json").write_text("{}")
    (project / ".mlops-registry").mkdir()
    (project / ".mlops-registry" / "x").write_text("1")
    assert digest() == first
    edit_model(project, lambda m: m["data"]["eval"]["expectations"].clear())
    assert digest() == first  # expectations decide data-test, not the model
    (project / "src" / "features.py").write_text("SCALE = 2\n")
    second = digest()
    assert second != first
    (project / "requirements.txt").write_text("scikit-learn==0.0\n")
    assert digest() != second
    spec = load_spec(project / "mlops.yaml")
    assert train.code_files(spec, spec.models[0]) == ["src/features.py", "train.py"]


# --- small projects whose training command is a Python one-liner --------------------------


def tiny_project(tmp_path: Path, command: str, **train_options: Any) -> Path:
    """A spec with split eval files and a one-file train set; ``command`` trains."""
    folder = tmp_path / "tiny"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("x,label\n1,0\n2,1\n")
    (folder / "data" / "eval_x.csv").write_text("x\n3\n")
    (folder / "data" / "eval_y.csv").write_text("label\n1\n")
    spec = {
        "version": 1,
        "models": [
            {
                "name": "tiny",
                "framework": "sklearn",
                "task": "classification",
                "data": {
                    "train": {"path": "data/train.csv", "target": "label"},
                    "eval": {"features": "data/eval_x.csv", "labels": "data/eval_y.csv"},
                },
                "train": {
                    "command": command,
                    "params": {"alpha": 0.5, "solver": "lbfgs", "warm_start": True},
                    **train_options,
                },
                "metrics": {"accuracy": {}},
            }
        ],
    }
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def py(code: str) -> str:
    return f"{PYTHON} -c {shlex.quote(code)}"


WRITE_MODEL = "open(os.environ['MLOPS_MODEL_PATH'], 'wb').write(b'model-v1')"


def test_command_gets_the_documented_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = "import json, os; json.dump(dict(os.environ), open('env.json', 'w')); " + WRITE_MODEL
    folder = tiny_project(tmp_path, py(dump))
    monkeypatch.setenv("MLOPS_TRAIN_LABELS", "/stale/from/an/outer/run")
    monkeypatch.setenv("MLOPS_PARAM_OLD", "stale")
    res = invoke(folder)
    assert res.code == 0, res.output
    env = json.loads((folder / "env.json").read_text())
    root = folder.absolute()
    assert env["MLOPS_MODEL_NAME"] == "tiny"
    assert env["MLOPS_PARAMS"] == '{"alpha": 0.5, "solver": "lbfgs", "warm_start": true}'
    assert env["MLOPS_PARAM_ALPHA"] == "0.5"
    assert env["MLOPS_PARAM_SOLVER"] == "lbfgs"
    assert env["MLOPS_PARAM_WARM_START"] == "true"
    assert env["MLOPS_TRAIN_DATA"] == str(root / "data" / "train.csv")
    assert "MLOPS_TRAIN_LABELS" not in env
    assert "MLOPS_PARAM_OLD" not in env
    assert env["MLOPS_EVAL_DATA"] == str(root / "data" / "eval_x.csv")
    assert env["MLOPS_EVAL_LABELS"] == str(root / "data" / "eval_y.csv")
    assert env["MLOPS_TARGET"] == "label"
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment is passed on
    # A temporary path inside the working folder; the model then moved into place.
    workdir = root / ".ci-mlops" / "tiny"
    model_path = Path(env["MLOPS_MODEL_PATH"])
    assert model_path.is_absolute()
    assert model_path.name == "model.joblib"
    assert model_path.parent.parent == workdir
    assert not model_path.parent.exists()
    assert (workdir / "model.joblib").read_bytes() == b"model-v1"


def test_output_is_streamed(tmp_path: Path) -> None:
    code = "import sys, os; print('epoch 1'); print('warn 1', file=sys.stderr); " + WRITE_MODEL
    folder = tiny_project(tmp_path, py(code))
    res = invoke(folder)
    assert res.code == 0, res.output
    assert "epoch 1" in res.stdout
    assert "warn 1" in res.stderr


def test_failing_command_keeps_the_earlier_model(tmp_path: Path) -> None:
    folder = tiny_project(tmp_path, py("import os; " + WRITE_MODEL))
    assert invoke(folder).code == 0
    workdir = folder / ".ci-mlops" / "tiny"
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    crash = (
        "import os; open(os.environ['MLOPS_MODEL_PATH'], 'wb').write(b'half'); raise SystemExit(3)"
    )
    edit_model(folder, lambda m: m["train"].update(command=py(crash)))

    res = invoke(folder)
    assert res.code == 1, res.output
    assert "train tiny: training command exited with status 3" in res.stderr
    assert "Traceback" not in res.output
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


def test_command_that_writes_no_model_fails(tmp_path: Path) -> None:
    folder = tiny_project(tmp_path, py("print('forgot to save')"))
    res = invoke(folder)
    assert res.code == 1
    assert "wrote no model to $MLOPS_MODEL_PATH" in res.stderr
    assert not (folder / ".ci-mlops" / "tiny" / "model.joblib").exists()
    assert not (folder / ".ci-mlops" / "tiny" / "train.json").exists()


def test_output_path_is_copied_in(tmp_path: Path) -> None:
    write = "import pathlib; pathlib.Path('out').mkdir(exist_ok=True); pathlib.Path('out/m.pt').write_bytes(b'weights')"
    folder = tiny_project(tmp_path, py(write), output="out/m.pt")
    assert invoke(folder).code == 0
    model = folder / ".ci-mlops" / "tiny" / "model.pt"
    assert model.read_bytes() == b"weights"
    assert record(folder, "tiny")["model_sha256"] == sha256_file(model)

    # A command that no longer writes the output must not pass the old file off as new.
    edit_model(folder, lambda m: m["train"].update(command="true"))
    res = invoke(folder)
    assert res.code == 1
    assert "left out/m.pt unchanged" in res.stderr


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a killed, not yet reaped process is gone too


def test_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    folder = tiny_project(tmp_path, py("import os; " + WRITE_MODEL))
    assert invoke(folder).code == 0
    workdir = folder / ".ci-mlops" / "tiny"
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    # The shell starts a background sleeper and waits: both must die at the timeout.
    hang = "echo $$ > pids; sleep 60 & echo $! >> pids; wait"
    edit_model(folder, lambda m: m["train"].update(command=hang))
    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]

    start = time.monotonic()
    with pytest.raises(StepError, match=r"train tiny: training timed out after 0\.5 s"):
        train.train(spec, model, train.input_hash(spec, model), timeout_seconds=0.5)
    assert time.monotonic() - start < 10
    pids = [int(p) for p in (folder / "pids").read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


def test_timeout_comes_from_the_spec_in_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny_project(tmp_path, "true", timeout_minutes=7)
    spec = load_spec(folder / "mlops.yaml")
    seen: dict[str, float] = {}

    def fake_train(spec: Any, model: Any, digest: str, *, timeout_seconds: float) -> dict[str, Any]:
        seen["timeout"] = timeout_seconds
        return {}

    monkeypatch.setattr(train, "train", fake_train)
    train.run(spec, spec.models[0])
    assert seen["timeout"] == 7 * 60


def test_missing_data_file_is_a_step_error(tmp_path: Path) -> None:
    folder = tiny_project(tmp_path, "true")
    spec = load_spec(folder / "mlops.yaml")
    (folder / "data" / "eval_y.csv").unlink()
    with pytest.raises(StepError, match=r"data/eval_y\.csv: data file not found"):
        train.run(spec, spec.models[0])
