"""uv's cache on GitHub: every job that caches it names the folder uv really uses. uv
keeps its cache at UV_CACHE_DIR, else under XDG_CACHE_HOME (which some runners set),
else ~/.cache/uv; the job gives it UV_CACHE_DIR, and the cache step's path is that same
folder, relative so that both read it from the workspace. The inline workflow, the
matrix layout and the reusable workflow with uv pass zizmor, actionlint and the schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ci_mlops.generate.github import CACHE
from tests.generate.test_installers import LOCK, LOCKS, load, project_with
from tests.helpers import REPO
from tests.linters import actionlint_findings, github_workflow_errors, zizmor_findings


def uv_cache_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's cache steps keyed by uv (the model cache is keyed by the model)."""
    return [
        s
        for s in job["steps"]
        if str(s.get("uses", "")).startswith(CACHE.split("@")[0])
        and str(s["with"]["key"]).startswith("uv-")
    ]


def install_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = (s for s in job["steps"] if s.get("name") == "Install ci-mlops")
    return step


def seen_by_install(doc: dict[str, Any], job: dict[str, Any], name: str) -> str | None:
    """What the install step's shell finds in ``name``: its step's env over its job's
    over the workflow's."""
    step = install_step(job)
    env = {**doc.get("env", {}), **job.get("env", {}), **step.get("env", {})}
    value = env.get(name)
    return None if value is None else str(value)


def run_uv(args: list[str], folder: str, workspace: Path, elsewhere: Path) -> str:
    """uv (the pinned release the jobs install) run as the install step runs it: from
    ``workspace``, with UV_CACHE_DIR at ``folder`` (or unset: None) and HOME and
    XDG_CACHE_HOME ``elsewhere``, offline."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(elsewhere / "home"),
        "XDG_CACHE_HOME": str(elsewhere / "xdg"),
        "UV_OFFLINE": "1",
        **({"UV_CACHE_DIR": folder} if folder else {}),
    }
    out = subprocess.run(
        [sys.executable, "-I", "-m", "uv", *args],
        env=env,
        cwd=workspace,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout + out.stderr


# An install that changes nothing but still fills uv's cache (what it learnt of the
# interpreter): enough to see which folder uv writes.
DRY_INSTALL = ["pip", "install", "--no-config", "--python", sys.executable, "--dry-run", "pip"]


def assert_uv_caches_in(folder: str, workspace: Path, elsewhere: Path) -> None:
    """uv's install line fills ``folder`` under the workspace, and nothing under HOME or
    XDG_CACHE_HOME; the prune line of the install step finds that cache."""
    run_uv(DRY_INSTALL, folder, workspace, elsewhere)
    assert (workspace / folder / "CACHEDIR.TAG").is_file()
    assert not (elsewhere / "xdg" / "uv").exists() and not (elsewhere / "home").exists()
    pruned = run_uv(["cache", "prune", "--ci"], folder, workspace, elsewhere)
    assert "No cache found" not in pruned, pruned


def assert_cache_step_names_uv_folder(
    doc: dict[str, Any], workflow: Path, tmp_path: Path, *, cached: set[str]
) -> None:
    """Each job of ``cached`` (and no other) has a uv cache step, whose path is the
    UV_CACHE_DIR its install step sees: a folder under the workspace, where uv puts its
    cache whatever XDG_CACHE_HOME says, and where actions/cache (which reads a relative
    path from the workspace) looks."""
    assert doc.get("defaults") is None  # no other working folder for run steps
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    paths = set()
    for name, job in doc["jobs"].items():
        if "steps" not in job:
            continue  # a call of the reusable workflow
        steps = uv_cache_steps(job)
        if name not in cached:
            assert steps == [], name
            continue
        (step,) = steps
        path = str(step["with"]["path"])
        assert seen_by_install(doc, job, "UV_CACHE_DIR") == path, name
        assert "working-directory" not in install_step(job), name
        # Relative: actions/cache reads it from GITHUB_WORKSPACE, uv from the folder the
        # step runs in, which is the workspace.
        assert not path.startswith(("/", "~", "$")), (name, path)
        paths.add(path)
    for path in paths:
        assert_uv_caches_in(path, workspace, tmp_path)
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    assert github_workflow_errors(workflow) == []


def checked_out(doc: dict[str, Any]) -> set[str]:
    """The jobs with a checkout: a job without one holds a write token, restores no cache."""
    return {
        name
        for name, job in doc["jobs"].items()
        if any("actions/checkout@" in str(s.get("uses", "")) for s in job.get("steps", []))
    }


def test_inline_uv_jobs_cache_the_folder_uv_uses(tmp_path: Path) -> None:
    project = project_with(tmp_path / "p", installer="uv", lock=LOCK)
    workflow = project / ".github/workflows/mlops.yml"
    doc = load(workflow)
    cached = checked_out(doc)
    assert {"breast-cancer-train", "breast-cancer-evaluate"} <= cached
    assert "breast-cancer-report" not in cached
    assert_cache_step_names_uv_folder(doc, workflow, tmp_path, cached=cached)
    # A job with a write token keeps no uv cache, and so names no folder for one.
    assert "UV_CACHE_DIR" not in doc["jobs"]["breast-cancer-report"]["env"]


def test_matrix_uv_jobs_cache_the_folder_uv_uses(tmp_path: Path) -> None:
    project = project_with(tmp_path / "p", installer="uv", lock=LOCKS, layout="matrix")
    workflow = project / ".github/workflows/mlops.yml"
    doc = load(workflow)
    # The plan job installs ci-mlops alone and keeps no cache.
    cached = checked_out(doc) - {"plan"}
    assert {"train", "evaluate"} <= cached
    assert_cache_step_names_uv_folder(doc, workflow, tmp_path, cached=cached)


def test_the_reusable_workflow_caches_the_folder_uv_uses(tmp_path: Path) -> None:
    workflow = REPO / ".github/workflows/mlops.yml"
    doc = load(workflow)
    cached = checked_out(doc)
    assert {"train", "evaluate"} <= cached
    assert_cache_step_names_uv_folder(doc, workflow, tmp_path, cached=cached)
    for name in cached:
        # Its installer is an input: the step runs when it is uv.
        (step,) = uv_cache_steps(doc["jobs"][name])
        assert step["if"] == "inputs.installer == 'uv'", name


def test_without_uv_cache_dir_uv_follows_xdg_cache_home(tmp_path: Path) -> None:
    """The reason the jobs name the folder: where a runner sets XDG_CACHE_HOME, uv keeps
    its cache there, not in ~/.cache/uv."""
    run_uv(DRY_INSTALL, "", tmp_path, tmp_path)
    assert (tmp_path / "xdg" / "uv" / "CACHEDIR.TAG").is_file()
    assert not (tmp_path / "home" / ".cache" / "uv").exists()
