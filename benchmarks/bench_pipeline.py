"""Generated GitLab pipelines run for real by gitlab-ci-local (shell executor) on each
example: the default-branch pipeline of a code change with empty caches, the same
pipeline again with warm caches (the cached model skips training), and a docs-only
push. Per job: wall time, split into installing (``before_script``, until the job's
first ``ci-mlops`` line) and working (the ``ci-mlops`` step).

Generated GitHub workflows run for real by act in host mode (tests/e2e/act_harness.py),
per scenario of tests/e2e/test_github_workflows.py: *cold* is the scenario's first run
in a new repository (empty artifact and cache servers, an empty pip cache, act copying
the actions), *warm* the same event again in that repository.

Jobs install ci-mlops from this working tree into one virtualenv that already holds
every dependency (see tests/e2e/harness.py), so "install" here is pip's own overhead
and the build of ci-mlops, not downloads: on a fresh runner image the downloads come on
top, once per cache key.

Run: .venv/bin/python benchmarks/bench_pipeline.py [gitlab] [github] [github-jobs]
(``github-jobs``: where the time of a GitHub push run goes, job by job and step by step)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.act_harness import (  # noqa: E402
    CRON,
    ActTools,
    GitHubRepository,
    WorkflowRun,
    make_act_tools,
    new_repository,
    pr_event,
    push_event,
    shift_current_data,
    step_seconds,
)
from tests.e2e.harness import (  # noqa: E402
    PipelineRun,
    make_job_python,
    make_project,
    run_pipeline,
    signing_variables,
)
from tests.fakes.env import GITLAB_TOKEN, start_github, start_gitlab  # noqa: E402

EXAMPLES = ("breast-cancer", "diabetes")


def variables(origin: str, project_id: str, job_token: str) -> dict[str, str]:
    return {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{origin}/api/v4",
        "CI_PROJECT_ID": project_id,
        "CI_JOB_TOKEN": job_token,
        "CI_PIPELINE_SOURCE": "push",
        **signing_variables("push"),  # deploys sign with a key pair: no Sigstore offline
    }


def checked(run: PipelineRun) -> PipelineRun:
    if run.code != 0 or run.failed():
        raise SystemExit(f"pipeline failed:\n{run.explain()}")
    return run


def bench(example: str, tmp: Path, job_bin: Path) -> tuple[PipelineRun, PipelineRun, PipelineRun]:
    api = start_gitlab()
    try:
        project = make_project(example, tmp)
        train_script = "train.py"
        project.commit(train_script, "# tuned\n", "tune the model")
        ci = variables(api.origin, api.project_id, api.job_token)
        cold = checked(run_pipeline(project, job_bin, ci))
        warm = checked(run_pipeline(project, job_bin, ci))
        project.push()
        project.commit("README.md", "# Notes\n", "document")
        docs = checked(run_pipeline(project, job_bin, ci))
        return cold, warm, docs
    finally:
        api.stop()


def gitlab_scenarios(tmp: Path, job_bin: Path) -> dict[str, tuple[PipelineRun, PipelineRun]]:
    """The GitLab counterparts of the GitHub scenarios: (cold run, warm run) each."""
    api = start_gitlab()
    try:
        push = variables(api.origin, api.project_id, api.job_token)

        def twice(
            name: str, ci: dict[str, str], change: Any = None, *, fails: bool = False
        ) -> tuple[PipelineRun, PipelineRun]:
            project = make_project("breast-cancer", tmp / name, change=change)
            project.commit("train.py", "# tuned\n", "tune the model")
            runs = [run_pipeline(project, job_bin, ci) for _ in range(2)]
            for run in runs:
                if (run.code != 0) != fails:
                    raise SystemExit(f"pipeline did not end as expected:\n{run.explain()}")
            return runs[0], runs[1]

        mr = {
            **push,
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_IID": "7",
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
            "GITLAB_TOKEN": GITLAB_TOKEN,
        }
        retrain = {**push, "CI_PIPELINE_SOURCE": "trigger", "MLOPS_RETRAIN": "breast-cancer"}
        return {
            "merge request: checks and the report note": twice("mr", mr),
            "retrain through a trigger": twice("retrain", retrain),
            "failing gate: stops before deploy": twice("gate", push, _cripple, fails=True),
        }
    finally:
        api.stop()


def share(part: float | None, total: float) -> str:
    return "n/a" if part is None or total <= 0 else f"{part / total:.0%}"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def main() -> None:
    platforms = sys.argv[1:] or ["gitlab", "github"]
    if "gitlab" in platforms:
        gitlab()
    if "github" in platforms:
        github()
    if "github-jobs" in platforms:
        github_jobs()


def gitlab() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        job_bin = make_job_python(Path(tmp) / "job-python")
        for example in EXAMPLES:
            results[example] = bench(example, Path(tmp) / example, job_bin)
        scenarios = gitlab_scenarios(Path(tmp) / "scenarios", job_bin)

    print("| example | pipeline, cold caches | same pipeline, warm caches | docs-only push |")
    print("|---|---:|---:|---:|")
    for example, (cold, warm, docs) in results.items():
        print(
            f"| {example} | {cold.wall_seconds:.1f} s ({len(cold.jobs)} jobs) "
            f"| {warm.wall_seconds:.1f} s | {docs.wall_seconds:.1f} s ({len(docs.jobs)} jobs) |"
        )
    print()
    print(
        "| example | job | cold: total | install | work | install share | warm: total | install | work |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for example, (cold, warm, _) in results.items():
        for name, job in cold.jobs.items():
            again = warm.jobs.get(name)
            print(
                f"| {example} | `{name.split(':', 1)[1]}` | {job.seconds:.1f} s "
                f"| {seconds(job.install_seconds)} | {seconds(job.script_seconds)} "
                f"| {share(job.install_seconds, job.seconds)} "
                f"| {seconds(again.seconds if again else None)} "
                f"| {seconds(again.install_seconds if again else None)} "
                f"| {seconds(again.script_seconds if again else None)} |"
            )
        install = sum(j.install_seconds or 0 for j in cold.jobs.values())
        total = sum(j.seconds for j in cold.jobs.values())
        print(
            f"| {example} | **all jobs** | {total:.1f} s | {install:.1f} s | "
            f"{total - install:.1f} s | {share(install, total)} | | | |"
        )
    print()
    print("| scenario (breast-cancer) | jobs | GitLab (gitlab-ci-local), cold | warm |")
    print("|---|---:|---:|---:|")
    for name, (cold, warm) in scenarios.items():
        print(
            f"| {name} | {len(cold.jobs)} | {cold.wall_seconds:.1f} s | {warm.wall_seconds:.1f} s |"
        )


# --- GitHub, with act -----------------------------------------------------------------


def ran(run: WorkflowRun, *, fails: bool = False) -> WorkflowRun:
    if (run.code != 0) != fails or (run.failed() != []) != fails:
        raise SystemExit(f"workflow run {run.run_id} did not end as expected:\n{run.explain()}")
    return run


def _cripple(spec: dict[str, Any]) -> None:
    spec["models"][0]["train"]["params"]["C"] = 0.000001


def _no_onnx(spec: dict[str, Any]) -> None:
    spec["models"][0]["export"] = {"onnx": False}


def _twice(
    repository: GitHubRepository, event_name: str, event: dict[str, Any], *, fails: bool = False
) -> tuple[WorkflowRun, WorkflowRun]:
    cold = ran(repository.run(event_name, event), fails=fails)
    warm = ran(repository.run(event_name, event), fails=fails)
    return cold, warm


def github_scenarios(tmp: Path, tools: ActTools) -> dict[str, tuple[WorkflowRun, WorkflowRun]]:
    """Scenario -> (cold run, warm run); each scenario in a repository of its own."""
    api = start_github()
    try:
        results: dict[str, tuple[WorkflowRun, WorkflowRun]] = {}

        def repository(name: str, **options: Any) -> GitHubRepository:
            repo = new_repository(tmp / name, tools, api, **options)
            repo.project.commit("train.py", "# tuned\n", "tune the model")
            return repo

        push = push_event(api)
        results["push to the default branch: checks, staging and production deploys"] = _twice(
            repository("push"), "push", push
        )
        pr = repository("pr")
        pr.project.branch("better-model")
        results["pull request: checks and the report comment"] = _twice(
            pr, "pull_request", pr_event(api, 5)
        )
        dispatch = {**push, "inputs": {"retrain": "breast-cancer"}}
        results["retrain through workflow_dispatch"] = _twice(
            repository("retrain"), "workflow_dispatch", dispatch
        )
        drift = repository("drift")
        shift_current_data(drift.project.path)
        drift.project.commit("data/current.csv", "", "new production data")
        results["schedule: drift check and retrain dispatch"] = _twice(
            drift, "schedule", {**push, "schedule": CRON}
        )
        results["failing gate: stops before deploy"] = _twice(
            repository("gate", change=_cripple), "push", push, fails=True
        )
        included = repository("include", include=True)
        included.project.branch("better-model")
        results["include mode: pull request through the reusable workflow"] = _twice(
            included, "pull_request", pr_event(api, 6)
        )
        results["include mode, ONNX export off: push through deploy"] = _twice(
            repository("no-onnx", include=True, change=_no_onnx), "push", push
        )
        return results
    finally:
        api.stop()


def github() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tools = make_act_tools(Path(tmp) / "act")
        results = github_scenarios(Path(tmp), tools)
    print()
    print("| scenario (breast-cancer) | jobs | GitHub (act), cold | warm |")
    print("|---|---:|---:|---:|")
    for name, (cold, warm) in results.items():
        print(
            f"| {name} | {len(cold.jobs)} | {cold.wall_seconds:.1f} s | {warm.wall_seconds:.1f} s |"
        )


def github_jobs() -> None:
    """Per job of a default-branch push, cold: what its steps took, by kind."""
    with tempfile.TemporaryDirectory() as tmp:
        tools = make_act_tools(Path(tmp) / "act")
        api = start_github()
        try:
            repository = new_repository(Path(tmp) / "push", tools, api)
            repository.project.commit("train.py", "# tuned\n", "tune the model")
            run = ran(repository.run("push", push_event(api)))
        finally:
            api.stop()
    kinds = ("act", "python", "artifacts", "install", "work")
    print()
    print(f"push run, cold: {run.wall_seconds:.1f} s")
    print("| job | " + " | ".join(kinds) + " | steps total |")
    print("|---|" + "---:|" * (len(kinds) + 1))
    totals = dict.fromkeys(kinds, 0.0)
    for job, times in step_seconds(run.output).items():
        for kind in kinds:
            totals[kind] += times.get(kind, 0.0)
        cells = " | ".join(f"{times.get(k, 0.0):.1f} s" for k in kinds)
        print(f"| `{job}` | {cells} | {sum(times.values()):.1f} s |")
    cells = " | ".join(f"{totals[k]:.1f} s" for k in kinds)
    print(f"| all jobs | {cells} | {sum(totals.values()):.1f} s |")


if __name__ == "__main__":
    main()
