"""How `ci-mlops generate` scales with the number of models: 1, 10, 50 and 200 models,
each a cold process (best of 5), inline on both platforms, with the lines written per
model. Up to 10 models the spec's default layout writes every job of every model;
above that it writes the matrix layout (a plan job picks the models at run time), so
50 and 200 models are also measured with ``layout: per-model`` where the platform
takes that file (GitHub refuses per-model workflows of more than 256 jobs).
Also: the plan job's own work for 200 models (``ci-mlops plan``, cold process) for a
change to one model and to the spec.

Run with `make bench` or `python benchmarks/bench_scale.py`."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

COUNTS = (1, 10, 50, 200)
RUNS = 5
SHA = "0123456789abcdef0123456789abcdef01234567"
CPU: list[float] = [0.0]  # the CPU seconds of the last best()
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


def project(root: Path, count: int, layout: str = "auto") -> Path:
    folder = root / f"models-{count}-{layout}"
    names = [f"model-{i:03d}" for i in range(count)]
    for name in names:
        data = folder / "models" / name
        data.mkdir(parents=True)
        for file in ("train.csv", "eval.csv", "now.csv", "train.py"):
            (data / file).write_text("x,y\n1,0\n", "utf-8")
    spec = {
        "version": 1,
        "runtime": {"templates": {"github_sha": SHA}, "layout": layout},
        "models": [model(n) for n in names],
    }
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    return folder


def best(
    folder: Path, *args: str, command: str = "generate", env: dict[str, str] | None = None
) -> float:
    times, cpus = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([*CLI, command, *args], cwd=folder, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode not in (0, 2):
            raise SystemExit(proc.stderr.decode())
    # CPU time too: on a shared machine the wall time says as much about the neighbours.
    CPU[-1:] = [min(cpus)]
    return min(times)


def lines(path: Path) -> int:
    return path.read_text("utf-8").count("\n") if path.is_file() else 0


def measure(folder: Path, count: int) -> str:
    gitlab = best(folder, "--platform", "gitlab")
    gitlab_cpu = CPU[0]
    github = best(folder, "--platform", "github")
    gl = lines(folder / ".gitlab-ci.yml")
    gh = lines(folder / ".github/workflows/mlops.yml")
    gh_text = (
        f"{github * 1000:.0f} ms ({CPU[0] * 1000:.0f} ms CPU), {gh / count:.1f} lines/model"
        if gh
        else "refused (> 256 jobs)"
    )
    return (
        f"{gitlab * 1000:.0f} ms ({gitlab_cpu * 1000:.0f} ms CPU), {gl / count:.1f} "
        f"lines/model | {gh_text}"
    )


def plan_time(folder: Path, changed: str) -> float:
    env_args = ("--platform", "gitlab", "--changed-file", changed, "--output", "child.yml")
    # A merge request: the plan job reads which files it changed.
    env = {**os.environ, "CI_PIPELINE_SOURCE": "merge_request_event"}
    return best(folder, *env_args, command="plan", env=env)


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| models | layout | GitLab inline | GitHub inline |")
    print("|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for count in COUNTS:
            layouts = ["auto"] if count <= 10 else ["auto", "per-model"]
            for layout in layouts:
                if layout == "per-model" and count > 50:
                    continue  # GitLab refuses a file over 1 MB: nothing to time
                folder = project(Path(tmp), count, layout)
                name = "per-model" if layout == "per-model" or count <= 10 else "matrix"
                print(f"| {count} | {name} | {measure(folder, count)} |")
                if count == 200:
                    one = plan_time(folder, "models/model-042/train.py")
                    spec = plan_time(folder, "mlops.yaml")
                    size = (folder / "child.yml").stat().st_size
                    print(
                        f"\nplan, 200 models: one model changed {one * 1000:.0f} ms; "
                        f"spec changed {spec * 1000:.0f} ms (child pipeline {size / 1024:.0f} KiB)"
                    )


if __name__ == "__main__":
    main()
