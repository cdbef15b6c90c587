"""Benchmark the walk from a foreign repository to a green pipeline: `ci-mlops init`
then the first `ci-mlops run` (data test, training, evaluation, ONNX export, report,
pre-deploy check and deploy to the local registry), with no edit to the spec.

The baseline is the repository's own training script run by hand, in a fresh process,
with the paths it reads: what the user did before ci-mlops. The four repositories are
the ones tests/test_onboarding.py builds. Prints a Markdown table with the ratio.

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
