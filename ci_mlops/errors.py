"""Error types. Every error ci-mlops raises on purpose derives from :class:`MlopsError`.

The CLI maps them to exit codes: user errors exit 2, failed checks exit 1, and neither
prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_BAD_INPUT = 2


class MlopsError(Exception):
    """The root of every error ci-mlops raises on purpose."""

    exit_code: int = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Problem:
    """One located problem in a spec file."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class SpecError(MlopsError):
    """The spec is unreadable, does not match the schema, or does not make sense."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(MlopsError):
    """Options or files given on the command line are wrong."""


class StepError(MlopsError):
    """A job step could not run because of bad input (missing data, unreadable model...)."""


class CheckFailed(MlopsError):
    """A check ran and failed: a quality gate, a data test, ONNX parity, a stale file."""

    exit_code = 1


class GateFailed(CheckFailed):
    """A quality gate failed."""


class PlatformError(MlopsError):
    """The CI platform's API refused or failed a request."""


@dataclass(frozen=True)
class Changed:
    """One file that no longer matches the sha256 recorded for it; ``actual`` is None
    when the file is gone."""

    path: str
    expected: str | None
    actual: str | None
    recorded_in: str  # where the sha256 was recorded: manifest.json, model.sig, SHA256SUMS ...

    def __str__(self) -> str:
        if self.actual is None:
            return f"{self.path}: missing ({self.recorded_in} records sha256 {self.expected})"
        return f"{self.path}: sha256 {self.actual} does not match {self.expected} in {self.recorded_in}"


class IntegrityError(CheckFailed):
    """Files no longer match the sha256 a step or a registry recorded for them: each is
    one :class:`Changed`, and ``path``, ``expected`` and ``actual`` are the first's."""

    def __init__(self, changes: list[Changed], *, where: str = "", hint: str = "") -> None:
        if not changes:
            raise ValueError("an IntegrityError needs at least one changed file")
        self.changes = tuple(changes)
        text = "; ".join(str(c) for c in changes)
        text = f"{where}: {text}" if where else text
        super().__init__(f"{text}; {hint}" if hint else text)

    @property
    def path(self) -> Path:
        return Path(self.changes[0].path)

    @property
    def expected(self) -> str | None:
        return self.changes[0].expected

    @property
    def actual(self) -> str | None:
        return self.changes[0].actual
