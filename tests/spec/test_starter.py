"""``ci-mlops init`` writes a starter spec that validates once the files it names exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ci_mlops.errors import UsageError
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.starter import (
    NAME_PATTERN,
    SCHEMA_URL,
    choose_data,
    find_data,
    sanitize_name,
    write_starter,
)
from tests.helpers import copy_example, run_cli

TRAIN_PY = "import os\nopen(os.environ['MLOPS_MODEL_PATH'], 'wb').close()\n"


def touch(folder: Path, *names: str, text: str = "a,b,label\n1,2,0\n") -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")


def spec_model(folder: Path) -> dict[str, object]:
    data = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))
    model: dict[str, object] = data["models"][0]
    return model


def test_init_in_an_empty_folder_names_placeholders_that_validate_once_created(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "My Churn_Model 2"
    folder.mkdir()
    result = run_cli("init", cwd=folder)
    assert result.code == 0, result.output
    text = (folder / "mlops.yaml").read_text("utf-8")
    assert text.startswith(f"# yaml-language-server: $schema={SCHEMA_URL}\n")
    assert spec_model(folder)["name"] == "my-churn-model-2"
    assert "no data files found" in text and "train.py does not exist yet" in text

    missing = run_cli("validate", cwd=folder)
    assert missing.code == 2
    assert "data/train.csv" in missing.stderr and "data/eval.csv" in missing.stderr
    assert run_cli("validate", "--no-files", cwd=folder).code == 0

    touch(folder, "data/train.csv", "data/eval.csv")
    touch(folder, "train.py", text=TRAIN_PY)
    ok = run_cli("validate", cwd=folder)
    assert ok.code == 0, ok.output


def test_init_uses_the_data_requirements_and_script_it_finds(tmp_path: Path) -> None:
    touch(tmp_path, "data/train.csv", "data/eval.csv", text="age,income,churned\n1,2,0\n")
    touch(tmp_path, "requirements.txt", text="scikit-learn\n")
    touch(tmp_path, "train.py", text=TRAIN_PY)
    result = run_cli("init", "--name", "churn", cwd=tmp_path)
    assert result.code == 0, result.output
    model = spec_model(tmp_path)
    assert model["name"] == "churn"
    # Only what differs from the defaults: no format options, no expectations.
    assert model["data"] == {
        "train": {"path": "data/train.csv", "target": "churned"},
        "eval": {"path": "data/eval.csv", "target": "churned"},
    }
    assert set(model) == {"name", "framework", "task", "paths", "data", "train", "metrics"}
    assert model["paths"] == ["train.py", "requirements.txt"]
    spec = load_spec(tmp_path / "mlops.yaml")
    assert spec.runtime.requirements == "requirements.txt"
    assert spec.models[0].train.command == "python train.py"
    assert run_cli("validate", cwd=tmp_path).code == 0


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    spec = tmp_path / "mlops.yaml"
    spec.write_text("version: 1  # mine\n", "utf-8")
    refused = run_cli("init", cwd=tmp_path)
    assert refused.code == 2
    assert "--force" in refused.stderr and "Traceback" not in refused.output
    assert spec.read_text("utf-8") == "version: 1  # mine\n"

    forced = run_cli("init", "--force", "--name", "forced", cwd=tmp_path)
    assert forced.code == 0, forced.output
    assert spec_model(tmp_path)["name"] == "forced"


def test_init_writes_where_spec_points(tmp_path: Path) -> None:
    touch(tmp_path / "svc", "train.py", text=TRAIN_PY)
    result = run_cli("init", "--spec", "svc/ml.yaml", cwd=tmp_path)
    assert result.code == 0, result.output
    assert spec_model_at(tmp_path / "svc" / "ml.yaml")["name"] == "svc"
    assert spec_model_at(tmp_path / "svc" / "ml.yaml")["paths"] == ["train.py"]


def spec_model_at(path: Path) -> dict[str, object]:
    model: dict[str, object] = yaml.safe_load(path.read_text("utf-8"))["models"][0]
    return model


def test_init_rejects_an_invalid_name(tmp_path: Path) -> None:
    result = run_cli("init", "--name", "Churn Model", cwd=tmp_path)
    assert result.code == 2
    assert "'churn-model'" in result.stderr
    assert not (tmp_path / "mlops.yaml").exists()


def test_a_single_data_file_serves_both_roles_with_a_warning(tmp_path: Path) -> None:
    touch(tmp_path, "customers.csv", text="x,y\n1,2\n")
    touch(tmp_path, "train.py", text=TRAIN_PY)
    write_starter(tmp_path / "mlops.yaml")
    model = spec_model(tmp_path)
    data = model["data"]
    assert isinstance(data, dict)
    assert data["train"]["path"] == data["eval"]["path"] == "customers.csv"
    assert data["train"]["target"] == "y"  # no target-like name: the last column
    assert "hold out rows for evaluation" in (tmp_path / "mlops.yaml").read_text("utf-8")
    load_spec(tmp_path / "mlops.yaml")


def test_split_feature_and_label_files_are_paired(tmp_path: Path) -> None:
    folder = copy_example("diabetes", tmp_path)
    (folder / "mlops.yaml").unlink()
    write_starter(folder / "mlops.yaml")
    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]
    assert model.name == "diabetes"
    assert model.train_data is not None
    assert model.train_data.features == "data/train_features.csv"
    assert model.train_data.labels == "data/train_labels.csv"
    assert model.eval_data.features == "data/eval_features.csv"
    assert model.eval_data.target == "progression"


def test_starter_for_the_classifier_example_validates(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    (folder / "mlops.yaml").unlink()
    write_starter(folder / "mlops.yaml")
    model = load_spec(folder / "mlops.yaml").models[0]
    assert model.train_data is not None and model.train_data.path == "data/train.csv"
    assert model.eval_data.path == "data/eval.csv"
    assert model.eval_data.target == "target"


def test_requirements_folder_and_src_script_are_found(tmp_path: Path) -> None:
    touch(tmp_path, "requirements/dev.txt", "requirements/base.txt", text="pandas\n")
    touch(tmp_path, "src/train.py", text=TRAIN_PY)
    touch(tmp_path, "data/validation.parquet", "data/training.parquet", text="")
    write_starter(tmp_path / "mlops.yaml")
    spec = load_spec(tmp_path / "mlops.yaml")
    model = spec.models[0]
    assert spec.runtime.requirements == "requirements/base.txt"
    assert model.train.command == "python src/train.py"
    assert model.train_data is not None and model.train_data.path == "data/training.parquet"
    assert model.eval_data.path == "data/validation.parquet"
    assert model.eval_data.format == "parquet"


def test_word_matching_does_not_mistake_latest_for_test(tmp_path: Path) -> None:
    touch(tmp_path, "data/latest.csv", "data/train.csv", "data/test.csv")
    train, evaluation = choose_data(find_data(tmp_path), tmp_path)
    assert (train.path, evaluation.path) == ("data/train.csv", "data/test.csv")


def test_files_with_characters_the_schema_refuses_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path, "data/it's.csv", "data/$train.csv", "data/ok train.csv")
    assert find_data(tmp_path) == ["data/ok train.csv"]
    touch(tmp_path, "train.py", text=TRAIN_PY)
    write_starter(tmp_path / "mlops.yaml")
    assert load_spec(tmp_path / "mlops.yaml").models[0].eval_data.path == "data/ok train.csv"


def test_write_starter_refuses_in_process_too(tmp_path: Path) -> None:
    write_starter(tmp_path / "mlops.yaml", name="a")
    before = (tmp_path / "mlops.yaml").read_bytes()
    with pytest.raises(UsageError, match="--force"):
        write_starter(tmp_path / "mlops.yaml", name="b")
    assert (tmp_path / "mlops.yaml").read_bytes() == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "mlops.yaml"]
    assert leftovers == []


@pytest.mark.fuzz
@given(st.text(max_size=80))
def test_sanitized_names_are_always_valid(raw: str) -> None:
    assert NAME_PATTERN.match(sanitize_name(raw))


def test_init_ignores_working_folders_in_git_once(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("__pycache__/\n.ci-mlops", encoding="utf-8")

    result = run_cli("init", cwd=tmp_path)

    assert result.code == 0, result.output
    assert f"added .mlops-registry/ to {Path('.gitignore')}" in result.stdout
    assert (tmp_path / ".gitignore").read_text("utf-8") == (
        "__pycache__/\n.ci-mlops\n.mlops-registry/\n"
    )
    again = run_cli("init", "--force", cwd=tmp_path)
    assert again.code == 0 and "added" not in again.stdout
    assert (tmp_path / ".gitignore").read_text("utf-8").count(".mlops-registry") == 1


def test_init_creates_a_gitignore(tmp_path: Path) -> None:
    assert run_cli("init", cwd=tmp_path).code == 0

    assert (tmp_path / ".gitignore").read_text("utf-8") == ".ci-mlops/\n.mlops-registry/\n"


def test_init_writes_format_options_only_when_they_differ(tmp_path: Path) -> None:
    touch(tmp_path, "data/train.csv", "data/eval.csv", text="a,b,label\n1,2,0\n3,4,1\n")

    result = run_cli("init", cwd=tmp_path)

    assert result.code == 0, result.output
    train = spec_model(tmp_path)["data"]["train"]  # type: ignore[index]
    assert not {"delimiter", "header", "columns"} & set(train)
    assert "guessed target: 'label' (named like a target)" in result.stdout
    assert "re-read train data: data/train.csv: 2 rows, 2 feature columns and target 'label'" in (
        result.stdout
    )


def test_init_says_when_the_data_does_not_read_back(tmp_path: Path) -> None:
    # Rows of different widths: no delimiter splits them alike, so the re-read fails.
    touch(tmp_path, "data/train.csv", "data/eval.csv", text="a,b,label\n1,2,0,5,6\n")

    result = run_cli("init", cwd=tmp_path)

    assert result.code == 0
    assert "warning: mlops.yaml: train data:" in result.stderr
    assert "fix the data options in the spec" in result.stderr


def test_validate_warns_when_column_names_look_like_data(tmp_path: Path) -> None:
    touch(tmp_path, "train.py", text=TRAIN_PY)
    touch(tmp_path, "data/train.csv", "data/eval.csv", text="a,b,label\n1,2,0\n")
    assert run_cli("init", cwd=tmp_path).code == 0
    (tmp_path / "data/eval.csv").write_text("1.5,2,0\n3,4,1\n", encoding="utf-8")

    result = run_cli("validate", cwd=tmp_path)

    assert result.code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if "look like data" in x)
    assert line.startswith("ci-mlops: warning: mlops.yaml:")
    assert line.endswith(
        "$.models[0].data.eval.path: data/eval.csv: the column names look like data "
        "('1.5', '2', '0'); if the file has no header row, set header: false (and name "
        "the columns with columns: [...])"
    )
    assert "look like data" not in run_cli("validate", "--no-files", cwd=tmp_path).stderr


def test_named_columns_must_agree_with_the_target(tmp_path: Path) -> None:
    touch(tmp_path, "train.py", text=TRAIN_PY)
    touch(tmp_path, "data/train.csv", "data/eval.csv", text="1,2,0\n3,4,1\n")
    assert run_cli("init", cwd=tmp_path).code == 0
    spec = tmp_path / "mlops.yaml"
    spec.write_text(
        spec.read_text("utf-8").replace("columns: [x1, x2, target]", "columns: [a, b, y]"),
        encoding="utf-8",
    )

    result = run_cli("validate", cwd=tmp_path)

    assert result.code == 2
    assert "data.train.target: 'target' is not one of the named columns" in result.stderr


def test_validate_warns_when_the_delimiter_leaves_one_column(tmp_path: Path) -> None:
    touch(tmp_path, "train.py", text=TRAIN_PY)
    touch(tmp_path, "data/train.csv", "data/eval.csv", text="a;b;label\n1;2;0\n3;4;1\n")
    assert run_cli("init", cwd=tmp_path).code == 0
    spec = tmp_path / "mlops.yaml"
    assert 'delimiter: ";"' in spec.read_text("utf-8")
    spec.write_text(spec.read_text("utf-8").replace('delimiter: ";"', ""), encoding="utf-8")

    result = run_cli("validate", cwd=tmp_path)

    assert result.code == 0, result.output
    assert (
        "$.models[0].data.train.path: data/train.csv: delimiter ',' reads one column, ';' "
        'splits every sampled row into 3: set delimiter: ";"'
    ) in result.stderr
