"""The gitlab-model-registry deploy target against the fake GitLab, through the real
MLflow client and python-gitlab: semver versions, files through the model-package
endpoints with CI_JOB_TOKEN, environment records beside the registry, and GitLab's
refusals (job tokens on the MLflow API, non-semver versions, aliases, folders)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ci_mlops.errors import CheckFailed, PlatformError, UsageError
from ci_mlops.registries import registry_for
from ci_mlops.registries.gitlab_model_registry import GitLabModelRegistry
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from tests.fakes.env import GITLAB_TOKEN, gitlab_vars, start_gitlab
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import copy_example, publishable_files


@pytest.fixture
def gitlab_api() -> Iterator[FakeGitLab]:
    api = start_gitlab()
    yield api
    api.stop()


@pytest.fixture
def env(gitlab_api: FakeGitLab, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A default-branch pipeline's deploy job (pipeline IID 17) with an access token for
    the MLflow API."""
    values = {**gitlab_vars(gitlab_api, mr_iid=None), "MLFLOW_TRACKING_TOKEN": GITLAB_TOKEN}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def spec(tmp_path: Path, env: dict[str, str]) -> Spec:
    spec = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")
    spec.workdir(spec.models[0]).mkdir(parents=True)
    return spec


@pytest.fixture
def model(spec: Spec) -> Model:
    base = spec.models[0]
    return dataclasses.replace(
        base, deploy=dataclasses.replace(base.deploy, target="gitlab-model-registry")
    )


@pytest.fixture
def registry(spec: Spec, model: Model) -> GitLabModelRegistry:
    found = registry_for(spec, model, "gitlab")
    assert isinstance(found, GitLabModelRegistry)
    return found


def publish(
    registry: GitLabModelRegistry, spec: Spec, model: Model, version: str, tag: bytes = b""
):  # type: ignore[no-untyped-def]
    files = publishable_files(spec)
    for path in files.values():
        path.write_bytes(path.read_bytes() + tag)
    return registry.publish(model, version, files), files


def test_publish_registers_a_semver_version_with_its_files_and_manifest(
    registry: GitLabModelRegistry,
    spec: Spec,
    model: Model,
    gitlab_api: FakeGitLab,
    env: dict[str, str],
) -> None:
    version = model.version + registry.version_suffix()

    published, files = publish(registry, spec, model, version)

    assert published.version == "1.0.0-pipeline.17"
    stored = gitlab_api.ml_version(model.name, published.version)
    assert stored is not None and stored["tags"]["gitlab.version"] == "1.0.0-pipeline.17"
    for name, path in files.items():
        data = gitlab_api.ml_files[(stored["id"], name)]
        assert (
            hashlib.sha256(data).hexdigest()
            == published.files[name]
            == hashlib.sha256(path.read_bytes()).hexdigest()
        )
    manifest = json.loads(gitlab_api.ml_files[(stored["id"], "manifest.json")])
    assert {n: e["sha256"] for n, e in manifest["files"].items()} == published.files
    # The MLflow API saw the access token; the model-package endpoints the job token.
    mlflow_calls = [r for r in gitlab_api.requests if r.route.startswith("mlflow ")]
    assert mlflow_calls and all(
        r.headers["authorization"] == f"Bearer {GITLAB_TOKEN}" for r in mlflow_calls
    )
    file_calls = gitlab_api.calls("ml_file_put") + gitlab_api.calls("ml_file_get")
    assert file_calls and all(
        r.headers["authorization"] == f"Bearer {env['CI_JOB_TOKEN']}" for r in file_calls
    )


def test_environments_are_records_beside_the_registry_that_promotion_and_rollback_move(
    registry: GitLabModelRegistry, spec: Spec, model: Model, gitlab_api: FakeGitLab, tmp_path: Path
) -> None:
    first, _ = publish(registry, spec, model, "1.0.0-pipeline.17", b"1")
    second, _ = publish(registry, spec, model, "1.0.0-pipeline.18", b"2")

    registry.promote(model, "staging", first.version)
    registry.promote(model, "staging", second.version)
    live = registry.live(model, "staging")
    assert live is not None and live.version == second.version and live.files == second.files

    assert registry.rollback(model, "staging") == first.version

    record = json.loads(
        gitlab_api.package_file(
            f"{model.name}-model-registry-environments", "0.0.0", "staging.json"
        )
        or b""
    )
    assert record["version"] == first.version and record["previous"] == []
    assert [e["version"] for e in registry.history(model, "staging")] == [
        first.version,
        second.version,
        first.version,
    ]
    checked = registry.verify(model, first.version, into=tmp_path / "down")
    assert checked.folder is not None and sorted(
        p.name for p in checked.folder.iterdir()
    ) == sorted([*first.files, "manifest.json"])


def test_verify_names_a_file_changed_in_the_registry(
    registry: GitLabModelRegistry, spec: Spec, model: Model, gitlab_api: FakeGitLab, tmp_path: Path
) -> None:
    published, _ = publish(registry, spec, model, "1.0.0-pipeline.17")
    stored = gitlab_api.ml_version(model.name, published.version)
    assert stored is not None
    gitlab_api.ml_files[(stored["id"], "model.onnx")] = b"something else"

    with pytest.raises(CheckFailed, match=r"model\.onnx: sha256 [0-9a-f]{64} does not match"):
        registry.verify(model, published.version, into=tmp_path / "down")


def test_a_version_that_is_not_semver_is_refused_before_and_by_gitlab(
    registry: GitLabModelRegistry, spec: Spec, model: Model, env: dict[str, str]
) -> None:
    with pytest.raises(UsageError, match="'v1' is not semver"):
        publish(registry, spec, model, "v1")

    client = MlflowClient(registry.connection.uri)
    client.create_registered_model("raw")
    with pytest.raises(MlflowException, match="Version must be semantic version"):
        client.create_model_version("raw", source="x", tags={"gitlab.version": "v1"})


def test_a_version_gitlab_has_already_is_refused(
    registry: GitLabModelRegistry, spec: Spec, model: Model
) -> None:
    publish(registry, spec, model, "1.0.0-pipeline.17")

    with pytest.raises(PlatformError, match="already been taken"):
        publish(registry, spec, model, "1.0.0-pipeline.17", b"again")


def test_gitlab_refuses_aliases_and_folders_so_ci_mlops_uses_neither(
    registry: GitLabModelRegistry, spec: Spec, model: Model, tmp_path: Path
) -> None:
    published, _ = publish(registry, spec, model, "1.0.0-pipeline.17")
    client = MlflowClient(registry.connection.uri)
    with pytest.raises(MlflowException):
        client.set_registered_model_alias(model.name, "staging", "1")
    experiment = client.create_experiment("folders")
    run = client.create_run(experiment)
    plot = tmp_path / "roc.png"
    plot.write_bytes(b"png")
    with pytest.raises(Exception, match="400"):
        client.log_artifact(run.info.run_id, str(plot), "plots")
    client.log_artifact(run.info.run_id, str(plot))  # a file at the top level is fine

    registry.promote(model, "production", published.version)  # no alias needed


def test_the_mlflow_api_refuses_the_job_token_and_the_error_says_which_token(
    registry: GitLabModelRegistry,
    spec: Spec,
    model: Model,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", env["CI_JOB_TOKEN"])

    with pytest.raises(PlatformError) as caught:
        GitLabModelRegistry(spec).publish(model, "1.0.0", publishable_files(spec))

    message = str(caught.value)
    assert "401" in message and "CI_JOB_TOKEN is refused" in message
    assert env["CI_JOB_TOKEN"] not in message


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example trained, evaluated and exported, once per module."""
    from tests.steps.trained import invoke, trained_example

    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("ready"))
    for step in ("evaluate", "export"):
        assert invoke(folder, step).code == 0
    return folder


@pytest.mark.slow
def test_deploy_promote_and_roll_back_through_the_cli_in_gitlab_jobs(
    ready: Path,
    tmp_path: Path,
    gitlab_api: FakeGitLab,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ci-mlops deploy with deploy.target gitlab-model-registry in default-branch
    pipelines 17 and 18: staging, production, a second staging deploy and its rollback,
    signed and verified, each version in GitLab's registry under its semver."""
    import yaml

    from tests.helpers import make_key_pair
    from tests.steps.trained import clone, invoke

    folder = clone(ready, tmp_path)
    data = yaml.safe_load((folder / "mlops.yaml").read_text())
    data["models"][0]["deploy"] = {"target": "gitlab-model-registry"}
    (folder / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    private, public = make_key_pair(tmp_path / "keys")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", str(private))
    monkeypatch.setenv("MLOPS_SIGNING_PUBLIC_KEY", str(public))
    monkeypatch.setenv("MLOPS_WORKDIR", str(folder / ".ci-mlops"))

    def record(environment: str) -> dict[str, object]:
        raw = gitlab_api.package_file(
            "breast-cancer-model-registry-environments", "0.0.0", f"{environment}.json"
        )
        return dict(json.loads(raw or b"{}"))

    staged = invoke(folder, "deploy")
    assert staged.code == 0, staged.output
    assert "deployed breast-cancer 1.0.0-pipeline.17 to staging" in staged.output
    promoted = invoke(folder, "deploy", "-e", "production")
    assert promoted.code == 0, promoted.output
    assert record("production")["version"] == "1.0.0-pipeline.17"

    monkeypatch.setenv("CI_PIPELINE_IID", "18")
    again = invoke(folder, "deploy")
    assert again.code == 0, again.output
    assert record("staging")["version"] == "1.0.0-pipeline.18"
    back = invoke(folder, "deploy", "--rollback")
    assert back.code == 0, back.output
    assert record("staging")["version"] == "1.0.0-pipeline.17"
    verified = invoke(folder, "verify")
    assert verified.code == 0, verified.output
    assert verified.output.count("verified breast-cancer 1.0.0-pipeline.17") == 2

    version = gitlab_api.ml_version("breast-cancer", "1.0.0-pipeline.17")
    assert version is not None
    manifest = json.loads(gitlab_api.ml_files[(version["id"], "manifest.json")])
    assert {"model.joblib", "model.onnx", "metrics.json", "gates.json", "model.sig"} <= set(
        manifest["files"]
    )
    for name, entry in manifest["files"].items():
        assert (
            hashlib.sha256(gitlab_api.ml_files[(version["id"], name)]).hexdigest()
            == entry["sha256"]
        )
