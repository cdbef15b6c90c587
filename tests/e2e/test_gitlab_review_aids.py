"""A merge-request pipeline run by gitlab-ci-local with the merge request's labels in
CI_MERGE_REQUEST_LABELS, as GitLab sets them: the importance gate the baseline fails is
overridden by its label, the data-test job's artifacts hold Great Expectations' Data
Docs, and the note links them and names the override."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import make_project, run_pipeline
from tests.e2e.test_gitlab_pipelines import CHECKS, MODEL, MR_IID, assert_passed, ci_variables
from tests.fakes.env import GITLAB_TOKEN
from tests.fakes.gitlab_api import FakeGitLab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABEL = "importance-change-approved"


def _importance_gate(spec: dict[str, Any]) -> None:
    spec["models"][0]["evaluate"] = {
        "bootstrap": {"samples": 0},
        "importance": {"repeats": 1, "stable_top_feature": True, "override_label": LABEL},
    }


def test_a_labelled_merge_request_overrides_the_importance_gate_and_links_data_docs(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project = make_project(MODEL, tmp_path, change=_importance_gate)
    # The default branch's model ranked a feature first that this one does not have.
    gitlab_api.artifacts[("main", f"{MODEL}:evaluate")] = {
        f".ci-mlops/{MODEL}/metrics.json": json.dumps(
            {"model": MODEL, "metrics": {}, "importance": {"ranking": ["planted"]}}
        ).encode()
    }
    project.branch("new-features")
    project.commit("train.py", "# new features\n", "add features")
    variables = ci_variables(
        gitlab_api,
        "merge_request_event",
        CI_MERGE_REQUEST_IID=MR_IID,
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        CI_MERGE_REQUEST_LABELS=f"ml,{LABEL}",
        GITLAB_TOKEN=GITLAB_TOKEN,
    )

    run = run_pipeline(project, job_bin, variables)

    assert_passed(run, [*CHECKS, f"{MODEL}:report"])
    gates = project.artifact_json(f"{MODEL}:evaluate", "gates.json")
    (check,) = [c for c in gates["checks"] if c["metric"] == "importance"]
    assert check["passed"] and check["overridden"] == LABEL
    assert "is now" in check["message"] and "not planted" in check["message"]

    index = project.artifact(f"{MODEL}:data-test", "data-docs/index.html")
    assert f"{MODEL}.train" in index.read_text("utf-8")
    docs = project.artifact_json(f"{MODEL}:data-test", "data-test.json")["data_docs"]
    assert docs["path"] == "data-docs/index.html"
    assert docs["url"].endswith(f"/artifacts/file/.ci-mlops/{MODEL}/data-docs/index.html")

    (note,) = gitlab_api.notes[int(MR_IID)]
    body = note["body"]
    assert f"📄 [Data Docs]({docs['url']})" in body
    assert "(1 overridden by label)" in body
    assert "- 🏷️ importance: the most important feature is now" in body
