"""The one reader every step goes through: headerless files, named columns, split
feature and label files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_mlops.errors import StepError
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Dataset
from ci_mlops.steps.datasets import describe_loaded, load_dataset, read_like, target_name
from ci_mlops.steps.train import mlops_variables

FEATURES = "1.5 2.0 3.0\n4.0 5.5 6.0\n7.0 8.0 9.5\n"
LABELS = "0\n1\n1\n"


def dataset(tmp_path: Path, data: str) -> Dataset:
    """The train dataset of a minimal spec whose data section is ``data`` (YAML)."""
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nmodels:\n  - name: m\n    framework: sklearn\n    task: classification\n"
        "    data:\n      eval:\n" + data + "      train:\n" + data + "    train:\n"
        "      command: python train.py\n    metrics:\n      accuracy: {}\n",
        encoding="utf-8",
    )
    ds = load_spec(tmp_path / "mlops.yaml", check_files=False).models[0].train_data
    assert ds is not None
    return ds


def split_files(tmp_path: Path, features: str = FEATURES, labels: str = LABELS) -> None:
    (tmp_path / "x.txt").write_text(features, encoding="utf-8")
    (tmp_path / "y.txt").write_text(labels, encoding="utf-8")


def test_headerless_split_files_give_the_label_column_the_targets_name(tmp_path: Path) -> None:
    # Headerless files both read as columns 0, 1, ...: the label column '0' must not
    # collide with the first feature column.
    split_files(tmp_path)
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        header: false\n"
        "        delimiter: ' '\n",
    )

    loaded = load_dataset(tmp_path, ds)

    assert loaded.target == "target"
    assert list(loaded.frame.columns) == ["0", "1", "2", "target"]
    assert loaded.labels.tolist() == [0, 1, 1]
    assert loaded.features.shape == (3, 3)
    assert loaded.features["0"].tolist() == [1.5, 4.0, 7.0]


def test_headerless_split_files_take_named_columns_and_target(tmp_path: Path) -> None:
    split_files(tmp_path)
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        header: false\n"
        "        delimiter: ' '\n        columns: [a, b, c]\n        target: sick\n",
    )

    loaded = load_dataset(tmp_path, ds)

    assert list(loaded.frame.columns) == ["a", "b", "c", "sick"]
    assert loaded.labels.tolist() == [0, 1, 1]


def test_the_training_command_is_told_the_target_the_steps_read(tmp_path: Path) -> None:
    split_files(tmp_path)
    (tmp_path / "train.py").write_text("", encoding="utf-8")
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        header: false\n"
        "        delimiter: ' '\n",
    )
    spec = load_spec(tmp_path / "mlops.yaml", check_files=False)

    variables = mlops_variables(spec, spec.models[0], tmp_path / "model.joblib")

    assert (
        variables["MLOPS_TARGET"] == target_name(tmp_path, ds) == load_dataset(tmp_path, ds).target
    )


def test_columns_name_a_headerless_single_file(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("1;2;0\n3;4;1\n", encoding="utf-8")
    ds = dataset(
        tmp_path,
        "        path: d.csv\n        header: false\n        delimiter: ';'\n"
        "        columns: [a, b, y]\n        target: y\n",
    )

    loaded = load_dataset(tmp_path, ds)

    assert list(loaded.features.columns) == ["a", "b"]
    assert loaded.labels.tolist() == [0, 1]


def test_columns_replace_a_header_row(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("c1,c2,c3\n1,2,0\n3,4,1\n", encoding="utf-8")
    ds = dataset(tmp_path, "        path: d.csv\n        columns: [a, b, y]\n        target: y\n")

    frame = load_dataset(tmp_path, ds).frame

    assert list(frame.columns) == ["a", "b", "y"] and len(frame) == 2


def test_columns_that_do_not_fit_the_file_say_how_many_were_read(tmp_path: Path) -> None:
    # The usual cause: the wrong delimiter reads every row as one column.
    (tmp_path / "d.csv").write_text("1\t2\t0\n3\t4\t1\n", encoding="utf-8")
    ds = dataset(
        tmp_path,
        "        path: d.csv\n        header: false\n        columns: [a, b, y]\n"
        "        target: y\n",
    )

    with pytest.raises(StepError) as caught:
        load_dataset(tmp_path, ds)

    assert str(caught.value) == (
        f"{tmp_path / 'd.csv'}: 1 columns, but 'columns' names 3 "
        "(read with delimiter ','; is that the file's separator?)"
    )


def test_a_headerless_labels_file_must_hold_one_column(tmp_path: Path) -> None:
    split_files(tmp_path, labels="0 1\n1 0\n1 1\n")
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        header: false\n"
        "        delimiter: ' '\n",
    )

    with pytest.raises(StepError, match=r"y.txt: 2 columns with delimiter ' '; a labels file"):
        load_dataset(tmp_path, ds)


def test_a_feature_named_like_the_target_says_how_to_fix_it(tmp_path: Path) -> None:
    split_files(tmp_path, features="target,b\n1,2\n3,4\n5,6\n", labels="target\n0\n1\n1\n")
    ds = dataset(tmp_path, "        features: x.txt\n        labels: y.txt\n")

    with pytest.raises(StepError, match=r"already has a column named 'target'.*'columns'"):
        load_dataset(tmp_path, ds)


def test_drift_samples_read_with_the_training_datas_names(tmp_path: Path) -> None:
    split_files(tmp_path)
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        header: false\n"
        "        delimiter: ' '\n        columns: [a, b, c]\n        target: sick\n",
    )
    (tmp_path / "whole.txt").write_text("1 2 3 0\n4 5 6 1\n", encoding="utf-8")

    assert list(read_like(tmp_path / "x.txt", ds).columns) == ["a", "b", "c"]
    assert list(read_like(tmp_path / "whole.txt", ds).columns) == ["a", "b", "c", "sick"]


def test_init_s_re_read_names_what_it_read_and_what_the_sample_showed(tmp_path: Path) -> None:
    split_files(tmp_path)
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        header: false\n"
        "        delimiter: ' '\n",
    )

    assert describe_loaded(tmp_path, ds, 3) == (
        "x.txt + y.txt: 3 rows, 3 feature columns and target 'target'"
    )
    with pytest.raises(StepError) as caught:
        describe_loaded(tmp_path, ds, 4)
    assert str(caught.value) == (
        "x.txt + y.txt: read as 3 feature columns besides the target 'target', the file shows 4"
    )


def test_a_missing_target_among_numeric_names_points_at_the_header_option(
    tmp_path: Path,
) -> None:
    split_files(tmp_path, features="a b c\n1 2 3\n4 5 6\n", labels="1\n0\n")
    ds = dataset(
        tmp_path,
        "        features: x.txt\n        labels: y.txt\n        delimiter: ' '\n"
        "        target: sick\n",
    )

    with pytest.raises(StepError) as caught:
        load_dataset(tmp_path, ds)

    assert str(caught.value) == (
        f"{tmp_path / 'y.txt'}: no column named 'sick' (columns: 1); the column names look "
        "like data: if the file has no header row, set header: false"
    )
