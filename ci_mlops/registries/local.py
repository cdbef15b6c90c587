"""The local registry folder (``deploy.registry``, default ``.mlops-registry``)."""

from __future__ import annotations

from typing import ClassVar

from ci_mlops.registries._delegate import PlatformRegistry


class LocalRegistry(PlatformRegistry):
    """The local registry folder (``deploy.registry``, default ``.mlops-registry``)."""

    name: ClassVar[str] = "local"
    platforms: ClassVar[tuple[str, ...]] = ("local",)
    extras: ClassVar[tuple[str, ...]] = ()
