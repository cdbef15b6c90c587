"""Benchmark the walk from a foreign repository to a green pipeline: `ci-mlops init`
then the first `ci-mlops run` (data test, training, evaluation, ONNX export, report,
pre-deploy check and deploy to the local registry), with no edit to the spec.

The baseline is the repository's own training script run by hand, in a fresh process,
with the paths it reads: what the user did before ci-mlops. The four repositories are
the ones tests/test_onboarding.py builds. Prints a Markdown table with the ratio.

A second table times the walk to a green `ci-mlops try` on the first repository (the
generated pipeline run here: GitLab's by gitlab-ci-local, GitHub's by act with the
vendored actions), from a committed repository that `init` then describes.

    .venv/bin/python benchmarks/bench_onboarding.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.act_harness import ACTIONS_TGZ  # noqa: E402
from tests.helpers import git  # noqa: E402
from tests.linters import GITLAB_CI_LOCAL  # noqa: E402
from tests.test_onboarding import (  # noqa: E402
    headerless_split_repo,
    mixed_type_repo,
    regression_repo,
    tsv_regression_repo,
)

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
CLI = [sys.executable, "-m", "ci_mlops"]


def headerless(root: Path) -> Path:
    return headerless_split_repo(root, " ")


REPOS: dict[str, Callable[[Path], Path]] = {
    "headerless split files, space-delimited": headerless,
    "mixed-type table (strings, gaps)": mixed_type_repo,
    "regression, tab-separated": tsv_regression_repo,
    "script reads its own paths, saves where told": regression_repo,
}
# What the training script reads when run by hand.
INPUTS = {
    "headerless split files, space-delimited": {
        "MLOPS_TRAIN_DATA": "data/train_features.txt",
        "MLOPS_TRAIN_LABELS": "data/train_labels.txt",
    },
    "mixed-type table (strings, gaps)": {"MLOPS_TRAIN_DATA": "data/train.csv"},
    "regression, tab-separated": {
        "MLOPS_TRAIN_DATA": "data/training.tsv",
        "MLOPS_TARGET": "load",
    },
    "script reads its own paths, saves where told": {},
}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def walk(name: str, build: Callable[[Path], Path], base: Path) -> tuple[float, float, float]:
    root = build(base / "repo")
    by_hand = {**ENV, **INPUTS[name], "MLOPS_MODEL_PATH": str(base / "by-hand.joblib")}
    train = timed([sys.executable, "train.py"], root, by_hand)
    init = timed([*CLI, "init"], root, ENV)
    run = timed([*CLI, "run"], root, ENV)
    return train, init, run


# try's jobs install nothing from an index; gitlab-ci-local comes from the Node tools.
TRY_ENV = {**ENV, "PATH": f"{GITLAB_CI_LOCAL.parent}{os.pathsep}{ENV['PATH']}"}
TRY_ENV["PIP_NO_INDEX"] = "1"
TRIES = {
    "gitlab (gitlab-ci-local)": [],
    "github (act, vendored actions)": ["--platform", "github", "--actions", str(ACTIONS_TGZ)],
}


def try_walk(args: list[str], base: Path) -> tuple[float, float]:
    """`init` in a committed repository, then a green `try`: the seconds of each."""
    root = headerless(base / "repo")
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "a model")
    init = timed([*CLI, "init"], root, ENV)
    return init, timed([*CLI, "try", *args], root, TRY_ENV)


def try_table() -> None:
    print("\n| `try` on headerless split files | `init` | green `try` | init + try |")
    print("|---|---:|---:|---:|")
    for name, args in TRIES.items():
        base = Path(tempfile.mkdtemp(prefix="bench-onboarding-try-"))
        try:
            init, tried = try_walk(args, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"| {name} | {init:.1f} s | {tried:.1f} s | {init + tried:.1f} s |")


def main() -> int:
    print("| repository | training by hand | `init` | first `run` | init + run | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, build in REPOS.items():
        base = Path(tempfile.mkdtemp(prefix="bench-onboarding-"))
        try:
            train, init, run = walk(name, build, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        total = init + run
        print(
            f"| {name} | {train:.1f} s | {init:.1f} s | {run:.1f} s | {total:.1f} s "
            f"| {total / train:.1f}x |"
        )
    try_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
