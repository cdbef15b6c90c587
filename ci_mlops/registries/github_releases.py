"""GitHub releases, with GitHub deployments as environment pointers."""

from __future__ import annotations

from typing import ClassVar

from ci_mlops.registries._delegate import PlatformRegistry


class GitHubReleases(PlatformRegistry):
    """GitHub releases, with GitHub deployments as environment pointers."""

    name: ClassVar[str] = "github-releases"
    platforms: ClassVar[tuple[str, ...]] = ("github",)
    extras: ClassVar[tuple[str, ...]] = ("github",)
