"""A registry that hands every call to a CI platform's own registry methods."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ci_mlops.platforms.base import Platform
from ci_mlops.registries.base import Published, Registry
from ci_mlops.spec.model import Model, Spec


class PlatformRegistry(Registry):
    """The registry built into one CI platform (``platforms[0]``)."""

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec, env)
        self._platform: Platform | None = None

    @property
    def platform(self) -> Platform:
        # Built on first use: constructing a remote platform imports its SDK.
        if self._platform is None:
            from ci_mlops.platforms.detect import detect

            self._platform = detect(self.spec, self.platforms[0])
        return self._platform

    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        return self.platform.publish(model, version, files)

    def promote(self, model: Model, environment: str, version: str, forced: bool = False) -> None:
        self.platform.promote(model, environment, version, forced)

    def rollback(
        self, model: Model, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        return self.platform.rollback(model, environment, check)

    def live(self, model: Model, environment: str) -> Published | None:
        return self.platform.live(model, environment)

    def verify(self, model: Model, version: str, into: Path | None = None) -> Published:
        return self.platform.verify(model, version, into)

    def version_suffix(self) -> str:
        return self.platform.version_suffix()

    @contextmanager
    def exclusive(self, model: Model) -> Iterator[None]:
        with self.platform.exclusive(model):
            yield
