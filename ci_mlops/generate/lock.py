"""``ci-mlops lock``: write the hashed locks ``runtime.lock`` names, with uv.

A lock is what a job installs instead of ``runtime.install`` and
``runtime.requirements``: every package pinned, each with its hashes, installed with
``--require-hashes --no-deps``. ``runtime.lock`` names either one file, which then holds
what every job needs (every extra of every job), or a folder ending in ``/`` that holds
one lock per kind of job (``<folder><job>.txt``, e.g. ``locks/train.txt``), so that a
job installs only its own set. What a lock holds comes from the same job plan the
pipelines are rendered from: the kind's extras on each platform where its job has a
checkout (jobs without one install from ``runtime.install``, as before), the framework
extras of every model whose jobs of that kind load a model, and the project's
requirements where the kind runs the project's code.

Resolution is ``uv pip compile --generate-hashes`` for the spec's Python on Linux (where
CI jobs run), with the existing lock as the preferred versions, so that running it
again changes a lock only when what it must hold changed (``--upgrade`` takes the
newest versions instead). ``--check`` resolves the same way and writes nothing: a lock
that differs is stale.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ci_mlops import atomic, log
from ci_mlops.errors import UsageError
from ci_mlops.generate.kinds import PLATFORMS
from ci_mlops.generate.plan import Plan, build_plan, install_args, lock_file
from ci_mlops.spec.model import Spec

# The options of runtime.install that take a value: they stay on one line of the
# requirements file uv reads, with their value.
VALUE_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f")
INDEX_OPTIONS = ("--index-url", "-i", "--extra-index-url")


@dataclass(frozen=True)
class LockTarget:
    """One lock file and what it must hold."""

    path: str  # relative to the spec's folder, as the pipelines name it
    jobs: tuple[str, ...]  # the kinds of job that install it
    extras: tuple[str, ...]  # ci-mlops's extras
    requirements: bool  # whether it holds the project's requirements too


def lock_targets(
    spec: Spec, plan: Plan, platforms: tuple[str, ...] = PLATFORMS
) -> list[LockTarget]:
    """The locks ``runtime.lock`` names and what each holds, for the pipelines of
    ``platforms``: one per kind of job with a checkout, or one for every job."""
    lock = spec.runtime.lock
    if not lock:
        raise UsageError(
            "runtime.lock is not set: name a file (one lock for every job) or a folder "
            "ending in / (one lock per job, e.g. locks/), then run `ci-mlops lock`"
        )
    sets: dict[str, tuple[dict[str, None], bool, dict[str, None]]] = {}
    for job in plan.jobs():
        for platform in platforms:
            if not job.descriptor.checks_out(platform):
                continue  # it installs from runtime.install: no lock
            target = lock_file(lock, job.kind)
            assert target is not None
            extras, user_code, kinds = sets.setdefault(target, ({}, False, {}))
            extras.update(dict.fromkeys(job.extras(platform)))
            kinds[job.kind] = None
            user_code = user_code or (job.runs_user_code and bool(spec.runtime.requirements))
            sets[target] = (extras, user_code, kinds)
    return [
        LockTarget(path, tuple(kinds), tuple(extras), user_code)
        for path, (extras, user_code, kinds) in sets.items()
    ]


def requirements_in(spec: Spec, target: LockTarget) -> str:
    """The requirements file uv resolves for ``target``: ci-mlops with its extras from
    the install setting, and the project's requirements by absolute path (the file is
    read from a temporary folder)."""
    lines: list[str] = []
    words = install_args(spec.runtime.install, target.extras)
    while words:
        word = words.pop(0)
        if word in VALUE_OPTIONS and words:
            lines.append(f"{word} {words.pop(0)}")
        else:
            lines.append(word)
    if target.requirements and spec.runtime.requirements:
        lines.append(f"-r {(spec.root / spec.runtime.requirements).resolve()}")
    return "\n".join(lines) + "\n"


def holds(spec: Spec, target: LockTarget) -> str:
    """What a lock holds, in words: ``ci-mlops (ml,plots) and requirements.txt``."""
    text = f"ci-mlops ({','.join(target.extras) or 'no extras'})"
    return text + (f" and {spec.runtime.requirements}" if target.requirements else "")


def header(spec: Spec, target: LockTarget) -> str:
    return (
        f"# What the {', '.join(target.jobs)} "
        f"{'jobs install' if len(target.jobs) > 1 else 'job installs'}: "
        f"{holds(spec, target)}, for Python {spec.runtime.python} on Linux.\n"
        "# Written by `ci-mlops lock` (uv pip compile --generate-hashes); regenerate with it.\n"
    )


def uv_command() -> list[str]:
    """How to run uv: the module beside this interpreter, else ``uv`` on PATH."""
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found:
        return [found]
    raise UsageError("uv is not installed: `pip install uv` (ci-mlops lock resolves with it)")


def compile_lock(spec: Spec, target: LockTarget, *, upgrade: bool) -> str:
    """The lock's text as uv resolves it now, preferring the versions the existing lock
    pins unless ``upgrade``."""
    existing = spec.root / target.path
    with tempfile.TemporaryDirectory(prefix="ci-mlops-lock-") as tmp:
        source, output = Path(tmp, "requirements.in"), Path(tmp, "lock.txt")
        text = requirements_in(spec, target)
        source.write_text(text, "utf-8")
        if existing.is_file() and not upgrade:
            shutil.copyfile(existing, output)  # uv prefers what its output file pins
        cmd = [
            *uv_command(),
            "pip",
            "compile",
            "--quiet",
            "--no-config",  # as the jobs install: no uv.toml of the folder chooses
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
            "--python-version",
            spec.runtime.python,
            "--python-platform",
            "linux",
            "--output-file",
            str(output),
            str(source),
        ]
        if any(word in INDEX_OPTIONS for word in text.split()):
            cmd.insert(cmd.index("--no-header"), "--emit-index-url")
        if upgrade:
            cmd.insert(cmd.index("--no-header"), "--upgrade")
        proc = subprocess.run(cmd, cwd=spec.root, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            reason = _last_line(proc.stderr) or f"uv exited with {proc.returncode}"
            raise UsageError(f"{target.path}: uv could not resolve it: {reason}")
        body = output.read_text("utf-8")
    unhashed = _unhashed(body)
    if unhashed:
        raise UsageError(
            f"{target.path}: {unhashed[0]} has no hash, so pip's --require-hashes would refuse "
            "it; a lock needs ci-mlops from an index or a wheel file, not a folder or git URL"
        )
    return header(spec, target) + body


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _unhashed(body: str) -> list[str]:
    """The requirements of a lock that carry no ``--hash``."""
    logical = body.replace("\\\n", " ").splitlines()
    return [
        line.split()[0]
        for line in logical
        if line.strip() and not line.lstrip().startswith(("#", "-")) and "--hash=" not in line
    ]


def write_locks(
    spec: Spec, *, platforms: tuple[str, ...], check: bool, upgrade: bool = False
) -> int:
    """Write (or with ``check``, compare) every lock ``runtime.lock`` names; the exit
    code: 1 when ``check`` finds a lock missing or stale."""
    plan = build_plan(spec, spec.path.name)
    # Every lock is resolved before any is written: one that uv cannot resolve leaves
    # the others as they were, not a set of locks from two different states.
    resolved = []
    for target in lock_targets(spec, plan, platforms):
        with log.timed(f"{target.path}: resolving {holds(spec, target)}"):
            resolved.append((target, compile_lock(spec, target, upgrade=upgrade)))
    stale = []
    for target, text in resolved:
        path = spec.root / target.path
        current = path.read_text("utf-8") if path.is_file() else None
        if current == text:
            log.info(f"{target.path}: up to date")
        elif check:
            stale.append(target.path)
            log.info(f"{target.path}: {'missing' if current is None else 'out of date'}")
        else:
            atomic.write_text(path, text)
            log.info(f"{target.path}: {'written' if current is None else 'updated'}")
    if stale:
        print(
            f"ci-mlops: {len(stale)} lock(s) out of date with {spec.path.name}: "
            f"{', '.join(stale)}; run `ci-mlops lock` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0
