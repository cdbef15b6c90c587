"""The spec's copy in the model folder, and where the spec it copies lives
(``spec-origin.json``, :class:`~ci_mlops.records.SpecOriginRecord`)."""

from __future__ import annotations

import re
from pathlib import Path

from ci_mlops import atomic
from ci_mlops.errors import StepError
from ci_mlops.generate.plan import SPEC_SNAPSHOT
from ci_mlops.records import SpecOriginRecord
from ci_mlops.spec.model import Model, Spec

# What the spec's recorded path may look like: relative, plain characters.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}")
SPEC_ORIGIN = SpecOriginRecord.FILE


def snapshot_spec(spec: Spec, model: Model) -> Path:
    """Copy the spec into the model folder. Jobs that hold a write token check nothing
    out; the spec reaches them in the model folder with the other artifacts, and they
    read it as data (YAML and the schema), as they do every other file there."""
    folder = spec.workdir(model)
    target = folder / SPEC_SNAPSHOT
    atomic.write_bytes(target, spec.path.read_bytes())
    # Where the spec lives in the repository, for what points into it (check-run
    # annotations): jobs run at the repository root.
    origin = spec.path.resolve()
    here = Path.cwd().resolve()
    relative = origin.relative_to(here).as_posix() if origin.is_relative_to(here) else origin.name
    SpecOriginRecord(path=relative).write(folder)
    _snapshot_public_key(spec, model, folder)
    return target


def spec_origin(spec: Spec, model: Model) -> str:
    """The spec's path in the repository: recorded beside the snapshot when ``spec`` is
    that snapshot, else the spec's own path relative to the working folder. A recorded
    value that is not a plain relative path is not used (the file is an artifact a
    merge request can write)."""
    folder = spec.workdir(model)
    if spec.path.resolve() == (folder / SPEC_SNAPSHOT).resolve():
        try:
            recorded = SpecOriginRecord.read(folder).path
        except StepError:
            return "mlops.yaml"
        ok = _PLAIN_PATH.fullmatch(recorded) and ".." not in recorded
        return recorded if ok else "mlops.yaml"
    origin, here = spec.path.resolve(), Path.cwd().resolve()
    return origin.relative_to(here).as_posix() if origin.is_relative_to(here) else spec.path.name


def _snapshot_public_key(spec: Spec, model: Model, folder: Path) -> None:
    """The deploy job verifies signatures with ``deploy.signing.public_key``, a path
    relative to the spec: it travels beside the spec copy, at the same relative path."""
    relative = model.deploy.signing.public_key
    if not relative:
        return
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise StepError(
            f"{spec.path}: deploy.signing.public_key {relative!r} must lie inside the "
            "repository folder of the spec, so that it can travel with the model folder"
        )
    atomic.write_bytes(target, (spec.root / relative).read_bytes())
