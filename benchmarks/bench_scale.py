"""How `ci-mlops generate` scales with the number of models: 1, 10 and 50 models, each a
cold process (best of 5), GitLab inline and GitHub include mode (a 50-model inline
workflow would exceed GitHub's 256 jobs per run, which generate refuses), with the
size of what was written. Run with `make bench` or `python benchmarks/bench_scale.py`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

COUNTS = (1, 10, 50)
RUNS = 5
SHA = "0123456789abcdef0123456789abcdef01234567"
CLI = [str(Path(sys.executable).with_name("ci-mlops"))]


def model(name: str) -> dict[str, object]:
    return {
        "name": name,
        "framework": "sklearn",
        "task": "classification",
        "paths": [f"models/{name}/"],
        "data": {
            "train": {"path": f"models/{name}/train.csv", "target": "y"},
            "eval": {"path": f"models/{name}/eval.csv", "target": "y"},
        },
        "train": {"command": f"python models/{name}/train.py"},
        "metrics": {"accuracy": {"min": 0.5}},
        "retrain": {
            "schedule": "0 3 * * 1",
            "drift": {"reference": f"models/{name}/train.csv", "current": f"models/{name}/now.csv"},
        },
    }


def project(root: Path, count: int) -> Path:
    folder = root / f"models-{count}"
    names = [f"model-{i:03d}" for i in range(count)]
    for name in names:
        data = folder / "models" / name
        data.mkdir(parents=True)
        for file in ("train.csv", "eval.csv", "now.csv", "train.py"):
            (data / file).write_text("x,y\n1,0\n", "utf-8")
    spec = {
        "version": 1,
        "runtime": {"templates": {"github_sha": SHA}},
        "models": [model(n) for n in names],
    }
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    return folder


def best(folder: Path, *args: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([*CLI, "generate", *args], cwd=folder, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in COUNTS:
            folder = project(Path(tmp), count)
            gitlab = best(folder, "--platform", "gitlab")
            github = best(folder, "--platform", "github", "--mode", "include")
            size = (folder / ".gitlab-ci.yml").stat().st_size
            rows.append((count, gitlab, github, size))
    base = rows[0][1]
    print("| models | GitLab inline | per model above 1 | GitHub include | .gitlab-ci.yml |")
    print("|---:|---:|---:|---:|---:|")
    for count, gitlab, github, size in rows:
        extra = f"{(gitlab - base) / (count - 1) * 1000:.1f} ms" if count > 1 else "-"
        print(
            f"| {count} | {gitlab * 1000:.0f} ms | {extra} | {github * 1000:.0f} ms | {size / 1024:.0f} KiB |"
        )


if __name__ == "__main__":
    main()
