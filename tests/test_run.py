"""`ci-mlops run` end to end on the examples: the whole pipeline on this machine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import copy_example, run_cli

pytestmark = pytest.mark.slow

# The training scripts run `python`: make it this interpreter, with its libraries.
PATH_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(project: Path, *args: str) -> tuple[int, str]:
    result = run_cli("run", *args, cwd=project, env=PATH_ENV)
    return result.code, result.output


@pytest.fixture(scope="module", params=["breast-cancer", "diabetes"])
def first_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    project = copy_example(request.param, tmp_path_factory.mktemp("run"))
    code, output = run(project)
    assert code == 0, output
    return project, output


def test_a_full_run_passes_exports_reports_and_deploys(first_run: tuple[Path, str]) -> None:
    project, output = first_run
    name = project.name
    work = project / ".ci-mlops" / name
    gates = json.loads((work / "gates.json").read_text())
    assert gates["passed"] is True
    export = json.loads((work / "export.json").read_text())
    assert export["passed"] is True
    assert export["max_abs_diff"] <= export["tolerance"]
    assert export["label_mismatches"] in (0, None)  # None: a regressor has no labels
    report = (work / "report.md").read_text()
    metrics = json.loads((work / "metrics.json").read_text())["metrics"]
    first_metric, value = next(iter(metrics.items()))
    assert first_metric in report
    assert f"{value:.4f}"[:5] in report
    pngs = sorted((work / "plots").glob("*.png"))
    assert len(pngs) >= 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert f"registry entry: .mlops-registry/{name}/versions/" in output
    # The summary says where Great Expectations' Data Docs of the data tests are.
    assert f"data docs:      .ci-mlops/{name}/data-docs/index.html" in output
    assert "Data Docs" in report and "data-docs/index.html" in report
    assert f"{name}: pre-deploy check passed: the served model answered" in output
    verify = run_cli("deploy", "--verify", "-e", "staging", cwd=project, env=PATH_ENV)
    assert verify.code == 0, verify.output


def test_a_second_run_skips_everything(first_run: tuple[Path, str]) -> None:
    project, _ = first_run
    code, output = run(project)
    assert code == 0, output
    assert output.count("skipped (cached)") == 4
    assert "already live in staging, skipped" in output
    assert "using the cached model" in output


def test_changing_one_data_row_retrains(tmp_path: Path) -> None:
    project = copy_example("breast-cancer", tmp_path)
    assert run(project, "data-test", "train")[0] == 0
    data = project / "data" / "train.csv"
    lines = data.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(lines[1].split(",")[0], "15.5", 1)
    data.write_text("".join(lines))
    code, output = run(project, "data-test", "train")
    assert code == 0, output
    assert "using the cached model" not in output
    assert "inputs unchanged" not in output


def test_a_crippled_model_fails_its_gate_and_is_not_deployed(tmp_path: Path) -> None:
    project = copy_example("breast-cancer", tmp_path)
    spec = project / "mlops.yaml"
    spec.write_text(spec.read_text().replace("params: {C: 1.0,", "params: {C: 0.000001,"))
    code, output = run(project)
    assert code == 1, output
    assert "Traceback" not in output
    assert "roc_auc" in output or "accuracy" in output
    assert not (project / ".mlops-registry").exists()
    assert "deploy-staging: ok" not in output


def test_unknown_step_is_a_usage_error(tmp_path: Path) -> None:
    project = copy_example("diabetes", tmp_path)
    code, output = run(project, "deplyo")
    assert code == 2
    assert "unknown step 'deplyo'" in output
