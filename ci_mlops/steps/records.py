"""The JSON records steps leave for each other in the model folder (train.json,
gates.json, export.json ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_mlops import atomic
from ci_mlops.errors import StepError
from ci_mlops.generate.plan import SPEC_SNAPSHOT
from ci_mlops.spec.model import Model, Spec


def read_record(path: Path) -> dict[str, Any]:
    """A JSON object written by an earlier step; StepError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StepError(f"{path}: unreadable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StepError(f"{path}: expected a JSON object")
    return data


def snapshot_spec(spec: Spec, model: Model) -> Path:
    """Copy the spec into the model folder. Jobs that hold a write token check nothing
    out; the spec reaches them in the model folder with the other artifacts, and they
    read it as data (YAML and the schema), as they do every other file there."""
    target = spec.workdir(model) / SPEC_SNAPSHOT
    atomic.write_bytes(target, spec.path.read_bytes())
    return target
