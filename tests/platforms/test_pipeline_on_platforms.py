"""The job steps as a merge-request pipeline and a default-branch pipeline would run them,
against the fake GitLab and GitHub APIs: evaluate reads the baseline, report posts its
note with plots, deploy publishes signed versions, promotes and reuses the staging
version; and registries whose bytes were rewritten, or that hold a version someone else
signed, are refused by promotion, rollback and ``verify``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ci_mlops.atomic import sha256_file
from ci_mlops.cli import main
from ci_mlops.platforms.remote import checksums_file, sha256_bytes
from ci_mlops.registries import registry_for
from ci_mlops.spec.check import load_spec
from ci_mlops.steps import signing
from ci_mlops.steps.records import snapshot_spec
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import make_key_pair
from tests.steps.trained import clone, invoke, train_example, trained_example, workdir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example, trained, evaluated and exported once for the module."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("trained"))
    for step in ("evaluate", "export"):
        result = invoke(folder, step)
        assert result.code == 0, result.output
    return folder


def _steps(folder: Path, *steps: tuple[str, ...]) -> None:
    for args in steps:
        result = invoke(folder, *args)
        assert result.code == 0, (args, result.output)


def test_gitlab_merge_request_then_default_branch(
    trained: Path, tmp_path: Path, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    folder = clone(trained, tmp_path)
    _steps(folder, ("evaluate",), ("report",))

    (note,) = gitlab_api.notes[7]
    assert note["body"].startswith("<!-- ci-mlops:report model=breast-cancer -->")
    assert {u["filename"] for u in gitlab_api.uploads} == {
        p.name for p in (workdir(folder) / "plots").glob("*.png")
    }
    assert all(u["url"] in note["body"] for u in gitlab_api.uploads)
    assert gitlab_api.calls("artifact_raw")  # evaluate asked for a baseline: none yet

    # The default branch's evaluate job left its metrics; the next run compares with them.
    metrics = (workdir(folder) / "metrics.json").read_bytes()
    gitlab_api.artifacts[("main", "breast-cancer:evaluate")] = {
        ".ci-mlops/breast-cancer/metrics.json": metrics
    }
    _steps(folder, ("evaluate",), ("report",))
    saved = json.loads((workdir(folder) / "metrics.json").read_text())
    assert saved["baseline"]["source"] == "latest successful breast-cancer:evaluate job on main"
    assert len(gitlab_api.notes[7]) == 1

    _steps(folder, ("deploy", "-e", "staging"), ("deploy", "-e", "production"))
    version = "1.0.0-pipeline.17"
    stored = gitlab_api.package_file("breast-cancer", version, "model.joblib")
    assert stored == (workdir(folder) / "model.joblib").read_bytes()
    for env in ("staging", "production"):
        record = gitlab_api.package_file("breast-cancer-environments", "0.0.0", f"{env}.json")
        assert json.loads(record or b"{}")["version"] == version
    # production reused the version staging runs: one upload of each file
    uploads = [name for name, _ in gitlab_api.packages[("breast-cancer", version)]]
    assert sorted(uploads) == sorted(set(uploads))


def test_github_pull_request_then_default_branch(
    trained: Path, tmp_path: Path, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    folder = clone(trained, tmp_path)
    _steps(folder, ("evaluate",), ("report",))

    (comment,) = github_api.comments[5]
    assert comment["user"]["login"] == "github-actions[bot]"
    assert "in the `breast-cancer-evaluate` artifact of this run" in comment["body"]
    assert "](plots/" not in comment["body"]
    summary = Path(github_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "breast-cancer" in summary and "](plots/" not in summary

    run = github_api.add_run()
    metrics = (workdir(folder) / "metrics.json").read_bytes()
    github_api.add_artifact(run, "breast-cancer-evaluate", {"metrics.json": metrics})
    _steps(folder, ("evaluate",), ("report",))
    saved = json.loads((workdir(folder) / "metrics.json").read_text())
    assert saved["baseline"]["source"].startswith(f"run #{run['run_number']} of mlops.yml on main")
    assert len(github_api.comments[5]) == 1

    _steps(folder, ("deploy", "-e", "staging"), ("deploy", "-e", "production"))
    (release,) = github_api.releases
    assert release["tag_name"] == "breast-cancer-v1.0.0-run.12"
    assert [d["environment"] for d in github_api.deployments] == ["staging", "production"]
    assert {d["payload"]["version"] for d in github_api.deployments} == {"1.0.0-run.12"}
    assert len(github_api.calls("upload_asset")) == len(release["assets"])  # production reused it


def test_an_expired_github_baseline_fails_change_gates_and_the_report_says_why(
    trained: Path, tmp_path: Path, github_api: FakeGitHub, github_env: dict[str, str]
) -> None:
    """baseline.if_missing is pass in the example: that is for a first model only."""
    folder = clone(trained, tmp_path)
    run = github_api.add_run(event="schedule")
    github_api.add_artifact(run, "breast-cancer-evaluate", {"metrics.json": b"{}"}, expired=True)

    result = invoke(folder, "evaluate")

    assert result.code == 1, result.output
    gates = json.loads((workdir(folder) / "gates.json").read_text())
    failed = [c for c in gates["checks"] if not c["passed"]]
    assert failed and all(c["rule"] in ("max_drop", "max_relative_drop") for c in failed)
    assert gates["baseline_missing"].startswith("expired: the breast-cancer-evaluate artifact")
    _steps(folder, ("report",))
    (comment,) = github_api.comments[5]
    assert "No baseline: expired: the breast\\-cancer\\-evaluate" not in comment["body"]
    assert "⚠️ No baseline: expired: the breast-cancer-evaluate artifact" in comment["body"]


def _attacker_files(folder: Path, tmp_path: Path) -> dict[str, Path]:
    """A version signed with a key that is not the deploy key, as a merge-request
    pipeline could make one."""
    attacker, _ = make_key_pair(tmp_path / "attacker")
    files = {n: workdir(folder) / n for n in ("model.joblib", "metrics.json", "gates.json")}
    return signing.sign(files, tmp_path / "forged", True, {"MLOPS_SIGNING_KEY": str(attacker)})


def _refused(folder: Path, args: tuple[str, ...], *expected: str) -> None:
    result = invoke(folder, *args)
    assert result.code == 1, (args, result.output)
    for text in expected:
        assert text in result.stderr, (args, result.stderr)


def test_gitlab_registry_edits_and_foreign_versions_are_refused(
    trained: Path, tmp_path: Path, gitlab_api: FakeGitLab, gitlab_env: dict[str, str]
) -> None:
    folder = clone(trained, tmp_path)
    _steps(folder, ("deploy", "-e", "staging"))
    version = "1.0.0-pipeline.17"
    model = workdir(folder) / "model.joblib"
    signed_sha = sha256_file(model)

    # A job token rewrites the model and the SHA256SUMS listing of the staging version.
    stored = gitlab_api.packages[("breast-cancer", version)]
    sums = {n: sha256_bytes(d) for n, d in stored if n != "SHA256SUMS"}
    sums["model.joblib"] = evil = sha256_bytes(b"EVIL")
    stored += [("model.joblib", b"EVIL"), ("SHA256SUMS", checksums_file(sums))]
    rewritten = f"model.joblib: sha256 {evil} does not match {signed_sha} in model.sig"
    _refused(folder, ("deploy", "-e", "production"), f"breast-cancer {version}: ", rewritten)
    _refused(folder, ("verify",), rewritten)
    assert gitlab_api.package_file("breast-cancer-environments", "0.0.0", "production.json") is None

    # A merge-request pipeline publishes its own signed version and points staging at it.
    forged = "1.0.0-pipeline.18"
    for name, path in _attacker_files(folder, tmp_path).items():
        stored_files = gitlab_api.packages.setdefault(("breast-cancer", forged), [])
        stored_files.append((name, path.read_bytes()))
    listing = {n: sha256_bytes(d) for n, d in gitlab_api.packages[("breast-cancer", forged)]}
    gitlab_api.packages[("breast-cancer", forged)].append(("SHA256SUMS", checksums_file(listing)))
    record = {"version": forged, "history": [version]}
    gitlab_api.packages[("breast-cancer-environments", "0.0.0")].append(
        ("staging.json", json.dumps(record).encode())
    )
    not_ours = f"breast-cancer {forged}: model.sig was not signed by the public key"
    _refused(folder, ("deploy", "-e", "production"), not_ours)
    _refused(folder, ("verify", "-e", "staging"), not_ours)
    # Rolling staging back lands on the rewritten version: refused, staging unchanged.
    _refused(folder, ("deploy", "--rollback"), rewritten)
    staging = gitlab_api.package_file("breast-cancer-environments", "0.0.0", "staging.json")
    assert json.loads(staging or b"{}")["version"] == forged


def test_github_release_edits_and_foreign_versions_are_refused(
    trained: Path,
    tmp_path: Path,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = clone(trained, tmp_path)
    _steps(folder, ("deploy", "-e", "staging"))
    signed_sha = sha256_file(workdir(folder) / "model.joblib")
    train_example(folder, C=0.5)
    _steps(folder, ("evaluate",), ("export",))
    monkeypatch.setenv("GITHUB_RUN_NUMBER", "13")  # the next run publishes 1.0.0-run.13
    _steps(folder, ("deploy", "-e", "staging"))

    # Someone with contents: write replaces the first release's model and its listing.
    first = next(r for r in github_api.releases if r["tag_name"] == "breast-cancer-v1.0.0-run.12")
    assets = {a["name"]: a for a in first["assets"]}
    github_api.blobs[f"assets/{assets['model.joblib']['id']}"] = b"EVIL"
    listing = github_api.blobs[f"assets/{assets['SHA256SUMS']['id']}"].decode()
    evil = sha256_bytes(b"EVIL")
    github_api.blobs[f"assets/{assets['SHA256SUMS']['id']}"] = listing.replace(
        signed_sha, evil
    ).encode()
    rewritten = f"model.joblib: sha256 {evil} does not match {signed_sha} in model.sig"
    _refused(folder, ("deploy", "--rollback"), "breast-cancer 1.0.0-run.12: ", rewritten)
    staging = [d for d in github_api.deployments if d["environment"] == "staging"]
    assert staging[-1]["payload"]["version"] == "1.0.0-run.13"

    # A version signed by another key, deployed to staging through the API, is refused.
    _steps(folder, ("deploy", "-e", "production"))
    forged = _attacker_files(folder, tmp_path)
    monkeypatch.setenv("GITHUB_RUN_NUMBER", "14")
    loaded = load_spec(folder / "mlops.yaml")
    spec_model = loaded.models[0]
    registry = registry_for(loaded, spec_model, "github")
    published = registry.publish(spec_model, "1.0.0-run.14", forged)
    registry.promote(spec_model, "staging", published.version)
    not_ours = "breast-cancer 1.0.0-run.14: model.sig was not signed by the public key"
    _refused(folder, ("verify", "-e", "staging"), not_ours)
    _refused(folder, ("deploy", "-e", "production"), not_ours)
    production = [d for d in github_api.deployments if d["environment"] == "production"]
    assert production[-1]["payload"]["version"] == "1.0.0-run.13"


def test_github_report_and_deploy_from_the_model_folder_alone(
    trained: Path,
    tmp_path: Path,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GitHub's report and deploy jobs check nothing out: they get the model folder as
    artifacts, with the spec copy data-test leaves there, and comment and publish from
    that alone."""
    job = tmp_path / "job"
    model_dir = job / ".ci-mlops" / "breast-cancer"
    shutil.copytree(workdir(trained), model_dir)
    shutil.copy(trained / "mlops.yaml", model_dir / "spec.yaml")
    monkeypatch.setenv("MLOPS_WORKDIR", str(job / ".ci-mlops"))
    monkeypatch.chdir(job)
    spec = ["--spec", ".ci-mlops/breast-cancer/spec.yaml", "--model", "breast-cancer"]

    for args in (["report"], ["deploy", "-e", "staging"]):
        result = CliRunner().invoke(main, [*args, *spec])
        assert result.exit_code == 0, (args, result.output)

    (comment,) = github_api.comments[5]
    assert comment["body"].startswith("<!-- ci-mlops:report model=breast-cancer -->")
    (release,) = github_api.releases
    assert release["tag_name"] == "breast-cancer-v1.0.0-run.12"
    assert [d["environment"] for d in github_api.deployments] == ["staging"]
    assert sorted(p.name for p in job.iterdir()) == [".ci-mlops"]  # nothing else was needed


def test_a_github_deploy_without_checkout_verifies_with_the_spec_public_key(
    trained: Path,
    tmp_path: Path,
    github_api: FakeGitHub,
    github_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy.signing.public_key is a path beside the spec; the deploy job has only the
    model folder, where data-test put the spec copy and the key."""
    folder = clone(trained, tmp_path)
    private, _ = make_key_pair(folder / "keys", "deploy")
    spec_file = folder / "mlops.yaml"
    spec_file.write_text(
        spec_file.read_text().replace(
            "    deploy:\n", "    deploy:\n      signing: {public_key: keys/deploy.pub}\n", 1
        )
    )
    spec = load_spec(spec_file)
    snapshot_spec(spec, spec.models[0])
    job = tmp_path / "job"
    shutil.copytree(workdir(folder), job / ".ci-mlops" / "breast-cancer")
    monkeypatch.delenv("MLOPS_SIGNING_PUBLIC_KEY")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", str(private))
    monkeypatch.setenv("MLOPS_WORKDIR", str(job / ".ci-mlops"))
    monkeypatch.chdir(job)
    args = ["--spec", ".ci-mlops/breast-cancer/spec.yaml", "--model", "breast-cancer"]

    for step in (["deploy", "-e", "staging"], ["verify", "-e", "staging"]):
        result = CliRunner().invoke(main, [*step, *args])
        assert result.exit_code == 0, (step, result.output)
    assert [d["environment"] for d in github_api.deployments] == ["staging"]
