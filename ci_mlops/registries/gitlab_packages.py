"""GitLab's generic package registry, with environment records kept there too."""

from __future__ import annotations

from typing import ClassVar

from ci_mlops.registries._delegate import PlatformRegistry


class GitLabPackages(PlatformRegistry):
    """GitLab's generic package registry, with environment records kept there too."""

    name: ClassVar[str] = "gitlab-packages"
    platforms: ClassVar[tuple[str, ...]] = ("gitlab",)
    extras: ClassVar[tuple[str, ...]] = ("gitlab",)
