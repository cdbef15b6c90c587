"""Builders for steps that need a trained model: example copies with a model in place.

The model is produced by ``ci-mlops train``, which runs the example's own training
script and records the model's sha256 in train.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from ci_mlops.cli import main
from ci_mlops.spec.check import load_spec
from tests.helpers import Result, copy_example

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def train_example(folder: Path, **params: Any) -> Path:
    """Train the (single) model of the example in ``folder`` with ``ci-mlops train
    --force``, ``params`` overriding the spec's; return the model file."""
    if params:
        spec_file = folder / "mlops.yaml"
        data = yaml.safe_load(spec_file.read_text("utf-8"))
        data["models"][0]["train"]["params"].update(params)
        spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    # The spec's command says `python`: make that this interpreter.
    path_var = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = CliRunner(env={"PATH": path_var}).invoke(
        main, ["train", "--force", "--spec", str(folder / "mlops.yaml")]
    )
    assert result.exit_code == 0, result.output
    return workdir(folder) / load_spec(folder / "mlops.yaml").models[0].model_file


def train_behind_the_back(folder: Path, **params: Any) -> Path:
    """Replace the model file by running the training script directly, as a person
    might: train.json is not updated. Returns the model file."""
    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]
    path = spec.workdir(model) / model.model_file
    train = model.train_data
    assert train is not None
    env = {
        **os.environ,
        "MLOPS_PARAMS": json.dumps({**model.train.params, **params}),
        "MLOPS_TRAIN_DATA": str(folder / (train.path or train.features or "")),
        "MLOPS_TARGET": train.target or "",
        "MLOPS_MODEL_PATH": str(path),
    }
    if train.labels:
        env["MLOPS_TRAIN_LABELS"] = str(folder / train.labels)
    subprocess.run(
        [sys.executable, "train.py"], cwd=folder, env=env, check=True, capture_output=True
    )
    return path


def trained_example(name: str, tmp_path: Path, **params: Any) -> Path:
    """A copy of ``examples/<name>`` in ``tmp_path`` with its model trained."""
    folder = copy_example(name, tmp_path)
    train_example(folder, **params)
    return folder


def clone(folder: Path, tmp_path: Path) -> Path:
    """A private copy of a prepared example, working files included."""
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def invoke(folder: Path, *args: str) -> Result:
    """Run ``ci-mlops ARGS --spec <folder>/mlops.yaml`` in-process."""
    result = CliRunner().invoke(main, [*args, "--spec", str(folder / "mlops.yaml")])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def workdir(folder: Path) -> Path:
    """The working folder of the example's (single) model."""
    spec = load_spec(folder / "mlops.yaml", check_files=False)
    return spec.workdir(spec.models[0])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))
