"""Where steps meet the CI platform: the laptop (``local``), GitLab through python-gitlab
and GitHub through PyGithub. A platform posts reports, fetches baselines, triggers
retraining and knows its job's context; deploy targets are :mod:`ci_mlops.registries`.
Steps talk to a :class:`~ci_mlops.platforms.base.Platform` and never import a platform
SDK themselves."""

from __future__ import annotations

from ci_mlops.platforms.base import Baseline, MissingBaseline, Platform
from ci_mlops.platforms.detect import CI_NAMES, NAMES, PLATFORMS, detect

__all__ = ["CI_NAMES", "NAMES", "PLATFORMS", "Baseline", "MissingBaseline", "Platform", "detect"]
