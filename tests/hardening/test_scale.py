"""Many models: generated files stay within the platforms' documented limits, or the
generator refuses with the limit and the fix; deploys are serialised per model and
environment; a merge request touching one model runs only that model's jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.errors import UsageError
from ci_mlops.generate.write import (
    GITHUB_FILE,
    GITHUB_MAX_BYTES,
    GITHUB_MAX_JOBS,
    GITLAB_FILE,
    GITLAB_MAX_BYTES,
    GITLAB_MAX_NEEDS,
    render_files,
)
from ci_mlops.spec.model import Spec
from tests.hardening.checks import load, schema_errors
from tests.hardening.strategies import load_doc, to_yaml
from tests.helpers import git, make_git_repo, run_cli
from tests.linters import gitlab_ci_local_list

SHA = "0123456789abcdef0123456789abcdef01234567"


def model(name: str) -> dict[str, Any]:
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
        "metrics": {"accuracy": {"min": 0.5}, "f1": {}},
        "retrain": {
            "schedule": "0 3 * * 1",
            "drift": {"reference": f"models/{name}/train.csv", "current": f"models/{name}/now.csv"},
        },
    }


def spec_of(count: int, folder: Path = Path("/project"), layout: str = "per-model") -> Spec:
    """``count`` models; the per-model layout unless ``layout`` says otherwise (the
    limits below are those of the per-model layout)."""
    doc = {
        "version": 1,
        "runtime": {"templates": {"github_sha": SHA}, "layout": layout},
        "models": [model(f"model-{i:03d}") for i in range(count)],
    }
    return load_doc(doc, folder / "mlops.yaml")


@pytest.fixture(scope="module")
def fifty() -> Spec:
    return spec_of(50)


def test_fifty_models_on_gitlab_stay_within_limits(fifty: Spec) -> None:
    for mode in ("inline", "include"):
        text = render_files(fifty, platform="gitlab", mode=mode)[GITLAB_FILE]
        doc = load(text)
        assert len(text.encode()) < GITLAB_MAX_BYTES
        assert schema_errors("gitlab-ci", doc) == []
        jobs = {k: v for k, v in doc.items() if isinstance(v, dict) and "stage" in v}
        assert all(len(j.get("needs", [])) <= GITLAB_MAX_NEEDS for j in jobs.values())
        if mode == "inline":
            assert len(jobs) == 1 + 50 * 8  # validate + 8 jobs per model
        else:
            assert len(doc["include"]) == 50


def test_fifty_models_on_github_need_include_mode(fifty: Spec) -> None:
    with pytest.raises(UsageError) as refused:
        render_files(fifty, platform="github", mode="inline")
    message = str(refused.value)
    assert f"GitHub allows {GITHUB_MAX_JOBS} jobs per workflow run; this spec needs 401" in message
    assert "--mode include" in message and "\n" not in message
    text = render_files(fifty, platform="github", mode="include")[GITHUB_FILE]
    assert len(text.encode()) < GITHUB_MAX_BYTES
    assert len(load(text)["jobs"]) == 51
    assert schema_errors("github-workflows", load(text)) == []


def test_the_most_models_github_inline_takes() -> None:
    fits = spec_of(GITHUB_MAX_JOBS // 8)  # 32 models: 257 jobs with validate
    with pytest.raises(UsageError, match="this spec needs 257"):
        render_files(fits, platform="github")
    render_files(spec_of(GITHUB_MAX_JOBS // 8 - 1), platform="github")


def test_more_models_than_gitlab_includes_is_refused() -> None:
    with pytest.raises(
        UsageError, match="GitLab allows 150 includes per pipeline; this spec needs 151"
    ):
        render_files(spec_of(151), platform="gitlab", mode="include")


def test_a_gitlab_file_over_the_size_limit_is_refused() -> None:
    many = spec_of(400)
    with pytest.raises(UsageError) as refused:
        render_files(many, platform="gitlab", mode="inline")
    assert "max_yaml_size_bytes" in str(refused.value) and "--mode include" in str(refused.value)


def test_the_command_refuses_with_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text(
        to_yaml(
            {
                "version": 1,
                "runtime": {"layout": "per-model"},
                "models": [model(f"m{i}") for i in range(40)],
            }
        ),
        "utf-8",
    )
    result = run_cli("generate", "--platform", "github", cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert "GitHub allows 256 jobs per workflow run; this spec needs 321" in line
    assert not (tmp_path / ".github").exists()


def test_deploys_are_serialised_per_model_and_environment(fifty: Spec) -> None:
    gitlab = load(render_files(fifty, platform="gitlab")[GITLAB_FILE])
    groups = {}
    for name, job in gitlab.items():
        if isinstance(job, dict) and job.get("stage") == "deploy":
            model_name, kind = name.split(":")
            env = kind.removeprefix("deploy-")
            assert job["resource_group"] == f"deploy-{model_name}-{env}"
            assert job["environment"]["name"] == f"{env}/{model_name}"
            assert job["interruptible"] is False
            groups[name] = job["resource_group"]
    assert len(groups) == 100 and len(set(groups.values())) == 100
    small = spec_of(3)
    workflow = load(render_files(small, platform="github")[GITHUB_FILE])
    deploys = {k: j for k, j in workflow["jobs"].items() if "-deploy-" in k}
    assert len(deploys) == 6
    for key, job in deploys.items():
        model_name, env = key.split("-deploy-")
        assert job["concurrency"] == {
            "group": f"ci-mlops-deploy-{model_name}-{env}",
            "cancel-in-progress": False,
        }


@pytest.mark.slow
def test_a_merge_request_touching_one_model_runs_only_its_jobs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("churn", "fraud"):
        folder = repo / "models" / name
        folder.mkdir(parents=True)
        for file in ("train.csv", "eval.csv", "now.csv"):
            (folder / file).write_text("x,y\n1,0\n", "utf-8")
        (folder / "train.py").write_text("print('train')\n", "utf-8")
    (repo / "mlops.yaml").write_text(
        to_yaml({"version": 1, "models": [model("churn"), model("fraud")]}), "utf-8"
    )
    assert run_cli("generate", "--platform", "gitlab", cwd=repo).code == 0
    make_git_repo(repo)
    git(repo, "checkout", "--quiet", "-b", "tune-churn")
    (repo / "models/churn/train.py").write_text("print('tuned')\n", "utf-8")
    git(repo, "commit", "--quiet", "-am", "tune churn")
    jobs = gitlab_ci_local_list(repo, {"CI_PIPELINE_SOURCE": "merge_request_event"})
    assert jobs == [f"churn:{k}" for k in ("data-test", "train", "evaluate", "export", "report")]
    assert yaml.safe_load((repo / GITLAB_FILE).read_text())["fraud:train"]
