"""What a generated pipeline costs on top of the work: ``ci-mlops run`` of the
breast-cancer example against its default-branch GitLab pipeline run by gitlab-ci-local
(shell executor), cold (empty installer cache) and warm (the cache the cold run left),
with pip and with uv as ``runtime.installer``, all in one session.

Each job starts from a fresh Python, as a job image gives one: the ``python`` the jobs
find on PATH is a stand-in that creates a new virtualenv at the job's first call,
holding nothing but pip (through a ``.pth`` line, as an image's Python holds it). So
every job installs ci-mlops, its extras and the project's requirements for real, from
PyPI, through the generated install lines, with this machine's pip configuration left
out so that pip and uv read the same index. ci-mlops itself comes from a wheel of this
working tree (``runtime.install``), as from a private index.

The cold run is a new repository's first pipeline: gitlab-ci-local's cache store is
empty, so the first job downloads everything and each later job restores what the jobs
before it cached (the installer cache and, for training, the model folder), as on
GitLab. The warm run is the same pipeline again.

Per job the time splits into *setup* (gitlab-ci-local copying the project, restoring
caches and artifacts, until the job's first line), *install* (the install lines) and
*work* (the ``ci-mlops`` step, the training command inside it, and saving caches and
artifacts), from gitlab-ci-local's timestamps.

The same for the GitHub workflow run by act in host mode (``act``): a push to the
default branch, cold (a new repository: act's cache server and the runner's home are
empty) and warm (the same push again). setup-python's tool cache holds the same
stand-in, so each job gets a fresh Python there too; act's jobs share one home folder,
which is what restoring the one cache key in every job gives on GitHub.

*preinstalled* runs the uv pipeline with the stand-in ``python`` of a job image that
already holds what the jobs install: ci-mlops (the same wheel) with every extra the
example's jobs name, the project's requirements and uv (the release the install lines
pin), installed once per session into one virtualenv and byte-compiled, as an image's
build leaves it. Every job of both platforms runs that one environment rather than a
copy of it: a copy per job would cost seconds an image does not (a container starts
from the image's layers without copying them), and a virtualenv cannot be moved. A
job's writes into an image are lost when it ends, so sharing it is honest only if no
job writes into it: the benchmark compares a listing of every file (size and time)
before and after each pipeline and fails if anything changed, so the install lines
were no-op checks and every module imported was compiled already. One environment for
all jobs rather than one per job kind: a job imports the same modules by name either
way; the union adds no package that the example's libraries import when present (the
Spark extra, which Great Expectations would import, is not among them).

*images* runs the same jobs' Python as *preinstalled*, but the pipeline is generated
with ``runtime.job_images: published``, as a project using the published job images
has it: GitLab jobs name the image (``image:``, which gitlab-ci-local's shell executor
ignores) and save and restore no installer cache; GitHub jobs name it as
``container: image:`` and run neither setup-python nor an installer cache step. act in
host mode has no container engine, so act runs a copy of the generated workflow
without its ``container:`` keys (nothing else in it changes; the committed workflow
stays as generated, so the job that checks it against the spec passes): the
image's Python is the stand-in environment, first on PATH, as on GitLab. The jobs'
install lines name ci-mlops as released (``ci-mlops[<extras>]==<version>``, as
``job_images`` requires); the stand-in holds the wheel of this working tree, of that
version, so they check and install nothing, as in *preinstalled*.

*combined* is *images* with ``runtime.jobs: combined`` in the spec: one job per model
(``<model>:build``, ``<model>-build`` on GitHub) runs the data tests, training,
evaluation and export in one process (``ci-mlops build``), in the ``build`` job image;
report and deploys stay their own jobs. It runs in the same stand-in environment (the
build job's extras are the union of the four jobs', all in it) and act reads the same
copy of the workflow without its ``container:`` keys.

The baseline is the first ``ci-mlops run`` of the example in a fresh copy of it, one
per session, run in the environment the session's jobs run in wherever there is one:
a session with a preinstalled mode builds the job image's environment first and runs
``ci-mlops run`` with its ``ci-mlops`` script and its ``python`` first on PATH (leaving
it unchanged, checked as for the jobs), so run and jobs import the same packages.
This checkout's development environment holds more (test and lint tools, MLflow,
pyspark), and libraries import some of them when present: Great Expectations imports
pyspark, which slows its loading. A session of fresh modes only has no such
environment (each job builds its own), and its baseline runs in this checkout's
development environment, a developer's machine where everything is installed. The
benchmark prints which one ran.

act applies no environment protection, so the GitHub run has one job more than the
pipeline it stands for: the production deploy (``when: manual``), which on GitHub waits
for a reviewer of the protected environment, and which GitLab's pipeline holds as a
manual job that gitlab-ci-local does not start. Beside the whole run the benchmark
prints the run without it: act runs one job at a time, so that is the wall time less
the held job's own time, its steps' times as the per-job table gives them. That run is
the one that compares like with like: it ends with the staging deploy, as ``ci-mlops
run`` and the GitLab pipeline do. It still holds the pipeline check
(``ci-mlops-validate``), which runs on every GitHub run (``ci-mlops run`` checks the
spec as it loads it, in-process). The whole run is printed too: it is what act does.

Run: .venv/bin/python benchmarks/bench_pipeline_overhead.py [pip] [uv] [preinstalled]
[images] [combined] [gitlab] [act] [keep]   (keep: leave the projects, with every job's log, in /tmp)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ci_mlops.local_ci import gitlab_ci_local_command, seconds  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    CI_MLOPS_CALLS,
    SUMMARY,
    Project,
    make_project,
    signing_variables,
)
from tests.fakes.env import start_gitlab  # noqa: E402
from tests.helpers import cli_command, copy_example, tree_wheel  # noqa: E402
from tests.linters import GITLAB_CI_LOCAL  # noqa: E402

EXAMPLE = "breast-cancer"
STEP_LINE = re.compile(r"^\[[\d:]+\s+([\d.]+)\s*(ms|s|min|m)\]\s+(\S+)\s+(\$|>)\s?(.*)$")


@dataclass(frozen=True)
class Mode:
    installer: str  # the spec's runtime.installer
    preinstalled: bool  # the jobs' Python holds everything already, or starts empty
    job_images: bool = False  # the spec's runtime.job_images: published
    jobs: str = "steps"  # the spec's runtime.jobs


MODES = {
    "pip": Mode("pip", False),
    "uv": Mode("uv", False),
    "preinstalled": Mode("uv", True),
    "images": Mode("uv", True, job_images=True),
    "combined": Mode("uv", True, job_images=True, jobs="combined"),
}

# The job image's python: a new virtualenv per job (its id is new in every pipeline),
# with pip from a folder of its own. ``ci-mlops`` runs the script the job installed.
PYTHON_SHIM = """#!/bin/sh
env="$BENCH_JOB_PYTHONS/$CI_PIPELINE_ID-$CI_JOB_ID-$GITHUB_RUN_ID-$GITHUB_JOB"
if [ ! -x "$env/bin/python" ]; then
  "$BENCH_BASE_PYTHON" -m venv --without-pip "$env" >/dev/null || exit 1
  for site in "$env"/lib/python*/site-packages; do echo "$BENCH_PIP_SITE" > "$site/image-pip.pth"; done
fi
exec {command} "$@"
"""
# The job image's python when the image holds everything: that one environment.
IMAGE_SHIM = """#!/bin/sh
env="$BENCH_IMAGE"
exec {command} "$@"
"""
SHIMS = {"python": '"$env/bin/python"', "ci-mlops": '"$env/bin/ci-mlops"'}
# setup-python asks `pip cache dir` where pip's cache is, for `cache: pip`.
ACT_SHIMS = {**SHIMS, "pip": '"$env/bin/python" -m pip'}


@dataclass(frozen=True)
class Job:
    name: str
    total: float
    setup: float  # until the first install line
    install: float  # the install lines, until the ci-mlops step
    work: float


@dataclass(frozen=True)
class Run:
    wall: float
    jobs: list[Job]
    # Jobs the platform would hold for a person, which act runs at once: a deploy to a
    # ``when: manual`` environment waits on GitHub for a reviewer of the protected
    # environment (and is a manual job GitLab's pipeline does not start).
    held: tuple[str, ...] = ()

    def without_held(self) -> float:
        """The run's wall time less the held jobs' own time: what it takes up to the
        last deploy that starts by itself. act runs one job at a time, so nothing
        overlaps a held job; its time is its steps' (``total``, as the per-job table
        gives it), and act's own moments around it (set-up and clean-up, which act does
        not time: the runner's time outside jobs) stay in."""
        return self.wall - sum(job.total for job in self.jobs if job.name in self.held)


def job_image(
    folder: Path,
    shims: Path | None = None,
    commands: dict[str, str] = SHIMS,
    image: Path | None = None,
) -> tuple[Path, dict[str, str]]:
    """The stand-in ``python``/``ci-mlops`` folder (``shims``) and the variables it reads:
    a fresh Python per job, or the environment ``image`` that holds everything."""
    if image is not None:
        shims = shims or folder / "image-bin"
        shims.mkdir(parents=True)
        for name, command in commands.items():
            (shims / name).write_text(IMAGE_SHIM.replace("{command}", command))
            (shims / name).chmod(0o755)
        return shims, {"BENCH_IMAGE": str(image)}
    import pip

    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    pip_site = folder / "image-pip"
    # This environment's pip, as the image's: copied, nothing downloaded.
    shutil.copytree(Path(pip.__file__).parent, pip_site / "pip")
    shims = shims or folder / "image-bin"
    shims.mkdir(parents=True)
    for name, command in commands.items():
        (shims / name).write_text(PYTHON_SHIM.replace("{command}", command))
        (shims / name).chmod(0o755)
    pythons = folder / "job-pythons"
    pythons.mkdir()
    return shims, {
        "BENCH_JOB_PYTHONS": str(pythons),
        "BENCH_BASE_PYTHON": str(base),
        "BENCH_PIP_SITE": str(pip_site),
    }


def image_extras(spec_path: Path) -> tuple[str, ...]:
    """Every extra a job of the spec installs, on either platform."""
    from ci_mlops.generate.plan import build_plan
    from ci_mlops.spec.check import load_spec

    plan = build_plan(load_spec(spec_path))
    jobs = [job for model in plan.models for job in model.jobs]
    return tuple(
        sorted({extra for job in jobs for p in ("gitlab", "github") for extra in job.extras(p)})
    )


def preinstalled_image(folder: Path, wheel: Path) -> Path:
    """The job image's environment: ci-mlops from ``wheel`` with every extra the
    example's jobs install, the project's requirements and the pinned uv, installed from
    PyPI and byte-compiled."""
    from uv import find_uv_bin

    from ci_mlops.generate.plan import UV_REQUIREMENT

    example = copy_example(EXAMPLE, folder / "spec")
    extras = ",".join(image_extras(example / "mlops.yaml"))
    venv = folder / "image-env"
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True, capture_output=True)
    start = time.perf_counter()
    install = [find_uv_bin(), "pip", "install", "--no-config", "--compile-bytecode"]
    proc = subprocess.run(
        [
            *install,
            "--python",
            str(venv / "bin" / "python"),
            f"ci-mlops[{extras}] @ {wheel.as_uri()}",
            "-r",
            str(example / "requirements.txt"),
            UV_REQUIREMENT,
        ],
        env=job_env(Path(os.devnull), {}),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"building the job image failed:\n{proc.stderr[-4000:]}")
    print(
        f"job image: ci-mlops[{extras}], requirements, {UV_REQUIREMENT}: "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return venv


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time; uv's lock file,
    which it touches on every call, aside."""
    return {
        str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.name != ".lock" and not path.is_dir()
    }


def check_unchanged(
    image: Path | None, before: dict[str, tuple[int, int]], who: str = "the jobs"
) -> None:
    """Fail unless ``who`` left the image's environment as they found it."""
    if image is None:
        return
    after = listing(image)
    changed = sorted(set(before.items()) ^ set(after.items()))
    if changed:
        names = sorted({name for name, _ in changed})
        raise SystemExit(f"{who} changed the job image: {', '.join(names[:20])}")


def job_env(shims: Path, image: dict[str, str]) -> dict[str, str]:
    """The runner's environment: no pip or uv setting of this machine, so both read
    PyPI; the job image's python first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_")) and k != "VIRTUAL_ENV"
    }
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin]
    return (
        env
        | image
        | {
            "PATH": os.pathsep.join([str(shims), *path]),
            "PIP_CONFIG_FILE": os.devnull,
        }
    )


def parse(stdout: str) -> list[Job]:
    """Each job's total from the summary; the first line of its before_script and of its
    ci-mlops step from the timestamps."""
    first_line: dict[str, float] = {}
    first_step: dict[str, float] = {}
    for line in stdout.splitlines():
        match = STEP_LINE.match(line)
        if not match or match.group(4) != "$":
            continue
        at, name, text = seconds(match.group(1), match.group(2)), match.group(3), match.group(5)
        first_line.setdefault(name, at)
        if text.startswith(CI_MLOPS_CALLS):
            first_step.setdefault(name, at)
    jobs = []
    for line in stdout.splitlines():
        match = SUMMARY.match(line)
        if match:
            _, value, unit, name = match.groups()
            total = seconds(value, unit)
            setup, step = first_line.get(name, 0.0), first_step.get(name, total)
            jobs.append(Job(name, total, setup, step - setup, total - step))
    return jobs


def pipeline(project_dir: Path, env: dict[str, str], variables: dict[str, str]) -> Run:
    home = project_dir.parent / "gcl-home"
    home.mkdir(exist_ok=True)
    cmd = gitlab_ci_local_command(GITLAB_CI_LOCAL, home, variables)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=project_dir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    jobs = parse(proc.stdout)
    if proc.returncode != 0 or not jobs or any(not j.name for j in jobs):
        raise SystemExit(f"pipeline failed:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return Run(wall, jobs)


def local_run(folder: Path, image: Path | None) -> float:
    """Seconds of the first ``ci-mlops run`` in a fresh copy of the example: data test,
    training, evaluation, export, report, the pre-deploy check and the staging deploy.
    It runs in the job image's environment ``image`` when the session has one (its
    ``ci-mlops`` script, its ``python`` first on PATH), so that run and jobs import the
    same packages; else in this environment (a developer's machine, with this
    checkout's development packages)."""
    if image is None:
        command, first = cli_command(), Path(sys.executable).parent
    else:
        command, first = [str(image / "bin" / "ci-mlops")], image / "bin"
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join([str(first), *path])
    before = listing(image) if image else {}
    start = time.perf_counter()
    proc = subprocess.run([*command, "run"], cwd=folder, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ci-mlops run failed:\n{proc.stdout}{proc.stderr}")
    # Else it would have left the jobs something they do not find in an image.
    check_unchanged(image, before, "`ci-mlops run`")
    return seconds


def choose_runtime(data: dict[str, Any], mode: Mode) -> None:
    """Set the spec's installer, its job images for a mode that runs in them and its
    job layout."""
    runtime = data.setdefault("runtime", {})
    runtime["installer"] = mode.installer
    if mode.job_images:
        runtime["job_images"] = "published"
        # Images hold the release, so their jobs' lines name it (``==<version>``); the
        # stand-in holds this working tree's wheel of that version, which satisfies them.
        runtime.pop("install", None)
    if mode.jobs != "steps":
        runtime["jobs"] = mode.jobs


def bench(
    mode: str, tmp: Path, wheel: Path, api_vars: dict[str, str], image: Path | None
) -> tuple[Run, Run]:
    shims, variables = job_image(tmp / f"image-{mode}", image=image)
    project = make_project(
        EXAMPLE,
        tmp / f"project-{mode}",
        install=f"{wheel}[{{extras}}]",
        change=lambda data: choose_runtime(data, MODES[mode]),
    )
    project.commit("train.py", "# tuned\n", "tune the model")
    env = job_env(shims, variables)
    runs = []
    for _ in ("cold", "warm"):
        before = listing(image) if image else {}
        runs.append(pipeline(project.path, env, api_vars))
        check_unchanged(image, before)
    return runs[0], runs[1]


def table(label: str, cold: Run, warm: Run, baseline: float) -> None:
    print(
        f"\n{label}: cold {cold.wall:.1f} s ({cold.wall / baseline:.2f}x), "
        f"warm {warm.wall:.1f} s ({warm.wall / baseline:.2f}x)"
    )
    if cold.held:
        up_to, warm_up_to = cold.without_held(), warm.without_held()
        print(
            f"{label}, up to the staging deploy, without {', '.join(cold.held)} (held for a "
            f"reviewer on GitHub): cold {up_to:.1f} s ({up_to / baseline:.2f}x), "
            f"warm {warm_up_to:.1f} s ({warm_up_to / baseline:.2f}x)"
        )
    print("| job | cold: total | setup | install | work | warm: total | setup | install | work |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    warm_jobs = {j.name: j for j in warm.jobs}
    for j in cold.jobs:
        w = warm_jobs.get(j.name)
        right = (
            f"{w.total:.1f} s | {w.setup:.1f} s | {w.install:.1f} s | {w.work:.1f} s"
            if w
            else "| | |"
        )
        print(
            f"| `{j.name}` | {j.total:.1f} s | {j.setup:.1f} s | {j.install:.1f} s "
            f"| {j.work:.1f} s | {right} |"
        )
    for label, run in (("cold", cold), ("warm", warm)):
        jobs = sum(j.total for j in run.jobs)
        installs = sum(j.install for j in run.jobs)
        setups = sum(j.setup for j in run.jobs)
        works = sum(j.work for j in run.jobs)
        print(
            f"{label}: jobs {jobs:.1f} s = setup {setups:.1f} s + install {installs:.1f} s "
            f"+ work {works:.1f} s; the runner outside jobs {run.wall - jobs:.1f} s"
        )


# --- GitHub, through act -----------------------------------------------------------


def held_jobs(spec_path: Path) -> tuple[str, ...]:
    """The GitHub ids of the spec's jobs that wait for a person: deploys to an
    environment with ``when: manual``."""
    from ci_mlops.generate.kinds import github_job_id
    from ci_mlops.generate.plan import build_plan
    from ci_mlops.spec.check import load_spec

    plan = build_plan(load_spec(spec_path))
    return tuple(
        github_job_id(job.key)
        for model in plan.models
        for job in model.jobs
        if job.when == "manual"
    )


def act_tools(
    folder: Path, wheel: Path, image: Path | None, *, on_path: bool = False
) -> tuple[Any, Path, dict[str, str]]:
    """act's set-up with a tool cache whose Python is the stand-in, and the folder to put
    first on PATH: the stand-in's own with ``on_path`` (jobs in a job image run no
    setup-python), else none (setup-python puts the tool cache's first)."""
    from tests.e2e.act_harness import ActTools, make_act_tools

    shared = make_act_tools(folder / "act")
    version = ".".join(map(str, sys.version_info[:3]))
    tool_cache = folder / "tool-cache"
    home = tool_cache / "Python" / version
    shims, variables = job_image(
        folder / "image", None if on_path else home / "x64" / "bin", ACT_SHIMS, image
    )
    if on_path:
        tool_cache.mkdir()  # run_workflow copies it; no job asks it for a Python
    else:
        (home / "x64.complete").write_text("")
    pip_cache = folder / "pip-cache"
    pip_cache.mkdir()
    first = shims if on_path else Path(os.devnull)
    return ActTools(shared.actions, tool_cache, wheel, pip_cache), first, variables


CONTAINER_KEY = re.compile(r"^( +)container:\s*$")


def without_containers(workflow: str) -> str:
    """``workflow`` without its jobs' ``container:`` keys (each with the lines indented
    under it): act's host mode has no container engine to run them in."""
    kept: list[str] = []
    inside: int | None = None  # the indentation of the container key being dropped
    for line in workflow.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip(" "))
        if inside is not None and (indent > inside or not line.strip()):
            continue
        inside = None
        match = CONTAINER_KEY.match(line)
        if match:
            inside = len(match.group(1))
            continue
        kept.append(line)
    return "".join(kept)


def host_workflow(project: Project) -> Path:
    """A copy of the project's workflow, beside the project, without its ``container:``
    keys, for act to read (``--workflows``); the committed workflow stays as generated,
    so the job that checks it against the spec still passes. Checks that the copy lost
    those keys and nothing else."""
    import yaml

    text = (project.path / ".github" / "workflows" / "mlops.yml").read_text("utf-8")
    generated = yaml.safe_load(text)
    copy = project.path.parent / "mlops-on-host.yml"
    copy.write_text(without_containers(text), "utf-8")
    for job in generated["jobs"].values():
        if job.pop("container", None) is None:
            raise SystemExit("a job of the generated workflow names no job image")
    if generated != yaml.safe_load(copy.read_text("utf-8")):
        raise SystemExit("removing the container keys changed more than them")
    return copy


def act_steps(stdout: str) -> dict[str, float]:
    """Seconds per step over every job of an act run, by the step's name (an action by
    its name without the pinned commit), from the ``executionTime`` act logs."""
    import json

    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "executionTime" in entry and "jobID" in entry:
            name = re.sub(r"@[0-9a-f]{40}", "", str(entry.get("step", "")))
            totals[name] = totals.get(name, 0.0) + float(entry["executionTime"]) / 1e9
    return totals


def act_bench(mode: str, tmp: Path, wheel: Path, image: Path | None) -> tuple[Run, Run]:
    from tests.e2e.act_harness import new_repository, push_event, run_workflow, step_seconds
    from tests.fakes.env import start_github

    in_images = MODES[mode].job_images
    tools, first, variables = act_tools(tmp / f"act-{mode}", wheel, image, on_path=in_images)
    api = start_github()
    try:
        repository = new_repository(
            tmp / f"gh-{mode}",
            tools,
            api,
            change=lambda data: choose_runtime(data, MODES[mode]),
        )
        workflow = ("--workflows", str(host_workflow(repository.project))) if in_images else ()
        repository.project.commit("train.py", "# tuned\n", "tune the model")
        held = held_jobs(repository.project.path / "mlops.yaml")
        env = job_env(first, variables)
        if not in_images:
            env["PATH"] = env["PATH"].split(os.pathsep, 1)[1]  # setup-python puts Python first
        env["PIP_CACHE_DIR"] = str(tools.pip_cache)
        runs = []
        for n in (1, 2):
            before = listing(image) if image else {}
            run = run_workflow(
                repository.project,
                tools,
                api,
                "push",
                push_event(api),
                run_id=8000 + n,
                local_repositories=workflow,  # act's extra arguments
                base_env=env,
            )
            if run.code != 0 or run.failed():
                raise SystemExit(f"workflow failed:\n{run.explain()}")
            check_unchanged(image, before)
            jobs = [
                Job(
                    job,
                    sum(kinds.values()),
                    kinds.get("act", 0.0) + kinds.get("python", 0.0) + kinds.get("artifacts", 0.0),
                    kinds.get("install", 0.0),
                    kinds.get("work", 0.0),
                )
                for job, kinds in step_seconds(run.output).items()
            ]
            if not held or not set(held) <= {job.name for job in jobs}:
                raise SystemExit(f"no job held for a reviewer ran: {held} in {jobs}")
            runs.append(Run(run.wall_seconds, jobs, held))
            steps = sorted(act_steps(run.output).items(), key=lambda kv: -kv[1])
            print(
                f"act run {n}, steps over all jobs: "
                + "; ".join(f"{k} {v:.1f} s" for k, v in steps)
            )
    finally:
        api.stop()
    return runs[0], runs[1]


def main() -> None:
    modes = [a for a in sys.argv[1:] if a in MODES] or list(MODES)
    platforms = [a for a in sys.argv[1:] if a in ("gitlab", "act")] or ["gitlab", "act"]
    keep = "keep" in sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp_name:
        tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-")) if keep else Path(tmp_name)
        if keep:
            print(f"projects and logs in {tmp}", flush=True)
        wheel = tree_wheel(tmp / "wheel")
        image = (
            preinstalled_image(tmp / "job-image", wheel)
            if any(MODES[m].preinstalled for m in modes)
            else None
        )
        baseline = local_run(copy_example(EXAMPLE, tmp / "local"), image)
        where = (
            f"the job image's environment, {image}"
            if image
            else f"this checkout's development environment, {sys.prefix}"
        )
        print(f"`ci-mlops run` ({EXAMPLE}, first run, in {where}): {baseline:.1f} s", flush=True)
        images = {m: image if MODES[m].preinstalled else None for m in modes}
        if "gitlab" in platforms:
            api = start_gitlab()
            try:
                api_vars = {
                    "GITLAB_CI": "true",
                    "CI_API_V4_URL": f"{api.origin}/api/v4",
                    "CI_PROJECT_ID": api.project_id,
                    "CI_JOB_TOKEN": api.job_token,
                    "CI_PIPELINE_SOURCE": "push",
                    **signing_variables("push"),
                }
                for mode in modes:
                    cold, warm = bench(mode, tmp, wheel, api_vars, images[mode])
                    table(f"GitLab, {mode}", cold, warm, baseline)
            finally:
                api.stop()
        if "act" in platforms:
            for mode in modes:
                cold, warm = act_bench(mode, tmp, wheel, images[mode])
                table(f"GitHub (act), {mode}", cold, warm, baseline)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
