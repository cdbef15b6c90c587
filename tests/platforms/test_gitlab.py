"""GitLabPlatform: the real python-gitlab client against a fake GitLab API on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from dataclasses import replace

import pytest

from ci_mlops.errors import CheckFailed, IntegrityError, PlatformError, UsageError
from ci_mlops.platforms import detect
from ci_mlops.platforms.gitlab import GitLabPlatform
from ci_mlops.platforms.remote import marker
from ci_mlops.registries import registry_for
from ci_mlops.registries.gitlab_packages import GitLabPackages
from ci_mlops.spec.model import Spec
from tests.fakes.env import GITLAB_OTHER_TOKEN, GITLAB_TOKEN, TRIGGER_TOKEN
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import publishable_files, report_images

MR = 7
ARTIFACT = ".ci-mlops/breast-cancer/metrics.json"
JOB = "breast-cancer:evaluate"


def _platform(spec: Spec) -> GitLabPlatform:
    platform = detect(spec)
    assert isinstance(platform, GitLabPlatform)
    return platform


def _registry(spec: Spec) -> GitLabPackages:
    registry = registry_for(spec, spec.models[0], "gitlab")
    assert isinstance(registry, GitLabPackages)
    return registry


def _bot_notes(api: FakeGitLab) -> list[dict[str, object]]:
    return [n for n in api.notes.get(MR, []) if n["author"]["id"] == 7]  # type: ignore[index]


# -- the merge-request note ----------------------------------------------------------


def test_first_report_creates_a_note_that_starts_with_the_marker(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    model = spec.models[0]
    where = _platform(spec).post_report(model, "## Verdict: passed\n", [])

    notes = _bot_notes(gitlab_api)
    assert len(notes) == 1
    body = str(notes[0]["body"])
    assert body.splitlines()[0] == marker(model) == "<!-- ci-mlops:report model=breast-cancer -->"
    assert "## Verdict: passed" in body
    assert (
        where
        == f"https://gitlab.example.invalid/group/project/-/merge_requests/7#note_{notes[0]['id']}"
    )


def test_three_runs_leave_exactly_one_note_with_the_latest_report(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    platform = _platform(spec)
    for run in range(3):
        platform.post_report(spec.models[0], f"report of run {run}\n", [])

    notes = _bot_notes(gitlab_api)
    assert len(notes) == 1
    assert "report of run 2" in str(notes[0]["body"])
    assert "report of run 0" not in str(notes[0]["body"])
    assert len(gitlab_api.calls("create_note")) == 1
    assert len(gitlab_api.calls("update_note")) == 2


def test_another_users_note_quoting_the_marker_is_left_alone(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    model = spec.models[0]
    alice = gitlab_api.users[GITLAB_OTHER_TOKEN]
    quoted = f"{marker(model)}\nI copied the bot's report here to discuss it."
    gitlab_api.add_note(MR, alice, quoted)

    _platform(spec).post_report(model, "fresh report\n", [])
    _platform(spec).post_report(model, "second report\n", [])

    alices = [n for n in gitlab_api.notes[MR] if n["author"]["id"] == alice.id]
    assert [n["body"] for n in alices] == [quoted]
    assert len(_bot_notes(gitlab_api)) == 1
    assert "second report" in str(_bot_notes(gitlab_api)[0]["body"])


def test_a_note_on_the_second_page_is_found_and_updated(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    alice = gitlab_api.users[GITLAB_OTHER_TOKEN]
    for number in range(25):  # GitLab lists 20 notes a page by default
        gitlab_api.add_note(MR, alice, f"review comment {number}")
    platform = _platform(spec)
    platform.post_report(spec.models[0], "first\n", [])
    platform.post_report(spec.models[0], "second\n", [])

    assert len(_bot_notes(gitlab_api)) == 1
    pages = [r.query.get("page") for r in gitlab_api.calls("list_notes")]
    assert "2" in pages  # followed the Link header to the page holding the note


def test_the_report_of_another_model_is_a_separate_note(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    other = gitlab_api.users[GITLAB_TOKEN]
    gitlab_api.add_note(MR, other, "<!-- ci-mlops:report model=diabetes -->\ndiabetes report")
    _platform(spec).post_report(spec.models[0], "breast-cancer report\n", [])

    bodies = [str(n["body"]) for n in _bot_notes(gitlab_api)]
    assert len(bodies) == 2
    assert any("diabetes report" in b for b in bodies)


def test_images_are_uploaded_and_their_links_point_at_the_uploads(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    markdown = "## Plots\n![ROC curve](plots/roc.png)\n"  # confusion.png is not referenced
    _platform(spec).post_report(spec.models[0], markdown, report_images(spec))

    uploads = {u["filename"]: u for u in gitlab_api.uploads}
    assert uploads["roc.png"]["data"] == b"\x89PNG\r\n\x1a\nroc-curve"
    assert uploads["confusion.png"]["data"] == b"\x89PNG\r\n\x1a\nconfusion-matrix"
    body = str(_bot_notes(gitlab_api)[0]["body"])
    assert f"![ROC curve]({uploads['roc.png']['url']})" in body
    assert "](plots/roc.png)" not in body
    assert uploads["confusion.png"]["markdown"] in body  # appended, as it had no link


def test_without_gitlab_token_the_report_is_skipped_with_a_clear_warning(
    spec: Spec,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("GITLAB_TOKEN")
    assert _platform(spec).post_report(spec.models[0], "report\n", report_images(spec)) is None

    err = capsys.readouterr().err
    assert "warning" in err
    assert "CI_JOB_TOKEN cannot post notes" in err
    assert "project access token with the api scope" in err
    assert "GITLAB_TOKEN" in err
    assert gitlab_api.notes == {}
    assert gitlab_api.uploads == []


def test_mlops_require_comment_makes_a_missing_token_an_error(
    spec: Spec, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITLAB_TOKEN")
    monkeypatch.setenv("MLOPS_REQUIRE_COMMENT", "true")
    with pytest.raises(PlatformError, match="CI_JOB_TOKEN cannot post notes"):
        _platform(spec).post_report(spec.models[0], "report\n", [])


def test_outside_a_merge_request_nothing_is_posted(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI_MERGE_REQUEST_IID")
    assert _platform(spec).post_report(spec.models[0], "report\n", report_images(spec)) is None
    assert gitlab_api.requests == []


def test_a_403_on_notes_names_the_endpoint_and_the_scope_needed(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    gitlab_api.fail("create_note", 403)
    with pytest.raises(PlatformError) as raised:
        _platform(spec).post_report(spec.models[0], "report\n", [])

    message = str(raised.value)
    assert message.startswith("POST /projects/42/merge_requests/7/notes: 403 Forbidden")
    assert "project access token with api scope in GITLAB_TOKEN" in message
    assert "CI_JOB_TOKEN cannot post notes" in message
    assert "127.0.0.1" not in message


def test_the_fake_refuses_a_job_token_on_notes_as_gitlab_does(gitlab_api: FakeGitLab) -> None:
    import gitlab

    client = gitlab.Gitlab(gitlab_api.origin, job_token=gitlab_api.job_token)
    mr = client.projects.get(42, lazy=True).mergerequests.get(MR, lazy=True)
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as raised:
        mr.notes.create({"body": "hello"})
    assert raised.value.response_code == 403
    assert gitlab_api.notes == {}


def test_a_job_token_stored_as_gitlab_token_is_rejected_and_explained(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone stores the job token as GITLAB_TOKEN: GitLab refuses it as a private token.
    monkeypatch.setenv("GITLAB_TOKEN", gitlab_api.job_token)
    with pytest.raises(PlatformError, match=r"GET /user: 401 Unauthorized .*rejected") as raised:
        _platform(spec).post_report(spec.models[0], "report\n", [])
    assert gitlab_api.job_token not in str(raised.value)


def test_a_500_then_success_is_retried_once_and_posts_one_note(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    gitlab_api.fail("create_note", 500)
    gitlab_api.fail("list_notes", 429, retry_after=0)
    _platform(spec).post_report(spec.models[0], "report\n", [])

    assert len(gitlab_api.calls("create_note")) == 2
    # the 429 retried, then one more look for the note after the 500, before creating again
    assert len(gitlab_api.calls("list_notes")) == 3
    assert len(_bot_notes(gitlab_api)) == 1


def test_retries_are_bounded_by_mlops_api_retries(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_API_RETRIES", "2")
    gitlab_api.fail("create_note", *([502] * 10))
    with pytest.raises(PlatformError, match="502 Bad Gateway"):
        _platform(spec).post_report(spec.models[0], "report\n", [])
    assert len(gitlab_api.calls("create_note")) == 3  # the first try and two retries


# -- baseline ------------------------------------------------------------------------


def _store_baseline(api: FakeGitLab, ref: str = "main") -> None:
    metrics = {
        "model": "breast-cancer",
        "metrics": {"accuracy": 0.951, "roc_auc": 0.99},
        "importance": {"metric": "accuracy", "ranking": ["worst_radius", "mean_texture"]},
    }
    api.artifacts[(ref, JOB)] = {ARTIFACT: json.dumps(metrics).encode()}


def test_baseline_comes_from_the_default_branch_evaluate_job(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITLAB_TOKEN")  # the job token suffices
    _store_baseline(gitlab_api)
    baseline = _platform(spec).fetch_baseline(spec.models[0])

    assert baseline is not None
    assert baseline.metrics == {"accuracy": 0.951, "roc_auc": 0.99}
    assert baseline.importance == ("worst_radius", "mean_texture")
    assert "main" in baseline.source and JOB in baseline.source
    (call,) = gitlab_api.calls("artifact_raw")
    assert call.query["job"] == JOB
    assert call.headers["job-token"] == gitlab_api.job_token


def test_baseline_on_a_branch_with_a_slash_is_url_encoded(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_DEFAULT_BRANCH", "release/2.x")
    _store_baseline(gitlab_api, ref="release/2.x")
    baseline = _platform(spec).fetch_baseline(spec.models[0])
    assert baseline is not None and baseline.metrics["accuracy"] == 0.951
    assert gitlab_api.calls("artifact_raw")[0].path.count("release%2F2.x") == 1


@pytest.mark.parametrize("workdir", ["build/mlops", "/builds/group/project/build/mlops"])
def test_baseline_is_read_where_mlops_workdir_put_it(
    spec: Spec,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    workdir: str,
) -> None:
    monkeypatch.setenv("MLOPS_WORKDIR", workdir)
    monkeypatch.setenv("CI_PROJECT_DIR", "/builds/group/project")
    gitlab_api.artifacts[("main", JOB)] = {
        "build/mlops/breast-cancer/metrics.json": b'{"metrics": {"accuracy": 0.9}}'
    }
    baseline = _platform(spec).fetch_baseline(spec.models[0])
    assert baseline is not None and baseline.metrics == {"accuracy": 0.9}


def test_no_baseline_is_none_with_a_reason(
    spec: Spec,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _platform(spec).fetch_baseline(spec.models[0]) is None
    assert (
        "no baseline: no successful breast-cancer:evaluate or breast-cancer:build job on main"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("stored", [JOB, "breast-cancer:build"])
def test_the_combined_layout_reads_its_build_job_then_the_step_layouts_evaluate_job(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], stored: str
) -> None:
    """runtime.jobs: combined evaluates in <model>:build; a default branch that ran the
    step layout last (before the switch) keeps its baseline in <model>:evaluate."""
    combined = replace(spec, runtime=replace(spec.runtime, jobs="combined"))
    metrics = {"model": "breast-cancer", "metrics": {"accuracy": 0.94}}
    gitlab_api.artifacts[("main", stored)] = {ARTIFACT: json.dumps(metrics).encode()}
    baseline = _platform(combined).fetch_baseline(combined.models[0])
    assert baseline is not None and baseline.metrics == {"accuracy": 0.94}
    assert stored in baseline.source
    asked = [call.query["job"] for call in gitlab_api.calls("artifact_raw")]
    assert asked == ["breast-cancer:build", JOB][: asked.index(stored) + 1]
    assert asked[-1] == stored


@pytest.mark.parametrize("status", [404, 410])
def test_an_expired_baseline_is_none(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], status: int
) -> None:
    _store_baseline(gitlab_api)
    gitlab_api.fail("artifact_raw", status)
    assert _platform(spec).fetch_baseline(spec.models[0]) is None


def test_a_baseline_refused_for_lack_of_rights_is_an_error(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    gitlab_api.fail("artifact_raw", 403)
    with pytest.raises(
        PlatformError, match=r"jobs/artifacts/main/raw/.*403 Forbidden .*CI_JOB_TOKEN"
    ):
        _platform(spec).fetch_baseline(spec.models[0])


# -- package registry ----------------------------------------------------------------


def test_publish_uploads_every_file_and_sha256sums_and_verifies_them(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITLAB_TOKEN")
    files = publishable_files(spec)
    registry = _registry(spec)
    version = "1.0.0" + registry.version_suffix()
    published = registry.publish(spec.models[0], version, files)

    assert version == "1.0.0-pipeline.17"
    assert published.version == version
    assert published.location.endswith(
        "/projects/42/packages/generic/breast-cancer/1.0.0-pipeline.17"
    )
    for name, path in files.items():
        stored = gitlab_api.package_file("breast-cancer", version, name)
        assert stored == path.read_bytes()
        assert published.files[name] == hashlib.sha256(stored).hexdigest()
    sums = gitlab_api.package_file("breast-cancer", version, "SHA256SUMS")
    assert sums is not None
    assert sums.decode().splitlines() == [f"{published.files[n]}  {n}" for n in sorted(files)]
    downloaded = {r.params["file"] for r in gitlab_api.calls("package_get")}
    assert downloaded == {*files, "SHA256SUMS"}
    assert all("job-token" in r.headers for r in gitlab_api.calls("package_put"))


def test_a_corrupted_upload_is_detected(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    gitlab_api.corrupt_next_package_upload = True
    with pytest.raises(
        PlatformError, match=r"model.joblib: the registry returned sha256 .* corrupt"
    ):
        _registry(spec).publish(spec.models[0], "1.0.0-pipeline.17", publishable_files(spec))


def test_promote_remembers_the_previous_version_and_rollback_returns_to_it(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    files = publishable_files(spec)
    for version in ("1.0.0-pipeline.1", "1.0.0-pipeline.2"):
        registry.publish(model, version, files)
        registry.promote(model, "staging", version)

    record = json.loads(
        gitlab_api.package_file("breast-cancer-environments", "0.0.0", "staging.json") or b""
    )
    assert record["version"] == "1.0.0-pipeline.2"
    assert record["history"] == ["1.0.0-pipeline.1"]
    assert record["commit"] == gitlab_env["CI_COMMIT_SHA"]
    assert record["pipeline"] == gitlab_env["CI_PIPELINE_URL"]

    assert registry.rollback(model, "staging") == "1.0.0-pipeline.1"
    record = json.loads(
        gitlab_api.package_file("breast-cancer-environments", "0.0.0", "staging.json") or b""
    )
    assert record["version"] == "1.0.0-pipeline.1"
    assert record["history"] == []
    with pytest.raises(UsageError, match="no earlier version to roll back to"):
        registry.rollback(model, "staging")


def test_promoting_an_unpublished_version_is_refused(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    with pytest.raises(UsageError, match="not in the package registry"):
        _registry(spec).promote(spec.models[0], "staging", "9.9.9-pipeline.1")
    assert gitlab_api.calls("package_put") == []


def test_live_names_the_version_and_the_checksums_it_was_published_with(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    published = registry.publish(model, "1.0.0-pipeline.17", publishable_files(spec))
    registry.promote(model, "staging", published.version)

    live = registry.live(model, "staging")
    assert live is not None
    assert live.version == "1.0.0-pipeline.17"
    assert live.files == published.files
    assert registry.live(model, "production") is None


def test_history_and_annotations_live_in_the_environment_record(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    files = publishable_files(spec)
    for version in ("1.0.0-pipeline.1", "1.0.0-pipeline.2"):
        registry.publish(model, version, files)
        registry.promote(model, "staging", version, forced=version.endswith(".2"))
        registry.annotate(model, "staging", version, {"image": f"img@{version}"})

    entries = registry.history(model, "staging")

    assert [(e["version"], e["forced"], e["image"]) for e in entries] == [
        ("1.0.0-pipeline.2", True, "img@1.0.0-pipeline.2"),
        ("1.0.0-pipeline.1", False, "img@1.0.0-pipeline.1"),
    ]
    assert entries[0]["at"] and entries[1]["at"] is None
    record = json.loads(
        gitlab_api.package_file("breast-cancer-environments", "0.0.0", "staging.json") or b""
    )
    assert record["annotations"]["1.0.0-pipeline.1"] == {"image": "img@1.0.0-pipeline.1"}
    assert registry.rollback(model, "staging") == "1.0.0-pipeline.1"
    assert registry.history(model, "staging")[0]["image"] == "img@1.0.0-pipeline.1"
    with pytest.raises(
        UsageError, match=r"staging runs 1\.0\.0-pipeline\.1, not 1\.0\.0-pipeline\.2"
    ):
        registry.annotate(model, "staging", "1.0.0-pipeline.2", {"image": "x"})


def test_verify_downloads_every_file_and_names_one_that_changed(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    model = spec.models[0]
    registry = _registry(spec)
    published = registry.publish(model, "1.0.0-pipeline.17", publishable_files(spec))
    assert registry.verify(model, published.version).files == published.files

    # Someone uploads another model.onnx into the same version: the registry serves it.
    gitlab_api.packages[("breast-cancer", published.version)].append(("model.onnx", b"tampered"))
    with pytest.raises(
        CheckFailed,
        match=r"model\.onnx: sha256 [0-9a-f]{64} does not match [0-9a-f]{64} in SHA256SUMS",
    ) as raised:
        registry.verify(model, published.version)
    assert "model.joblib" not in str(raised.value)
    assert isinstance(raised.value, IntegrityError)
    assert [(c.path, c.actual) for c in raised.value.changes] == [
        ("model.onnx", hashlib.sha256(b"tampered").hexdigest())
    ]


# -- retraining ----------------------------------------------------------------------


def test_trigger_retrain_starts_a_default_branch_pipeline_with_the_model(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    where = _platform(spec).trigger_retrain(spec.models[0], "drift in 3 of 30 columns")

    (pipeline,) = gitlab_api.pipelines
    assert pipeline["ref"] == "main"
    assert pipeline["variables"]["MLOPS_RETRAIN"] == "breast-cancer"
    assert pipeline["variables"]["MLOPS_RETRAIN_REASON"] == "drift in 3 of 30 columns"
    assert pipeline["source"] == "pipeline"  # started with CI_JOB_TOKEN
    assert where == pipeline["web_url"]


def test_trigger_retrain_prefers_mlops_trigger_token_and_works_without_a_job(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A data pipeline outside GitLab: only the API URL, project and a trigger token.
    for name in ("CI_JOB_TOKEN", "GITLAB_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLOPS_TRIGGER_TOKEN", TRIGGER_TOKEN)
    _platform(spec).trigger_retrain(spec.models[0], "new data")

    (call,) = gitlab_api.calls("trigger")
    assert call.json()["token"] == TRIGGER_TOKEN
    assert gitlab_api.pipelines[0]["source"] == "trigger"


def test_a_refused_trigger_token_is_explained_without_showing_it(
    spec: Spec, gitlab_api: FakeGitLab, gitlab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_TRIGGER_TOKEN", "glptt-revoked-999999")
    with pytest.raises(PlatformError) as raised:
        _platform(spec).trigger_retrain(spec.models[0], "drift")
    message = str(raised.value)
    assert message.startswith("POST /projects/42/trigger/pipeline: 404 Not Found")
    assert "MLOPS_TRIGGER_TOKEN" in message
    assert "glptt-revoked-999999" not in message
    assert gitlab_api.pipelines == []


# -- secrets -------------------------------------------------------------------------


def test_tokens_never_reach_output_logs_or_tracebacks(
    spec: Spec,
    gitlab_api: FakeGitLab,
    gitlab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MLOPS_TRIGGER_TOKEN", TRIGGER_TOKEN)
    caplog.set_level(logging.DEBUG)  # python-gitlab, requests and urllib3 at their chattiest
    platform = _platform(spec)
    registry = _registry(spec)
    platform.post_report(spec.models[0], "report\n", report_images(spec))
    registry.publish(spec.models[0], "1.0.0-pipeline.17", publishable_files(spec))
    platform.trigger_retrain(spec.models[0], "drift")
    errors: list[BaseException] = []
    for route, call in (
        ("create_note", lambda: platform.post_report(spec.models[0], "x\n", [])),
        ("trigger", lambda: platform.trigger_retrain(spec.models[0], "drift")),
        ("package_put", lambda: registry.publish(spec.models[0], "2.0.0", publishable_files(spec))),
    ):
        gitlab_api.fail(route, 403)
        if route == "create_note":
            gitlab_api.notes.clear()
        with pytest.raises(PlatformError) as raised:
            call()
        errors.append(raised.value)

    seen = capsys.readouterr()
    texts = [seen.out, seen.err, caplog.text]
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    everything = "\n".join(texts)
    assert "403 Forbidden" in everything
    assert "/api/v4/projects/42/merge_requests/7/notes" in caplog.text  # urllib3's request log
    for secret in (GITLAB_TOKEN, gitlab_api.job_token, TRIGGER_TOKEN):
        assert secret not in everything
