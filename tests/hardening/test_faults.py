"""Faults of the machine and of the servers end in one located line and exit 2, never a
traceback: a file-size limit or full disk while writing, a CSV larger than the memory the
job may use, API answers cut short, an API that points to another port. Each runs the
real CLI in a child process (so limits apply to it alone) against files and fake servers.

A full disk is simulated with RLIMIT_FSIZE (the write fails with EFBIG; Python ignores
SIGXFSZ) rather than a tiny tmpfs, which needs mount privileges CI runners rarely have:
both surface as an OSError from the same write, handled in one place."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.env import github_vars, gitlab_vars, start_github, start_gitlab
from tests.helpers import Result, cli_command, copy_example


def run_limited(
    folder: Path, *args: str, env: dict[str, str] | None = None, limit: Callable[[], None]
) -> Result:
    proc = subprocess.run(
        [*cli_command(), *args, "--spec", str(folder / "mlops.yaml")],
        cwd=folder,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        preexec_fn=limit,  # a resource limit for this child only
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_located_line(result: Result, location: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ci-mlops: error:")]
    assert len(errors) == 1, result.stderr
    assert location in errors[0], errors[0]
    return errors[0]


def no_limit() -> None:
    pass


def test_a_write_the_disk_refuses_names_the_file(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    result = run_limited(folder, "drift", limit=small_files)

    assert result.code == 2
    line = one_located_line(result, str(folder / ".ci-mlops/breast-cancer/drift.json"))
    assert line.endswith("cannot write: File too large")
    assert not list((folder / ".ci-mlops/breast-cancer").glob("*.tmp"))


def test_a_csv_larger_than_memory_names_its_size(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    header = (folder / "data/current.csv").read_bytes().split(b"\n", 1)[0]
    row = b",".join([b"12.3456789"] * (header.count(b",") + 1))
    (folder / "data/current.csv").write_bytes(header + b"\n" + (row + b"\n") * 400_000)
    size = (folder / "data/current.csv").stat().st_size
    # Limit the address space once pandas and scipy are loaded: the child then has
    # 48 MiB to spare, plenty for the reference file and far less than this one needs.
    script = (
        "import resource, sys\n"
        "import numpy, pandas, scipy.stats, scipy.spatial.distance\n"
        "from ci_mlops.cli import main\n"
        "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
        "if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 48 * 2**20, vm + 48 * 2**20))\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "drift", "--spec", str(folder / "mlops.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)

    assert result.code == 2, result.stderr
    line = one_located_line(result, str(folder / "data/current.csv"))
    assert f"{size:,} bytes" in line and "do not fit in the memory" in line


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example("breast-cancer", tmp_path)


def test_a_truncated_gitlab_answer_is_one_line(example: Path) -> None:
    api = start_gitlab()
    try:
        api.truncate("user", 10)  # the note step asks who it is first
        result = run_limited(example, "report", env=gitlab_vars(api), limit=no_limit)
    finally:
        api.stop()
    assert result.code == 2
    line = one_located_line(result, "GET /user")
    assert "answer is not valid JSON" in line


def test_a_truncated_github_answer_is_one_line(example: Path, tmp_path: Path) -> None:
    api = start_github()
    try:
        api.truncate("list_comments", 10)
        env = github_vars(api, tmp_path)
        result = run_limited(example, "report", env=env, limit=no_limit)
    finally:
        api.stop()
    assert result.code == 2
    line = one_located_line(result, "GET /repos/octo/models/issues/5/comments")
    assert "the GitHub API's answer is not valid JSON" in line


def test_a_github_api_on_another_port_is_one_line(example: Path, tmp_path: Path) -> None:
    """A proxy that answers with URLs of the server's own port (PyGithub asserts)."""
    api = start_github()
    try:
        env = github_vars(api, tmp_path)
        api.advertised_origin = "http://127.0.0.1:1"  # in the comment's URL: edited next
        api.add_comment(5, "github-actions[bot]", "<!-- ci-mlops:report model=breast-cancer -->")
        result = run_limited(example, "report", env=env, limit=no_limit)
    finally:
        api.stop()
    assert result.code == 2
    line = one_located_line(result, "PATCH /repos/octo/models/issues/comments/")
    assert "points to URLs on another host or port than GITHUB_API_URL" in line
