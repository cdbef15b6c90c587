"""The platforms ci-mlops runs on, in one table, and which one this process is on.

Add a platform by writing one module here (a :class:`Platform` subclass) and listing it
in ``PLATFORMS`` with the variable its CI sets to ``true`` in every job. The CLI's
``--platform`` choices, detection, and the CI files ``generate`` writes come from this
table (a test fails when the generator renders a CI platform not listed here, or misses
one). Modules are imported only when their platform is used: the remote ones import an
SDK.
"""

from __future__ import annotations

import importlib
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ci_mlops.errors import UsageError
from ci_mlops.platforms.base import Platform
from ci_mlops.spec.model import Spec


@dataclass(frozen=True)
class Entry:
    """Where a platform's class lives, and the variable that says a job runs on it."""

    target: str  # "module:Class", imported on first use
    ci_variable: str | None = None  # set to "true" in that CI's jobs; None for the laptop
    # The web page where people open a file a job keeps in its artifacts: a format of
    # the job's variables and {path} (relative to the variable project_dir names).
    artifact_page: str | None = None
    project_dir: str | None = None


PLATFORMS: dict[str, Entry] = {
    "local": Entry("ci_mlops.platforms.local:LocalPlatform"),
    "gitlab": Entry(
        "ci_mlops.platforms.gitlab:GitLabPlatform",
        "GITLAB_CI",
        artifact_page="{CI_JOB_URL}/artifacts/file/{path}",
        project_dir="CI_PROJECT_DIR",
    ),
    # A run's artifacts are zip files listed on its page: the page is the closest link.
    "github": Entry(
        "ci_mlops.platforms.github:GitHubPlatform",
        "GITHUB_ACTIONS",
        artifact_page="{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}#artifacts",
        project_dir="GITHUB_WORKSPACE",
    ),
}
NAMES = tuple(PLATFORMS)
# The CI hosts: the ones generate writes pipeline files for.
CI_NAMES = tuple(name for name, entry in PLATFORMS.items() if entry.ci_variable)
LOCAL = "local"


def platform_name(env: Mapping[str, str] | None = None) -> str:
    """The platform the CI variables say (``local`` when none is set)."""
    env = os.environ if env is None else env
    for name, entry in PLATFORMS.items():
        if entry.ci_variable and env.get(entry.ci_variable) == "true":
            return name
    return LOCAL


def current_platform(env: Mapping[str, str] | None = None) -> str:
    """The platform this process runs on: MLOPS_PLATFORM when set, else the one the CI
    variables say."""
    env = os.environ if env is None else env
    return env.get("MLOPS_PLATFORM") or platform_name(env)


def artifact_page(path: Path, env: Mapping[str, str] | None = None) -> str | None:
    """Where people open ``path``, a file this job keeps in its artifacts; None on a
    laptop, outside the project folder, or when a variable the page needs is not set.
    Read from the CI variables alone: a job that installs no platform SDK asks too."""
    env = os.environ if env is None else env
    entry = PLATFORMS.get(current_platform(env))
    if entry is None or entry.artifact_page is None or entry.project_dir is None:
        return None
    relative = _inside_project(path, env.get(entry.project_dir, ""))
    fields = [f for _, f, _, _ in string.Formatter().parse(entry.artifact_page) if f]
    values = {f: env.get(f, "") for f in fields if f != "path"}
    if relative is None or not all(values.values()):
        return None
    return entry.artifact_page.format(**values, path=quote(relative.as_posix()))


def _inside_project(path: Path, root: str) -> Path | None:
    """``path`` relative to the job's project folder: the one the CI variable names, or
    the folder the job started in (where every job starts). gitlab-ci-local names a
    folder of its own in the variable, a container's path or a relative one, while the
    job runs elsewhere."""
    if not root:
        return None
    folders = [Path(root)] if Path(root).is_absolute() else []
    for folder in [*folders, Path.cwd()]:
        try:
            return path.resolve().relative_to(folder.resolve())
        except ValueError:
            continue
    return None


def detect(spec: Spec, name: str | None = None) -> Platform:
    """The platform to use: ``name`` if given, else the one the environment says."""
    name = name or current_platform()
    entry = PLATFORMS.get(name)
    if entry is None:
        raise UsageError(f"unknown platform {name!r} (choose one of: {', '.join(NAMES)})")
    module_name, _, class_name = entry.target.partition(":")
    cls: type[Platform] = getattr(importlib.import_module(module_name), class_name)
    return cls(spec)
