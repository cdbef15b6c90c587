"""The files steps leave for each other under ``.ci-mlops/<model>/`` as typed records
(:class:`DataTestRecord`, :class:`TrainRecord`, :class:`MetricsRecord`,
:class:`GatesRecord`, :class:`ExportRecord`, :class:`ReportRecord`: each its file name,
its fields, a reader and an atomic writer), and their one integrity check: a file still
matches the sha256 recorded for it, else an :class:`~ci_mlops.errors.IntegrityError`
naming every file that changed.

Steps, the signature check and every registry compare recorded hashes through
:func:`changed_files` (files in a folder), :func:`require_recorded` (one file in a
folder) or :func:`changed` (bytes in hand, e.g. a download), so the check and its
message exist once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

from ci_mlops.atomic import read_artifact, sha256_file, write_json
from ci_mlops.errors import Changed, IntegrityError, StepError

__all__ = [
    "Changed",
    "DataTestRecord",
    "ExportRecord",
    "GatesRecord",
    "IntegrityError",
    "MetricsRecord",
    "Record",
    "ReportRecord",
    "SpecOriginRecord",
    "TrackingRecord",
    "TrainRecord",
    "changed",
    "changed_files",
    "passed",
    "require_recorded",
    "require_sha256",
    "require_unchanged",
]


def changed(
    path: str, data: bytes | None, expected: str | None, recorded_in: str
) -> Changed | None:
    """The change of ``data`` (the bytes of ``path``; None when it is gone) against the
    sha256 ``recorded_in`` holds for it; None when it still matches."""
    if data is None:
        return Changed(path, expected, None, recorded_in)
    actual = hashlib.sha256(data).hexdigest()
    return None if actual == expected else Changed(path, expected, actual, recorded_in)


def changed_files(
    folder: Path, expected: Mapping[str, str | None], recorded_in: str
) -> list[Changed]:
    """Every file of ``folder`` named in ``expected`` (file name -> sha256 as
    ``recorded_in`` records it) that is missing or differs, in name order."""
    found = []
    for name, digest in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            found.append(Changed(str(path), digest, None, recorded_in))
            continue
        actual = sha256_file(path)
        if actual != digest:
            found.append(Changed(str(path), digest, actual, recorded_in))
    return found


def require_unchanged(
    folder: Path, expected: Mapping[str, str | None], recorded_in: str, *, where: str = ""
) -> None:
    """IntegrityError naming every file of ``folder`` that changed (see
    :func:`changed_files`); ``where`` leads the message."""
    found = changed_files(folder, expected, recorded_in)
    if found:
        raise IntegrityError(found, where=where)


# --- data-test.json -------------------------------------------------------------------


def passed(entry: Mapping[str, Any]) -> bool:
    """Whether a data-test result (the whole file, one dataset or one expectation)
    passed. data-test.json says ``passed`` like every other record; files written by
    earlier versions say ``success``, which is read too so old artifacts still work."""
    return bool(entry.get("passed", entry.get("success", False)))


def _renamed(report: Any) -> dict[str, Any]:
    """A dataset's report with ``success`` (old files) read as ``passed``, at its own
    level and in each expectation."""
    if not isinstance(report, dict):
        return {}
    entries = [
        {**{k: v for k, v in e.items() if k != "success"}, "passed": passed(e)}
        for e in report.get("expectations") or []
        if isinstance(e, dict)
    ]
    kept = {k: v for k, v in report.items() if k != "success"}
    return {**kept, "passed": passed(report), "expectations": entries}


# --- the typed records ----------------------------------------------------------------
#
# One class per file: its name (FILE), its top-level fields with their types, a reader
# (:meth:`Record.read`, through :func:`~ci_mlops.atomic.read_artifact`) and an atomic
# writer (:meth:`Record.write`). The keys on disk are the field names, so files written
# by earlier versions and the copies registries published read as they always did. Keys
# a record does not declare (a newer writer's) are kept in ``extra`` and written back,
# so reading and rewriting a file never drops what another version put there. Nested,
# free-form parts (per-metric intervals, curves, checks) stay plain JSON values.


@dataclass(frozen=True, kw_only=True)
class Record:
    """The shared reader and writer of the typed records below."""

    FILE: ClassVar[str]

    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def at(cls, folder: Path) -> Path:
        """Where the record of the model folder ``folder`` is."""
        return folder / cls.FILE

    @classmethod
    def exists(cls, folder: Path) -> bool:
        return cls.at(folder).is_file()

    @classmethod
    def read(cls, folder: Path) -> Self:
        """The record in ``folder``, read without following links; a one-line StepError
        naming the file (and the field) when it is missing, not JSON or mistyped."""
        return cls.from_json(_json_object(folder, cls.FILE), where=str(cls.at(folder)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "") -> Self:
        """The record in ``data``; ``where`` (the file) leads any error message."""
        where = where or cls.FILE
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            if f.name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise StepError(f"{where}: {f.name}: missing")
                continue
            values[f.name] = _checked(data[f.name], hints[f.name], f"{where}: {f.name}")
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known or k == "extra"}
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    def write(self, folder: Path) -> Path:
        """Write the record atomically into ``folder``; its path."""
        path = self.at(folder)
        write_json(path, self.to_json())
        return path


def _json_object(folder: Path, name: str) -> dict[str, Any]:
    raw = read_artifact(folder, name)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StepError(f"{folder / name}: unreadable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StepError(f"{folder / name}: expected a JSON object")
    return data


_JSON_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def _checked(value: Any, hint: Any, where: str) -> Any:
    """``value`` when it has the JSON type ``hint`` describes (top level only: the
    items of lists and objects are free-form); StepError naming ``where`` otherwise."""
    allowed = _json_types(hint)
    if allowed is None or _is_one_of(value, allowed):
        return value
    wanted = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in allowed))
    got = _JSON_NAMES.get(type(value), type(value).__name__)
    raise StepError(f"{where}: expected {wanted}, found {got}")


def _json_types(hint: Any) -> tuple[type, ...] | None:
    """The Python types JSON decodes to that ``hint`` accepts; None for Any."""
    if hint is Any:
        return None
    if get_origin(hint) in (Union, UnionType):
        found: tuple[type, ...] = ()
        for arg in get_args(hint):
            inner = _json_types(arg)
            if inner is None:
                return None
            found += inner
        return found
    origin = get_origin(hint) or hint
    if origin in (dict, Mapping):
        return (dict,)
    if origin in (list, tuple, Sequence):
        return (list,)
    if hint is type(None) or hint is None:
        return (type(None),)
    return (hint,)


def _is_one_of(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, not to JSON
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


@dataclass(frozen=True, kw_only=True)
class DataTestRecord(Record):
    """``data-test.json``: the expectations of every dataset and whether they passed."""

    FILE: ClassVar[str] = "data-test.json"

    model: str = ""
    passed: bool = False
    statistics: dict[str, int] = field(default_factory=dict)
    # role -> {files, rows, passed, expectations ...}
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    great_expectations_version: str = ""
    # GX Data Docs of these results: {"path": relative to the model folder, "url": the
    # page of the job's artifacts where people open it, or None}; None when not built.
    data_docs: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "") -> Self:
        """The record in ``data``, old files (``success``) read as new ones."""
        renamed = {k: v for k, v in data.items() if k != "success"}
        renamed["passed"] = passed(data)
        if isinstance(data.get("datasets"), dict):
            renamed["datasets"] = {
                str(role): _renamed(report) for role, report in data["datasets"].items()
            }
        return super().from_json(renamed, where=where)


@dataclass(frozen=True, kw_only=True)
class TrainRecord(Record):
    """``train.json``: the model file training installed, and what it was trained from."""

    FILE: ClassVar[str] = "train.json"

    model_sha256: str
    input_hash: str = ""  # what the cache compares; none: never reused
    duration_seconds: float = 0.0
    command: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    trained_at: str = ""
    skipped: bool = False


@dataclass(frozen=True, kw_only=True)
class MetricsRecord(Record):
    """``metrics.json``: the scores of the model file with sha256 ``model_sha256`` on
    the eval data, what they were compared with, and the sha256 of every plot and record
    evaluate wrote beside it."""

    FILE: ClassVar[str] = "metrics.json"

    metrics: dict[str, float | None]
    model: str = ""
    task: str = ""
    model_sha256: str | None = None
    n_samples: int | None = None
    baseline: dict[str, Any] | None = None  # {source, metrics}
    baseline_missing: str | None = None
    averaging: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    classes: list[Any] | None = None
    plots: dict[str, str] = field(default_factory=dict)  # plots/<name>.png -> sha256
    intervals: dict[str, Any] | None = None
    importance: dict[str, Any] | None = None  # {metric, ranking}
    curves: dict[str, Any] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # slices.json ... -> sha256


@dataclass(frozen=True, kw_only=True)
class GatesRecord(Record):
    """``gates.json``: the verdict on the model file with sha256 ``model_sha256``, and
    the sha256 of the metrics.json it judged by."""

    FILE: ClassVar[str] = "gates.json"

    model: str
    model_sha256: str
    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    no_baseline: bool = False
    metrics_sha256: str | None = None
    baseline_source: str | None = None
    baseline_missing: str | None = None
    if_no_baseline: str = "pass"


@dataclass(frozen=True, kw_only=True)
class ExportRecord(Record):
    """``export.json``: the ONNX file exported from the model with sha256
    ``model_sha256``, its parity with the native model, latency and replay rows. With
    export off in the spec it says only ``skipped: true``."""

    FILE: ClassVar[str] = "export.json"

    skipped: bool = False
    passed: bool = False
    message: str = ""
    model_sha256: str | None = None
    onnx_sha256: str | None = None
    opset: int | None = None
    framework: str | None = None
    task: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    compared: str | None = None
    n_samples: int | None = None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    label_mismatches: int | None = None
    max_label_mismatches: int | None = None
    latency: dict[str, Any] | None = None
    onnxruntime: str | None = None
    replay: dict[str, Any] | None = None
    converter: str | None = None
    exported_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        # With export off there is nothing to describe: the file says so and no more.
        return {**self.extra, "skipped": True} if self.skipped else super().to_json()


@dataclass(frozen=True, kw_only=True)
class TrackingRecord(Record):
    """``tracking.json``: the experiment-tracking run evaluate logged the model with
    sha256 ``model_sha256`` as, and where people see it."""

    FILE: ClassVar[str] = "tracking.json"

    model: str
    model_sha256: str
    run_id: str
    experiment: str = ""
    experiment_id: str = ""
    server: str = ""
    tracking_uri: str = ""
    url: str | None = None


@dataclass(frozen=True, kw_only=True)
class SpecOriginRecord(Record):
    """``spec-origin.json``: where the spec copied into the model folder lives in the
    repository, relative to its root (for what points into it: check-run annotations)."""

    FILE: ClassVar[str] = "spec-origin.json"

    path: str


@dataclass(frozen=True, kw_only=True)
class ReportRecord(Record):
    """``report.json``: the sha256 of the report.md the report step wrote."""

    FILE: ClassVar[str] = "report.json"

    model: str
    report_sha256: str


def require_sha256(
    path: Path | str, actual: str, expected: str | None, recorded_in: str, *, hint: str = ""
) -> None:
    """IntegrityError unless ``actual`` (the sha256 of ``path`` as read) is the
    ``expected`` one ``recorded_in`` holds; ``hint`` says what to do about it."""
    if actual != expected:
        raise IntegrityError([Changed(str(path), expected, actual, recorded_in)], hint=hint)


def require_recorded(
    folder: Path, name: str, expected: str | None, recorded_in: str, *, hint: str = ""
) -> None:
    """IntegrityError unless ``folder/name``, read as an artifact (no links), has the
    sha256 ``recorded_in`` holds for it."""
    found = changed(str(folder / name), read_artifact(folder, name), expected, recorded_in)
    if found:
        raise IntegrityError([found], hint=hint)
