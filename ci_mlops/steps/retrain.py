"""Retrain: start the pipeline that retrains a model, on the platform the environment
names or the one given. Useful from a data pipeline or another project's CI, given the
platform's variables (CI_API_V4_URL, CI_PROJECT_ID and MLOPS_TRIGGER_TOKEN on GitLab;
GITHUB_API_URL, GITHUB_REPOSITORY and GITHUB_TOKEN on GitHub)."""

from __future__ import annotations

from typing import Any

from ci_mlops import log
from ci_mlops.spec.model import Model, Spec


def run(spec: Spec, model: Model, reason: str, platform: str | None = None) -> dict[str, Any]:
    """Trigger retraining of ``model``; return the platform and a reference to the run.

    On the local platform there is no pipeline to start: that is a UsageError telling
    how to retrain on this machine instead."""
    from ci_mlops.platforms import detect

    target = detect(spec, platform)
    where = target.trigger_retrain(model, reason)
    log.info(f"{model.name}: retraining requested ({reason})")
    print(f"{model.name}: retraining triggered on {target.name}: {where}")
    return {"model": model.name, "platform": target.name, "reference": where}
