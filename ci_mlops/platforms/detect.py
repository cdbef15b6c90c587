"""Pick the platform from the environment CI sets (GITLAB_CI, GITHUB_ACTIONS)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ci_mlops.errors import UsageError
from ci_mlops.platforms.base import Platform
from ci_mlops.spec.model import Spec

NAMES = ("local", "gitlab", "github")


def platform_name(env: Mapping[str, str] | None = None) -> str:
    """local, gitlab or github, from CI environment variables."""
    env = os.environ if env is None else env
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    return "local"


def current_platform(env: Mapping[str, str] | None = None) -> str:
    """The platform this process runs on: MLOPS_PLATFORM when set, else the one the CI
    variables say."""
    env = os.environ if env is None else env
    return env.get("MLOPS_PLATFORM") or platform_name(env)


def detect(spec: Spec, name: str | None = None) -> Platform:
    """The platform to use: ``name`` if given, else the one the environment says."""
    name = name or current_platform()
    if name == "local":
        from ci_mlops.platforms.local import LocalPlatform

        return LocalPlatform(spec)
    if name == "gitlab":
        from ci_mlops.platforms.gitlab import GitLabPlatform

        return GitLabPlatform(spec)
    if name == "github":
        from ci_mlops.platforms.github import GitHubPlatform

        return GitHubPlatform(spec)
    raise UsageError(f"unknown platform {name!r} (choose one of: {', '.join(NAMES)})")
