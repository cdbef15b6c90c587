"""A generated GitLab pipeline with runtime.job_images, run for real by gitlab-ci-local.
Its shell executor ignores ``image:``, so every job's ``python`` is a virtualenv built
from the job images' locks (the images' contents, with ci-mlops of this working tree as
the Containerfile installs it): the pipeline must pass with install lines that install
nothing, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ci_mlops.spec.model import DEFAULT_INSTALL
from tests.e2e.harness import make_project, run_pipeline
from tests.e2e.test_gitlab_pipelines import CHECKS, MODEL, assert_passed, ci_variables
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import tree_wheel
from tests.images.venvs import image_venv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The images the default branch's jobs run in: data-test, train, evaluate, export, deploy.
IMAGES = ("data-test", "train", "evaluate", "export", "deploy")


def test_a_pipeline_in_job_images_installs_nothing_and_passes(
    tmp_path: Path, gitlab_api: FakeGitLab
) -> None:
    wheel = tree_wheel(tmp_path / "wheel")
    job_bin = image_venv(tmp_path / "image-python", IMAGES, wheel)
    project = make_project(
        MODEL,
        tmp_path / "project",
        install=DEFAULT_INSTALL,
        change=lambda d: d["runtime"].update(job_images="published"),
    )
    project.commit("train.py", "# tuned\n", "tune the model")
    jobs = [*CHECKS, f"{MODEL}:deploy-staging"]

    run = run_pipeline(project, job_bin, ci_variables(gitlab_api), env={"UV_OFFLINE": "1"})

    assert_passed(run, jobs)
    pipeline = (project.path / ".gitlab-ci.yml").read_text("utf-8")
    for name in IMAGES:
        assert f"image: ghcr.io/ci-mlops/ci-mlops-job:0.1.0-py3.11-{name}\n" in pipeline
    for job in jobs:
        log = run.log(job)
        # uv found ci-mlops with the job's extras and the project's requirements...
        assert re.search(r"^(Audited|Checked) \d+ packages? in [\d.]+m?s$", log, re.M), log
        # ...and neither installed nor downloaded anything, nor started pip for uv.
        for word in ("Installed", "Prepared", "Downloading", "Successfully installed"):
            assert word not in log, (job, word)
    assert project.artifact_json(f"{MODEL}:evaluate", "gates.json")["passed"]
