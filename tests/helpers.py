"""Builders shared by the tests: example folders, CLI runs, throwaway git repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ci_mlops.spec.model import Spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
EXAMPLE_NAMES = ("breast-cancer", "diabetes")
# One example per framework beyond the two above, each run end to end by tests/frameworks.
FRAMEWORK_EXAMPLES = {
    "sklearn": "churn",
    "pytorch": "wine",
    "xgboost": "diabetes-xgboost",
    "lightgbm": "breast-cancer-lightgbm",
}
# A remote that can never resolve: gitlab-ci-local wants an origin, nothing may reach it.
FAKE_ORIGIN = "https://gitlab.example.invalid/ci-mlops/demo.git"

# Working files the steps leave beside a spec; an example copy starts without them.
_IGNORED = shutil.ignore_patterns(".ci-mlops", ".mlops-registry", "__pycache__", ".gitlab-ci-local")


@dataclass(frozen=True)
class Result:
    """What a CLI run printed and how it exited."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together, for assertions that do not care which."""
        return self.stdout + self.stderr


def copy_example(name: str, tmp_path: Path) -> Path:
    """Copy ``examples/<name>`` into ``tmp_path`` without working files; return the copy."""
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target, ignore=_IGNORED)
    return target


def tree_wheel(folder: Path) -> Path:
    """ci-mlops of this working tree as a wheel in ``folder``: offline, with the build
    backend this environment already has."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "-w", str(folder), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = folder.glob("ci_mlops-*.whl")
    return wheel


def cli_command() -> list[str]:
    """The installed ``ci-mlops`` script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("ci-mlops")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "ci_mlops"]


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> Result:
    """Run ``ci-mlops ARGS`` in ``cwd`` as a user would; ``env`` adds variables."""
    proc = subprocess.run(
        [*cli_command(), *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,  # a command that prompts would fail, not hang
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity; return its stdout."""
    proc = subprocess.run(
        [
            "git",
            "-c",
            "user.name=ci-mlops tests",
            "-c",
            "user.email=tests@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def make_git_repo(path: Path) -> Path:
    """Make ``path`` a git repository whose work tree is committed on ``main``, with an
    ``origin`` remote (that never resolves) whose default branch is ``main``.

    gitlab-ci-local needs all three. Calling it again commits whatever changed since.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".git").exists():
        git(path, "init", "--quiet", "--initial-branch=main")
        git(path, "config", "user.name", "ci-mlops tests")
        git(path, "config", "user.email", "tests@example.invalid")
        git(path, "remote", "add", "origin", FAKE_ORIGIN)
    git(path, "add", "--all", "--", ".", ":!.gitlab-ci-local")
    git(path, "commit", "--quiet", "--allow-empty", "-m", "test state")
    git(path, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(path, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return path


def report_images(spec: Spec) -> list[Path]:
    """Plot paths a report of the spec's first model links to."""
    plots = spec.workdir(spec.models[0]) / "plots"
    return [plots / "roc.png", plots / "confusion.png"]


def publishable_files(spec: Spec) -> dict[str, Path]:
    """Stand-in model, ONNX file and model card in the first model's folder, by name."""
    workdir = spec.workdir(spec.models[0])
    (workdir / "model.joblib").write_bytes(b"joblib-model-" * 100)
    (workdir / "model.onnx").write_bytes(b"onnx-model-" * 100)
    (workdir / "report.md").write_text("# card\n", encoding="utf-8")
    return {name: workdir / name for name in ("model.joblib", "model.onnx", "report.md")}


def make_key_pair(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    """An elliptic-curve (P-256) key pair in PEM: ``<name>.key`` and ``<name>.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.key"
    public = folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
