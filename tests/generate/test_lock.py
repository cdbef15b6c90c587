"""``ci-mlops lock`` for real: uv resolves each job's set against the package index this
machine reaches (PyPI), with ci-mlops itself from a wheel of this working tree (as from
a private index or a release asset: a folder has no hash a lock could hold). Then the
jobs of the generated pipelines install their own locks into fresh virtualenvs, with
uv (an inline job) and pip (a job of the released component, its installer and lock
given as inputs); a lock with one wrong hash installs nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.atomic import sha256_file
from ci_mlops.generate.templates import interpolate
from tests.helpers import REPO, copy_example, run_cli, tree_wheel

pytestmark = pytest.mark.slow

NAME = "breast-cancer"
LOCKS = "locks/"
# Every kind of job of the example that checks out the repository; the report job has
# no checkout and installs from runtime.install.
LOCKED = ("validate", "data-test", "train", "evaluate", "export", "deploy", "drift")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tree_wheel(tmp_path_factory.mktemp("wheel"))


def project(folder: Path, wheel: Path, **runtime: Any) -> Path:
    path = copy_example(NAME, folder)
    spec_file = path / "mlops.yaml"
    spec = yaml.safe_load(spec_file.read_text("utf-8"))
    spec["runtime"].update(install=f"ci-mlops[{{extras}}] @ {wheel.as_uri()}", lock=LOCKS)
    spec["runtime"].update(runtime)
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    return path


def packages(lock: Path) -> dict[str, str]:
    """Package name -> the logical line (hashes included) of each requirement."""
    text = lock.read_text("utf-8").replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith(("#", "-")):
            out[re.split(r"[=@ \[]", line, maxsplit=1)[0].strip().lower()] = line
    return out


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    path = project(tmp_path_factory.mktemp("locked"), wheel)
    result = run_cli("lock", cwd=path)
    assert result.code == 0, result.output
    return path


def test_lock_writes_one_hashed_lock_per_job_with_only_its_set(locked: Path, wheel: Path) -> None:
    written = sorted(p.name for p in (locked / LOCKS).iterdir())
    assert written == sorted(f"{kind}.txt" for kind in LOCKED)
    sets = {kind: packages(locked / LOCKS / f"{kind}.txt") for kind in LOCKED}
    for kind, pinned in sets.items():
        assert all("--hash=sha256:" in line for line in pinned.values()), kind
        assert f"--hash=sha256:{sha256_file(wheel)}" in pinned["ci-mlops"], kind
    # Each job's own set: the data tests' libraries only where data is tested, plots
    # only where evaluate draws, ONNX only where the model is exported, the project's
    # requirements only where its code runs.
    assert [k for k in LOCKED if "great-expectations" in sets[k]] == ["data-test"]
    assert [k for k in LOCKED if "matplotlib" in sets[k]] == ["evaluate"]
    assert [k for k in LOCKED if "skl2onnx" in sets[k]] == ["export"]
    assert {k for k in LOCKED if "scikit-learn" in sets[k]} == {
        "train",
        "evaluate",
        "export",
        "drift",
    }
    assert "model-signing" in sets["deploy"] and "python-gitlab" in sets["deploy"]
    # --platform all: one set of locks for both pipelines, so the clients of both.
    assert "pygithub" in sets["evaluate"] and "python-gitlab" in sets["evaluate"]
    assert len(sets["validate"]) < len(sets["train"]) < len(sets["evaluate"])
    header = (locked / LOCKS / "train.txt").read_text("utf-8").splitlines()[0]
    assert header == (
        "# What the train job installs: ci-mlops (no extras) and requirements.txt, "
        "for Python 3.11 on Linux."
    )
    assert run_cli("validate", cwd=locked).code == 0


def test_check_passes_on_current_locks_and_fails_on_stale_ones(locked: Path) -> None:
    before = {p: p.read_text("utf-8") for p in (locked / LOCKS).iterdir()}
    current = run_cli("lock", "--check", cwd=locked)
    assert current.code == 0, current.output
    requirements = locked / "requirements.txt"
    original = requirements.read_text("utf-8")
    requirements.write_text(original + "six\n", "utf-8")
    try:
        stale = run_cli("lock", "--check", cwd=locked)
    finally:
        requirements.write_text(original, "utf-8")

    assert stale.code == 1, stale.output
    assert "3 lock(s) out of date" in stale.output
    for kind in ("train", "evaluate", "export"):
        assert f"locks/{kind}.txt: out of date" in stale.output
    assert "locks/data-test.txt: up to date" in stale.output
    assert {p: p.read_text("utf-8") for p in (locked / LOCKS).iterdir()} == before


def test_lock_refuses_what_cannot_be_locked(tmp_path: Path, wheel: Path) -> None:
    unset = project(tmp_path / "unset", wheel)
    spec = yaml.safe_load((unset / "mlops.yaml").read_text("utf-8"))
    del spec["runtime"]["lock"]
    (unset / "mlops.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    folder = project(tmp_path / "folder", wheel, install=f"{REPO}[{{extras}}]")
    missing = project(tmp_path / "missing", wheel, requirements="nowhere.txt")

    for path, message in (
        (unset, "runtime.lock is not set"),
        (folder, "has no hash, so pip's --require-hashes would refuse it"),
        (missing, "locks/train.txt: uv could not resolve it"),
    ):
        result = run_cli("lock", cwd=path)
        assert result.code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not (path / LOCKS).exists()  # nothing half-written


# --- installing the locks ----------------------------------------------------------------


def fresh_venv(folder: Path) -> Path:
    """A virtualenv with nothing but pip, as a job image's Python; its ``bin``."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True)
    return folder / "bin"


def site_packages(venv_bin: Path) -> list[str]:
    return sorted(p.name for p in next(venv_bin.parent.glob("lib/python*/site-packages")).iterdir())


def job_env(venv_bin: Path, cache: Path, **variables: str) -> dict[str, str]:
    """The job's environment: its python first on PATH, no pip or uv configuration of
    this machine (the lock alone says what is installed, from PyPI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL"))}
    return env | {
        "PATH": f"{venv_bin}{os.pathsep}{env['PATH']}",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_CACHE_DIR": str(cache),
        **variables,
    }


def run_job_lines(
    lines: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    script = "set -e\n" + "\n".join(lines)
    return subprocess.run(["sh", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)


def installed(venv_bin: Path, cwd: Path) -> str:
    probe = "import importlib.metadata as m; print(m.version('ci-mlops'), m.version('click'))"
    return subprocess.run(
        [str(venv_bin / "python"), "-I", "-c", probe], cwd=cwd, capture_output=True, text=True
    ).stdout.strip()


def tamper(lock: Path, package: str) -> None:
    """Replace every hash of ``package`` in ``lock`` with a wrong one."""
    text = lock.read_text("utf-8")
    entry = re.search(rf"^{package}==.*?(?=^\S)", text, re.M | re.S)
    assert entry, package
    wrong = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, entry.group(0))
    lock.write_text(text.replace(entry.group(0), wrong), "utf-8")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """The example without requirements, with locks: its train lock is ci-mlops's own
    small set, which the jobs below download from the index for real."""
    path = project(tmp_path_factory.mktemp("small"), wheel)
    spec = yaml.safe_load((path / "mlops.yaml").read_text("utf-8"))
    del spec["runtime"]["requirements"]
    spec["runtime"]["installer"] = "uv"
    (path / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    for args in (("lock", "--platform", "gitlab"), ("generate",)):
        result = run_cli(*args, cwd=path)
        assert result.code == 0, result.output
    return path


def job_folder(project: Path, work: Path, kind: str, *, wrong: bool) -> Path:
    """A job's folder holding ``project``'s lock for ``kind``, with click's hashes wrong
    if ``wrong``."""
    (work / LOCKS).mkdir(parents=True)
    lock = work / LOCKS / f"{kind}.txt"
    lock.write_text((project / LOCKS / f"{kind}.txt").read_text("utf-8"), "utf-8")
    if wrong:
        tamper(lock, "click")
    return work


def assert_lock_installed(
    result: subprocess.CompletedProcess[str], venv_bin: Path, work: Path, *, wrong: bool
) -> None:
    """A good lock installs ci-mlops; one wrong hash fails the job with nothing installed."""
    if not wrong:
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed(venv_bin, work).startswith("0.1.0 ")
    else:
        assert result.returncode != 0
        assert "hash" in (result.stdout + result.stderr).lower()
        assert not [p for p in site_packages(venv_bin) if p.startswith(("ci_mlops", "click"))]


@pytest.mark.parametrize("wrong", [False, True])
def test_an_inline_job_installs_its_lock_with_uv(small: Path, tmp_path: Path, wrong: bool) -> None:
    work = job_folder(small, tmp_path / "job", "validate", wrong=wrong)
    venv_bin = fresh_venv(tmp_path / "venv")
    lines = yaml.safe_load((small / ".gitlab-ci.yml").read_text("utf-8"))["ci-mlops:validate"][
        "before_script"
    ]
    assert lines[1].endswith("--require-hashes --no-deps -r locks/validate.txt")

    result = run_job_lines(lines, work, job_env(venv_bin, tmp_path / "uv-cache"))

    assert_lock_installed(result, venv_bin, work, wrong=wrong)


@pytest.mark.parametrize("wrong", [False, True])
def test_a_component_job_installs_its_own_lock_with_pip(
    small: Path, tmp_path: Path, wrong: bool
) -> None:
    """The released component's train job, with the inputs a caller passes (pip, the
    folder of locks), installs ``locks/train.txt``."""
    work = job_folder(small, tmp_path / "job", "train", wrong=wrong)
    inputs = {"model": NAME, "installer": "pip", "lock": LOCKS}
    job = interpolate((REPO / "templates" / "train.yml").read_text("utf-8"), inputs)[
        f"{NAME}:train"
    ]
    variables = {k: str(v) for k, v in job["variables"].items()}
    venv_bin = fresh_venv(tmp_path / "venv")

    result = run_job_lines(
        job["before_script"], work, job_env(venv_bin, tmp_path / "uv", **variables)
    )

    assert_lock_installed(result, venv_bin, work, wrong=wrong)


def test_validate_names_a_missing_folder_of_locks(tmp_path: Path, wheel: Path) -> None:
    path = project(tmp_path, wheel)  # runtime.lock: locks/, not written yet

    result = run_cli("validate", cwd=path)

    assert result.code == 2, result.output
    assert "$.runtime.lock: folder not found: locks/ (write the locks with `ci-mlops lock`)" in (
        result.output
    )


def test_a_private_index_in_the_install_setting_is_written_into_the_locks(
    tmp_path: Path, wheel: Path
) -> None:
    """ci-mlops from an index of its own (a PEP 503 folder holding the wheel), every
    dependency from PyPI: the locks pin ci-mlops by the wheel's hash and name both
    indexes, which the jobs' pip and uv then read from the lock."""
    index = tmp_path / "simple"
    (index / "ci-mlops").mkdir(parents=True)
    (index / "ci-mlops" / "index.html").write_text(f'<a href="{wheel.as_uri()}">{wheel.name}</a>\n')
    (index / "index.html").write_text('<a href="ci-mlops/">ci-mlops</a>\n')
    install = (
        f"--index-url {index.as_uri()} --extra-index-url https://pypi.org/simple "
        "ci-mlops[{extras}]==0.1.0"
    )
    path = project(tmp_path / "project", wheel, install=install)

    result = run_cli("lock", "--platform", "gitlab", cwd=path)

    assert result.code == 0, result.output
    lock = path / LOCKS / "validate.txt"
    lines = lock.read_text("utf-8").splitlines()
    assert f"--index-url {index.as_uri()}" in lines
    assert "--extra-index-url https://pypi.org/simple" in lines
    pinned = packages(lock)["ci-mlops"]
    assert pinned.startswith("ci-mlops==0.1.0 ")
    assert f"--hash=sha256:{sha256_file(wheel)}" in pinned
