"""A second `ci-mlops run` on unchanged inputs, as a share of the first run's wall time,
and the onnxruntime vs native batch-1 latency of each example model (from the first
run's export.json), with the largest ONNX-vs-native difference it measured.

Run: .venv/bin/python benchmarks/bench_run.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each example's folder is named like its model.
EXAMPLES = (
    "breast-cancer",
    "diabetes",
    "churn",
    "wine",
    "diabetes-xgboost",
    "breast-cancer-lightgbm",
)


def timed_run(project: Path) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ci_mlops", "run"],
        cwd=project,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for example in EXAMPLES:
            project = Path(tmp) / example
            shutil.copytree(
                ROOT / "examples" / example,
                project,
                ignore=shutil.ignore_patterns(".ci-mlops", ".mlops-registry"),
            )
            first = timed_run(project)
            second = timed_run(project)
            export = json.loads((project / ".ci-mlops" / example / "export.json").read_text())
            rows.append((example, first, second, export))
    print(
        "| example | first run | second run | second / first | max abs diff | tolerance "
        "| batch-1 native | batch-1 onnxruntime | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for example, first, second, export in rows:
        lat = export["latency"]
        print(
            f"| {example} | {first:.1f} s | {second:.2f} s | {second / first:.1%} "
            f"| {export['max_abs_diff']:.2g} | {export['tolerance']:.2g} "
            f"| {lat['native_batch1_ms']:.3f} ms | {lat['onnx_batch1_ms']:.4f} ms "
            f"| {lat['batch1_speedup']:.0f}x |"
        )


if __name__ == "__main__":
    main()
