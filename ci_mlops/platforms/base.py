"""The interface every platform implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ci_mlops.spec.model import Model, Spec


@dataclass(frozen=True)
class Baseline:
    """Metrics of the model currently on the default branch, and where they came from."""

    metrics: dict[str, float]
    source: str  # for people: "pipeline #123 on main (abc1234)", "registry v1.0.0+3", a path
    # Its features from most to least important, when its evaluation measured them.
    importance: tuple[str, ...] | None = None
    # Its features by mean |SHAP|, when its evaluation computed SHAP values.
    shap: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MissingBaseline:
    """The default branch produced a baseline, but it cannot be had now (its artifact
    expired). Unlike ``None`` (never produced: a first model), ``baseline.if_missing``
    does not apply: change gates fail, because passing them would let any change through
    once a project's default branch has been quiet longer than artifacts are kept."""

    reason: str


@dataclass(frozen=True)
class Annotation:
    """One check of the quality gates, for a platform that can pin it to the spec:
    ``line`` is the gate's line in the spec, ``level`` failure or warning."""

    line: int
    level: str
    title: str
    message: str


@dataclass(frozen=True)
class CheckReport:
    """The verdict as a platform check (a GitHub check run): passed or not, a title,
    the report as its summary, and one annotation per failed or warned check."""

    passed: bool
    title: str
    summary: str
    annotations: tuple[Annotation, ...] = ()
    spec_file: str = "mlops.yaml"  # the spec's path in the repository


class Platform(ABC):
    """One CI platform (or the laptop): where reports, baselines, retraining triggers
    and job context come from. Model versions live in a registry
    (:mod:`ci_mlops.registries`), chosen by the spec's ``deploy.target``."""

    name: str = "base"
    can_trigger: bool = True  # whether there is a pipeline trigger_retrain can start

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @abstractmethod
    def fetch_baseline(self, model: Model) -> Baseline | MissingBaseline | None:
        """The default branch's latest metrics for ``model``; None when it never produced
        any (a first model); MissingBaseline when they existed but cannot be had."""

    @abstractmethod
    def post_report(self, model: Model, markdown: str, images: list[Path]) -> str | None:
        """Create or update this model's one comment on the current merge/pull request.

        Returns where it was posted, or None when there is no request to comment on."""

    @abstractmethod
    def trigger_retrain(self, model: Model, reason: str) -> str:
        """Start a pipeline that retrains ``model``; return a reference to it."""

    def job_summary(self, markdown: str) -> None:  # noqa: B027 - optional hook
        """Show ``markdown`` on the job's page where the platform has one."""

    def publish_check(self, model: Model, check: CheckReport) -> str | None:
        """Record the verdict as a check on the commit where the platform has them;
        returns where, or None (GitLab shows the JUnit and metrics reports instead)."""
        return None

    def request_labels(self) -> frozenset[str]:
        """The labels of the merge/pull request this pipeline runs for, which may
        override a failed gate (``override_label``); none where there is no request."""
        return frozenset()

    def version_suffix(self) -> str:
        """What a pipeline adds to the spec's model version (e.g. the pipeline number)."""
        return ""
