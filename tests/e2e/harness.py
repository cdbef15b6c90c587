"""Run generated GitLab pipelines for real with gitlab-ci-local's shell executor.

A project is an example copied into a throwaway git repository whose spec installs
ci-mlops from this working tree through ``runtime.install`` (the setting users point at a
private index or a git URL). gitlab-ci-local runs every job on this machine, each in its
own copy of the project (``--shell-isolation``), so the model folder reaches a job only
through ``needs`` artifacts and caches, as on GitLab.

Jobs run ``python -I -m pip install ...`` like they would on a runner. The ``python`` they
find first on PATH is a session virtualenv that sees the project's dependencies through a
``.pth`` line (see :func:`make_job_python`), so each install only builds and installs
ci-mlops itself: about two seconds, offline.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The jobs' python and gitlab-ci-local's naming are what `ci-mlops try` uses too.
from ci_mlops.local_ci import gitlab_ci_local_command, make_job_python, safe_job_name, seconds
from tests.helpers import REPO, copy_example, git, make_git_repo, make_key_pair, run_cli
from tests.linters import GITLAB_CI_LOCAL

__all__ = [
    "CI_MLOPS_CALLS",
    "PIP_ENV",
    "UV_ENV",
    "JobResult",
    "PipelineRun",
    "Project",
    "commit_locks",
    "dependencies_path",
    "fit_for_uv",
    "job_env",
    "make_job_python",
    "make_project",
    "make_uv_job_python",
    "run_pipeline",
    "safe_job_name",
    "signing_variables",
]

# Where jobs install ci-mlops from: this working tree, through the spec's install setting.
INSTALL = f"{REPO}[{{extras}}]"

# pip settings of the test machine's jobs (not of the generated files): everything the
# jobs need is already installed, so nothing is fetched, and ci-mlops is built with the
# build backend that is already there (PIP_NO_BUILD_ISOLATION=0 means *no* isolation: pip
# reads these negative switches inverted).
PIP_ENV = {
    "PIP_NO_INDEX": "1",
    "PIP_NO_BUILD_ISOLATION": "0",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_PROGRESS_BAR": "off",
}

# How a job's ci-mlops step starts: the console script, or the isolated module in jobs
# that hold a write token.
CI_MLOPS_CALLS = ("ci-mlops ", "python -I -m ci_mlops ")

SUMMARY = re.compile(r"^\s*(PASS|FAIL|WARN)\s+\[\s*([\d.]+)\s*(ms|s|min|m)?\s*\]\s+(\S+)\s*$")
STEP_LINE = re.compile(r"^\[[\d:]+\s+([\d.]+)\s*(ms|s|min|m)\]\s+(\S+)\s+(\$|>)\s?(.*)$")


def dependencies_path(folder: Path) -> Path:
    """A folder that holds this interpreter's installed packages except ci-mlops, as
    symbolic links: an interpreter with it on its path has every dependency, but pip
    finds no ci-mlops there, so installing a ci-mlops wheel of the same version installs
    it instead of calling it already satisfied."""
    folder.mkdir(parents=True)
    site = sysconfig.get_paths()
    for root in sorted({Path(site["purelib"]), Path(site["platlib"])}):
        for entry in root.iterdir():
            name = entry.name.lower()
            if name.startswith(("ci_mlops", "_ci_mlops", "__editable__")) or name.endswith(".pth"):
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def make_uv_job_python(folder: Path) -> Path:
    """A jobs' python for ``runtime.installer: uv``; returns its ``bin`` folder."""
    job_bin = make_job_python(folder)
    fit_for_uv(folder, folder.parent / f"{folder.name}-deps")
    return job_bin


def fit_for_uv(venv: Path, deps: Path) -> None:
    """Make a jobs' virtualenv one that uv installs into as pip does. uv lists only the
    environment's own site-packages (no ``.pth`` paths) and does not follow a linked
    ``.dist-info`` folder, so each dependency is linked in with its metadata copied
    (``deps``: a folder for :func:`dependencies_path`); the uv binary sits beside
    ``python``, where ``python -m uv`` looks."""
    site = next(venv.glob("lib/python*/site-packages"))
    for pth in site.glob("*.pth"):
        pth.unlink()
    for entry in dependencies_path(deps).iterdir():
        if (site / entry.name).exists():
            continue  # the virtualenv's own pip
        if entry.name.endswith(".dist-info"):
            shutil.copytree(entry.resolve(), site / entry.name)
        else:
            (site / entry.name).symlink_to(entry.resolve())
    (venv / "bin" / "uv").symlink_to(Path(sysconfig.get_path("scripts")) / "uv")


# uv's settings of the test machine's jobs, as PIP_ENV is pip's: offline, and ci-mlops
# built with the build backend already installed.
UV_ENV = {"UV_OFFLINE": "1", "UV_NO_BUILD_ISOLATION": "1"}


def job_env(job_bin: Path) -> dict[str, str]:
    """gitlab-ci-local's environment: the jobs' python first on PATH, the pip settings."""
    path = f"{job_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **PIP_ENV, "PATH": path, "VIRTUAL_ENV": str(job_bin.parent)}


@functools.cache
def _deploy_key() -> tuple[Path, Path]:
    return make_key_pair(Path(tempfile.mkdtemp(prefix="ci-mlops-deploy-key-")))


def signing_variables(source: str) -> dict[str, str]:
    """How the jobs sign and verify: every pipeline knows the public key; only pipelines
    of the default branch get the private one (a protected variable on GitLab)."""
    private, public = _deploy_key()
    keys = {"MLOPS_SIGNING_PUBLIC_KEY": str(public)}
    if source != "merge_request_event":
        keys["MLOPS_SIGNING_KEY"] = str(private)
    return keys


# --- projects -----------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """An example as a git repository with its generated pipeline."""

    path: Path
    model: str
    platform: str = "gitlab"

    @property
    def spec_file(self) -> Path:
        return self.path / "mlops.yaml"

    def edit_spec(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Change the spec (``change`` edits the parsed YAML) and regenerate the pipeline."""
        data = yaml.safe_load(self.spec_file.read_text("utf-8"))
        change(data)
        self.spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
        self.generate()

    def generate(self, *args: str) -> None:
        result = run_cli("generate", "--platform", self.platform, *args, cwd=self.path)
        assert result.code == 0, result.output

    def commit(self, path: str, text: str, message: str = "change") -> None:
        """Append ``text`` to ``path`` and commit it on the current branch."""
        target = self.path / path
        target.write_text((target.read_text("utf-8") if target.exists() else "") + text, "utf-8")
        git(self.path, "add", "--all", "--", ".", ":!.gitlab-ci-local")
        git(self.path, "commit", "--quiet", "-m", message)

    def branch(self, name: str) -> None:
        git(self.path, "checkout", "--quiet", "-b", name)

    def push(self) -> None:
        """Make the current commit what ``origin/main`` holds, as after a push."""
        git(self.path, "update-ref", "refs/remotes/origin/main", "HEAD")

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD").strip()

    def state(self) -> Path:
        """gitlab-ci-local's folder: job logs, artifacts, caches."""
        return self.path / ".gitlab-ci-local"

    def artifact(self, job: str, name: str) -> Path:
        """A file of the model folder in ``job``'s artifacts."""
        return self.state() / "artifacts" / safe_job_name(job) / ".ci-mlops" / self.model / name

    def artifact_json(self, job: str, name: str) -> Any:
        return json.loads(self.artifact(job, name).read_text("utf-8"))


def make_project(
    example: str,
    tmp_path: Path,
    *,
    deploy_target: str | None = None,
    change: Callable[[dict[str, Any]], None] | None = None,
    platform: str = "gitlab",
    install: str = INSTALL,
) -> Project:
    """``examples/<example>`` as a git repository whose ``origin/main`` is its first
    commit, with jobs that install ci-mlops through ``install`` (default: from this
    working tree) and the pipeline of ``platform``."""
    folder = copy_example(example, tmp_path)
    spec = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))
    project = Project(folder, spec["models"][0]["name"], platform)

    def edit(data: dict[str, Any]) -> None:
        data.setdefault("runtime", {})["install"] = install
        if deploy_target:
            data["models"][0].setdefault("deploy", {})["target"] = deploy_target
        if change:
            change(data)

    project.edit_spec(edit)
    make_git_repo(folder)
    return project


# The job kinds with a checkout, whose jobs install a folder of per-job locks' file.
LOCKED_KINDS = ("validate", "data-test", "train", "evaluate", "export", "deploy", "drift")


def commit_locks(project: Project, wheel: Path) -> None:
    """A lock in ``locks/`` for each kind of job that pins ``wheel`` by hash (the jobs'
    python holds every dependency already; a lock written by ``ci-mlops lock`` lists
    those too), committed."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (project.path / "locks").mkdir()
    for kind in LOCKED_KINDS:
        line = f"ci-mlops @ {wheel.as_uri()} \\\n    --hash=sha256:{digest}\n"
        project.commit(f"locks/{kind}.txt", line, f"lock the {kind} job")


# --- running ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobResult:
    """One job of a pipeline run, from gitlab-ci-local's summary and timestamps."""

    name: str
    status: str  # PASS, FAIL or WARN (failed but allowed to)
    seconds: float
    install_seconds: float | None = None  # before_script: until the first ci-mlops step
    script_seconds: float | None = None  # the ci-mlops step to the end of the job


@dataclass
class PipelineRun:
    """What one ``gitlab-ci-local`` run did."""

    project: Project
    code: int
    output: str
    wall_seconds: float
    jobs: dict[str, JobResult] = field(default_factory=dict)

    def passed(self) -> list[str]:
        return [name for name, job in self.jobs.items() if job.status == "PASS"]

    def failed(self) -> list[str]:
        return [name for name, job in self.jobs.items() if job.status != "PASS"]

    def log(self, job: str) -> str:
        """The job's whole output, as gitlab-ci-local saved it."""
        path = self.project.state() / "output" / f"{safe_job_name(job)}.log"
        return path.read_text("utf-8", errors="replace")

    def explain(self) -> str:
        """The tail of the run's output, for assertion messages."""
        return self.output[-6000:]


def run_pipeline(
    project: Project,
    job_bin: Path,
    variables: Mapping[str, str] | None = None,
    *,
    manual: Sequence[str] = (),
    jobs: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    timeout: float = 900,
    env: Mapping[str, str] | None = None,
) -> PipelineRun:
    """Run the project's pipeline (or ``jobs``) with gitlab-ci-local; ``manual`` jobs are
    played as a person would press their button."""
    variables = dict(variables or {})
    home = project.path.parent / f"{project.path.name}-gcl-home"
    home.mkdir(exist_ok=True)
    cmd = gitlab_ci_local_command(
        GITLAB_CI_LOCAL, home, variables, manual=manual, jobs=jobs, extra_args=extra_args
    )
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=project.path,
        env={**job_env(job_bin), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    return PipelineRun(project, proc.returncode, output, wall, parse_jobs(proc.stdout))


def parse_jobs(stdout: str) -> dict[str, JobResult]:
    """Jobs from the closing summary, with the install/work split from the timestamps:
    a job's ``before_script`` lasts until its first ci-mlops step line."""
    first_step: dict[str, float] = {}
    for line in stdout.splitlines():
        match = STEP_LINE.match(line)
        if match and match.group(4) == "$" and match.group(5).startswith(CI_MLOPS_CALLS):
            first_step.setdefault(match.group(3), seconds(match.group(1), match.group(2)))
    jobs: dict[str, JobResult] = {}
    for line in stdout.splitlines():
        match = SUMMARY.match(line)
        if not match:
            continue
        status, value, unit, name = match.groups()
        total = seconds(value, unit)
        install = first_step.get(name)
        jobs[name] = JobResult(
            name,
            status,
            total,
            install,
            None if install is None else max(total - install, 0.0),
        )
    return jobs
