"""Faults between ci-mlops and the platforms, reproduced against the fake servers with the
real python-gitlab and PyGithub clients, and against a tampered local registry: a note
GitLab stored before answering 502, Retry-After: 3600, tokens in long server messages,
fork merge and pull requests, baselines behind many runs or expired, environment
records and baseline values that were edited by hand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ci_mlops.errors import PlatformError, StepError
from ci_mlops.platforms import MissingBaseline
from ci_mlops.platforms.github import GitHubPlatform
from ci_mlops.platforms.gitlab import GitLabPlatform
from ci_mlops.platforms.remote import api_error
from ci_mlops.registries.github_releases import GitHubReleases
from ci_mlops.registries.gitlab_packages import GitLabPackages
from ci_mlops.registries.local import LocalRegistry
from ci_mlops.spec.model import Spec
from ci_mlops.steps.evaluate import read_baseline_file
from ci_mlops.steps.gates import apply_gates
from tests.fakes.env import GITLAB_TOKEN
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab

METRICS = {"metrics": {"accuracy": 0.951, "f1": 0.96}}


def finishes_within(seconds: float, action: Callable[[], Any]) -> Any:
    """Run ``action`` in a thread; fail the test (not hang it) when it sleeps longer."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    assert time.monotonic() - started < seconds
    return outcome.get("value")


# -- GitLab ----------------------------------------------------------------------------


def test_a_502_after_gitlab_stored_the_note_posts_no_second_note(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    gitlab_api.fail_after("create_note", 502)

    where = GitLabPlatform(spec).post_report(spec.models[0], "report\n", [])

    (note,) = gitlab_api.notes[7]
    assert where is not None and where.endswith(f"#note_{note['id']}")
    assert len(gitlab_api.calls("create_note")) == 1


def test_gitlab_retry_after_is_capped(
    spec: Spec,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_RETRY_AFTER_MAX", "1")
    gitlab_api.fail("list_notes", 429, 503, retry_after=3600)

    finishes_within(20, lambda: GitLabPlatform(spec).post_report(spec.models[0], "r\n", []))

    assert len(gitlab_api.calls("list_notes")) == 3 and len(gitlab_api.notes[7]) == 1


def test_gitlab_retry_after_as_an_http_date_does_not_crash(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    gitlab_api.fail("list_notes", 429)
    gitlab_api._faults["list_notes"][0][1]["Retry-After"] = "Wed, 21 Oct 2015 07:28:00 GMT"

    finishes_within(20, lambda: GitLabPlatform(spec).post_report(spec.models[0], "r\n", []))

    assert len(gitlab_api.notes[7]) == 1


def test_a_fork_merge_request_comments_on_and_reads_the_target_project(
    spec: Spec, gitlab_api: FakeGitLab, monkeypatch: pytest.MonkeyPatch, gitlab_env: dict[str, str]
) -> None:
    monkeypatch.setenv("CI_PROJECT_ID", "99")  # the fork, where the pipeline runs
    monkeypatch.setenv("CI_MERGE_REQUEST_PROJECT_ID", gitlab_api.project_id)
    gitlab_api.artifacts[("main", "breast-cancer:evaluate")] = {
        ".ci-mlops/breast-cancer/metrics.json": json.dumps(METRICS).encode()
    }
    platform = GitLabPlatform(spec)

    baseline = platform.fetch_baseline(spec.models[0])
    platform.post_report(spec.models[0], "report\n", [])

    assert baseline is not None and not isinstance(baseline, MissingBaseline)
    assert baseline.metrics == METRICS["metrics"]
    assert len(gitlab_api.notes[7]) == 1
    assert all(r.params.get("project") == "42" for r in gitlab_api.requests if r.params)


def test_tokens_are_masked_before_a_long_server_message_is_cut() -> None:
    message = "x" * 140 + f" token={GITLAB_TOKEN} rejected"  # the cut falls inside it
    error = api_error("POST /x", 403, "hint", server_message=message, secrets=[GITLAB_TOKEN])
    assert GITLAB_TOKEN[:6] not in str(error)
    assert "***" in str(error) or "…" in str(error)


# -- GitHub ----------------------------------------------------------------------------


def fork_event(path: Path, repository: str) -> None:
    event = json.loads(path.read_text())
    event["pull_request"] = {
        "number": 5,
        "head": {"repo": {"full_name": "mallory/models"}},
        "base": {"repo": {"full_name": repository}},
    }
    path.write_text(json.dumps(event))


def test_a_fork_pull_request_warns_and_leaves_the_report_in_the_summary(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fork_event(Path(github_env["GITHUB_EVENT_PATH"]), github_env["GITHUB_REPOSITORY"])
    platform = GitHubPlatform(spec)

    assert platform.post_report(spec.models[0], "the report\n", []) is None
    platform.job_summary("the report\n")

    assert github_api.calls("create_comment") == [] and github_api.calls("list_comments") == []
    assert "comes from a fork" in capsys.readouterr().err
    assert "the report" in Path(github_env["GITHUB_STEP_SUMMARY"]).read_text()


def test_github_retry_after_is_capped(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_RETRY_AFTER_MAX", "1")
    github_api.fail("list_comments", 503, retry_after=3600)

    finishes_within(20, lambda: GitHubPlatform(spec).post_report(spec.models[0], "r\n", []))

    assert len(github_api.calls("list_comments")) == 2 and len(github_api.comments[5]) == 1


def test_a_baseline_behind_many_scheduled_runs_is_found(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    run = github_api.add_run(event="workflow_dispatch")
    github_api.add_artifact(
        run, "breast-cancer-evaluate", {"metrics.json": json.dumps(METRICS).encode()}
    )
    for _ in range(30):  # nightly drift checks: successful, no evaluate artifact
        github_api.add_run(event="schedule")
    for _ in range(130):  # pull-request runs evaluate too, on their own branches
        pull = github_api.add_run(branch="feature", event="pull_request")
        github_api.add_artifact(pull, "breast-cancer-evaluate", {"metrics.json": b"{}"})
    fork = github_api.add_run(event="pull_request")  # a fork's branch named main
    github_api.add_artifact(
        fork, "breast-cancer-evaluate", {"metrics.json": b'{"metrics": {"accuracy": 0.1}}'}
    )

    baseline = GitHubPlatform(spec).fetch_baseline(spec.models[0])

    assert baseline is not None and not isinstance(baseline, MissingBaseline)
    assert baseline.metrics == METRICS["metrics"]
    pages = [r.query.get("page", "1") for r in github_api.calls("repo_artifacts")]
    assert pages == ["1", "2"]  # paged past the pull requests' 130 artifacts
    assert len(github_api.calls("run")) == 2  # runs fetched: the fork's and the baseline's


def test_an_expired_baseline_fails_change_gates_whatever_if_missing_says(spec: Spec) -> None:
    model = spec.models[0]
    values = {gate.metric: 0.96 for gate in model.gates}
    missing = "expired: the breast-cancer-evaluate artifact of run #3 on main has expired"
    first = apply_gates(model.gates, values, None, "pass")
    gone = apply_gates(model.gates, values, None, "pass", missing)

    def change(checks: list[Any]) -> list[Any]:
        return [c for c in checks if c.rule in ("max_drop", "max_relative_drop")]

    assert change(first.checks) and all(c.passed for c in change(first.checks))
    assert all(not c.passed and missing in c.message for c in change(gone.checks))
    bounds = [(c.rule, c.passed) for c in gone.checks if c.rule in ("min", "max")]
    assert bounds == [(c.rule, c.passed) for c in first.checks if c.rule in ("min", "max")]


# -- hand-edited records -------------------------------------------------------------


def registry_with_two_versions(spec: Spec) -> LocalRegistry:
    registry = LocalRegistry(spec)
    model = spec.models[0]
    source = spec.workdir(model)
    source.mkdir(parents=True, exist_ok=True)
    (source / model.model_file).write_bytes(b"model")
    (source / "metrics.json").write_text(json.dumps(METRICS))
    files = {model.model_file: source / model.model_file, "metrics.json": source / "metrics.json"}
    for _ in range(2):
        published = registry.publish(model, "1.0.0", files)
        registry.promote(model, "staging", published.version)
    return registry


def test_a_string_previous_field_is_refused_not_split(spec: Spec) -> None:
    registry = registry_with_two_versions(spec)
    model = spec.models[0]
    pointer = registry.folder(model).pointer_file(model.name, "staging")
    record = json.loads(pointer.read_text())
    record["previous"] = "1.0.0+1"  # edited by hand: a string, not a list
    pointer.write_text(json.dumps(record))

    with pytest.raises(PlatformError, match=r"staging\.json: previous: expected a list"):
        registry.rollback(model, "staging")


@pytest.mark.parametrize(
    "manifest",
    [[], {"files": {"model.joblib": "0" * 64}}, {"files": {"model.joblib": {"size": 1}}}],
    ids=["a-list", "entry-a-string", "no-sha256"],
)
def test_a_tampered_manifest_is_one_error(spec: Spec, manifest: Any) -> None:
    registry = registry_with_two_versions(spec)
    model = spec.models[0]
    path = registry.folder(model).version_dir(model.name, "1.0.0+2") / "manifest.json"
    path.write_text(json.dumps(manifest))

    with pytest.raises(PlatformError, match="manifest"):
        registry.verify(model, "1.0.0+2")


@pytest.mark.parametrize("value", ['"NaN"', '"-inf"', "NaN", "-Infinity", "true", '"0.9"'])
def test_non_numbers_are_not_baseline_values(spec: Spec, value: str) -> None:
    registry = registry_with_two_versions(spec)
    model = spec.models[0]
    stored = registry.folder(model).version_dir(model.name, "1.0.0+2") / "metrics.json"
    raw = '{"metrics": {"accuracy": ' + value + "}}"
    stored.write_text(raw)
    with pytest.raises(PlatformError, match=r"metrics\.accuracy: expected a finite number"):
        registry.baseline(model)

    given = spec.root / "baseline.json"
    given.write_text(raw)
    with pytest.raises(StepError, match=r"metrics\.accuracy: expected a (finite )?number"):
        read_baseline_file(given, model)


def test_github_payload_history_must_be_a_list(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    registry = GitHubReleases(spec)
    model = spec.models[0]
    github_api.deployments.append(
        {
            "id": 1,
            "task": f"deploy:{model.name}",
            "environment": "staging",
            "payload": {"version": "1.0.0-run.3", "history": "1.0.0-run.2"},
            "ref": "x",
            "sha": "0" * 40,
            "created_at": "2026-01-01T00:00:00Z",
            "url": f"{github_api.repo_api}/deployments/1",
            "statuses_url": f"{github_api.repo_api}/deployments/1/statuses",
        }
    )
    with pytest.raises(PlatformError, match=r"payload\.history: expected a list"):
        registry.rollback(model, "staging")


def test_a_502_after_github_stored_the_comment_posts_no_second_comment(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    github_api.fail_after("create_comment", 502)

    where = GitHubPlatform(spec).post_report(spec.models[0], "report\n", [])

    (comment,) = github_api.comments[5]
    assert where == comment["html_url"]
    assert len(github_api.calls("create_comment")) == 1


def test_a_gitlab_environment_history_must_be_a_list(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    record = {"version": "1.0.0-pipeline.3", "history": "1.0.0-pipeline.2"}
    gitlab_api.packages[("breast-cancer-environments", "0.0.0")] = [
        ("staging.json", json.dumps(record).encode())
    ]
    with pytest.raises(PlatformError, match=r"staging\.json: history: expected a list"):
        GitLabPackages(spec).rollback(spec.models[0], "staging")
