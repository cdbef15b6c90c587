"""Files a merge request plants in the model's folder never leave through a job that
holds a token: a plot linked to the job's environment or to a file holding a token, a
recorded plot swapped for a link, a linked report.md. The real python-gitlab and PyGithub
clients talk to the fake servers; the steps run through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes.env import GITLAB_TOKEN, github_vars
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.steps.trained import clone, invoke, trained_example, workdir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """breast-cancer trained, evaluated and exported on a laptop (no platform)."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("planted"))
    for step in ("evaluate", "export"):
        result = invoke(folder, step)
        assert result.code == 0, result.output
    return folder


def token_file(tmp_path: Path, token: str) -> Path:
    secret = tmp_path / "secret.env"
    secret.write_text(f"GITLAB_TOKEN={token}\n", encoding="utf-8")
    return secret


def test_gitlab_report_uploads_only_recorded_plots(
    evaluated: Path, tmp_path: Path, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    folder = clone(evaluated, tmp_path)
    plots = workdir(folder) / "plots"
    secret = token_file(tmp_path, GITLAB_TOKEN)
    os.symlink("/proc/self/environ", plots / "x.png")  # the job's own environment
    os.symlink(secret, plots / "y.png")
    (plots / "roc_curve.png").unlink()  # a plot evaluate recorded, swapped for a link
    os.symlink(secret, plots / "roc_curve.png")

    result = invoke(folder, "report")

    assert result.code == 0, result.output
    assert [u["filename"] for u in gitlab_api.uploads] == ["confusion_matrix.png"]
    sent = b"".join(r.body for r in gitlab_api.requests)
    assert GITLAB_TOKEN.encode() not in sent and b"CI_JOB_TOKEN" not in sent
    (note,) = gitlab_api.notes[7]
    assert "/x.png" not in note["body"] and "roc_curve.png" not in note["body"]
    for name in ("x.png", "y.png", "roc_curve.png"):
        assert f"plots/{name}" in result.stderr  # each refusal is named


def test_gitlab_deploy_never_publishes_a_linked_report(
    evaluated: Path, tmp_path: Path, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    folder = clone(evaluated, tmp_path)
    assert invoke(folder, "report", "--no-post").code == 0
    report = workdir(folder) / "report.md"
    report.unlink()
    os.symlink(token_file(tmp_path, GITLAB_TOKEN), report)

    result = invoke(folder, "deploy", "-e", "staging")

    assert result.code == 0, result.output
    stored = [name for files in gitlab_api.packages.values() for name, _ in files]
    assert "model.joblib" in stored and "report.md" not in stored
    assert all(
        GITLAB_TOKEN.encode() not in data for f in gitlab_api.packages.values() for _, data in f
    )
    assert "report.md: refused" in result.stderr


def test_github_deploy_publishes_report_and_metrics_only_as_recorded(
    evaluated: Path,
    tmp_path: Path,
    github_api: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in github_vars(github_api, tmp_path, pr_number=None).items():
        monkeypatch.setenv(name, value)
    folder = clone(evaluated, tmp_path)
    assert invoke(folder, "report", "--no-post").code == 0
    report = workdir(folder) / "report.md"
    report.write_text(f"token: {github_api.workflow_token}\n")  # edited after the report step
    metrics = workdir(folder) / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"metrics": {', '"metrics": {"planted": 1, '))

    result = invoke(folder, "deploy", "-e", "staging")

    assert result.code == 0, result.output
    (release,) = github_api.releases
    names = {asset["name"] for asset in release["assets"]}
    assert "model.joblib" in names and "gates.json" in names
    assert "report.md" not in names and "metrics.json" not in names
    assert "report.md: sha256" in result.stderr and "in report.json; not published" in result.stderr
