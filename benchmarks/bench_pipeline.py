"""Generated GitLab pipelines run for real by gitlab-ci-local (shell executor) on each
example: the default-branch pipeline of a code change with empty caches, the same
pipeline again with warm caches (the cached model skips training), and a docs-only
push. Per job: wall time, split into installing (``before_script``, until the job's
first ``ci-mlops`` line) and working (the ``ci-mlops`` step).

Jobs install ci-mlops from this working tree into one virtualenv that already holds
every dependency (see tests/e2e/harness.py), so "install" here is pip's own overhead
and the build of ci-mlops, not downloads: on a fresh runner image the downloads come on
top, once per cache key.

Run: .venv/bin/python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import (  # noqa: E402
    PipelineRun,
    make_job_python,
    make_project,
    run_pipeline,
    signing_variables,
)
from tests.fakes.env import start_gitlab  # noqa: E402

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


def share(part: float | None, total: float) -> str:
    return "n/a" if part is None or total <= 0 else f"{part / total:.0%}"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        job_bin = make_job_python(Path(tmp) / "job-python")
        for example in EXAMPLES:
            results[example] = bench(example, Path(tmp) / example, job_bin)

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


if __name__ == "__main__":
    main()
