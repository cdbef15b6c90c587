"""`ci-mlops build`, the combined layout's job: data-test, train, evaluate and export in
one process, leaving the model folder as the four step commands leave it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli_command, copy_example, run_cli

pytestmark = pytest.mark.slow

MODEL = "breast-cancer"
# The training script runs `python`: make it this interpreter, with its libraries.
PATH_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
STEP_RECORDS = ("data-test.json", "metrics.json", "gates.json", "export.json")


def combined_project(tmp_path: Path) -> Path:
    project = copy_example(MODEL, tmp_path)
    spec = project / "mlops.yaml"
    data = yaml.safe_load(spec.read_text("utf-8"))
    data["runtime"]["jobs"] = "combined"
    spec.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return project


def run_as_a_job(*args: str, cwd: Path) -> tuple[int, str]:
    """Run ``ci-mlops ARGS`` as a CI job runs it: stdout and stderr into one pipe, and
    stdout block-buffered (no PYTHONUNBUFFERED), so the output is the job log, in the
    order the process wrote it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run(
        [*cli_command(), *args],
        cwd=cwd,
        env={**env, **PATH_ENV},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, proc.stdout


def record(project: Path, name: str) -> dict[str, object]:
    return dict(json.loads((project / ".ci-mlops" / MODEL / name).read_text("utf-8")))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One project built with `ci-mlops build`, and one where `ci-mlops run` ran the
    same four steps one by one (the spec says combined in both)."""
    one = combined_project(tmp_path_factory.mktemp("build"))
    code, log = run_as_a_job("build", "--model", MODEL, cwd=one)
    assert code == 0, log
    steps = combined_project(tmp_path_factory.mktemp("steps"))
    each = run_cli("run", "data-test", "train", "evaluate", "export", cwd=steps, env=PATH_ENV)
    assert each.code == 0, each.output
    return one, steps, log + each.output


def test_build_runs_the_four_steps_in_order_in_one_process(built: tuple[Path, Path, str]) -> None:
    one, _, output = built
    marks = [
        f"build {MODEL}: [{n}/4] {step}"
        for n, step in enumerate(("data-test", "train", "evaluate", "export"), 1)
    ]
    # Each step's results (stdout) sit under its own heading (stderr) in the job log.
    in_order = [
        *marks[:3],
        f"{MODEL}: quality gates passed",
        marks[3],
        "parity ok",
        f"build {MODEL}: 4 steps in ",
    ]
    positions = [output.index(line) for line in in_order]
    assert positions == sorted(positions), output
    folder = one / ".ci-mlops" / MODEL
    for name in (*STEP_RECORDS, "model.joblib", "spec.yaml", "data-test.junit.xml",
                 "evaluate.junit.xml", "metrics.txt", "data-docs/index.html"):  # fmt: skip
        assert (folder / name).is_file(), name


def test_build_leaves_what_the_separate_steps_leave(built: tuple[Path, Path, str]) -> None:
    one, steps, output = built
    # `ci-mlops run` keeps one job per step whatever runtime.jobs says.
    assert "breast-cancer:evaluate: ok" in output
    assert record(one, "metrics.json")["metrics"] == record(steps, "metrics.json")["metrics"]
    assert record(one, "gates.json")["passed"] is record(steps, "gates.json")["passed"] is True
    for field in ("passed", "max_abs_diff", "label_mismatches"):
        assert record(one, "export.json")[field] == record(steps, "export.json")[field]
    ran = record(one, "data-test.json")
    assert ran["passed"] is True
    assert ran["passed"] == record(steps, "data-test.json")["passed"]


def test_a_failed_gate_still_exports_then_fails_the_job(tmp_path: Path) -> None:
    project = combined_project(tmp_path)
    spec = project / "mlops.yaml"
    spec.write_text(spec.read_text().replace("C: 1.0", "C: 1.0e-06"))
    result = run_cli("build", cwd=project, env=PATH_ENV)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert record(project, "gates.json")["passed"] is False
    # The export job runs beside evaluation in the step layout: so does export here.
    assert f"build {MODEL}: [4/4] export" in result.output
    assert "passed" in record(project, "export.json")


def test_failed_data_tests_stop_the_build_before_training(tmp_path: Path) -> None:
    project = combined_project(tmp_path)
    data = project / "data" / "train.csv"
    lines = data.read_text().splitlines(keepends=True)
    # mean_radius must lie between 5 and 40.
    lines[1] = "99" + lines[1][lines[1].index(",") :]
    data.write_text("".join(lines))
    result = run_cli("build", cwd=project, env=PATH_ENV)
    assert result.code == 1, result.output
    assert record(project, "data-test.json")["passed"] is False
    assert f"build {MODEL}: [2/4] train" not in result.output
    folder = project / ".ci-mlops" / MODEL
    assert not (folder / "model.joblib").exists()
    assert not (folder / "metrics.json").exists()


def test_a_build_stopped_by_its_data_tests_keeps_no_results_of_the_last_build(
    tmp_path: Path, built: tuple[Path, Path, str]
) -> None:
    """In CI the build job starts from the model cache, the folder the last build left:
    a build that stops at its data tests must not pass that build's verdict, metrics and
    JUnit results off as its own."""
    earlier = built[0] / ".ci-mlops" / MODEL
    project = combined_project(tmp_path)
    folder = project / ".ci-mlops" / MODEL
    shutil.copytree(earlier, folder)  # what the cache restores
    data = project / "data" / "train.csv"
    lines = data.read_text().splitlines(keepends=True)
    lines[1] = "99" + lines[1][lines[1].index(",") :]  # mean_radius must lie in 5..40
    data.write_text("".join(lines))

    result = run_cli("build", cwd=project, env=PATH_ENV)

    assert result.code == 1, result.output
    assert record(project, "data-test.json")["passed"] is False
    for name in ("metrics.json", "gates.json", "evaluate.junit.xml", "metrics.txt", "export.json"):
        assert not (folder / name).exists(), name
    # The cached model stays for the next build whose inputs match it.
    assert (folder / "model.joblib").read_bytes() == (earlier / "model.joblib").read_bytes()
    assert (folder / "train.json").is_file()
