"""``runtime.installer: uv`` and ``runtime.lock`` in the generated pipelines: the files
pass the platforms' schemas, zizmor and actionlint; each job installs through the
chosen installer, a job with a checkout installs the lock and a job without one does
not; the installer caches sit where the platforms keep them, under keys that change
with the pinned versions; include mode refuses both settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.spec import load_spec
from tests.generate.test_generate import with_template_sha
from tests.hardening.checks import github_problems, gitlab_problems
from tests.helpers import copy_example, run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

NAME = "breast-cancer"
UV_LINE = 'python -I -m uv pip install --no-config --python "$(command -v python)" '
LOCK = "requirements.lock"
PRUNE = "python -I -m uv cache prune --ci"
# pip installs uv only where the pinned release is missing.
BOOTSTRAP = (
    "python -I -m uv --version 2>/dev/null | grep -qF 'uv 0.13.8 ' "
    "|| python -I -m pip install uv==0.13.8"
)


def project_with(tmp_path: Path, **runtime: Any) -> Path:
    project = copy_example(NAME, tmp_path)
    (project / LOCK).write_text("ci-mlops==0.1.0 --hash=sha256:" + "0" * 64 + "\n")
    spec_path = project / "mlops.yaml"
    spec = yaml.safe_load(spec_path.read_text("utf-8"))
    spec.setdefault("runtime", {}).update(runtime)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    result = run_cli("generate", cwd=project)
    assert result.code == 0, result.output
    return project


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text("utf-8")))


@pytest.fixture(scope="module")
def uv_locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with(tmp_path_factory.mktemp("uv"), installer="uv", lock=LOCK)


def test_uv_and_lock_files_pass_schemas_zizmor_and_actionlint(uv_locked: Path) -> None:
    workflow = uv_locked / ".github/workflows/mlops.yml"
    assert gitlab_schema_errors(uv_locked / ".gitlab-ci.yml") == []
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    spec = load_spec(uv_locked / "mlops.yaml", check_files=False)
    assert gitlab_problems((uv_locked / ".gitlab-ci.yml").read_text(), spec, "inline") == []
    assert github_problems(workflow.read_text(), spec, "inline") == []


def test_gitlab_jobs_install_the_lock_with_uv_and_keep_its_cache(uv_locked: Path) -> None:
    doc = load(uv_locked / ".gitlab-ci.yml")
    train = doc[f"{NAME}:train"]
    assert train["before_script"] == [
        BOOTSTRAP,
        UV_LINE + f"--require-hashes --no-deps -r {LOCK}",
        PRUNE,
    ]
    assert train["variables"]["UV_CACHE_DIR"] == ".cache/uv"
    assert train["variables"]["PIP_CACHE_DIR"] == ".cache/pip"
    (installer_cache, _model) = train["cache"]
    assert installer_cache["paths"] == [".cache"]
    assert installer_cache["key"]["files"] == ["requirements.txt", LOCK]
    assert installer_cache["key"]["prefix"].startswith("uv-3.11-")
    # The report job has no checkout, so no lock: it installs from runtime.install.
    report = doc[f"{NAME}:report"]
    assert report["before_script"][1] == UV_LINE + "'ci-mlops[gitlab]==0.1.0'"
    assert "cache" not in report


def test_github_jobs_install_the_lock_with_uv_and_cache_uv(uv_locked: Path) -> None:
    jobs = load(uv_locked / ".github/workflows/mlops.yml")["jobs"]
    steps = jobs[f"{NAME}-train"]["steps"]
    (install,) = (s for s in steps if s.get("name") == "Install ci-mlops")
    assert install["run"].splitlines() == [
        BOOTSTRAP,
        UV_LINE + f"--require-hashes --no-deps -r {LOCK}",
        PRUNE,
    ]
    (cache,) = (s for s in steps if s.get("with", {}).get("path") == "~/.cache/uv")
    assert cache["with"]["key"].endswith(f"${{{{ hashFiles('requirements.txt', '{LOCK}') }}}}")
    report = jobs[f"{NAME}-report"]["steps"]
    assert not any(s.get("with", {}).get("path") == "~/.cache/uv" for s in report)


def test_the_cache_key_changes_with_the_pinned_version(tmp_path: Path) -> None:
    def key(install: str, folder: str) -> str:
        project = project_with(tmp_path / folder, install=install)
        prefix: str = load(project / ".gitlab-ci.yml")[f"{NAME}:train"]["cache"][0]["key"]["prefix"]
        return prefix

    first, same, bumped = (
        key("ci-mlops[{extras}]==0.1.0", "a"),
        key("ci-mlops[{extras}]==0.1.0", "b"),
        key("ci-mlops[{extras}]==0.2.0", "c"),
    )
    assert first == same and first != bumped and first.startswith("pip-3.11-")


def test_include_mode_refuses_uv_and_a_lock(tmp_path: Path) -> None:
    for setting in ({"installer": "uv"}, {"lock": LOCK}):
        project = project_with(tmp_path / next(iter(setting)), **setting)
        with_template_sha(project / "mlops.yaml")
        result = run_cli("generate", "--mode", "include", cwd=project)
        assert result.code == 2, result.output
        assert "need --mode inline" in result.output
