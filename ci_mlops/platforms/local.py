"""The laptop's platform: no CI server to talk to, so no comments, no default-branch
baseline and no pipeline to trigger. Deploys go to the registry ``deploy.target`` names
(the local registry folder by default; see :mod:`ci_mlops.registries.local`), which is
also where a laptop's baseline comes from."""

from __future__ import annotations

from pathlib import Path

from ci_mlops.errors import UsageError
from ci_mlops.platforms.base import Baseline, Platform
from ci_mlops.spec.model import Model


class LocalPlatform(Platform):
    """The laptop: there is no merge request to comment on and no pipeline to trigger."""

    name = "local"
    can_trigger = False

    def fetch_baseline(self, model: Model) -> Baseline | None:
        """None: a laptop has no default-branch run; the registry's live version is
        the baseline then (see ``Registry.baseline``)."""
        return None

    def post_report(self, model: Model, markdown: str, images: list[Path]) -> str | None:
        """Locally the report is just the file the report step wrote."""
        return None

    def trigger_retrain(self, model: Model, reason: str) -> str:
        raise UsageError(
            f"{model.name}: there is no pipeline to trigger on this machine ({reason}); "
            f"retrain locally with `ci-mlops run --force --model {model.name}` "
            f"(or `ci-mlops train --force --model {model.name}`)"
        )
