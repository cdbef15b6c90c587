"""Foreign-shaped repositories, from `ci-mlops init` to a green `ci-mlops run` with no
edit to the spec: headerless split files with any delimiter, a regression repository,
a training script that reads its own paths and only saves its model where told."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import make_classification, make_regression

from tests.helpers import run_cli

pytestmark = pytest.mark.slow

# The training scripts run `python`: make it this interpreter, with its libraries.
PATH_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

# Reads the paths ci-mlops passes, with numpy only: no column names, no header.
SPLIT_TRAIN = """\
import os, joblib, numpy as np
from sklearn.linear_model import LogisticRegression
sep = {sep!r}
X = np.loadtxt(os.environ["MLOPS_TRAIN_DATA"], delimiter=sep)
y = np.loadtxt(os.environ["MLOPS_TRAIN_LABELS"])
joblib.dump(LogisticRegression().fit(X, y), os.environ["MLOPS_MODEL_PATH"])
"""

# Ignores every MLOPS_ variable but the model path: reads its own file by name.
OWN_PATHS_TRAIN = """\
import os, joblib, pandas as pd
from sklearn.linear_model import Ridge
frame = pd.read_csv("data/train.csv")
model = Ridge().fit(frame.drop(columns=["price"]), frame["price"])
joblib.dump(model, os.environ["MLOPS_MODEL_PATH"])
"""


def classes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=300,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        class_sep=2.0,
        random_state=seed,
    )


def headerless_split_repo(root: Path, sep: str) -> Path:
    (root / "data").mkdir(parents=True)
    X, y = classes(0)
    for name, rows in (("train", slice(0, 200)), ("test", slice(200, 300))):
        np.savetxt(root / f"data/{name}_features.txt", X[rows], delimiter=sep)
        np.savetxt(root / f"data/{name}_labels.txt", y[rows])
    (root / "train.py").write_text(SPLIT_TRAIN.format(sep=sep), encoding="utf-8")
    return root


def regression_repo(root: Path) -> Path:
    import pandas as pd

    (root / "data").mkdir(parents=True)
    X, y = make_regression(n_samples=300, n_features=4, noise=5.0, random_state=1)
    frame = pd.DataFrame(X, columns=["rooms", "area", "age", "floor"]).assign(price=y)
    frame[:200].to_csv(root / "data/train.csv", index=False)
    frame[200:].to_csv(root / "data/eval.csv", index=False)
    (root / "train.py").write_text(OWN_PATHS_TRAIN, encoding="utf-8")
    return root


def init_and_run(root: Path) -> tuple[str, dict[str, object]]:
    """`ci-mlops init` then `ci-mlops run`, asserting both succeed; the init output and
    the written spec."""
    init = run_cli("init", cwd=root, env=PATH_ENV)
    assert init.code == 0, init.output
    written = (root / "mlops.yaml").read_text(encoding="utf-8")
    run = run_cli("run", cwd=root, env=PATH_ENV)
    assert run.code == 0, init.output + run.output
    assert (root / "mlops.yaml").read_text(encoding="utf-8") == written
    gates = json.loads((root / ".ci-mlops" / root.name / "gates.json").read_text())
    assert gates["passed"] is True
    return init.output, yaml.safe_load(written)


@pytest.mark.parametrize(("sep", "word"), [(" ", "space"), ("\t", "tab"), (";", "semicolon")])
def test_headerless_split_files_go_from_init_to_a_green_run(
    tmp_path: Path, sep: str, word: str
) -> None:
    root = headerless_split_repo(tmp_path / "repo", sep)

    output, spec = init_and_run(root)

    data = spec["models"][0]["data"]  # type: ignore[index]
    assert data["train"]["features"] == "data/train_features.txt"
    assert data["train"]["labels"] == "data/train_labels.txt"
    assert data["eval"]["features"] == "data/test_features.txt"
    assert data["train"]["delimiter"] == sep and data["train"]["header"] is False
    assert "columns" not in data["train"]
    assert spec["models"][0]["task"] == "classification"  # type: ignore[index]
    assert f"guessed data/train_features.txt: {word}-delimited (5 columns" in output
    assert "no header row (the first row holds numbers" in output
    assert "guessed task: classification (the target holds 2 distinct whole numbers)" in output
    assert (
        "re-read train data: data/train_features.txt + data/train_labels.txt: "
        "200 rows, 5 feature columns and target 'target'"
    ) in output


def test_a_regression_repo_whose_script_reads_its_own_paths_runs_green(tmp_path: Path) -> None:
    root = regression_repo(tmp_path / "repo")

    output, spec = init_and_run(root)

    model = spec["models"][0]  # type: ignore[index]
    assert model["task"] == "regression"
    assert set(model["metrics"]) == {"r2", "rmse", "mae"}
    train = model["data"]["train"]
    assert train["path"] == "data/train.csv" and train["target"] == "price"
    # The defaults hold, so the spec does not repeat them.
    assert not {"delimiter", "header", "columns"} & set(train)
    assert "guessed target: 'price' (the last column)" in output
    metrics = json.loads((root / ".ci-mlops" / root.name / "metrics.json").read_text())
    assert metrics["metrics"]["r2"] > 0.9
    # The registry records name the spec by its place in the repository, not this disk's.
    manifests = list((root / ".mlops-registry").rglob("manifest.json"))
    assert manifests
    for manifest in manifests:
        text = manifest.read_text(encoding="utf-8")
        assert str(tmp_path) not in text
        assert json.loads(text)["source"]["spec"] == "mlops.yaml"


def test_a_headerless_single_file_gets_column_names(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    X, y = classes(2)
    rows = np.column_stack([X, y])
    np.savetxt(root / "data/train.csv", rows[:200], delimiter=",", fmt="%.6f")
    np.savetxt(root / "data/eval.csv", rows[200:], delimiter=",", fmt="%.6f")
    (root / "train.py").write_text(
        "import os, joblib, pandas as pd\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "frame = pd.read_csv(os.environ['MLOPS_TRAIN_DATA'], header=None)\n"
        "X, y = frame.iloc[:, :-1].to_numpy(), frame.iloc[:, -1].to_numpy()\n"
        "joblib.dump(LogisticRegression().fit(X, y), os.environ['MLOPS_MODEL_PATH'])\n",
        encoding="utf-8",
    )

    _, spec = init_and_run(root)

    train = spec["models"][0]["data"]["train"]  # type: ignore[index]
    assert train["header"] is False and "delimiter" not in train
    assert train["columns"] == ["x1", "x2", "x3", "x4", "x5", "target"]
    assert train["target"] == "target"


NAMED_SPEC = """\
version: 1
models:
  - name: named
    framework: sklearn
    task: classification
    paths: [train.py]
    data:
      train:
        features: data/train_features.txt
        labels: data/train_labels.txt
        delimiter: "{sep}"
        header: false
        columns: [a, b, c, d, e]
        target: sick
        expectations:
          - expect_column_values_to_not_be_null: {{column: a}}
          - expect_column_values_to_be_in_set: {{column: sick, value_set: [0, 1]}}
      eval:
        features: data/test_features.txt
        labels: data/test_labels.txt
        delimiter: "{sep}"
        header: false
        columns: [a, b, c, d, e]
        target: sick
    train:
      command: python train.py
    metrics:
      accuracy: {{min: 0.8}}
    retrain:
      drift:
        reference: data/train_features.txt
        current: data/test_features.txt
        retrain: false
"""


def test_named_columns_reach_every_step_that_reads_data(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "named", ";")
    (root / "mlops.yaml").write_text(NAMED_SPEC.format(sep=";"), encoding="utf-8")
    # The training command is told the target the steps read.
    (root / "train.py").write_text(
        SPLIT_TRAIN.format(sep=";")
        + "assert os.environ['MLOPS_TARGET'] == 'sick', os.environ['MLOPS_TARGET']\n",
        encoding="utf-8",
    )

    run = run_cli("run", cwd=root, env=PATH_ENV)
    drift = run_cli("drift", cwd=root, env=PATH_ENV)

    assert run.code == 0, run.output
    work = root / ".ci-mlops" / "named"
    checked = json.loads((work / "data-test.json").read_text())["datasets"]["train"]
    assert checked["passed"] is True and checked["columns"] == 6
    assert [(e["kwargs"], e["passed"]) for e in checked["expectations"]] == [
        ({"column": "a"}, True),
        ({"column": "sick", "value_set": [0, 1]}, True),
    ]
    assert json.loads((work / "gates.json").read_text())["passed"] is True
    assert drift.code == 0, drift.output
    report = json.loads((work / "drift.json").read_text())
    assert [c["column"] for c in report["columns"]] == ["a", "b", "c", "d", "e"]
