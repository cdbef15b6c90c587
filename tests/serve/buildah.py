"""Build and run container images with buildah, offline, in storage of their own.

Nothing here reaches a registry: the base image is made from scratch out of the Python
that runs the tests (its interpreter, standard library, pip, the shared libraries they
and the manylinux wheels need, and ``/bin/sh``), standing in for ``python:3.11-slim``,
which cannot be pulled without network. The image under test is then built from that
base with ``--network none``, so its install step can only use the wheels it was given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

BASE = "localhost/ci-mlops-test-python:3.11"
# Libraries the manylinux wheels (onnxruntime, numpy) take from the system; glibc 2.34+
# keeps libdl, libpthread, librt and libutil as stubs that old builds still link.
WHEEL_LIBS = (
    "libstdc++.so.6",
    "libgcc_s.so.1",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
)


class Buildah:
    """buildah with its storage under ``root``; chroot isolation, as in a CI job."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # A storage configuration of its own, so that `ci-mlops image` (which runs plain
        # `buildah`) and these helpers share one store, apart from the machine's.
        conf = root / "storage.conf"
        conf.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{root / "storage"}"\n'
            f'runroot = "{root / "run"}"\n',
            encoding="utf-8",
        )
        self.flags: list[str] = []
        self.env = {
            **os.environ,
            "BUILDAH_ISOLATION": "chroot",
            "CONTAINERS_STORAGE_CONF": str(conf),
        }

    def __call__(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(
            ["buildah", *self.flags, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)} failed: {done.stderr[-3000:]}")
        return done.stdout.strip()

    def popen(self, *args: str, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["buildah", *self.flags, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def image_config(self, ref: str) -> dict[str, Any]:
        return dict(json.loads(self("inspect", "--type", "image", ref))["OCIv1"]["config"])

    def clean(self) -> None:
        """Remove every container and image, then the storage itself."""
        for args in (["rm", "--all"], ["rmi", "--all", "--force"]):
            subprocess.run(["buildah", *args], env=self.env, capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def make_base(buildah: Buildah) -> str:
    """A Python base image made from this machine's interpreter, with no network."""
    container = buildah("from", "scratch")
    mount = Path(buildah("mount", container))
    _copy_python(mount)
    buildah("unmount", container)
    buildah(
        "config",
        "--env",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "--env",
        "LD_LIBRARY_PATH=/usr/local/lib",
        "--env",
        "LANG=C.UTF-8",
        container,
    )
    buildah("commit", "--rm", container, BASE)
    return BASE


def _copy_python(root: Path) -> None:
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/lib").mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(prefix / "bin" / version, root / "usr/local/bin" / version)
    for alias in ("python3", "python"):
        (root / "usr/local/bin" / alias).symlink_to(version)
    for lib in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(lib, root / "usr/local/lib" / lib.name, follow_symlinks=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(
        stdlib,
        root / "usr/local/lib" / version,
        ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__", "idlelib"),
        symlinks=True,
    )
    pip = Path(sysconfig.get_paths()["purelib"]) / "pip"
    shutil.copytree(pip, root / "usr/local/lib" / version / "site-packages" / "pip")
    _copy_libraries(root, [prefix / "bin" / version, Path("/bin/sh")])


def _copy_libraries(root: Path, binaries: list[Path]) -> None:
    """The shared libraries the interpreter, its extension modules, the shell and the
    manylinux wheels load, at the paths the dynamic loader looks in."""
    dynload = Path(sysconfig.get_paths()["stdlib"]) / "lib-dynload"
    needed: set[Path] = set()
    for binary in [*binaries, *dynload.glob("*.so")]:
        needed |= _ldd(binary)
    needed |= _system_libraries(WHEEL_LIBS)
    for path in needed:
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target, follow_symlinks=True)
    shell = root / "bin" / "sh"
    shell.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path("/bin/sh").resolve(), shell)


def _system_libraries(names: tuple[str, ...]) -> set[Path]:
    """Where the dynamic loader's cache says ``names`` are."""
    done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True)
    found = set()
    for line in done.stdout.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ", 1)[0] in names and "x86-64" in name:
            found.add(Path(path))
    return found


def _ldd(binary: Path) -> set[Path]:
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    found = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            candidate = parts[parts.index("=>") + 1]
            if candidate.startswith("/"):
                found.add(Path(candidate))
        elif parts and parts[0].startswith("/"):
            found.add(Path(parts[0]))  # the dynamic loader itself
    return found


def wheelhouse(repo: Path, target: Path) -> Path:
    """Wheels of ci-mlops (built from ``repo``) with its serve extra and every
    dependency, from the machine's pip configuration (its local indexes and cache)."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-build-isolation",
            "--wheel-dir",
            str(target),
            f"{repo}[serve]",
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return target
