"""The train step: run the spec's training command and keep its model, or reuse the
model trained from the very same inputs.

The command runs with ``/bin/sh -c`` in the spec's folder, its output streamed through,
with these variables added to the environment:

- ``MLOPS_MODEL_NAME``; ``MLOPS_MODEL_PATH``: where to write the model;
- ``MLOPS_PARAMS`` (the params as JSON, keys sorted) and ``MLOPS_PARAM_<NAME>`` per
  param (strings as they are, other values as JSON);
- ``MLOPS_TRAIN_DATA`` / ``MLOPS_EVAL_DATA``: absolute path of the data file (or the
  features file), ``MLOPS_TRAIN_LABELS`` / ``MLOPS_EVAL_LABELS`` with split files, and
  ``MLOPS_TARGET``.

``MLOPS_MODEL_PATH`` points into a fresh temporary folder inside the model's working
folder; the file moves to ``.ci-mlops/<model>/<model file>`` in one rename only when
the command succeeded and wrote a non-empty model, so a failed run never replaces or
damages the model of an earlier run. With ``train.output``, the file the command wrote
there is copied in instead.

Outcomes: a command that exits non-zero, dies from a signal or writes no model fails
the step like any failed check (CheckFailed, exit 1): the spec is fine, the training
code is not. A command that outlives ``timeout_minutes`` is stopped with its whole
process group and raises StepError (exit 2). Missing data files are StepError.

Caching: ``input_hash`` covers the training-relevant part of the model's spec, every
data file, every file matched by ``paths`` and the runtime requirements file. When it
equals the one in ``train.json`` and the model file still has the recorded sha256,
training is skipped. ``force=True`` or ``MLOPS_RETRAIN`` set to ``1``, ``true``,
``all`` or the model's name (or a comma-separated list of names) trains anyway.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ci_mlops import atomic, log
from ci_mlops.errors import CheckFailed, StepError
from ci_mlops.records import TrainRecord
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps.datasets import target_name

RETRAIN_VARIABLE = "MLOPS_RETRAIN"
# Bump when what goes into the hash changes, so old caches are not trusted.
_HASH_FORMAT = b"ci-mlops train inputs v1\n"
# Never part of the code hash: ci-mlops' own output, and files that running the code
# rewrites (bytecode), which would otherwise make every second run retrain.
_NOT_CODE = {".ci-mlops", "__pycache__", ".git"}
_VARIABLES = {
    "MLOPS_MODEL_NAME",
    "MLOPS_MODEL_PATH",
    "MLOPS_PARAMS",
    "MLOPS_TRAIN_DATA",
    "MLOPS_TRAIN_LABELS",
    "MLOPS_EVAL_DATA",
    "MLOPS_EVAL_LABELS",
    "MLOPS_TARGET",
}
_GRACE_SECONDS = 5.0


def run(spec: Spec, model: Model, force: bool = False) -> TrainRecord:
    """Train ``model`` unless its inputs are unchanged; return the train.json record."""
    digest = input_hash(spec, model)
    reason = force_reason(model, force)
    if reason:
        log.info(f"train {model.name}: training ({reason})")
    else:
        cached = _cached(spec, model, digest)
        if cached is not None:
            return _reuse(spec, model, cached)
    return train(spec, model, digest, timeout_seconds=model.train.timeout_minutes * 60)


def force_reason(model: Model, force: bool) -> str | None:
    """Why training must run regardless of the cache, or None."""
    if force:
        return "--force"
    value = os.environ.get(RETRAIN_VARIABLE, "").strip()
    names = {part.strip() for part in value.split(",")}
    if value.lower() in {"1", "true", "all"} or model.name in names:
        return f"{RETRAIN_VARIABLE}={value}"
    return None


def _cached(spec: Spec, model: Model, digest: str) -> TrainRecord | None:
    """The earlier train.json when it still describes a model trained from ``digest``."""
    workdir = spec.workdir(model)
    if not TrainRecord.exists(workdir):
        return None
    try:
        record = TrainRecord.read(workdir)
    except StepError as exc:
        # Not a cache to trust, and no reason to stop: training writes a new one.
        log.info(f"train {model.name}: {exc}; training again")
        return None
    if record.input_hash != digest:
        log.info(f"train {model.name}: inputs changed since the last training")
        return None
    path = workdir / model.model_file
    if not path.is_file() or atomic.sha256_file(path) != record.model_sha256:
        log.info(f"train {model.name}: {path.name} is missing or changed since it was trained")
        return None
    return record


def _reuse(spec: Spec, model: Model, cached: TrainRecord) -> TrainRecord:
    log.info(
        f"train {model.name}: inputs unchanged (hash {cached.input_hash[:8]}…), "
        "using the cached model; --force to retrain"
    )
    # trained_at and duration_seconds still describe the run that made the model.
    record = dataclasses.replace(cached, skipped=True)
    record.write(spec.workdir(model))
    return record


# --- training ----------------------------------------------------------------------------


def train(spec: Spec, model: Model, digest: str, *, timeout_seconds: float) -> TrainRecord:
    """Run the training command now and install its model; return the train.json record.

    ``timeout_seconds`` is normally the spec's ``timeout_minutes`` in seconds.
    """
    workdir = spec.workdir(model)
    workdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".train-", dir=workdir))
    try:
        candidate = staging / model.model_file
        before = _stat(spec.root / model.train.output) if model.train.output else None
        log.info(f"train {model.name}: $ {model.train.command}")
        start = time.monotonic()
        try:
            status = run_command(
                model.train.command,
                cwd=spec.root,
                env=training_env(spec, model, candidate),
                timeout_seconds=timeout_seconds,
            )
        except StepError as exc:
            raise StepError(f"train {model.name}: {exc}") from None
        duration = time.monotonic() - start
        if status != 0:
            raise CheckFailed(f"train {model.name}: {_status_text(status)}")
        if model.train.output:
            _take_output(spec, model, candidate, before)
        sha = _check_model(model, candidate)
        os.replace(candidate, workdir / model.model_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _record(spec, model, digest, sha, duration)


def _record(spec: Spec, model: Model, digest: str, sha: str, duration: float) -> TrainRecord:
    record = TrainRecord(
        model_sha256=sha,
        input_hash=digest,
        duration_seconds=round(duration, 3),
        command=model.train.command,
        params=model.train.params,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        skipped=False,
    )
    record.write(spec.workdir(model))
    log.info(f"train {model.name}: trained in {duration:.1f}s, {model.model_file} {sha[:12]}")
    return record


def _status_text(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"training command was killed by {name}"
    hint = " (command not found?)" if status == 127 else ""
    return f"training command exited with status {status}{hint}"


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _take_output(spec: Spec, model: Model, candidate: Path, before: tuple[int, int] | None) -> None:
    """Copy the file the command wrote at ``train.output`` into the staging folder."""
    output = model.train.output
    assert output
    source = spec.root / output
    if not source.is_file():
        raise CheckFailed(f"train {model.name}: the command wrote no model at {output}")
    if before is not None and _stat(source) == before:
        # Copying it would ship the model of an earlier run as this one's.
        raise CheckFailed(f"train {model.name}: the command left {output} unchanged")
    atomic.copy_file(source, candidate)


def _check_model(model: Model, candidate: Path) -> str:
    """Fail unless the command produced a non-empty model; return its sha256."""
    if not candidate.is_file():
        raise CheckFailed(
            f"train {model.name}: the command succeeded but wrote no model to $MLOPS_MODEL_PATH"
        )
    if candidate.is_symlink():
        raise CheckFailed(
            f"train {model.name}: {candidate.name} is a symbolic link; the model must be a file"
        )
    if candidate.stat().st_size == 0:
        raise CheckFailed(f"train {model.name}: the command wrote an empty model file")
    # The rename that follows is only as durable as the data behind it.
    fd = os.open(candidate, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return atomic.sha256_file(candidate)


# --- the child process -------------------------------------------------------------------


def training_env(spec: Spec, model: Model, model_path: Path) -> dict[str, str]:
    """The environment of the training command: ours, without stale MLOPS_ variables
    from an outer run, plus the documented MLOPS_ variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _VARIABLES and not k.startswith("MLOPS_PARAM_")
    }
    # Python buffers a pipe in blocks; unbuffered output streams as training goes.
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(mlops_variables(spec, model, model_path))
    return env


def mlops_variables(spec: Spec, model: Model, model_path: Path) -> dict[str, str]:
    """The MLOPS_ variables documented in this module's docstring."""
    params = model.train.params
    out = {
        "MLOPS_MODEL_NAME": model.name,
        "MLOPS_MODEL_PATH": str(model_path.absolute()),
        "MLOPS_PARAMS": json.dumps(params, sort_keys=True, default=str),
    }
    for name, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        # The schema allows only letters, digits and _ in param names.
        out[f"MLOPS_PARAM_{name.upper()}"] = text
    for role, ds in model.datasets.items():
        prefix = f"MLOPS_{role.upper()}"
        out[f"{prefix}_DATA"] = str((spec.root / (ds.path or ds.features or "")).absolute())
        if ds.labels:
            out[f"{prefix}_LABELS"] = str((spec.root / ds.labels).absolute())
    target = target_name(spec.root, model.train_data or model.eval_data)
    if target:
        out["MLOPS_TARGET"] = target
    return out


def run_command(command: str, *, cwd: Path, env: dict[str, str], timeout_seconds: float) -> int:
    """Run ``command`` with /bin/sh, stream its output through, return its exit status
    (negative: killed by that signal). Past ``timeout_seconds`` its whole process group
    is stopped and StepError raised."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Its own process group, so a timeout stops what the command started too.
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [_pump(proc.stdout, lambda: sys.stdout), _pump(proc.stderr, lambda: sys.stderr)]
    try:
        with _terminate_as_exit():
            status = proc.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        raise StepError(f"training timed out after {_span(timeout_seconds)}") from None
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=_GRACE_SECONDS)
    # Anything the command left running in the background would keep writing after
    # the model was hashed.
    _signal_group(proc.pid, signal.SIGKILL)
    return status


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM (a cancelled CI job, a stopped container) into SystemExit while
    the command runs, so its process group is stopped and the staging folder removed
    instead of the command running on, orphaned, after ci-mlops is gone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _pump(source: IO[bytes], target: Callable[[], IO[str]]) -> threading.Thread:
    """Copy a child's output to one of our streams as it arrives (not line-buffered,
    so progress bars drawn with carriage returns show up too)."""

    def copy() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        read = getattr(source, "read1", source.read)
        while chunk := read(65536):
            stream = target()
            stream.write(decoder.decode(chunk))
            stream.flush()
        source.close()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, SIGKILL it after a grace period."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_GRACE_SECONDS)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group may be gone already: nothing left to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- input hash --------------------------------------------------------------------------


def input_hash(spec: Spec, model: Model) -> str:
    """sha256 over everything that decides what training produces."""
    digest = hashlib.sha256(_HASH_FORMAT)
    digest.update(_spec_section(model))
    for rel in model.data_files:
        _add_file(digest, "data", spec.root, rel)
    for rel in code_files(spec, model):
        _add_file(digest, "code", spec.root, rel)
    if spec.runtime.requirements:
        _add_file(digest, "requirements", spec.root, spec.runtime.requirements)
    return digest.hexdigest()


def _spec_section(model: Model) -> bytes:
    """Canonical JSON of the model's fields that change what training produces."""
    train = dataclasses.asdict(model.train)
    train.pop("timeout_minutes")  # a limit, not an input
    datasets = {role: dataclasses.asdict(ds) for role, ds in model.datasets.items()}
    for ds in datasets.values():
        ds.pop("expectations")  # checked by data-test; the data itself is hashed
    section = {
        "name": model.name,
        "framework": model.framework,
        "task": model.task,
        "model_class": model.model_class,
        "model_file": model.model_file,
        "train": train,
        "data": datasets,
    }
    return json.dumps(section, sort_keys=True, default=str).encode("utf-8") + b"\n"


def _add_file(digest: Any, kind: str, root: Path, rel: str) -> None:
    path = root / rel
    try:
        # Streams in 1 MiB blocks: data files can be large.
        content = atomic.sha256_file(path)
    except FileNotFoundError:
        raise StepError(f"{path}: {kind} file not found") from None
    except OSError as exc:
        raise StepError(f"{path}: cannot read {kind} file: {exc.strerror}") from None
    digest.update(f"{kind}\0{rel}\0{content}\n".encode())


def code_files(spec: Spec, model: Model) -> list[str]:
    """Files matched by the model's ``paths`` globs (folders taken whole), relative to
    the spec's folder, sorted; without ci-mlops' output, the registry and bytecode."""
    registry = Path(model.deploy.registry).parts
    found: set[str] = set()
    for pattern in model.paths:
        for match in glob.glob(pattern, root_dir=spec.root, recursive=True):
            path = spec.root / match
            found.update(_walk(spec.root, path) if path.is_dir() else [Path(match).as_posix()])
    return sorted(rel for rel in found if _is_code(rel, registry))


def _walk(root: Path, folder: Path) -> list[str]:
    out = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in _NOT_CODE]
        out += [(Path(here) / f).relative_to(root).as_posix() for f in files]
    return out


def _is_code(rel: str, registry: tuple[str, ...]) -> bool:
    parts = Path(rel).parts
    if _NOT_CODE.intersection(parts) or rel.endswith(".pyc"):
        return False
    return parts[: len(registry)] != registry


def run_local(spec: Spec, model: Model, *, environment: str | None, force: bool) -> None:
    """What ``ci-mlops run`` calls for this step's job. Train (again with ``force``)."""
    run(spec, model, force=force)
