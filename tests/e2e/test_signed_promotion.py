"""Signed promotion end to end: generated GitLab pipelines run by gitlab-ci-local against
the fake GitLab API, signing with a key pair whose private half only default-branch
pipelines get (a protected variable on GitLab). A version a merge-request pipeline
publishes, and a version whose stored bytes were rewritten, never reach production."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Project, make_project, run_pipeline
from tests.e2e.test_gitlab_pipelines import CHECKS, MODEL, MR_IID, ci_variables, environment
from tests.fakes.env import GITLAB_TOKEN
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import git, make_key_pair, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STAGING = f"{MODEL}:deploy-staging"
PRODUCTION = f"{MODEL}:deploy-production"


def signed_project(tmp_path: Path) -> tuple[Project, Path]:
    """The example verifying with keys/deploy.pub; returns it and the private key, which
    lives outside the repository."""
    private, public = make_key_pair(tmp_path / "secrets", "deploy")
    project = make_project(MODEL, tmp_path)
    (project.path / "keys").mkdir()
    project.commit("keys/deploy.pub", public.read_text(), "the deploy key")
    use_key(project, "keys/deploy.pub")
    project.commit("train.py", "# tuned\n", "verify versions with the deploy key")
    return project, private


def use_key(project: Project, path: str) -> None:
    project.edit_spec(
        lambda spec: spec["models"][0].setdefault("deploy", {}).update(signing={"public_key": path})
    )


def deploy_staging(project: Project, job_bin: Path, api: FakeGitLab, key: Path) -> str:
    variables = ci_variables(api, MLOPS_SIGNING_KEY=str(key))
    run = run_pipeline(project, job_bin, variables)
    assert run.code == 0 and run.failed() == [], run.explain()
    assert {*CHECKS, STAGING} <= set(run.jobs), run.explain()
    staging = environment(api, "staging")
    assert staging is not None
    version = str(staging["version"])
    assert api.package_file(MODEL, version, "model.sig") is not None
    return version


def play_production(project: Project, job_bin: Path, api: FakeGitLab, key: Path) -> Any:
    variables = ci_variables(api, MLOPS_SIGNING_KEY=str(key))
    return run_pipeline(project, job_bin, variables, manual=[PRODUCTION], jobs=[PRODUCTION])


def assert_failed(played: Any) -> None:
    """The manual production job failed (allowed to: gitlab-ci-local says WARN)."""
    summary = [line for line in played.output.splitlines() if f"] {PRODUCTION} " in line]
    assert summary and "WARN" in summary[-1] and "PASS" not in summary[-1], played.explain()


def hostile_job(project: Project) -> None:
    """What a merge request can add to its own pipeline: a job that publishes the merge
    request's model with the job token and points staging at it, signed with a key the
    merge request brings (and its spec trusts)."""
    ci_file = project.path / ".gitlab-ci.yml"
    pipeline = yaml.safe_load(ci_file.read_text("utf-8"))
    job = copy.deepcopy(pipeline[STAGING])
    job["rules"] = [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    job["variables"]["MLOPS_SIGNING_KEY"] = "keys/attacker.key"
    for key in ("environment", "resource_group", "id_tokens"):
        job.pop(key, None)
    pipeline["publish-from-the-merge-request"] = job
    ci_file.write_text(yaml.safe_dump(pipeline, sort_keys=False), "utf-8")


def test_a_version_published_from_a_merge_request_pipeline_is_never_promoted(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project, deploy_key = signed_project(tmp_path)
    deploy_staging(project, job_bin, gitlab_api, deploy_key)

    project.branch("faster-model")
    attacker, attacker_pub = make_key_pair(project.path / "keys", "attacker")
    use_key(project, "keys/attacker.pub")
    hostile_job(project)
    project.commit("train.py", "# faster\n", "a faster model")
    assert attacker.is_file() and attacker_pub.is_file()
    variables = ci_variables(
        gitlab_api,
        "merge_request_event",
        CI_MERGE_REQUEST_IID=MR_IID,
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        GITLAB_TOKEN=GITLAB_TOKEN,
    )
    mr = run_pipeline(project, job_bin, variables)

    assert mr.jobs["publish-from-the-merge-request"].status == "PASS", mr.explain()
    staging = environment(gitlab_api, "staging")
    assert staging is not None
    forged = str(staging["version"])
    forged_model = gitlab_api.package_file(MODEL, forged, "model.joblib")
    # production's own artifacts now hold that same model: only the signature tells them apart
    assert forged_model == project.artifact(f"{MODEL}:train", "model.joblib").read_bytes()

    git(project.path, "checkout", "--quiet", "main")
    played = play_production(project, job_bin, gitlab_api, deploy_key)

    assert_failed(played)
    log = played.log(PRODUCTION)
    assert (
        f"ci-mlops: error: {MODEL} {forged}: model.sig was not signed by the public key from "
        "deploy.signing.public_key (keys/deploy.pub)"
    ) in log
    assert environment(gitlab_api, "production") is None


def test_stored_bytes_edited_in_the_registry_are_refused_by_promotion_rollback_and_verify(
    tmp_path: Path, job_bin: Path, gitlab_api: FakeGitLab
) -> None:
    project, deploy_key = signed_project(tmp_path)
    version = deploy_staging(project, job_bin, gitlab_api, deploy_key)
    signed = gitlab_api.package_file(MODEL, version, "SHA256SUMS")
    assert signed is not None

    # Anyone with a job token uploads another model.joblib into the version, and a
    # SHA256SUMS that agrees with it; the registry serves the newest upload.
    evil = hashlib.sha256(b"EVIL").hexdigest()
    lines = signed.decode().splitlines()
    original = next(line.split()[0] for line in lines if line.endswith("  model.joblib"))
    listing = "\n".join(line.replace(original, evil) for line in lines) + "\n"
    stored = gitlab_api.packages[(MODEL, version)]
    stored += [("model.joblib", b"EVIL"), ("SHA256SUMS", listing.encode())]
    changed = f"model.joblib: sha256 {evil} does not match {original} in model.sig"

    played = play_production(project, job_bin, gitlab_api, deploy_key)

    assert_failed(played)
    assert f"ci-mlops: error: {MODEL} {version}: " in played.log(PRODUCTION)
    assert changed in played.log(PRODUCTION)
    assert environment(gitlab_api, "production") is None

    env = {**ci_variables(gitlab_api), "CI_DEFAULT_BRANCH": "main"}
    verified = run_cli("verify", cwd=project.path, env=env)
    assert verified.code == 1 and changed in verified.stderr, verified.output

    # staging moves on to a new version; rolling back would land on the edited one.
    record = {"version": f"{version}9", "history": [version]}
    gitlab_api.packages[(f"{MODEL}-environments", "0.0.0")].append(
        ("staging.json", json.dumps(record).encode())
    )
    rollback = run_cli("deploy", "--rollback", cwd=project.path, env=env)
    assert rollback.code == 1 and changed in rollback.stderr, rollback.output
    assert environment(gitlab_api, "staging") == record
