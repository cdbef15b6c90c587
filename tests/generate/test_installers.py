"""``runtime.installer: uv`` and ``runtime.lock`` in the generated pipelines: the files
pass the platforms' schemas, zizmor and actionlint; each job installs through the
chosen installer, a job with a checkout installs the lock and a job without one does
not; the installer caches sit where the platforms keep them, under keys that change
with the pinned versions; include mode refuses both settings."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.generate.plan import UV_CACHE_DIR, templated_install
from ci_mlops.generate.templates import interpolate
from ci_mlops.spec import load_spec
from tests.generate.test_generate import with_template_sha
from tests.hardening.checks import github_problems, gitlab_problems
from tests.helpers import REPO, copy_example, run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

NAME = "breast-cancer"
UV_LINE = 'python -I -m uv pip install --no-config --python "$(command -v python)" '
LOCK = "requirements.lock"
PRUNE = "python -I -m uv cache prune --ci"
# pip installs uv only where the pinned release is missing.
BOOTSTRAP = (
    "python -I -m uv --version 2>/dev/null | grep -qF 'uv 0.13.8 ' "
    "|| python -I -m pip install uv==0.13.8"
)


def project_with(tmp_path: Path, **runtime: Any) -> Path:
    project = copy_example(NAME, tmp_path)
    (project / LOCK).write_text("ci-mlops==0.1.0 --hash=sha256:" + "0" * 64 + "\n")
    spec_path = project / "mlops.yaml"
    spec = yaml.safe_load(spec_path.read_text("utf-8"))
    spec.setdefault("runtime", {}).update(runtime)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    result = run_cli("generate", cwd=project)
    assert result.code == 0, result.output
    return project


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text("utf-8")))


@pytest.fixture(scope="module")
def uv_locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with(tmp_path_factory.mktemp("uv"), installer="uv", lock=LOCK)


def test_uv_and_lock_files_pass_schemas_zizmor_and_actionlint(uv_locked: Path) -> None:
    workflow = uv_locked / ".github/workflows/mlops.yml"
    assert gitlab_schema_errors(uv_locked / ".gitlab-ci.yml") == []
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    spec = load_spec(uv_locked / "mlops.yaml", check_files=False)
    assert gitlab_problems((uv_locked / ".gitlab-ci.yml").read_text(), spec, "inline") == []
    assert github_problems(workflow.read_text(), spec, "inline") == []


def test_gitlab_jobs_install_the_lock_with_uv_and_keep_its_cache(uv_locked: Path) -> None:
    doc = load(uv_locked / ".gitlab-ci.yml")
    train = doc[f"{NAME}:train"]
    assert train["before_script"] == [
        BOOTSTRAP,
        UV_LINE + f"--require-hashes --no-deps -r {LOCK}",
        PRUNE,
    ]
    assert train["variables"]["UV_CACHE_DIR"] == ".cache/uv"
    assert train["variables"]["PIP_CACHE_DIR"] == ".cache/pip"
    (installer_cache, _model) = train["cache"]
    assert installer_cache["paths"] == [".cache"]
    assert installer_cache["key"]["files"] == ["requirements.txt", LOCK]
    assert installer_cache["key"]["prefix"].startswith("uv-3.11-")
    # The report job has no checkout, so no lock: it installs from runtime.install.
    report = doc[f"{NAME}:report"]
    assert report["before_script"][1] == UV_LINE + "'ci-mlops[gitlab]==0.1.0'"
    assert "cache" not in report


def test_github_jobs_install_the_lock_with_uv_and_cache_uv(uv_locked: Path) -> None:
    jobs = load(uv_locked / ".github/workflows/mlops.yml")["jobs"]
    steps = jobs[f"{NAME}-train"]["steps"]
    (install,) = (s for s in steps if s.get("name") == "Install ci-mlops")
    assert install["run"].splitlines() == [
        BOOTSTRAP,
        UV_LINE + f"--require-hashes --no-deps -r {LOCK}",
        PRUNE,
    ]
    (cache,) = (s for s in steps if s.get("with", {}).get("path") == UV_CACHE_DIR)
    assert cache["with"]["key"].endswith(f"${{{{ hashFiles('requirements.txt', '{LOCK}') }}}}")
    report = jobs[f"{NAME}-report"]["steps"]
    assert not any(s.get("with", {}).get("path") == UV_CACHE_DIR for s in report)


def test_the_cache_key_changes_with_the_pinned_version(tmp_path: Path) -> None:
    def key(install: str, folder: str) -> str:
        project = project_with(tmp_path / folder, install=install)
        prefix: str = load(project / ".gitlab-ci.yml")[f"{NAME}:train"]["cache"][0]["key"]["prefix"]
        return prefix

    first, same, bumped = (
        key("ci-mlops[{extras}]==0.1.0", "a"),
        key("ci-mlops[{extras}]==0.1.0", "b"),
        key("ci-mlops[{extras}]==0.2.0", "c"),
    )
    assert first == same and first != bumped and first.startswith("pip-3.11-")


def included(project: Path) -> Path:
    with_template_sha(project / "mlops.yaml")
    result = run_cli("generate", "--mode", "include", cwd=project)
    assert result.code == 0, result.output
    return project


@pytest.fixture(scope="module")
def uv_locked_included(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = project_with(tmp_path_factory.mktemp("uv-include"), installer="uv", lock=LOCKS)
    (project / LOCKS).mkdir()
    return included(project)


LOCKS = "locks/"
PIPELINE = REPO / "templates" / "pipeline.yml"


def test_include_mode_passes_the_installer_and_the_lock_to_the_templates(
    uv_locked_included: Path,
) -> None:
    project = uv_locked_included
    workflow = project / ".github/workflows/mlops.yml"
    assert gitlab_schema_errors(project / ".gitlab-ci.yml") == []
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    (include,) = load(project / ".gitlab-ci.yml")["include"]
    assert include["inputs"]["installer"] == "uv" and include["inputs"]["lock"] == LOCKS
    call = load(workflow)["jobs"][NAME]["with"]
    assert call["installer"] == "uv" and call["lock"] == LOCKS
    # What GitLab makes of the component with those inputs: the job reads them from its
    # variables, keeps both installers' caches under a key of the installer.
    jobs = interpolate(PIPELINE.read_text(), include["inputs"])
    train = jobs[f"{NAME}:train"]
    assert train["variables"]["MLOPS_INSTALLER"] == "uv"
    assert train["variables"]["MLOPS_LOCK"] == LOCKS
    assert train["variables"]["UV_CACHE_DIR"] == ".cache/uv"
    (installer_cache, _model) = train["cache"]
    assert installer_cache["key"].startswith("uv-3.11-") and installer_cache["paths"] == [".cache"]
    # The report job has no checkout: no lock, it installs from the install input.
    assert "MLOPS_LOCK" not in jobs[f"{NAME}:report"]["variables"]


def test_a_default_spec_passes_neither_input(tmp_path: Path) -> None:
    """A caller of a spec without uv or a lock names no input an older release of the
    templates lacks."""
    project = included(project_with(tmp_path))
    (include,) = load(project / ".gitlab-ci.yml")["include"]
    call = load(project / ".github/workflows/mlops.yml")["jobs"][NAME]["with"]
    for inputs in (include["inputs"], call):
        assert "installer" not in inputs and "lock" not in inputs
    jobs = interpolate(PIPELINE.read_text(), include["inputs"])
    train = jobs[f"{NAME}:train"]
    assert train["variables"]["MLOPS_INSTALLER"] == "pip"
    assert train["cache"][0]["key"].startswith("pip-3.11-")


# A stand-in for the job's python that prints each argument it gets in brackets, so that
# the test sees the exact argument lists the template's shell lines build.
RECORDER = '#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done; echo\n'
WHEEL = "ci-mlops[{extras}] @ https://files.example.com/ci_mlops-0.1.0-py3-none-any.whl"


def run_template_lines(
    tmp_path: Path, kind: str, installer: str, lock: str, *, requirements: bool = True
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(RECORDER)
    (bin_dir / "python").chmod(0o755)
    lines = templated_install(kind, ("ml", "plots"), requirements=requirements, lock=True)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "MLOPS_INSTALL": WHEEL,
        "MLOPS_INSTALLER": installer,
        "MLOPS_LOCK": lock,
        "MLOPS_REQUIREMENTS": "my reqs.txt",
    }
    # GitLab runs a job's lines as one script that stops at the first failing line.
    script = "set -e\n" + "\n".join(lines)
    return subprocess.run(
        ["sh", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
    )


PIP = "[-I][-m][pip][install]"
UV = "[-I][-m][uv][pip][install][--no-config][--python]"
HASHED = "[--require-hashes][--no-deps][-r]"


@pytest.mark.parametrize(
    ("installer", "lock", "calls"),
    [
        (
            "pip",
            "",
            [
                f"{PIP}[ci-mlops[ml,plots]@https://files.example.com/ci_mlops-0.1.0-py3-none-any.whl]"
                "[-r][my reqs.txt]"
            ],
        ),
        ("pip", "requirements.lock", [f"{PIP}{HASHED}[requirements.lock]"]),
        ("pip", "my locks/", [f"{PIP}{HASHED}[my locks/evaluate.txt]"]),
        (
            "uv",
            "my locks/",
            [
                f"{PIP}[uv==0.13.8]",
                f"{UV}[{{bin}}/python]{HASHED}[my locks/evaluate.txt]",
                "[-I][-m][uv][cache][prune][--ci]",
            ],
        ),
        (
            "uv",
            "",
            [
                f"{PIP}[uv==0.13.8]",
                f"{UV}[{{bin}}/python]"
                "[ci-mlops[ml,plots]@https://files.example.com/ci_mlops-0.1.0-py3-none-any.whl]"
                "[-r][my reqs.txt]",
                "[-I][-m][uv][cache][prune][--ci]",
            ],
        ),
        # An input that tries to run a command stays one argument of the installer.
        ("pip", "$(touch pwned); x", [f"{PIP}{HASHED}[$(touch pwned); x]"]),
    ],
)
def test_template_lines_pick_the_installer_and_the_lock_at_run_time(
    tmp_path: Path, installer: str, lock: str, calls: list[str]
) -> None:
    result = run_template_lines(tmp_path, "evaluate", installer, lock)

    assert result.returncode == 0, result.stderr
    bin_dir = tmp_path / "bin"
    assert result.stdout.splitlines() == [c.replace("{bin}", str(bin_dir)) for c in calls]
    assert not (tmp_path / "pwned").exists()


def test_template_lines_refuse_an_unknown_installer(tmp_path: Path) -> None:
    result = run_template_lines(tmp_path, "train", "poetry", "")

    assert result.returncode == 2
    assert "the installer input is pip or uv" in result.stderr
    assert result.stdout == ""  # nothing was installed


@pytest.fixture(scope="module")
def per_job_locks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with(tmp_path_factory.mktemp("per-job"), installer="uv", lock=LOCKS)


def test_per_job_locks_inline_each_job_installs_its_own(per_job_locks: Path) -> None:
    doc = load(per_job_locks / ".gitlab-ci.yml")
    for kind in ("data-test", "train", "evaluate", "export", "deploy-staging"):
        job = doc[f"{NAME}:{kind}"]
        lock = f"{LOCKS}{kind.removesuffix('-staging')}.txt"
        assert job["before_script"][-2].endswith(f"--require-hashes --no-deps -r {lock}"), kind
        assert job["cache"][0]["key"]["files"][-1] == lock
    validate = doc["ci-mlops:validate"]
    assert validate["before_script"][-2].endswith(f"-r {LOCKS}validate.txt")
    jobs = load(per_job_locks / ".github/workflows/mlops.yml")["jobs"]
    steps = jobs[f"{NAME}-evaluate"]["steps"]
    (install,) = (s for s in steps if s.get("name") == "Install ci-mlops")
    assert install["run"].splitlines()[1].endswith(f"-r {LOCKS}evaluate.txt")
    (cache,) = (s for s in steps if s.get("with", {}).get("path") == UV_CACHE_DIR)
    assert cache["with"]["key"].endswith(
        f"hashFiles('requirements.txt', '{LOCKS}evaluate.txt') }}}}"
    )
    workflow = per_job_locks / ".github/workflows/mlops.yml"
    assert zizmor_findings([workflow]) == [] and actionlint_findings([workflow]) == []


def test_per_job_locks_in_the_matrix_layout(tmp_path: Path) -> None:
    """The plan job installs ci-mlops alone, as validate does: validate's lock; each
    matrix job its kind's."""
    project = project_with(tmp_path, lock=LOCKS, layout="matrix")
    gitlab = load(project / ".gitlab-ci.yml")
    assert gitlab["ci-mlops:plan"]["before_script"] == [
        f"python -I -m pip install --require-hashes --no-deps -r {LOCKS}validate.txt"
    ]
    jobs = load(project / ".github/workflows/mlops.yml")["jobs"]
    for job, kind in (("plan", "validate"), ("evaluate", "evaluate"), ("train", "train")):
        (install,) = (s for s in jobs[job]["steps"] if s.get("name") == "Install ci-mlops")
        assert install["run"] == (
            f"python -I -m pip install --require-hashes --no-deps -r {LOCKS}{kind}.txt"
        ), job
