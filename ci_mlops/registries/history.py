"""What the environment records of every registry share: the history entries
:meth:`Registry.history` returns, and the fields :meth:`Registry.annotate` keeps per
version (``annotations``: {version: {field: text}}), which survive promotions and
rollbacks so that a rollback finds the fields of the version it returns to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ci_mlops.errors import PlatformError, UsageError
from ci_mlops.platforms.remote import forced_versions


def notes(
    record: Mapping[str, Any], source: str = "environment record"
) -> dict[str, dict[str, str]]:
    """A record's ``annotations``, checked (``source`` names the record); {} when none."""
    raw = record.get("annotations")
    if raw is None:
        return {}
    valid = isinstance(raw, dict) and all(
        isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values())
        for fields in raw.values()
    )
    if not valid:
        raise PlatformError(f"{source}: annotations: expected a mapping of version to text fields")
    return {str(version): dict(fields) for version, fields in raw.items()}


def history_entries(
    record: Mapping[str, Any], stack: list[str], at: object = None
) -> list[dict[str, Any]]:
    """Entries newest first for a record whose live ``version`` sits on ``stack``
    (earlier versions, oldest first); only the live entry has a time, ``at``."""
    live = record.get("version")
    if not live:
        return []
    forced = set(forced_versions(record))
    annotations = notes(record)
    versions = [str(live), *reversed(stack)]
    return [
        {
            **annotations.get(version, {}),
            "version": version,
            "forced": version in forced,
            "at": str(at) if index == 0 and at else None,
        }
        for index, version in enumerate(versions)
    ]


def require_live(model: str, environment: str, live: object, version: str) -> None:
    """UsageError unless ``environment`` of ``model`` runs ``version`` (annotations go
    on what is live)."""
    if live != version:
        raise UsageError(
            f"{model}: {environment} runs {live or 'nothing'}, not {version}: "
            "annotate the version that is live"
        )
