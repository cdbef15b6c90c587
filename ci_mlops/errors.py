"""Error types. Every error ci-mlops raises on purpose derives from :class:`MlopsError`.

The CLI maps them to exit codes: user errors exit 2, failed checks exit 1, and neither
prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass

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
