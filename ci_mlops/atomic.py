"""Write files so that a reader sees the old content or the new one, never half of it,
and read step files back only from where they belong.

Every file ci-mlops writes goes through here: the content lands in a temporary file in
the same folder, is flushed to disk, and replaces the target with one rename. A write
that fails (disk full, file-size limit, read-only folder) leaves the old file in place
and ends in one StepError naming the file.

Reading an artifact (:func:`read_artifact`) never follows a symbolic link and never
leaves its folder: a job that holds a token opens files a merge request's code could
have planted, and a link from ``plots/x.png`` to ``/proc/self/environ`` would otherwise
hand that job's environment to whatever uploads the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from ci_mlops.errors import StepError

# Large enough for any model ci-mlops ships; small enough that a planted device file
# (or a sparse file) cannot make a job read forever.
MAX_ARTIFACT_BYTES = 8 * 1024**3


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, creating parent folders; StepError
    naming ``path`` when the disk or a limit refuses the write."""
    try:
        _replace(path, data)
    except OSError as exc:
        raise StepError(f"{path}: cannot write: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    # Python ignores SIGXFSZ, so a file-size limit surfaces as EFBIG like a full disk.
    return exc.strerror or type(exc).__name__


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as stable, indented, strict JSON: NaN and infinities
    (which ``json`` would write as the non-JSON ``NaN``/``Infinity``) become null."""
    text = json.dumps(finite(data), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text(path, text + "\n")


def finite(data: Any) -> Any:
    """``data`` with every non-finite float replaced by None, recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    return data


def copy_file(source: Path, target: Path) -> None:
    """Atomically copy ``source`` to ``target``."""
    write_bytes(target, source.read_bytes())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    import hashlib  # not at module level: `generate` imports this module and must start fast

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_artifact(folder: Path, name: str) -> bytes:
    """The bytes of ``folder/name``, read without following any symbolic link below
    ``folder`` and only when ``name`` stays inside it and is a regular file.

    StepError names the file otherwise. ``folder`` itself (the model's working folder,
    which a user may place anywhere) is resolved once; everything below it must be
    real folders and a real file."""
    path = folder / name
    parts = _inside(folder, name)
    try:
        fd = _open_below(folder.resolve(), parts)
    except FileNotFoundError:
        raise StepError(f"{path}: not found") from None
    except OSError as exc:
        raise StepError(f"{path}: refused: {_refusal(exc)}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StepError(f"{path}: refused: not a regular file")
        if info.st_size > MAX_ARTIFACT_BYTES:
            raise StepError(f"{path}: refused: {info.st_size} bytes is more than any artifact")
        return handle.read()


def artifact_sha256(folder: Path, name: str) -> str:
    """sha256 of ``folder/name`` read as :func:`read_artifact` reads it."""
    import hashlib

    return hashlib.sha256(read_artifact(folder, name)).hexdigest()


def _inside(folder: Path, name: str) -> list[str]:
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", ".") for p in parts):
        raise StepError(f"{folder / name}: refused: artifacts are read only from inside {folder}")
    return list(parts)


def _open_below(root: Path, parts: list[str]) -> int:
    """An fd for ``root/parts...``: every component opened relative to its parent with
    O_NOFOLLOW, so a link anywhere on the way fails (ELOOP) instead of leading out."""
    nofollow = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | nofollow)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        # O_NONBLOCK: a planted FIFO must not hang the job before fstat refuses it.
        return os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | nofollow, dir_fd=fd)
    finally:
        os.close(fd)


def _refusal(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return "a symbolic link (or a path through one); artifacts are never followed out of their folder"
    return _reason(exc)
