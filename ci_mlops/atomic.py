"""Write files so that a reader sees the old content or the new one, never half of it.

Every file ci-mlops writes goes through here: the content lands in a temporary file in
the same folder, is flushed to disk, and replaces the target with one rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, creating parent folders."""
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
    """Atomically write ``data`` as stable, indented JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


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
