"""Each job image's lock installs for real (hashes checked) and then ci-mlops imports
everything the image's jobs need, and the jobs' install line finds it all installed,
also where the spec's per-job locks (``runtime.lock``) name what the job installs."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops import __version__
from ci_mlops.generate.kinds import KINDS, job_images
from ci_mlops.generate.plan import install_commands
from tests.helpers import copy_example, run_cli, tree_wheel
from tests.images.venvs import LOCKS, image_venv, uv_env

pytestmark = pytest.mark.slow

# The two images with the most extras: between them every extra an image holds but
# data (data-test's, which the end-to-end run covers).
CHECKED = ("evaluate", "deploy")

# Imports every library the image's extras require (the distributions ci-mlops's metadata
# lists for them, by their top-level modules), then the modules its kinds run.
IMPORT_ALL = r"""
import importlib, importlib.metadata as md, re, sys
extras, modules = sys.argv[1].split(","), sys.argv[2:]
tops = {}
for module, dists in md.packages_distributions().items():
    for dist in dists:
        tops.setdefault(dist.lower().replace("_", "-"), []).append(module)
wanted = set()
for req in md.requires("ci-mlops") or []:
    match = re.search(r"extra == .([a-z0-9-]+)", req)
    if match and match.group(1) in extras:
        wanted.add(re.match(r"[A-Za-z0-9._-]+", req).group(0).lower().replace("_", "-"))
imported = []
for dist in sorted(wanted):
    for module in tops[dist]:
        if not module.startswith("_") and module.isidentifier():
            importlib.import_module(module)
            imported.append(module)
for module in modules:
    importlib.import_module(module)
print(" ".join(imported))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ci-mlops as the images hold it: the release's wheel, here this working tree's."""
    return tree_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("job-images")
    return {name: image_venv(root / name, [name], wheel) for name in CHECKED}


def step_modules(image: str) -> list[str]:
    """The step modules of the kinds that run in ``image``, and the platform clients."""
    kinds = [k for k in KINDS.values() if k.job_image and k.job_image.name == image]
    modules = [k.local_step for k in kinds if k.local_step]
    extras = job_images()[image].extras
    return modules + [f"ci_mlops.platforms.{p}" for p in ("gitlab", "github") if p in extras]


@pytest.mark.parametrize("image", CHECKED)
def test_the_lock_installs_and_ci_mlops_imports_what_the_images_jobs_need(
    venvs: dict[str, Path], image: str
) -> None:
    python = venvs[image] / "python"
    extras = job_images()[image].extras
    proc = subprocess.run(
        [str(python), "-c", IMPORT_ALL, ",".join(extras), *step_modules(image)],
        capture_output=True,
        text=True,
        check=False,
        env={**uv_env(), "GX_ANALYTICS_ENABLED": "false", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = proc.stdout.split()
    expected = {"evaluate": {"sklearn", "matplotlib", "gitlab", "github"},
                "deploy": {"gitlab", "github", "model_signing", "onnxruntime", "uvicorn"}}  # fmt: skip
    assert expected[image] <= set(imported), imported


@pytest.mark.parametrize("image", CHECKED)
def test_the_jobs_install_line_is_a_fast_no_op_in_the_image(
    venvs: dict[str, Path], image: str
) -> None:
    """What a job of each kind that runs in the image runs first: uv finds ci-mlops with
    the kind's extras installed, offline, and installs nothing."""
    kinds = [k for k in KINDS.values() if k.job_image and k.job_image.name == image]
    env = {**uv_env(), "PATH": f"{venvs[image]}:/usr/bin:/bin", "UV_OFFLINE": "1"}
    for kind in kinds:
        for platform in ("gitlab", "github"):
            lines = install_commands(
                f"ci-mlops[{{extras}}]=={__version__}",
                kind.extras_on(platform),
                installer="uv",
                in_job_image=True,
            )
            start = time.perf_counter()
            proc = subprocess.run(
                ["sh", "-ec", "\n".join(lines)], capture_output=True, text=True, env=env
            )
            took = time.perf_counter() - start
            assert proc.returncode == 0, proc.stderr
            assert re.search(r"^(Audited|Checked) \d+ package", proc.stderr, re.M), proc.stderr
            assert "Installed" not in proc.stderr, proc.stderr
            # uv's own start and check: well under what pip needs just to start.
            assert took < 2.0, (kind.name, platform, took)


# --- runtime.lock in a job image ----------------------------------------------------

MODEL = "breast-cancer"
# The jobs with a checkout that run in each checked image, each installing its lock.
LOCKED = {
    "evaluate": {f"{MODEL}:evaluate", f"{MODEL}:drift"},
    "deploy": {f"{MODEL}:deploy-staging", f"{MODEL}:deploy-production"},
}


@pytest.fixture(scope="module")
def locked_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with ``runtime.job_images`` and a folder of per-job locks, its GitLab
    pipeline generated."""
    project = copy_example(MODEL, tmp_path_factory.mktemp("locked"))
    spec = project / "mlops.yaml"
    data = yaml.safe_load(spec.read_text("utf-8"))
    data.setdefault("runtime", {}).update(job_images="published", lock="locks/")
    spec.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    result = run_cli("generate", "--platform", "gitlab", cwd=project)
    assert result.code == 0, result.output
    return project


def locked_jobs(project: Path, image: str) -> dict[str, list[str]]:
    """The generated pipeline's jobs that run in ``image`` and install a lock: each
    job's install lines, as the file holds them."""
    doc: dict[str, Any] = yaml.safe_load((project / ".gitlab-ci.yml").read_text("utf-8"))
    return {
        name: job["before_script"]
        for name, job in doc.items()
        if isinstance(job, dict)
        and str(job.get("image", "")).endswith(f"-py3.11-{image}")
        and any("--require-hashes" in line for line in job["before_script"])
    }


def pin(version: str, digest: str) -> str:
    return f"ci-mlops=={version} \\\n    --hash=sha256:{digest}\n"


def write_lock(project: Path, lines: list[str], image: str, ci_mlops: str) -> None:
    """The lock the job's lines name: a project's lock that pins what the image holds,
    every dependency as the image's own lock pins it, with its hashes, and the ci-mlops
    line ``ci_mlops``."""
    (path,) = {m.group(1) for line in lines for m in re.finditer(r" -r (\S+)", line)}
    lock = project / path
    lock.parent.mkdir(exist_ok=True)
    lock.write_text((LOCKS / f"{image}.txt").read_text("utf-8") + ci_mlops, "utf-8")


def listing(venv: Path) -> dict[str, tuple[int, int]]:
    """Every path in the virtualenv, with its size and modification time."""
    return {
        str(p.relative_to(venv)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in venv.rglob("*")
    }


def run_lines(
    lines: list[str], project: Path, venv_bin: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    """A job's install lines in the image stand-in, in the project folder: its python
    first on PATH, offline, writing no bytecode (the image's environment says so)."""
    env = {**uv_env(), "PATH": f"{venv_bin}:/usr/bin:/bin", "UV_OFFLINE": "1"}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", **extra}
    return subprocess.run(
        ["sh", "-ec", "\n".join(lines)], cwd=project, capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("image", CHECKED)
def test_a_jobs_own_lock_installs_nothing_in_its_image(
    venvs: dict[str, Path], wheel: Path, locked_project: Path, image: str
) -> None:
    """runtime.lock with runtime.job_images: each job's line installs its lock with
    --require-hashes --no-deps, and in its image uv finds every package of the lock
    there, at the version the lock pins, and changes nothing."""
    jobs = locked_jobs(locked_project, image)
    assert set(jobs) == LOCKED[image]
    release = pin(__version__, hashlib.sha256(wheel.read_bytes()).hexdigest())
    venv = venvs[image].parent
    for name, lines in jobs.items():
        write_lock(locked_project, lines, image, release)
        before = listing(venv)
        proc = run_lines(lines, locked_project, venvs[image])
        assert proc.returncode == 0, (name, proc.stderr)
        assert re.search(r"^Checked \d+ packages in ", proc.stderr, re.M), (name, proc.stderr)
        for word in ("Installed", "Prepared", "Uninstalled"):
            assert word not in proc.stderr, (name, proc.stderr)
        assert listing(venv) == before, name


def test_in_a_job_image_a_locks_hashes_check_what_the_job_fetches_not_what_it_finds(
    venvs: dict[str, Path], wheel: Path, locked_project: Path, tmp_path: Path
) -> None:
    """uv (as pip) checks a package the environment holds by name and version: it has no
    file of it to hash. So a tampered hash of what the image holds passes unnoticed
    (the image's own lock checked those files when it was built), while a pin the image
    lacks is fetched and refused unless its file has the lock's hash; neither changes
    the image's environment."""
    lines = locked_jobs(locked_project, "evaluate")[f"{MODEL}:evaluate"]
    venv = venvs["evaluate"].parent
    tampered = "0" * 64
    before = listing(venv)

    write_lock(locked_project, lines, "evaluate", pin(__version__, tampered))
    held = run_lines(lines, locked_project, venvs["evaluate"])

    assert held.returncode == 0, held.stderr
    assert re.search(r"^Checked \d+ packages in ", held.stderr, re.M), held.stderr
    assert listing(venv) == before

    # Another release than the image's, from a folder standing in for the index.
    other = re.sub(r"\d+$", lambda m: str(int(m.group()) + 1), __version__)
    index = tmp_path / "index"
    index.mkdir()
    shutil.copy(wheel, index / wheel.name.replace(__version__, other))
    write_lock(locked_project, lines, "evaluate", pin(other, tampered))
    fetched = run_lines(
        lines,
        locked_project,
        venvs["evaluate"],
        UV_FIND_LINKS=str(index),
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
    )

    assert fetched.returncode != 0
    assert f"Hash mismatch for `ci-mlops=={other}`" in fetched.stderr, fetched.stderr
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in fetched.stderr  # uv computed it
    assert listing(venv) == before
