"""GitHubPlatform: the real PyGithub client against a fake GitHub API on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from dataclasses import replace
from pathlib import Path

import pytest

from ci_mlops.errors import CheckFailed, IntegrityError, PlatformError, UsageError
from ci_mlops.platforms import MissingBaseline, detect
from ci_mlops.platforms.github import BODY_LIMIT, GitHubPlatform
from ci_mlops.platforms.remote import marker
from ci_mlops.registries import registry_for
from ci_mlops.registries.github_releases import GitHubReleases
from ci_mlops.spec.model import Spec
from tests.fakes.env import GITHUB_PERSONAL_TOKEN
from tests.fakes.github_api import FakeGitHub
from tests.helpers import publishable_files, report_images

PR = 5
BOT = "github-actions[bot]"
METRICS = {
    "model": "breast-cancer",
    "metrics": {"accuracy": 0.951, "f1": 0.96},
    "importance": {"metric": "f1", "ranking": ["worst_radius", "mean_texture"]},
}


def _platform(spec: Spec) -> GitHubPlatform:
    platform = detect(spec)
    assert isinstance(platform, GitHubPlatform)
    return platform


def _registry(spec: Spec) -> GitHubReleases:
    registry = registry_for(spec, spec.models[0], "github")
    assert isinstance(registry, GitHubReleases)
    return registry


def _comments_by(api: FakeGitHub, login: str) -> list[dict[str, object]]:
    return [c for c in api.comments.get(PR, []) if c["user"]["login"] == login]  # type: ignore[index]


# -- the pull-request comment --------------------------------------------------------


def test_first_report_creates_a_comment_as_the_actions_bot(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    model = spec.models[0]
    where = _platform(spec).post_report(model, "## Verdict: passed\n", [])

    (comment,) = _comments_by(github_api, BOT)
    body = str(comment["body"])
    assert body.splitlines()[0] == marker(model)
    assert "## Verdict: passed" in body
    assert where == comment["html_url"]
    # GET /user answers 403 to a workflow token: the bot's login is the fallback.
    assert [r.route for r in github_api.calls("user")] == ["user"]


def test_three_runs_leave_exactly_one_comment(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    platform = _platform(spec)
    for run in range(3):
        platform.post_report(spec.models[0], f"report of run {run}\n", [])

    (comment,) = _comments_by(github_api, BOT)
    assert "report of run 2" in str(comment["body"])
    assert len(github_api.calls("create_comment")) == 1
    assert len(github_api.calls("edit_comment")) == 2


def test_another_users_comment_quoting_the_marker_is_left_alone(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    quoted = f"{marker(spec.models[0])}\nquoting the bot's report to argue with it"
    github_api.add_comment(PR, "octocat", quoted)
    _platform(spec).post_report(spec.models[0], "fresh report\n", [])
    _platform(spec).post_report(spec.models[0], "second report\n", [])

    assert [c["body"] for c in _comments_by(github_api, "octocat")] == [quoted]
    (comment,) = _comments_by(github_api, BOT)
    assert "second report" in str(comment["body"])


def test_a_comment_on_the_second_page_is_found(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    _platform(spec).post_report(spec.models[0], "first\n", [])
    for number in range(105):  # ci-mlops asks for GitHub's largest page, 100 comments
        github_api.add_comment(PR, "octocat", f"review {number}")
    github_api.comments[PR].append(github_api.comments[PR].pop(0))  # the bot's is now last
    _platform(spec).post_report(spec.models[0], "second\n", [])

    (comment,) = _comments_by(github_api, BOT)
    assert "second" in str(comment["body"])
    assert any(r.query.get("page") == "2" for r in github_api.calls("list_comments"))


def test_mlops_bot_login_names_the_author_without_asking_the_api(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_BOT_LOGIN", "my-app[bot]")
    github_api.add_comment(PR, "my-app[bot]", f"{marker(spec.models[0])}\nold report")
    github_api.workflow_token = "ghs_appinstall77"  # comments are now written as the app
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_appinstall77")
    github_api.users["ghs_appinstall77"] = "my-app[bot]"
    _platform(spec).post_report(spec.models[0], "new report\n", [])

    assert github_api.calls("user") == []
    (comment,) = _comments_by(github_api, "my-app[bot]")
    assert "new report" in str(comment["body"])


def test_a_personal_token_finds_its_own_login(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_PERSONAL_TOKEN)
    for _ in range(2):
        _platform(spec).post_report(spec.models[0], "report\n", [])
    assert len(_comments_by(github_api, "octocat")) == 1
    assert _comments_by(github_api, BOT) == []


def test_images_become_links_to_the_runs_artifacts(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    markdown = (
        '## Plots\n![ROC curve](plots/roc.png)\n<img src="plots/confusion.png" width="400">\n'
    )
    _platform(spec).post_report(spec.models[0], markdown, report_images(spec))

    body = str(_comments_by(github_api, BOT)[0]["body"])
    run_url = "https://github.example.invalid/octo/models/actions/runs/990012#artifacts"
    assert f"roc.png (in the `breast-cancer-evaluate` artifact of this run)]({run_url})" in body
    assert "confusion.png (in the `breast-cancer-evaluate` artifact" in body
    assert "plots/roc.png" not in body and "<img" not in body and "data:" not in body


def test_a_report_over_the_comment_limit_is_cut_with_a_note(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    huge = "| metric | value |\n" + "| accuracy | 0.95 |\n" * 5000
    _platform(spec).post_report(spec.models[0], huge, [])

    body = str(_comments_by(github_api, BOT)[0]["body"])
    assert len(body) <= BODY_LIMIT
    assert body.startswith(marker(spec.models[0]))
    assert "cut to fit GitHub's 65,536-character comment limit" in body
    assert "actions/runs/990012" in body


def test_outside_a_pull_request_nothing_is_posted(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = tmp_path / "push.json"
    event.write_text(json.dumps({"ref": "refs/heads/main"}), encoding="utf-8")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    assert _platform(spec).post_report(spec.models[0], "report\n", []) is None
    assert github_api.requests == []


def test_without_a_token_the_report_is_skipped_with_a_warning(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    assert _platform(spec).post_report(spec.models[0], "report\n", []) is None
    assert "GITHUB_TOKEN: ${{ github.token }}" in capsys.readouterr().err
    assert github_api.requests == []


def test_job_summary_appends_to_the_step_summary(spec: Spec, github_env: dict[str, str]) -> None:
    summary = Path(github_env["GITHUB_STEP_SUMMARY"])
    summary.write_text("# earlier step\n", encoding="utf-8")
    _platform(spec).job_summary("## breast-cancer: passed")
    assert summary.read_text(encoding="utf-8") == "# earlier step\n## breast-cancer: passed\n\n"


def test_job_summary_links_relative_images_to_the_runs_artifacts(
    spec: Spec, github_env: dict[str, str]
) -> None:
    _platform(spec).job_summary("![roc](plots/roc.png)\n![logo](https://example.invalid/l.png)\n")
    text = Path(github_env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert (
        "roc.png (in this run's artifacts)](https://github.example.invalid/octo/models/actions/runs/990012#artifacts)"
        in text
    )
    assert "![logo](https://example.invalid/l.png)" in text
    assert "](plots/roc.png)" not in text


def test_a_500_then_success_is_retried(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    github_api.fail("create_comment", 500)
    github_api.fail("list_comments", 429, retry_after=0)
    _platform(spec).post_report(spec.models[0], "report\n", [])

    assert len(github_api.calls("create_comment")) == 2
    assert len(_comments_by(github_api, BOT)) == 1


def test_a_403_names_the_endpoint_and_the_permission_needed(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    github_api.fail("create_comment", 403)
    with pytest.raises(PlatformError) as raised:
        _platform(spec).post_report(spec.models[0], "report\n", [])
    message = str(raised.value)
    assert message.startswith("POST /repos/octo/models/issues/5/comments: 403 Forbidden")
    assert "`pull-requests: write`" in message
    assert "127.0.0.1" not in message


def test_a_bad_token_is_a_401_error(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_wrongtoken123")
    with pytest.raises(
        PlatformError, match=r"401 Unauthorized .*GITHUB_TOKEN was rejected"
    ) as raised:
        _platform(spec).post_report(spec.models[0], "report\n", [])
    assert "ghs_wrongtoken123" not in str(raised.value)


# -- baseline ------------------------------------------------------------------------


def test_baseline_comes_from_the_newest_successful_default_branch_run(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    older = github_api.add_run()
    github_api.add_artifact(
        older, "breast-cancer-evaluate", {"metrics.json": b'{"metrics": {"accuracy": 0.5}}'}
    )
    newest = github_api.add_run()
    github_api.add_artifact(
        newest, "breast-cancer-evaluate", {"metrics.json": json.dumps(METRICS).encode()}
    )
    fork = github_api.add_run(event="pull_request")  # a fork's branch called main
    github_api.add_artifact(
        fork, "breast-cancer-evaluate", {"metrics.json": b'{"metrics": {"accuracy": 0.1}}'}
    )
    github_api.add_run(conclusion="failure")

    baseline = _platform(spec).fetch_baseline(spec.models[0])

    assert baseline is not None
    assert baseline.metrics == {"accuracy": 0.951, "f1": 0.96}
    assert baseline.importance == ("worst_radius", "mean_texture")
    assert f"run #{newest['run_number']}" in baseline.source and "main" in baseline.source
    (listing,) = github_api.calls("repo_artifacts")
    assert listing.query == {"name": "breast-cancer-evaluate", "per_page": "100"}
    # only runs of artifacts on main are looked at: the newest, the fork's, then found
    assert len(github_api.calls("run")) == 2
    (storage,) = github_api.calls("storage")
    assert "authorization" not in storage.headers  # the token never goes to blob storage


def test_baseline_skips_runs_where_the_model_did_not_run(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    with_model = github_api.add_run()
    github_api.add_artifact(
        with_model,
        "breast-cancer-evaluate",
        {".ci-mlops/breast-cancer/metrics.json": json.dumps(METRICS).encode()},
    )
    other = github_api.add_run()
    github_api.add_artifact(
        other, "diabetes-evaluate", {"metrics.json": b'{"metrics": {"r2": 0.4}}'}
    )

    baseline = _platform(spec).fetch_baseline(spec.models[0])
    assert baseline is not None and baseline.metrics["accuracy"] == 0.951


def test_the_combined_layout_looks_for_its_build_artifact_then_the_evaluate_one(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    """A default branch whose last run used the step layout keeps its baseline in
    <model>-evaluate after the switch to runtime.jobs: combined (<model>-build)."""
    combined = replace(spec, runtime=replace(spec.runtime, jobs="combined"))
    run = github_api.add_run()
    github_api.add_artifact(
        run, "breast-cancer-evaluate", {"metrics.json": json.dumps(METRICS).encode()}
    )
    baseline = _platform(combined).fetch_baseline(combined.models[0])
    assert baseline is not None and baseline.metrics == {"accuracy": 0.951, "f1": 0.96}
    names = [call.query["name"] for call in github_api.calls("repo_artifacts")]
    assert names == ["breast-cancer-build", "breast-cancer-evaluate"]
    built = github_api.add_run()
    github_api.add_artifact(
        built, "breast-cancer-build", {"metrics.json": b'{"metrics": {"accuracy": 0.97}}'}
    )
    again = _platform(combined).fetch_baseline(combined.models[0])
    assert again is not None and again.metrics == {"accuracy": 0.97}
    assert "artifact breast-cancer-build" in again.source


def test_no_runs_means_no_baseline_with_a_reason(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _platform(spec).fetch_baseline(spec.models[0]) is None
    err = capsys.readouterr().err
    assert "no baseline: never produced: no successful push/schedule/workflow_dispatch" in err
    assert "run of mlops.yml on main made an artifact named breast-cancer-evaluate" in err


def test_artifacts_of_another_workflow_or_a_failed_run_are_no_baseline(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = github_api.add_run(workflow="other.yml")
    failed = github_api.add_run(conclusion="failure")
    for run in (other, failed):
        github_api.add_artifact(run, "breast-cancer-evaluate", {"metrics.json": b"{}"})
    assert _platform(spec).fetch_baseline(spec.models[0]) is None
    assert "never produced" in capsys.readouterr().err


def test_an_expired_artifact_is_a_missing_baseline_not_a_first_run(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = github_api.add_run()
    github_api.add_artifact(run, "breast-cancer-evaluate", {"metrics.json": b"{}"}, expired=True)
    missing = _platform(spec).fetch_baseline(spec.models[0])
    assert isinstance(missing, MissingBaseline)
    assert missing.reason.startswith("expired: the breast-cancer-evaluate artifact of run #1")
    assert "has expired" in capsys.readouterr().err
    assert github_api.calls("artifact_zip") == []


def test_a_410_on_download_is_a_missing_baseline(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    run = github_api.add_run()
    github_api.add_artifact(
        run, "breast-cancer-evaluate", {"metrics.json": json.dumps(METRICS).encode()}
    )
    github_api.fail("artifact_zip", 410)  # expired between the listing and the download
    assert isinstance(_platform(spec).fetch_baseline(spec.models[0]), MissingBaseline)


def test_a_403_on_download_asks_for_actions_read(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    run = github_api.add_run()
    github_api.add_artifact(
        run, "breast-cancer-evaluate", {"metrics.json": json.dumps(METRICS).encode()}
    )
    github_api.fail("artifact_zip", 403)
    with pytest.raises(PlatformError, match=r"/zip: 403 Forbidden .*`actions: read`"):
        _platform(spec).fetch_baseline(spec.models[0])


# -- releases ------------------------------------------------------------------------


def test_publish_creates_a_release_with_verified_assets(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    files = publishable_files(spec)
    registry = _registry(spec)
    version = "1.0.0" + registry.version_suffix()
    published = registry.publish(spec.models[0], version, files)

    release = github_api.release("breast-cancer-v1.0.0-run.12")
    assert release is not None
    assert release["target_commitish"] == github_env["GITHUB_SHA"]
    assert release["make_latest"] == "false"
    assets = {a["name"]: a for a in release["assets"]}
    assert set(assets) == {*files, "SHA256SUMS"}
    for name, path in files.items():
        assert github_api.asset_bytes(assets[name]) == path.read_bytes()
        assert published.files[name] == hashlib.sha256(path.read_bytes()).hexdigest()
    sums = github_api.asset_bytes(assets["SHA256SUMS"]).decode()
    assert sums.splitlines() == [f"{published.files[n]}  {n}" for n in sorted(files)]
    assert published.location == release["html_url"]
    assert github_api.calls("storage") == []  # GitHub's digests sufficed


def test_without_digests_assets_are_downloaded_back_and_compared(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    github_api.asset_digests = False
    _registry(spec).publish(spec.models[0], "1.0.0-run.12", publishable_files(spec))
    fetched = [r.params["key"] for r in github_api.calls("storage")]
    assert len(fetched) == 4 and all(key.startswith("assets/") for key in fetched)


@pytest.mark.parametrize("digests", [True, False])
def test_a_corrupted_asset_is_detected(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str], digests: bool
) -> None:
    github_api.asset_digests = digests
    github_api.corrupt_next_asset = True
    with pytest.raises(
        PlatformError, match=r"release asset model.joblib: GitHub holds sha256 .* corrupt"
    ):
        _registry(spec).publish(spec.models[0], "1.0.0-run.12", publishable_files(spec))


def test_a_rerun_replaces_the_assets_of_the_same_release(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    files = publishable_files(spec)
    _registry(spec).publish(spec.models[0], "1.0.0-run.12", files)
    files["model.onnx"].write_bytes(b"rebuilt onnx")
    _registry(spec).publish(spec.models[0], "1.0.0-run.12", files)

    (release,) = github_api.releases
    assets = {a["name"]: a for a in release["assets"]}
    assert len(release["assets"]) == 4
    assert github_api.asset_bytes(assets["model.onnx"]) == b"rebuilt onnx"


def test_promote_and_rollback_use_deployments(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    files = publishable_files(spec)
    for version in ("1.0.0-run.1", "1.0.0-run.2"):
        registry.publish(model, version, files)
        registry.promote(model, "production", version)

    newest = github_api.deployments[-1]
    assert newest["ref"] == "breast-cancer-v1.0.0-run.2"
    assert newest["task"] == "deploy:breast-cancer"
    assert newest["environment"] == "production" and newest["production_environment"]
    assert newest["payload"] == {
        "model": "breast-cancer",
        "version": "1.0.0-run.2",
        "history": ["1.0.0-run.1"],
    }
    assert newest["statuses"][0]["state"] == "success"

    assert registry.rollback(model, "production") == "1.0.0-run.1"
    assert github_api.deployments[-1]["payload"]["history"] == []
    with pytest.raises(UsageError, match="no earlier version"):
        registry.rollback(model, "production")


def test_history_and_annotations_ride_on_the_newest_deployment(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    files = publishable_files(spec)
    for version in ("1.0.0-run.1", "1.0.0-run.2"):
        registry.publish(model, version, files)
        registry.promote(model, "production", version, forced=version.endswith(".2"))
        registry.annotate(model, "production", version, {"image": f"img@{version}"})

    entries = registry.history(model, "production")

    assert [(e["version"], e["forced"], e["image"]) for e in entries] == [
        ("1.0.0-run.2", True, "img@1.0.0-run.2"),
        ("1.0.0-run.1", False, "img@1.0.0-run.1"),
    ]
    assert entries[0]["at"] and entries[1]["at"] is None
    newest = github_api.deployments[-1]
    assert newest["payload"]["version"] == "1.0.0-run.2"
    assert newest["payload"]["annotations"]["1.0.0-run.2"] == {"image": "img@1.0.0-run.2"}
    assert registry.rollback(model, "production") == "1.0.0-run.1"
    assert registry.history(model, "production")[0]["image"] == "img@1.0.0-run.1"
    with pytest.raises(UsageError, match=r"production runs 1\.0\.0-run\.1, not 1\.0\.0-run\.2"):
        registry.annotate(model, "production", "1.0.0-run.2", {"image": "x"})


def test_promoting_an_unpublished_version_is_refused(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    with pytest.raises(UsageError, match=r"no release tagged breast-cancer-v9\.9\.9"):
        _registry(spec).promote(spec.models[0], "staging", "9.9.9")
    assert github_api.deployments == []


def test_live_and_verify_read_the_release_behind_the_newest_deployment(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    published = registry.publish(model, "1.0.0-run.12", publishable_files(spec))
    registry.promote(model, "staging", published.version)

    live = registry.live(model, "staging")
    assert live is not None and live.version == "1.0.0-run.12"
    assert live.files == published.files
    assert registry.live(model, "production") is None
    assert registry.verify(model, published.version).files == published.files

    (release,) = github_api.releases
    onnx = next(a for a in release["assets"] if a["name"] == "model.onnx")
    github_api.blobs[f"assets/{onnx['id']}"] = b"tampered"
    with pytest.raises(
        CheckFailed,
        match=r"model\.onnx: sha256 [0-9a-f]{64} does not match [0-9a-f]{64} in SHA256SUMS",
    ) as raised:
        registry.verify(model, published.version)
    assert isinstance(raised.value, IntegrityError)
    assert [c.path for c in raised.value.changes] == ["model.onnx"]


# -- retraining ----------------------------------------------------------------------


def test_trigger_retrain_dispatches_the_workflow_with_the_model(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    where = _platform(spec).trigger_retrain(spec.models[0], "drift")

    (dispatch,) = github_api.dispatches
    assert dispatch["workflow"] == "mlops.yml"
    assert dispatch["ref"] == "main"
    assert dispatch["inputs"] == {"retrain": "breast-cancer"}
    assert where == f"https://github.example.invalid/octo/models/actions/runs/{dispatch['run_id']}"


def test_trigger_retrain_works_with_servers_without_run_details(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    github_api.run_details = False
    where = _platform(spec).trigger_retrain(spec.models[0], "drift")
    assert len(github_api.dispatches) == 1
    assert len(github_api.calls("dispatch")) == 2
    assert where == "workflow mlops.yml on main"


def test_repository_dispatch_when_asked(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_DISPATCH", "repository")
    _platform(spec).trigger_retrain(spec.models[0], "drift in 20 of 30 columns")
    assert github_api.repository_dispatches == [
        {
            "event_type": "ci-mlops-retrain",
            "client_payload": {"model": "breast-cancer", "reason": "drift in 20 of 30 columns"},
        }
    ]
    assert github_api.dispatches == []


def test_a_workflow_without_the_retrain_input_is_explained(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    github_api.workflows["mlops.yml"] = set()
    with pytest.raises(PlatformError, match=r"dispatches: 422 .*must declare a `retrain` input"):
        _platform(spec).trigger_retrain(spec.models[0], "drift")


# -- secrets -------------------------------------------------------------------------


def test_the_token_never_reaches_output_logs_or_tracebacks(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # requests and urllib3 at their chattiest
    caplog.set_level(logging.DEBUG, logger="github")  # and PyGithub
    platform = _platform(spec)
    registry = _registry(spec)
    run = github_api.add_run()
    github_api.add_artifact(
        run, "breast-cancer-evaluate", {"metrics.json": json.dumps(METRICS).encode()}
    )
    platform.post_report(spec.models[0], "report\n", report_images(spec))
    platform.fetch_baseline(spec.models[0])
    registry.publish(spec.models[0], "1.0.0-run.12", publishable_files(spec))
    platform.trigger_retrain(spec.models[0], "drift")
    errors: list[BaseException] = []
    for route, call in (
        ("edit_comment", lambda: platform.post_report(spec.models[0], "x\n", [])),
        ("artifact_zip", lambda: platform.fetch_baseline(spec.models[0])),
        (
            "create_release",
            lambda: registry.publish(spec.models[0], "2.0.0", publishable_files(spec)),
        ),
        ("dispatch", lambda: platform.trigger_retrain(spec.models[0], "drift")),
    ):
        github_api.fail(route, 403)
        with pytest.raises(PlatformError) as raised:
            call()
        errors.append(raised.value)

    seen = capsys.readouterr()
    texts = [seen.out, seen.err, caplog.text]
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    everything = "\n".join(texts)
    assert everything.count("403 Forbidden") >= 4
    assert "(oauth token removed)" in caplog.text  # PyGithub's request log was captured
    assert github_api.workflow_token not in everything


# -- the check run -------------------------------------------------------------------

HEAD = "cd34" * 10


def _gates(spec: Spec) -> dict[str, object]:
    """A verdict with one failed and one warned check, as evaluate writes it."""
    return {
        "model": spec.models[0].name,
        "model_sha256": "ab" * 32,
        "passed": False,
        "checks": [
            {"metric": "accuracy", "rule": "min", "passed": True, "message": "accuracy ok"},
            {
                "metric": "roc_auc",
                "rule": "max_drop",
                "passed": False,
                "message": "roc_auc got worse by 0.02 from baseline 0.99 to 0.97 (max_drop 0.01)",
            },
            {
                "metric": "f1",
                "rule": "min",
                "passed": True,
                "warned": True,
                "message": "f1 0.9 is below min 0.93 [warn only]",
            },
        ],
    }


def _line_of(spec: Spec, text: str) -> int:
    lines = spec.path.read_text("utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(text))


def _on_head(github_env: dict[str, str]) -> None:
    event = Path(github_env["GITHUB_EVENT_PATH"])
    data = json.loads(event.read_text())
    data["pull_request"]["head"] = {"sha": HEAD, "repo": {"full_name": "octo/models"}}
    event.write_text(json.dumps(data))


def test_the_report_creates_a_check_run_annotating_each_failed_gate(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    from ci_mlops.steps import report

    _on_head(github_env)
    model = spec.models[0]
    (spec.workdir(model) / "gates.json").write_text(json.dumps(_gates(spec)))
    report.run(spec, model, post=True)

    (run,) = github_api.check_runs
    assert (run["name"], run["head_sha"]) == ("ci-mlops breast-cancer", HEAD)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    output = run["output"]
    assert output["title"] == "1 of 3 quality gate checks failed"
    assert output["summary"].startswith(marker(model).split(" model=")[0])
    failure, warning = output["annotations"]
    assert failure["path"] == warning["path"] == "mlops.yaml"
    assert failure["annotation_level"] == "failure" and warning["annotation_level"] == "warning"
    assert failure["start_line"] == failure["end_line"] == _line_of(spec, "roc_auc:")
    assert warning["start_line"] == _line_of(spec, "f1:")
    assert failure["title"] == "roc_auc max_drop" and "got worse by 0.02" in failure["message"]


def test_a_passing_verdict_is_a_successful_check_without_annotations(
    spec: Spec, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    from ci_mlops.steps.report import check_report

    gates = {"passed": True, "checks": [{"metric": "accuracy", "rule": "min", "passed": True}]}
    check = check_report(spec, spec.models[0], gates, "all good\n")
    where = _platform(spec).publish_check(spec.models[0], check)
    (run,) = github_api.check_runs
    assert run["conclusion"] == "success" and run["output"]["annotations"] == []
    assert run["head_sha"] == github_env["GITHUB_SHA"]  # no head in the event: GITHUB_SHA
    assert where == run["html_url"]


def test_a_token_without_checks_write_only_warns(
    spec: Spec,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ci_mlops.steps.report import check_report

    github_api.checks_writable = False
    check = check_report(spec, spec.models[0], _gates(spec), "report\n")
    assert _platform(spec).publish_check(spec.models[0], check) is None
    assert github_api.check_runs == []
    err = capsys.readouterr().err
    assert "checks: write" in err and "the verdict is in the comment" in err
    assert github_env["GITHUB_TOKEN"] not in err


def test_annotations_name_the_spec_in_the_repository_not_its_snapshot(
    spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ci_mlops.spec.check import load_spec
    from ci_mlops.steps.records import SPEC_ORIGIN, snapshot_spec
    from ci_mlops.steps.report import check_report

    model = spec.models[0]
    repo = spec.root.parent
    (repo / "ml").mkdir()
    moved = repo / "ml" / "mlops.yaml"
    moved.write_bytes(spec.path.read_bytes())
    monkeypatch.chdir(repo)  # jobs run at the repository root
    monkeypatch.setenv("MLOPS_WORKDIR", str(repo / ".ci-mlops"))
    original = load_spec(moved, check_files=False)
    snapshot = snapshot_spec(original, model)
    copy = load_spec(snapshot, check_files=False)  # what the report job reads
    check = check_report(copy, copy.models[0], _gates(spec), "report\n")
    assert check.spec_file == "ml/mlops.yaml"
    assert [a.line for a in check.annotations] == [
        _line_of(spec, "roc_auc:"),
        _line_of(spec, "f1:"),
    ]
    # The record is an artifact a merge request can write: only a plain relative path.
    (snapshot.parent / SPEC_ORIGIN).write_text(json.dumps({"path": "../../etc/passwd"}))
    assert check_report(copy, copy.models[0], _gates(spec), "r\n").spec_file == "mlops.yaml"
