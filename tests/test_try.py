"""`ci-mlops try`: the generated GitLab pipeline of a repository that `init` just
described, run for real on this machine by gitlab-ci-local, with the repository itself
left exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ci_mlops import local_ci
from ci_mlops.spec.check import load_spec
from tests.helpers import REPO, git, run_cli
from tests.linters import GITLAB_CI_LOCAL
from tests.test_onboarding import PATH_ENV, headerless_split_repo

# gitlab-ci-local from the project's Node tools; jobs install nothing from an index.
TRY_ENV = {
    "PATH": f"{GITLAB_CI_LOCAL.parent}{os.pathsep}{PATH_ENV['PATH']}",
    "PIP_NO_INDEX": "1",
}
JOBS = ["ci-mlops:validate", *(f"repo:{k}" for k in ("data-test", "train", "evaluate", "export"))]


def committed_repo(root: Path) -> Path:
    headerless_split_repo(root, " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "a model")
    return root


def refs(root: Path) -> str:
    return git(root, "for-each-ref") + git(root, "status", "--porcelain")


@pytest.fixture(scope="module")
def tried() -> Iterator[tuple[Path, str, bytes, str]]:
    assert GITLAB_CI_LOCAL.is_file(), "gitlab-ci-local is not installed: run `make tools`"
    # A folder of its own rather than pytest's base folder, which every pytest session on
    # the machine shares: with other sessions running, jobs in a repository there were
    # seen to run the base interpreter instead of the jobs' virtualenv (cause not found).
    base = Path(tempfile.mkdtemp(prefix="ci-mlops-try-"))
    try:
        root = committed_repo(base / "repo")
        spec, before = (root / "mlops.yaml").read_bytes(), refs(root)
        result = run_cli("try", cwd=root, env=TRY_ENV, timeout=1200)
        assert result.code == 0, result.output
        yield root, result.stdout, spec, before
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_try_runs_the_gitlab_pipeline_green_and_prints_each_job(
    tried: tuple[Path, str, bytes, str],
) -> None:
    root, stdout, _, _ = tried
    for job in [*JOBS, "repo:deploy-staging"]:
        assert f"PASS  {job}  (" in stdout, stdout
    assert "pipeline passed" in stdout
    state = root / ".ci-mlops" / "try" / "gitlab" / ".gitlab-ci-local"
    gates = (
        state / "artifacts" / local_ci.safe_job_name("repo:evaluate") / ".ci-mlops/repo/gates.json"
    )
    assert json.loads(gates.read_text())["passed"] is True


@pytest.mark.slow
@pytest.mark.e2e
def test_try_jobs_install_this_ci_mlops_into_their_own_python(
    tried: tuple[Path, str, bytes, str],
) -> None:
    root, _, _, _ = tried
    state = root / ".ci-mlops" / "try"
    logs = state / "gitlab/.gitlab-ci-local/output"
    data_test = (logs / f"{local_ci.safe_job_name('repo:data-test')}.log").read_text()
    assert f"$ python -I -m pip install '{REPO}[data]'" in data_test
    # The jobs' python got ci-mlops; the developer's environment kept its own.
    installed = list((state / "job-python").glob("lib/python*/site-packages/ci_mlops"))
    assert installed, "ci-mlops was not installed into the jobs' python"
    here = subprocess.run(
        [sys.executable, "-c", "import ci_mlops; print(ci_mlops.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert here.stdout.strip() == str(REPO / "ci_mlops" / "__init__.py")


@pytest.mark.slow
@pytest.mark.e2e
def test_try_leaves_the_spec_and_the_git_repository_alone(
    tried: tuple[Path, str, bytes, str],
) -> None:
    root, _, spec, before = tried
    assert (root / "mlops.yaml").read_bytes() == spec
    assert "install" not in (yaml.safe_load(spec).get("runtime") or {})
    assert refs(root) == before  # .ci-mlops/ is ignored: git sees nothing new


def test_prepare_copies_what_git_would_commit_and_installs_from_the_setting(
    tmp_path: Path,
) -> None:
    root = committed_repo(tmp_path / "repo")
    (root / "notes.tmp").write_text("scratch")
    (root / ".gitignore").write_text((root / ".gitignore").read_text() + "*.tmp\n")
    (root / ".ci-mlops").mkdir(exist_ok=True)
    (root / ".ci-mlops" / "big.bin").write_bytes(b"x")
    spec = load_spec(root / "mlops.yaml")

    copy = local_ci.prepare(spec, "gitlab", tmp_path / "copy", "ci-mlops[{extras}]==9.9.9")

    folder = copy.parent
    assert not (folder / "notes.tmp").exists() and not (folder / ".ci-mlops").exists()
    assert (folder / "data" / "train_features.txt").is_file()
    assert yaml.safe_load(copy.read_text())["runtime"]["install"] == "ci-mlops[{extras}]==9.9.9"
    pipeline = (folder / ".gitlab-ci.yml").read_text()
    assert "'ci-mlops[data]==9.9.9'" in pipeline
    # origin/main is the empty commit before the one that adds everything.
    assert git(folder, "rev-parse", "origin/main") == git(folder, "rev-parse", "HEAD~1")
    assert git(folder, "status", "--porcelain") == ""


def test_try_says_how_to_install_a_missing_runner(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0
    bare = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if "node_modules" not in p
    )

    result = run_cli("try", cwd=root, env={"PATH": bare})

    assert result.code == 2, result.output
    assert "gitlab-ci-local is not installed" in result.stderr
    assert "npm i -g gitlab-ci-local" in result.stderr and "Traceback" not in result.output


def test_try_refuses_an_event_the_platform_does_not_have(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0

    result = run_cli("try", "--event", "pull_request", cwd=root, env=TRY_ENV)

    assert result.code == 2
    assert "gitlab pipelines run on push or merge_request" in result.stderr


def test_try_on_github_names_the_act_command_instead_of_half_running(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0

    result = run_cli("try", "--platform", "github", "--event", "pull_request", cwd=root)

    assert result.code == 2, result.output
    assert "does not run workflows yet" in result.stderr
    assert "pull_request -P ubuntu-latest=-self-hosted" in result.stderr
    assert not (root / ".ci-mlops" / "try").exists()


def test_prepare_installs_with_pip_and_no_lock_whatever_the_spec_says(tmp_path: Path) -> None:
    """The jobs' python sees this environment's packages through a .pth line, which only
    pip honours; a lock would install the released ci-mlops rather than this one."""
    root = committed_repo(tmp_path / "repo")
    spec_file = root / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text())
    (root / "requirements.lock").write_text("ci-mlops==0.1.0 --hash=sha256:" + "0" * 64 + "\n")
    data.setdefault("runtime", {}).update(installer="uv", lock="requirements.lock")
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))

    copy = local_ci.prepare(load_spec(spec_file), "gitlab", tmp_path / "copy", "ci-mlops[{extras}]")

    runtime = yaml.safe_load(copy.read_text())["runtime"]
    assert runtime["installer"] == "pip" and "lock" not in runtime
    pipeline = (copy.parent / ".gitlab-ci.yml").read_text()
    assert "python -I -m pip install 'ci-mlops[data]'" in pipeline
    assert " uv " not in pipeline and "--require-hashes" not in pipeline
