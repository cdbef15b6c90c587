"""The interface every deploy target (model registry) implements.

A registry stores published model versions and points environments (staging,
production) at them. It is chosen by the spec's ``deploy.target``; ``auto`` picks the
one whose ``platforms`` holds the CI platform the job runs on. Steps talk to a
:class:`Registry` and never to a registry's API or folder layout themselves."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ci_mlops import log
from ci_mlops.errors import MlopsError, UsageError
from ci_mlops.platforms.base import Baseline
from ci_mlops.spec.model import Model, Spec


@dataclass(frozen=True)
class Published:
    """A model version stored in a registry."""

    version: str
    location: str  # a URL or a folder
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    folder: Path | None = None  # where the checked files are on this machine, once verified


class Registry(ABC):
    """One deploy target. Subclasses set ``name`` (the ``deploy.target`` value), the CI
    ``platforms`` for which ``auto`` picks them, and the ci-mlops ``extras`` a deploy
    job installs to reach them."""

    name: ClassVar[str]
    platforms: ClassVar[tuple[str, ...]] = ()
    extras: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.env: Mapping[str, str] = os.environ if env is None else env

    @abstractmethod
    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        """Store ``files`` (name -> path) as ``version`` of ``model``; verify checksums."""

    @abstractmethod
    def promote(self, model: Model, environment: str, version: str, forced: bool = False) -> None:
        """Point ``environment`` at ``version``, remembering the previous one; ``forced``
        is recorded in the environment's history (a promotion past the rules)."""

    @abstractmethod
    def rollback(
        self, model: Model, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        """Point ``environment`` back at its previous version; return that version.
        ``check`` sees that version first and raises to stop the rollback."""

    @abstractmethod
    def live(self, model: Model, environment: str) -> Published | None:
        """The version ``environment`` points at, with its files' checksums; None when
        nothing is deployed there."""

    @abstractmethod
    def verify(self, model: Model, version: str, into: Path | None = None) -> Published:
        """Re-check every stored file of ``version`` against its recorded checksum; a
        remote registry downloads them into ``into``. ``folder`` of the result holds them."""

    def history(self, model: Model, environment: str) -> list[dict[str, Any]]:
        """What ``environment`` pointed at, newest first: each entry has ``version``,
        ``forced`` (promoted past the rules) and ``at`` (when, ISO 8601, or None where
        the registry does not keep it), plus any fields :meth:`annotate` attached. A
        registry that keeps no history returns only what is live."""
        live = self.live(model, environment)
        return [] if live is None else [{"version": live.version, "forced": False, "at": None}]

    def annotate(
        self, model: Model, environment: str, version: str, fields: dict[str, str]
    ) -> None:
        """Attach ``fields`` to the newest history entry of ``environment``, which must
        point at ``version`` (UsageError otherwise); :meth:`history` returns them."""
        raise UsageError(f"deploy target {self.name} cannot annotate its environments")

    def baseline(self, model: Model) -> Baseline | None:
        """Metrics of what this registry runs, for a platform that has no default-branch
        run to take them from (a laptop); None when it keeps none."""
        return None

    def metric_history(self, model: Model, limit: int = 10) -> list[tuple[str, dict[str, float]]]:
        """The metrics of the last ``limit`` versions deployed to the first environment,
        oldest first, for the report's history chart. A version whose metrics cannot be
        read is left out with a warning: the chart is for people, never a gate."""
        out = []
        for version in self.deployed_versions(model, limit):
            try:
                metrics = self.version_metrics(model, version)
            except MlopsError as exc:
                log.warn(f"{model.name} {version}: {exc}; left out of the metric history")
                continue
            if metrics is None:
                log.warn(
                    f"{model.name} {version}: no metrics in {self.name}; left out of the "
                    "metric history"
                )
                continue
            out.append((version, metrics))
        return out

    def deployed_versions(self, model: Model, limit: int) -> list[str]:
        """The last ``limit`` distinct versions the first environment ran, oldest first,
        from its :meth:`history` (one read of the environment record). The first
        environment, because every deploy lands there before any later one."""
        if limit <= 0:
            return []
        newest_first: list[str] = []
        for entry in self.history(model, model.deploy.environments[0].name):
            version = str(entry.get("version") or "")
            if version and version not in newest_first:
                newest_first.append(version)
            if len(newest_first) == limit:
                break
        return newest_first[::-1]

    def version_metrics(self, model: Model, version: str) -> dict[str, float] | None:
        """The metrics ``version`` was evaluated with, as the registry stores them; None
        where it keeps none (or this registry cannot say)."""
        return None

    def version_suffix(self) -> str:
        """What a pipeline adds to the spec's model version (e.g. the pipeline number);
        by default the CI platform's."""
        from ci_mlops.platforms.detect import current_platform, detect

        return detect(self.spec, current_platform(self.env)).version_suffix()

    @contextmanager
    def exclusive(self, model: Model) -> Iterator[None]:
        """Hold off other deploys of ``model`` while one publishes and promotes; a
        registry whose API serialises these itself needs no lock."""
        yield
