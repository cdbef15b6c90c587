"""A gate's ``override_label``: the merge/pull request's labels, read by the GitLab and
GitHub platforms from where each CI puts them, let a failed importance gate pass as
overridden; evaluate, its JUnit report and the posted comment say so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.platforms import detect
from ci_mlops.spec.model import Spec
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.steps.trained import clone, invoke, read_json, trained_example, workdir

pytestmark = pytest.mark.slow

LABEL = "importance-change-approved"
OVERRIDDEN = f"[overridden by label {LABEL}]"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example, trained once, with an importance gate that the
    baseline below fails: its most important feature is one the data does not have."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("trained"))
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0]["evaluate"] = {
        "bootstrap": {"samples": 0},
        "importance": {
            "repeats": 1,
            "stable_top_feature": True,
            "override_label": LABEL,
        },
    }
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    baseline = {"model": "breast-cancer", "metrics": {}, "importance": {"ranking": ["planted"]}}
    (folder / "baseline.json").write_text(json.dumps(baseline), "utf-8")
    return folder


def _evaluate(folder: Path) -> Any:
    return invoke(folder, "evaluate", "--baseline", str(folder / "baseline.json"))


def _importance_check(folder: Path) -> dict[str, Any]:
    gates = read_json(workdir(folder) / "gates.json")
    (check,) = [c for c in gates["checks"] if c["metric"] == "importance"]
    return check


def _github_event(env: dict[str, str], labels: list[str]) -> None:
    path = Path(env["GITHUB_EVENT_PATH"])
    event = json.loads(path.read_text("utf-8"))
    event["pull_request"]["labels"] = [{"id": i, "name": n} for i, n in enumerate(labels)]
    path.write_text(json.dumps(event), "utf-8")


# -- where each platform reads the labels --------------------------------------------


def test_gitlab_reads_the_merge_request_labels_variable(
    spec: Spec, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert detect(spec).request_labels() == frozenset()
    monkeypatch.setenv("CI_MERGE_REQUEST_LABELS", f"bug,{LABEL}, needs review")
    assert detect(spec).request_labels() == {"bug", LABEL, "needs review"}


def test_github_reads_the_pull_request_labels_from_the_event(
    spec: Spec, github_env: dict[str, str]
) -> None:
    assert detect(spec).request_labels() == frozenset()
    _github_event(github_env, ["bug", LABEL])
    assert detect(spec).request_labels() == {"bug", LABEL}


def test_a_laptop_has_no_request_and_no_labels(spec: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_MERGE_REQUEST_LABELS", LABEL)  # not a GitLab job: ignored
    assert detect(spec, "local").request_labels() == frozenset()


# -- evaluate and report -------------------------------------------------------------


def test_gitlab_without_the_label_the_importance_gate_fails(
    trained: Path, tmp_path: Path, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = clone(trained, tmp_path)
    monkeypatch.setenv("CI_MERGE_REQUEST_LABELS", "bug")
    result = _evaluate(folder)
    assert result.code == 1, result.output
    check = _importance_check(folder)
    assert not check["passed"] and check["overridden"] is None
    assert "is now" in check["message"] and "not planted" in check["message"]


def test_gitlab_with_the_label_the_failed_gate_is_overridden_and_reported(
    trained: Path,
    tmp_path: Path,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = clone(trained, tmp_path)
    monkeypatch.setenv("CI_MERGE_REQUEST_LABELS", f"bug,{LABEL}")
    result = _evaluate(folder)
    assert result.code == 0, result.output
    check = _importance_check(folder)
    assert check["passed"] and check["overridden"] == LABEL
    assert check["message"].endswith(OVERRIDDEN)
    assert "overridden by label" in result.output  # the table's verdict line
    junit = (workdir(folder) / "evaluate.junit.xml").read_text("utf-8")
    assert f'name="overridden_by_label" value="{LABEL}"' in junit
    assert "<failure" not in junit

    assert invoke(folder, "report").code == 0
    (note,) = gitlab_api.notes[7]
    body = note["body"]
    assert "(1 overridden by label)" in body
    assert "- 🏷️ importance: the most important feature is now" in body
    assert "overridden by label importance-change-approved\\]" in body  # escaped bracket


def test_github_with_the_label_in_the_event_the_gate_is_overridden(
    trained: Path,
    tmp_path: Path,
    github_api: FakeGitHub,
    github_env: dict[str, str],
) -> None:
    folder = clone(trained, tmp_path)
    _github_event(github_env, [LABEL])
    result = _evaluate(folder)
    assert result.code == 0, result.output
    check = _importance_check(folder)
    assert check["overridden"] == LABEL

    assert invoke(folder, "report").code == 0
    (comment,) = github_api.comments[5]
    assert "(1 overridden by label)" in str(comment["body"])
    (run,) = github_api.check_runs
    annotations = run["output"]["annotations"]
    assert [a["annotation_level"] for a in annotations] == ["warning"]
    assert annotations[0]["message"].endswith(OVERRIDDEN)


def test_github_without_labels_the_gate_fails(
    trained: Path, tmp_path: Path, github_env: dict[str, str]
) -> None:
    folder = clone(trained, tmp_path)
    result = _evaluate(folder)
    assert result.code == 1, result.output
    assert _importance_check(folder)["overridden"] is None


def test_a_metric_gate_overridden_on_gitlab_shows_the_label_in_the_metrics_table(
    trained: Path,
    tmp_path: Path,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = clone(trained, tmp_path)
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0]["metrics"]["accuracy"] = {"min": 0.999, "override_label": "accuracy-ok"}
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    monkeypatch.setenv("CI_MERGE_REQUEST_LABELS", f"accuracy-ok,{LABEL}")

    result = _evaluate(folder)
    assert result.code == 0, result.output
    assert "OVERRIDDEN min" in result.output  # the accuracy row of the table
    assert invoke(folder, "report").code == 0
    (note,) = gitlab_api.notes[7]
    row = next(line for line in note["body"].splitlines() if line.startswith("| accuracy |"))
    assert row.endswith("🏷️ min 0.999 (overridden by label `accuracy-ok`) |")
    assert "(2 overridden by label)" in note["body"]
