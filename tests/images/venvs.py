"""What a job image holds, built as a virtualenv on this machine: the image's hashed lock
installed by uv with --require-hashes, then ci-mlops of this working tree as a wheel
without dependencies, as images/job/Containerfile installs them. No container engine
runs here; the image's Python environment is what its jobs depend on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from tests.helpers import REPO

LOCKS = REPO / "images" / "job" / "locks"
UV = Path(sys.executable).with_name("uv")
# uv's cache of the locks' wheels, kept beside the project's virtualenv between runs so
# that only the first run downloads them from PyPI.
CACHE = REPO / ".venv" / "job-image-uv-cache"


def uv_env() -> dict[str, str]:
    """uv with this project's cache and no configuration of this machine or user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    return {**env, "UV_CACHE_DIR": str(CACHE), "UV_NO_CONFIG": "1"}


def image_venv(folder: Path, images: Iterable[str], wheel: Path) -> Path:
    """A virtualenv with the contents of ``images`` (several: their union, which the
    shared resolution makes one set of versions); returns its ``bin`` folder."""
    env = uv_env()
    subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable, str(folder)],
                   check=True, env=env)  # fmt: skip
    python = str(folder / "bin" / "python")
    locks = [arg for name in images for arg in ("-r", str(LOCKS / f"{name}.txt"))]
    install = [str(UV), "pip", "install", "--quiet", "--python", python]
    subprocess.run([*install, "--require-hashes", "--no-deps", *locks], check=True, env=env)
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, env=env)
    return folder / "bin"
