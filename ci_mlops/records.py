"""The files steps leave for each other under ``.ci-mlops/<model>/`` as typed records
(so far ``data-test.json``: :class:`DataTestRecord`), and their one integrity check: a file still matches the sha256 recorded for it, else an
:class:`~ci_mlops.errors.IntegrityError` naming every file that changed.

Steps, the signature check and every registry compare recorded hashes through
:func:`changed_files` (files in a folder) or :func:`changed` (bytes in hand, e.g. a
download), so the check and its message exist once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from ci_mlops.atomic import read_artifact, sha256_file, write_json
from ci_mlops.errors import Changed, IntegrityError, StepError

__all__ = [
    "Changed",
    "DataTestRecord",
    "IntegrityError",
    "changed",
    "changed_files",
    "passed",
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


@dataclass(frozen=True)
class DataTestRecord:
    """``data-test.json``: the expectations of every dataset and whether they passed."""

    FILE: ClassVar[str] = "data-test.json"

    model: str
    passed: bool
    statistics: dict[str, int]
    datasets: dict[str, dict[str, Any]]  # role -> {files, rows, passed, expectations ...}
    great_expectations_version: str
    # GX Data Docs of these results: {"path": relative to the model folder, "url": the
    # page of the job's artifacts where people open it, or None}; None when not built.
    data_docs: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataTestRecord:
        """The record in ``data``, old files (``success``) read as new ones."""
        datasets = {
            str(role): _renamed(report) for role, report in (data.get("datasets") or {}).items()
        }
        return cls(
            model=str(data.get("model", "")),
            passed=passed(data),
            statistics=dict(data.get("statistics") or {}),
            datasets=datasets,
            great_expectations_version=str(data.get("great_expectations_version", "")),
            data_docs=docs if isinstance(docs := data.get("data_docs"), dict) else None,
        )

    @classmethod
    def read(cls, folder: Path) -> DataTestRecord:
        """The record in ``folder``, read without following links; StepError otherwise."""
        raw = read_artifact(folder, cls.FILE)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise StepError(f"{folder / cls.FILE}: unreadable JSON: {exc}") from None
        if not isinstance(data, dict):
            raise StepError(f"{folder / cls.FILE}: expected a JSON object")
        return cls.from_json(data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        """Write the record atomically into ``folder``; its path."""
        path = folder / self.FILE
        write_json(path, self.to_json())
        return path


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
