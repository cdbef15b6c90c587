"""The job steps as a merge-request pipeline and a default-branch pipeline would run them,
against the fake GitLab and GitHub APIs: evaluate reads the baseline, report posts its
note with plots, deploy publishes, promotes and reuses the staging version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ci_mlops.cli import main
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.steps.trained import clone, invoke, trained_example, workdir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example, trained, evaluated and exported once for the module."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("trained"))
    for step in ("evaluate", "export"):
        result = invoke(folder, step)
        assert result.code == 0, result.output
    return folder


def _steps(folder: Path, *steps: tuple[str, ...]) -> None:
    for args in steps:
        result = invoke(folder, *args)
        assert result.code == 0, (args, result.output)


def test_gitlab_merge_request_then_default_branch(
    trained: Path, tmp_path: Path, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    folder = clone(trained, tmp_path)
    _steps(folder, ("evaluate",), ("report",))

    (note,) = gitlab_api.notes[7]
    assert note["body"].startswith("<!-- ci-mlops:report model=breast-cancer -->")
    assert {u["filename"] for u in gitlab_api.uploads} == {
        p.name for p in (workdir(folder) / "plots").glob("*.png")
    }
    assert all(u["url"] in note["body"] for u in gitlab_api.uploads)
    assert gitlab_api.calls("artifact_raw")  # evaluate asked for a baseline: none yet

    # The default branch's evaluate job left its metrics; the next run compares with them.
    metrics = (workdir(folder) / "metrics.json").read_bytes()
    gitlab_api.artifacts[("main", "breast-cancer:evaluate")] = {
        ".ci-mlops/breast-cancer/metrics.json": metrics
    }
    _steps(folder, ("evaluate",), ("report",))
    saved = json.loads((workdir(folder) / "metrics.json").read_text())
    assert saved["baseline"]["source"] == "latest successful breast-cancer:evaluate job on main"
    assert len(gitlab_api.notes[7]) == 1

    _steps(folder, ("deploy", "-e", "staging"), ("deploy", "-e", "production"))
    version = "1.0.0-pipeline.17"
    stored = gitlab_api.package_file("breast-cancer", version, "model.joblib")
    assert stored == (workdir(folder) / "model.joblib").read_bytes()
    for env in ("staging", "production"):
        record = gitlab_api.package_file("breast-cancer-environments", "0.0.0", f"{env}.json")
        assert json.loads(record or b"{}")["version"] == version
    # production reused the version staging runs: one upload of each file
    uploads = [name for name, _ in gitlab_api.packages[("breast-cancer", version)]]
    assert sorted(uploads) == sorted(set(uploads))


def test_github_pull_request_then_default_branch(
    trained: Path, tmp_path: Path, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    folder = clone(trained, tmp_path)
    _steps(folder, ("evaluate",), ("report",))

    (comment,) = github_api.comments[5]
    assert comment["user"]["login"] == "github-actions[bot]"
    assert "in the `breast-cancer-evaluate` artifact of this run" in comment["body"]
    assert "](plots/" not in comment["body"]
    summary = Path(github_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "breast-cancer" in summary and "](plots/" not in summary

    run = github_api.add_run()
    metrics = (workdir(folder) / "metrics.json").read_bytes()
    github_api.add_artifact(run, "breast-cancer-evaluate", {"metrics.json": metrics})
    _steps(folder, ("evaluate",), ("report",))
    saved = json.loads((workdir(folder) / "metrics.json").read_text())
    assert saved["baseline"]["source"].startswith(f"run #{run['run_number']} of mlops.yml on main")
    assert len(github_api.comments[5]) == 1

    _steps(folder, ("deploy", "-e", "staging"), ("deploy", "-e", "production"))
    (release,) = github_api.releases
    assert release["tag_name"] == "breast-cancer-v1.0.0-run.12"
    assert [d["environment"] for d in github_api.deployments] == ["staging", "production"]
    assert {d["payload"]["version"] for d in github_api.deployments} == {"1.0.0-run.12"}
    assert len(github_api.calls("upload_asset")) == len(release["assets"])  # production reused it


def test_github_report_and_deploy_from_the_model_folder_alone(
    trained: Path,
    tmp_path: Path,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GitHub's report and deploy jobs check nothing out: they get the model folder as
    artifacts, with the spec copy data-test leaves there, and comment and publish from
    that alone."""
    job = tmp_path / "job"
    model_dir = job / ".ci-mlops" / "breast-cancer"
    shutil.copytree(workdir(trained), model_dir)
    shutil.copy(trained / "mlops.yaml", model_dir / "spec.yaml")
    monkeypatch.setenv("MLOPS_WORKDIR", str(job / ".ci-mlops"))
    monkeypatch.chdir(job)
    spec = ["--spec", ".ci-mlops/breast-cancer/spec.yaml", "--model", "breast-cancer"]

    for args in (["report"], ["deploy", "-e", "staging"]):
        result = CliRunner().invoke(main, [*args, *spec])
        assert result.exit_code == 0, (args, result.output)

    (comment,) = github_api.comments[5]
    assert comment["body"].startswith("<!-- ci-mlops:report model=breast-cancer -->")
    (release,) = github_api.releases
    assert release["tag_name"] == "breast-cancer-v1.0.0-run.12"
    assert [d["environment"] for d in github_api.deployments] == ["staging"]
    assert sorted(p.name for p in job.iterdir()) == [".ci-mlops"]  # nothing else was needed
