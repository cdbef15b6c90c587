"""The JSON records steps leave for each other in the model folder (train.json,
gates.json, export.json ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_mlops.atomic import read_artifact
from ci_mlops.errors import StepError


def read_record(path: Path) -> dict[str, Any]:
    """A JSON object written by an earlier step, read without following links (see
    :func:`ci_mlops.atomic.read_artifact`); StepError naming the file otherwise."""
    raw = read_artifact(path.parent, path.name)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StepError(f"{path}: unreadable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StepError(f"{path}: expected a JSON object")
    return data
