"""Where steps meet the outside world: the local folder registry (the embedded default),
GitLab through python-gitlab and GitHub through PyGithub. Steps talk to a
:class:`~ci_mlops.platforms.base.Platform` and never import a platform SDK themselves."""

from __future__ import annotations

from ci_mlops.platforms.base import Baseline, MissingBaseline, Platform, Published
from ci_mlops.platforms.detect import detect

__all__ = ["Baseline", "MissingBaseline", "Platform", "Published", "detect"]
