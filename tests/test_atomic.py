"""Reading artifacts only from inside their folder and never through a link; writes that
the disk refuses end in one line naming the file, with the old file intact; JSON that
strict parsers read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci_mlops import atomic
from ci_mlops.errors import StepError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "plots").mkdir(parents=True)
    (work / "plots" / "a.png").write_bytes(b"png")
    (tmp_path / "outside.txt").write_text("GITLAB_TOKEN=glpat-secret")
    return work


def test_reads_a_regular_file_inside_the_folder(folder: Path) -> None:
    assert atomic.read_artifact(folder, "plots/a.png") == b"png"


@pytest.mark.parametrize(
    "plant",
    [
        lambda f: os.symlink("/proc/self/environ", f / "plots" / "x.png"),
        lambda f: os.symlink(f.parent / "outside.txt", f / "plots" / "x.png"),
        lambda f: os.symlink("a.png", f / "plots" / "x.png"),  # even a link that stays inside
    ],
    ids=["proc-environ", "outside-file", "inside-link"],
)
def test_a_linked_file_is_refused(folder: Path, plant: object) -> None:
    plant(folder)  # type: ignore[operator]
    with pytest.raises(StepError, match=r"plots/x\.png: refused: a symbolic link"):
        atomic.read_artifact(folder, "plots/x.png")


def test_a_linked_folder_on_the_way_is_refused(folder: Path) -> None:
    os.symlink(folder.parent, folder / "up")
    with pytest.raises(StepError, match="refused: a symbolic link"):
        atomic.read_artifact(folder, "up/outside.txt")


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "plots/../../outside.txt"])
def test_names_that_leave_the_folder_are_refused(folder: Path, name: str) -> None:
    with pytest.raises(StepError, match="artifacts are read only from inside"):
        atomic.read_artifact(folder, name)


def test_a_fifo_is_refused_without_blocking(folder: Path) -> None:
    os.mkfifo(folder / "plots" / "pipe.png")
    with pytest.raises(StepError, match="not a regular file"):
        atomic.read_artifact(folder, "plots/pipe.png")


def test_json_is_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic.write_json(path, {"a": float("inf"), "b": [float("nan"), 1.5], "c": -float("inf")})

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "a": None,
        "b": [None, 1.5],
        "c": None,
    }


def test_a_refused_write_names_the_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE: EFBIG, the way a full disk's ENOSPC arrives
    without needing root to mount a tiny file system) refuses the write."""
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    script = (
        "import resource, sys\n"
        "from ci_mlops import atomic\n"
        "from ci_mlops.errors import StepError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    atomic.write_bytes(__import__('pathlib').Path({str(target)!r}), b'x' * 100_000)\n"
        "except StepError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{target}: cannot write: File too large"
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]  # no temporary file left
