"""How `init` reads a data file it has never seen: delimiter, header row, task."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_mlops.spec.sniff import guess_task, is_number, sniff


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("sep", "word"),
    [(",", "comma"), ("\t", "tab"), (";", "semicolon"), (" ", "space"), ("|", "pipe")],
)
def test_the_delimiter_is_the_one_that_splits_every_row_alike(
    tmp_path: Path, sep: str, word: str
) -> None:
    shape = sniff(write(tmp_path, f"1.5{sep}2{sep}0\n3{sep}4.25{sep}1\n"))

    assert shape is not None
    assert shape.delimiter == sep and shape.width == 3
    assert shape.why.startswith(f"{word}-delimited (3 columns in every sampled row)")


def test_numbers_in_the_first_row_mean_no_header(tmp_path: Path) -> None:
    shape = sniff(write(tmp_path, "0.000000000000000000e+00,1.5\n1.0,2.5\n"))

    assert shape is not None and shape.header is False and shape.names == ()
    assert len(shape.rows) == 2
    assert "no header row (the first row holds numbers: '0.000000000000000000e+00', '1.5')" in (
        shape.why
    )


def test_names_in_the_first_row_are_a_header(tmp_path: Path) -> None:
    shape = sniff(write(tmp_path, "age;city;label\n34;paris;1\n;lyon;0\n"))

    assert shape is not None
    assert shape.header is True and shape.delimiter == ";"
    assert shape.names == ("age", "city", "label")
    assert shape.rows == (("34", "paris", "1"), ("", "lyon", "0"))


def test_a_comma_inside_quotes_does_not_split(tmp_path: Path) -> None:
    shape = sniff(write(tmp_path, 'name,score\n"Smith, J",1\n"Doe, A",2\n'))

    assert shape is not None and shape.delimiter == "," and shape.width == 2


def test_a_single_column_is_one_column(tmp_path: Path) -> None:
    shape = sniff(write(tmp_path, "1\n0\n1\n"))

    assert shape is not None and shape.width == 1 and shape.why.startswith("one column")


def test_binary_or_empty_files_are_not_tables(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert sniff(path) is None
    path.write_text("\n\n", encoding="utf-8")
    assert sniff(path) is None


@pytest.mark.parametrize(
    ("values", "task", "why"),
    [
        (["0", "1", "1", "0"], "classification", "2 distinct whole numbers"),
        (["1.000e+00", "0.000e+00"], "classification", "2 distinct whole numbers"),
        (["cat", "dog"], "classification", "text values"),
        (["0.5", "1.25", "3.75"], "regression", "fractional numbers (3 distinct)"),
        ([str(i) for i in range(50)], "regression", "many distinct numbers (50 distinct)"),
    ],
)
def test_the_task_follows_the_targets_values(values: list[str], task: str, why: str) -> None:
    guessed, reason = guess_task(values)

    assert guessed == task and why in reason


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("3", True),
        ("-0.5", True),
        ("1e-3", True),
        ("nan", False),
        ("inf", False),
        ("age", False),
        ("", False),
    ],
)
def test_what_counts_as_a_number(text: str, number: bool) -> None:
    assert is_number(text) is number
