"""Generated GitLab pipelines, run for real by gitlab-ci-local on this machine: the jobs
install ci-mlops from this working tree, train, evaluate, export, report and deploy, and
talk to a fake GitLab API on 127.0.0.1 through python-gitlab."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ci_mlops.generate.plan import UV_PRESENT, UV_REQUIREMENT
from tests.e2e.harness import (
    CI_MLOPS_CALLS,
    UV_ENV,
    PipelineRun,
    Project,
    commit_locks,
    job_env,
    make_project,
    make_uv_job_python,
    run_pipeline,
    safe_job_name,
    signing_variables,
)
from tests.fakes.env import GITLAB_TOKEN, start_gitlab
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import REPO, git, tree_wheel

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "breast-cancer"
CHECKS = [f"{MODEL}:{k}" for k in ("data-test", "train", "evaluate", "export")]
MR_IID = "7"


def ci_variables(api: FakeGitLab, source: str = "push", **extra: str) -> dict[str, str]:
    """The CI variables GitLab would give the jobs, pointed at the fake API."""
    return {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{api.origin}/api/v4",
        "CI_PROJECT_ID": api.project_id,
        "CI_PROJECT_URL": "https://gitlab.example.invalid/ci-mlops/demo",
        "CI_JOB_TOKEN": api.job_token,
        "CI_PIPELINE_SOURCE": source,
        "MLOPS_API_RETRIES": "2",
        **signing_variables(source),
        **extra,
    }


def environment(api: FakeGitLab, name: str) -> dict[str, object] | None:
    """The record of what a deploy environment runs, as the GitLab platform keeps it."""
    data = api.package_file(f"{MODEL}-environments", "0.0.0", f"{name}.json")
    return None if data is None else json.loads(data)


def assert_passed(run: PipelineRun, expected: list[str]) -> None:
    assert run.code == 0, run.explain()
    assert list(run.jobs) == expected, run.explain()
    assert run.failed() == [], run.explain()


def test_default_branch_pipeline_deploys_staging_and_production_waits_for_a_person(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = make_project(MODEL, tmp_path)
    project.commit("train.py", "# tuned\n", "tune the model")
    variables = ci_variables(gitlab_api)

    run = run_pipeline(project, job_bin, variables)

    assert_passed(run, [*CHECKS, f"{MODEL}:deploy-staging"])
    trained = project.artifact_json(f"{MODEL}:train", "train.json")
    metrics = project.artifact_json(f"{MODEL}:evaluate", "metrics.json")
    gates = project.artifact_json(f"{MODEL}:evaluate", "gates.json")
    exported = project.artifact_json(f"{MODEL}:export", "export.json")
    # evaluate and export judged the model train made: it reached them through needs.
    assert trained["skipped"] is False
    assert metrics["model_sha256"] == gates["model_sha256"] == trained["model_sha256"]
    assert exported["model_sha256"] == trained["model_sha256"] and exported["passed"]
    assert gates["passed"] is True
    assert "trained in" in run.log(f"{MODEL}:train")

    staging = environment(gitlab_api, "staging")
    assert staging is not None, run.log(f"{MODEL}:deploy-staging")
    version = str(staging["version"])
    assert version.startswith("1.0.0-pipeline.")
    assert gitlab_api.package_file(MODEL, version, "model.joblib") == (
        project.artifact(f"{MODEL}:train", "model.joblib").read_bytes()
    )
    assert environment(gitlab_api, "production") is None  # waits for a person

    played = run_pipeline(
        project,
        job_bin,
        variables,
        manual=[f"{MODEL}:deploy-production"],
        jobs=[f"{MODEL}:deploy-production"],
    )

    assert_passed(played, [f"{MODEL}:deploy-production"])
    production = environment(gitlab_api, "production")
    assert production is not None and production["version"] == version
    for text in (run.output, played.output):
        assert gitlab_api.job_token not in text and GITLAB_TOKEN not in text


def baseline_metrics() -> bytes:
    """What the default branch's last evaluate job left: a slightly weaker model."""
    return json.dumps(
        {
            "model": MODEL,
            "task": "classification",
            "model_sha256": "0" * 64,
            "metrics": {
                "accuracy": 0.9,
                "roc_auc": 0.95,
                "f1": 0.9,
                "log_loss": 0.25,
                "precision": 0.9,
                "recall": 0.9,
            },
            "n_samples": 143,
            "baseline": None,
        }
    ).encode()


def test_merge_request_pipeline_posts_one_note_with_deltas_and_updates_it(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = make_project(MODEL, tmp_path)
    gitlab_api.artifacts[("main", f"{MODEL}:evaluate")] = {
        f".ci-mlops/{MODEL}/metrics.json": baseline_metrics()
    }
    project.branch("better-model")
    project.commit("train.py", "# tuned\n", "tune the model")
    variables = ci_variables(
        gitlab_api,
        "merge_request_event",
        CI_MERGE_REQUEST_IID=MR_IID,
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        GITLAB_TOKEN=GITLAB_TOKEN,
    )

    first = run_pipeline(project, job_bin, variables)

    assert_passed(first, [*CHECKS, f"{MODEL}:report"])
    (note,) = gitlab_api.notes[int(MR_IID)]
    body = note["body"]
    assert body.startswith(f"<!-- ci-mlops:report model={MODEL} -->")
    assert f"latest successful {MODEL}:evaluate job on main" in body
    accuracy = project.artifact_json(f"{MODEL}:evaluate", "metrics.json")["metrics"]["accuracy"]
    assert f"{accuracy - 0.9:+.4g}" in body and "better" in body  # the delta to the baseline
    assert gitlab_api.uploads and all(u["url"] in body for u in gitlab_api.uploads)

    # Another push to the merge request: the same note is edited, not a second one added.
    project.commit("train.py", "# tuned again\n", "tune again")
    second = run_pipeline(project, job_bin, variables)

    assert_passed(second, [*CHECKS, f"{MODEL}:report"])
    (updated,) = gitlab_api.notes[int(MR_IID)]
    assert updated["id"] == note["id"]
    assert len(gitlab_api.calls("create_note")) == 1
    assert len(gitlab_api.calls("update_note")) == 1
    for text in (first.output, second.output, first.log(f"{MODEL}:report")):
        assert GITLAB_TOKEN not in text and gitlab_api.job_token not in text


def _attack_files(log: Path) -> dict[str, str]:
    """What a merge request could commit to run its code where GITLAB_TOKEN lives: each
    file, when Python executes it, appends its name, the job and whether the token was
    there to ``log`` (an absolute path outside every job's folder)."""

    def record(name: str) -> str:
        return (
            f"import os; open({str(log)!r}, 'a').write({name!r} + ' ' + "
            "os.environ.get('CI_JOB_NAME', '?') + ' token=' + "
            "str('GITLAB_TOKEN' in os.environ) + chr(10))\n"
        )

    return {
        "pip.py": record("pip.py"),
        "pip/__init__.py": record("pip/__init__.py"),
        "pip/__main__.py": record("pip/__main__.py"),
        "sitecustomize.py": record("sitecustomize.py"),
        "usercustomize.py": record("usercustomize.py"),
        "zz-ci-mlops.pth": record("zz-ci-mlops.pth"),
        "ci_mlops/__init__.py": record("ci_mlops/__init__.py"),
        "ci_mlops/__main__.py": record("ci_mlops/__main__.py"),
    }


def test_merge_request_code_never_runs_in_the_report_job(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    """The report job holds GITLAB_TOKEN. A merge request commits files that Python
    picks up from the current folder (a ``pip`` package, a ``ci_mlops`` shadow package,
    ``sitecustomize.py``, a ``.pth``): none of them runs, in the report job or any other.
    gitlab-ci-local ignores ``GIT_STRATEGY: none`` and gives the report job the whole
    checkout, so this is the harder case of a runner's leftover workspace."""
    log = tmp_path / "executed.log"
    project = make_project(MODEL, tmp_path / "project")
    project.branch("innocent-looking")
    for path, text in _attack_files(log).items():
        (project.path / path).parent.mkdir(parents=True, exist_ok=True)
        project.commit(path, text, f"add {path}")
    project.commit("train.py", "# tuned\n", "tune the model")
    variables = ci_variables(
        gitlab_api,
        "merge_request_event",
        CI_MERGE_REQUEST_IID=MR_IID,
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        GITLAB_TOKEN=GITLAB_TOKEN,
    )

    run = run_pipeline(project, job_bin, variables)

    assert_passed(run, [*CHECKS, f"{MODEL}:report"])
    assert len(gitlab_api.notes[int(MR_IID)]) == 1  # the token was there and was used
    assert not log.exists(), log.read_text("utf-8")
    report_log = run.log(f"{MODEL}:report")
    assert "$ python -I -m ci_mlops report " in report_log
    assert GITLAB_TOKEN not in report_log
    # The files were in the report job's folder, live: the interpreter the job used to
    # run, started the old way (`python -m`, the folder on sys.path), runs them.
    workspace = project.state() / "builds" / safe_job_name(f"{MODEL}:report")
    assert (workspace / "pip" / "__init__.py").is_file()
    for module in ("pip", "ci_mlops"):
        subprocess.run(
            [str(job_bin / "python"), "-m", module, "--version"],
            cwd=workspace,
            env={**job_env(job_bin), "GITLAB_TOKEN": GITLAB_TOKEN, "CI_JOB_NAME": "control"},
            capture_output=True,
            check=False,
        )
    assert log.read_text("utf-8").split() == [
        "pip/__init__.py", "control", "token=True",
        "pip/__main__.py", "control", "token=True",
        "ci_mlops/__init__.py", "control", "token=True",
        "ci_mlops/__main__.py", "control", "token=True",
    ]  # fmt: skip


def test_a_docs_only_push_runs_no_model_job(tmp_path: Path, job_bin: Path) -> None:
    project = make_project(MODEL, tmp_path)
    project.commit("README.md", "# How to use the model\n", "document the model")

    run = run_pipeline(project, job_bin, {"CI_PIPELINE_SOURCE": "push"})

    assert run.code == 0, run.explain()
    assert "pipeline finished" in run.output, run.explain()  # it ran, and ran nothing
    assert run.jobs == {}, run.explain()
    assert not (project.state() / "artifacts").exists() or not any(
        (project.state() / "artifacts").iterdir()
    )


def test_unchanged_model_inputs_reuse_the_cached_model(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab, record_property: Any
) -> None:
    project = make_project(MODEL, tmp_path)
    project.commit("train.py", "# tuned\n", "tune the model")
    variables = ci_variables(gitlab_api)
    first = run_pipeline(project, job_bin, variables)
    assert_passed(first, [*CHECKS, f"{MODEL}:deploy-staging"])
    trained = project.artifact_json(f"{MODEL}:train", "train.json")

    # The push landed; the next one changes only how the model is judged, so the spec
    # changes (the model's jobs and the pipeline check run) but not what training uses.
    project.push()
    project.edit_spec(lambda d: d["models"][0]["metrics"]["precision"].update(min=0.5))
    project.commit("mlops.yaml", "", "require precision")
    second = run_pipeline(project, job_bin, variables)

    assert_passed(second, ["ci-mlops:validate", *CHECKS, f"{MODEL}:deploy-staging"])
    cached = project.artifact_json(f"{MODEL}:train", "train.json")
    assert cached["skipped"] is True
    assert cached["model_sha256"] == trained["model_sha256"]
    assert cached["input_hash"] == trained["input_hash"]
    assert "using the cached model" in second.log(f"{MODEL}:train")
    metrics = project.artifact_json(f"{MODEL}:evaluate", "metrics.json")
    assert metrics["model_sha256"] == trained["model_sha256"]
    # Timings are recorded, not judged: a loaded machine may make either run slower.
    for label, run in (("first", first), ("cached", second)):
        record_property(f"{label}_pipeline_seconds", round(run.wall_seconds, 2))
        record_property(f"{label}_train_seconds", run.jobs[f"{MODEL}:train"].seconds)


def test_a_retrain_trigger_retrains_although_nothing_changed(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = make_project(MODEL, tmp_path)
    variables = ci_variables(gitlab_api)
    # Fill the model cache: the train job (and the data tests it needs) on this commit.
    seeded = run_pipeline(
        project,
        job_bin,
        {**variables, "CI_PIPELINE_SOURCE": "web"},
        jobs=[f"{MODEL}:train"],
        extra_args=["--needs"],
    )
    assert seeded.code == 0, seeded.explain()
    before = project.artifact_json(f"{MODEL}:train", "train.json")

    run = run_pipeline(
        project, job_bin, {**variables, "CI_PIPELINE_SOURCE": "trigger", "MLOPS_RETRAIN": MODEL}
    )

    assert_passed(run, [*CHECKS, f"{MODEL}:deploy-staging"])
    after = project.artifact_json(f"{MODEL}:train", "train.json")
    assert after["input_hash"] == before["input_hash"]  # nothing changed...
    assert after["skipped"] is False  # ...and it trained anyway
    assert after["trained_at"] != before["trained_at"]
    log = run.log(f"{MODEL}:train")
    assert "trained in" in log and "using the cached model" not in log
    assert environment(gitlab_api, "staging") is not None


def test_a_failing_gate_stops_the_pipeline_before_any_deploy(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    def cripple(spec: dict[str, Any]) -> None:
        spec["models"][0]["train"]["params"]["C"] = 0.000001

    project = make_project(MODEL, tmp_path, change=cripple)
    project.commit("train.py", "# tuned\n", "tune the model")

    run = run_pipeline(project, job_bin, ci_variables(gitlab_api))

    assert run.code != 0, run.explain()
    assert run.jobs[f"{MODEL}:evaluate"].status == "FAIL", run.explain()
    assert f"{MODEL}:deploy-staging" not in run.jobs
    gates = project.artifact_json(f"{MODEL}:evaluate", "gates.json")  # kept: when always
    assert gates["passed"] is False
    assert any(c["metric"] == "accuracy" and not c["passed"] for c in gates["checks"])
    assert gitlab_api.packages == {}
    assert not gitlab_api.calls("package_put")


def include_locally(project: Project) -> str:
    """Point the generated include at the component in this very repository.

    gitlab-ci-local resolves ``component: <host>/<group>/<project>/<name>@<ref>`` from the
    working tree only when group/project is the repository's own origin and ref is the
    commit being run; any other component it fetches with ``git ls-remote``/``archive``
    from the host, which these runs must not reach. So the project carries a copy of
    ``templates/`` (as the ci-mlops repository does) and the include names its own path
    and commit instead of ``ci-mlops/ci-mlops`` at a release. Everything else, the inputs
    and their interpolation into the component's jobs, is what GitLab would read.
    """
    ci_file = project.path / ".gitlab-ci.yml"
    released = "$CI_SERVER_FQDN/ci-mlops/ci-mlops/pipeline@0.1.0"
    text = ci_file.read_text("utf-8")
    assert released in text, text
    ours = f"$CI_SERVER_FQDN/ci-mlops/demo/pipeline@{project.head()}"  # origin: FAKE_ORIGIN
    ci_file.write_text(text.replace(released, ours), "utf-8")
    # Left uncommitted (committing would change the commit it names); git is told to
    # ignore the edit so that `rules:changes` sees only what the pushed commits changed.
    git(project.path, "update-index", "--assume-unchanged", ".gitlab-ci.yml")
    return ours


def locked_wheel(project: Project, folder: Path) -> str:
    """A wheel of this working tree, and the per-job locks of :func:`commit_locks` that
    pin it. Returns the wheel's URL."""
    wheel = tree_wheel(folder)
    commit_locks(project, wheel)
    return wheel.as_uri()


def test_include_mode_runs_the_same_jobs_with_the_same_result(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    """The same pipeline inline (pip, runtime.install) and through the released
    component with uv and a folder of per-job locks: the component's shell lines pick
    uv and each job's lock from its inputs at run time."""
    inline = make_project(MODEL, tmp_path / "inline")
    included = make_project(
        MODEL,
        tmp_path / "include",
        change=lambda d: d["runtime"].update(installer="uv", lock="locks/"),
    )
    wheel = locked_wheel(included, tmp_path / "wheel")
    included.generate("--mode", "include")
    shutil.copytree(REPO / "templates", included.path / "templates")
    included.commit("templates/README.md", "CI/CD components\n", "include the pipeline component")
    included.push()
    for project in (inline, included):
        project.commit("train.py", "# tuned\n", "tune the model")
    include_locally(included)  # after the last commit: the include names it
    uv_bin = make_uv_job_python(tmp_path / "uv-python")
    other_api = start_gitlab()
    try:
        runs = [
            run_pipeline(inline, job_bin, ci_variables(gitlab_api)),
            run_pipeline(
                included,
                uv_bin,
                ci_variables(other_api),
                # The component passes its `tags` input (default []) to every job. GitLab
                # runs `tags: []` as an untagged job, but the pipeline editor's schema,
                # which gitlab-ci-local validates against, wants at least one tag
                # (gitlab-org/gitlab#551088). Only that rule is waived.
                extra_args=["--ignore-schema-paths", "#/definitions/tags/minItems"],
                env=UV_ENV,
            ),
        ]
    finally:
        other_api.stop()

    expected = [*CHECKS, f"{MODEL}:deploy-staging"]
    for run in runs:
        assert_passed(run, expected)
    assert "component" not in (inline.path / ".gitlab-ci.yml").read_text("utf-8")
    evaluated = [p.artifact_json(f"{MODEL}:evaluate", "metrics.json") for p in (inline, included)]
    assert evaluated[0]["metrics"] == evaluated[1]["metrics"]
    trained = [p.artifact_json(f"{MODEL}:train", "train.json") for p in (inline, included)]
    assert trained[0]["input_hash"] == trained[1]["input_hash"]
    assert all(
        p.artifact_json(f"{MODEL}:evaluate", "gates.json")["passed"] for p in (inline, included)
    )
    # The inline jobs installed the project's requirements with ci-mlops...
    assert "(from -r requirements.txt" in runs[0].log(f"{MODEL}:train")
    # ...the included ones are the component's: uv installed in every job (the jobs
    # share one python here, so after the first it finds ci-mlops there), and what it
    # installed is the wheel only the lock names, by hash (the install input names this
    # working tree's folder)...
    for job in expected:
        log = runs[1].log(job)
        assert 'echo "$MLOPS_INSTALL"' in log and '$ if [ "$MLOPS_INSTALLER" = uv ]' in log, job
        assert "Using Python 3.11" in log, job  # uv's line ran, not pip's
    first = runs[1].log(f"{MODEL}:data-test")
    assert f"+ ci-mlops==0.1.0 (from {wheel})" in first, first[-3000:]
    # ...and every job ran the same ci-mlops command lines as the inline ones.
    for job in expected:
        ours, theirs = (r.log(job) for r in runs)
        assert _commands(ours) == _commands(theirs), job
    assert environment(gitlab_api, "staging") is not None


def _commands(log: str) -> list[str]:
    """The ci-mlops command lines a job log shows."""
    return [
        line
        for line in log.splitlines()
        if line.startswith(tuple(f"$ {call}" for call in CI_MLOPS_CALLS))
    ]


def test_uv_jobs_fill_the_installer_cache_and_the_next_pipeline_restores_it(
    tmp_path: Path, gitlab_api: FakeGitLab
) -> None:
    """runtime.installer: uv. Every job installs through uv (pip is not started: the
    jobs' Python holds the pinned uv already), uv's cache lands in the GitLab cache (no
    "no matching files" warning), and the next pipeline restores it."""
    job_bin = make_uv_job_python(tmp_path / "uv-python")
    project = make_project(
        MODEL, tmp_path / "project", change=lambda d: d["runtime"].update(installer="uv")
    )
    project.commit("train.py", "# tuned\n", "tune the model")
    variables = ci_variables(gitlab_api)
    jobs = [*CHECKS, f"{MODEL}:deploy-staging"]

    first = run_pipeline(project, job_bin, variables, env=UV_ENV)
    assert_passed(first, jobs)
    second = run_pipeline(project, job_bin, variables, env=UV_ENV)
    assert_passed(second, jobs)

    for job in jobs:
        log = first.log(job)
        assert f"$ {UV_PRESENT} || python -I -m pip install {UV_REQUIREMENT}" in log
        assert "Requirement already satisfied: uv" not in log
        assert '$ python -I -m uv pip install --no-config --python "$(command -v python)"' in log
    for run in (first, second):
        assert "no matching files" not in run.output, run.explain()
    (kept,) = project.state().glob("cache/*uv-3.11-*")
    assert any((kept / ".cache" / "uv").iterdir())
    # The first job of the first pipeline starts cold; the next pipeline's starts warm.
    assert f"{MODEL}:data-test imported cache" not in first.output
    assert f"{MODEL}:data-test imported cache '" in second.output
