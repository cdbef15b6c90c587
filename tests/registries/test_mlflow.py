"""The mlflow deploy target against a real MLflow server: versions whose downloaded
files hash to their manifest, an alias per environment that promotion moves and
rollback moves back, the environment's history, and refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ci_mlops.atomic import sha256_file
from ci_mlops.errors import CheckFailed, PlatformError, UsageError
from ci_mlops.registries import registry_for
from ci_mlops.registries.mlflow import MlflowRegistry
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from tests.helpers import copy_example, publishable_files

_names = itertools.count(1)


@pytest.fixture
def spec(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Spec:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")


@pytest.fixture
def model(spec: Spec) -> Model:
    """The example's model, under a name no other test on the shared server uses, with
    deploy.target mlflow."""
    base = spec.models[0]
    deploy = dataclasses.replace(base.deploy, target="mlflow")
    return dataclasses.replace(base, name=f"bc-{next(_names)}-{id(spec)}", deploy=deploy)


@pytest.fixture
def registry(spec: Spec, model: Model) -> MlflowRegistry:
    found = registry_for(spec, model, "local")
    assert isinstance(found, MlflowRegistry)
    return found


def files_of(spec: Spec, model: Model, tag: bytes = b"") -> dict[str, Path]:
    """Stand-in files in the model's folder: a model, an ONNX file, a card."""
    spec.workdir(spec.models[0]).mkdir(parents=True, exist_ok=True)
    files = publishable_files(spec)
    moved = {}
    workdir = spec.workdir(model)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        target = workdir / name
        target.write_bytes(path.read_bytes() + tag)
        moved[name] = target
    return moved


def test_publish_stores_a_version_whose_downloaded_files_hash_to_the_manifest(
    spec: Spec, model: Model, registry: MlflowRegistry, mlflow_uri: str, tmp_path: Path
) -> None:
    files = files_of(spec, model)

    published = registry.publish(model, "0.1.0", files)

    expected = {name: sha256_file(path) for name, path in files.items()}
    assert published.files == expected
    assert published.location == f"{mlflow_uri}/#/models/{model.name}/versions/{published.version}"
    checked = registry.verify(model, published.version, into=tmp_path / "down")
    assert checked.folder is not None
    for name, digest in expected.items():
        assert hashlib.sha256((checked.folder / name).read_bytes()).hexdigest() == digest
    manifest = json.loads((checked.folder / "manifest.json").read_text())
    assert {n: e["sha256"] for n, e in manifest["files"].items()} == expected
    # MLflow's own view: a registered model named after the model, tagged with the
    # spec's version and the model's sha256.
    version = MlflowClient(mlflow_uri).get_model_version(model.name, published.version)
    assert version.tags["ci_mlops.version"] == "0.1.0"
    assert version.tags["ci_mlops.model_sha256"] == expected["model.joblib"]
    assert registry.live(model, "staging") is None


def test_aliases_follow_promotion_and_rollback_and_history_stays_readable(
    spec: Spec, model: Model, registry: MlflowRegistry, mlflow_uri: str
) -> None:
    first = registry.publish(model, "0.1.0", files_of(spec, model, b"1"))
    second = registry.publish(model, "0.1.0", files_of(spec, model, b"2"))
    assert int(second.version) == int(first.version) + 1
    client = MlflowClient(mlflow_uri)

    registry.promote(model, "staging", first.version)
    registry.promote(model, "production", first.version)
    registry.promote(model, "staging", second.version)
    assert client.get_model_version_by_alias(model.name, "staging").version == second.version
    assert client.get_model_version_by_alias(model.name, "production").version == first.version
    live = registry.live(model, "staging")
    assert live is not None and live.files == second.files

    seen: list[str] = []
    back = registry.rollback(model, "staging", check=seen.append)

    assert back == first.version and seen == [first.version]
    assert client.get_model_version_by_alias(model.name, "staging").version == first.version
    history = registry.history(model, "staging")
    assert [(e["version"], e["action"]) for e in history] == [
        (first.version, "rollback"),
        (second.version, "promote"),
        (first.version, "promote"),
    ]
    assert all(e["at"] for e in history)
    with pytest.raises(UsageError, match="no earlier version"):
        registry.rollback(model, "staging")


def test_a_forced_promotion_is_recorded_and_annotations_reach_the_history(
    spec: Spec, model: Model, registry: MlflowRegistry
) -> None:
    version = registry.publish(model, "0.1.0", files_of(spec, model)).version

    registry.promote(model, "production", version, forced=True)
    registry.annotate(model, "production", version, {"image": "registry.example/bc@sha256:ab"})

    [entry] = registry.history(model, "production")
    assert entry["forced"] is True
    assert entry["image"] == "registry.example/bc@sha256:ab"
    with pytest.raises(UsageError, match="not 99"):
        registry.annotate(model, "production", "99", {"image": "x"})


def test_a_check_that_refuses_stops_the_rollback(
    spec: Spec, model: Model, registry: MlflowRegistry, mlflow_uri: str
) -> None:
    first = registry.publish(model, "0.1.0", files_of(spec, model, b"1")).version
    second = registry.publish(model, "0.1.0", files_of(spec, model, b"2")).version
    registry.promote(model, "staging", first)
    registry.promote(model, "staging", second)

    def refuse(version: str) -> None:
        raise CheckFailed(f"{version} is not trusted")

    with pytest.raises(CheckFailed, match=f"{first} is not trusted"):
        registry.rollback(model, "staging", check=refuse)
    assert (
        MlflowClient(mlflow_uri).get_model_version_by_alias(model.name, "staging").version == second
    )


def test_verify_names_a_file_changed_on_the_server(
    spec: Spec, model: Model, registry: MlflowRegistry, mlflow_uri: str, tmp_path: Path
) -> None:
    published = registry.publish(model, "0.1.0", files_of(spec, model))
    client = MlflowClient(mlflow_uri)
    version = client.get_model_version(model.name, published.version)
    # Someone with write access to the run replaces the ONNX file in place.
    changed = tmp_path / "model.onnx"
    changed.write_bytes(b"not the model that was published")
    client.log_artifact(version.run_id, str(changed), "model")

    with pytest.raises(CheckFailed, match=r"model\.onnx: sha256 [0-9a-f]{64} does not match"):
        registry.verify(model, published.version, into=tmp_path / "down")


def test_promoting_a_version_that_is_not_there_is_a_usage_error(
    spec: Spec, model: Model, registry: MlflowRegistry
) -> None:
    registry.publish(model, "0.1.0", files_of(spec, model))

    with pytest.raises(UsageError, match=f"{model.name} 42 is not in the mlflow registry"):
        registry.promote(model, "staging", "42")


def test_without_a_tracking_uri_the_target_says_what_to_set(
    spec: Spec, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    with pytest.raises(PlatformError, match="needs MLFLOW_TRACKING_URI"):
        MlflowRegistry(spec).live(model, "staging")


def test_an_unreachable_server_is_one_line_without_the_password(
    spec: Spec, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.mlflow_server import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ci:s3cret-pass@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-9c1e77aa")
    monkeypatch.setenv("MLOPS_API_RETRIES", "0")

    with pytest.raises(PlatformError) as caught:
        MlflowRegistry(spec).live(model, "staging")

    message = str(caught.value)
    assert "no usable answer from the MLflow API" in message
    assert "s3cret-pass" not in message and "tok-9c1e77aa" not in message
    assert "\n" not in message


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example trained, evaluated and exported, once per module."""
    from tests.steps.trained import invoke, trained_example

    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("ready"))
    for step in ("evaluate", "export"):
        assert invoke(folder, step).code == 0
    return folder


@pytest.mark.slow
def test_deploy_promote_and_roll_back_through_the_cli(
    ready: Path, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ci-mlops deploy with deploy.target mlflow: staging, production (the version
    staging runs), a second staging deploy and its rollback; every step signed and
    verified, and the aliases where MLflow's own client reads them."""
    import yaml

    from tests.helpers import make_key_pair
    from tests.steps.trained import clone, invoke, workdir

    folder = clone(ready, tmp_path)
    name = f"bc-cli-{next(_names)}-{id(folder)}"
    workdir(folder).rename(workdir(folder).with_name(name))
    data = yaml.safe_load((folder / "mlops.yaml").read_text())
    data["models"][0].update(name=name, deploy={"target": "mlflow"})
    (folder / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    private, public = make_key_pair(tmp_path / "keys")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLOPS_SIGNING_KEY", str(private))
    monkeypatch.setenv("MLOPS_SIGNING_PUBLIC_KEY", str(public))
    client = MlflowClient(mlflow_uri)

    staged = invoke(folder, "deploy")
    assert staged.code == 0, staged.output
    first = client.get_model_version_by_alias(name, "staging")
    promoted = invoke(folder, "deploy", "-e", "production")
    assert promoted.code == 0, promoted.output
    assert client.get_model_version_by_alias(name, "production").version == first.version
    assert f"promoted {name} {first.version} to production" in promoted.output

    again = invoke(folder, "deploy")  # the same model again: a new version in staging
    assert again.code == 0, again.output
    second = client.get_model_version_by_alias(name, "staging")
    assert int(second.version) == int(first.version) + 1
    back = invoke(folder, "deploy", "--rollback")
    assert back.code == 0, back.output
    assert client.get_model_version_by_alias(name, "staging").version == first.version

    verified = invoke(folder, "verify")
    assert verified.code == 0, verified.output
    assert f"verified {name} {first.version} in staging" in verified.output
    # The files MLflow hands out hash to the manifest, and the model is the one judged.
    down = Path(client.download_artifacts(first.run_id, "model", str(tmp_path / "down")))
    manifest = json.loads((down / "manifest.json").read_text())
    for file_name, entry in manifest["files"].items():
        assert hashlib.sha256((down / file_name).read_bytes()).hexdigest() == entry["sha256"]
    assert {"model.joblib", "model.onnx", "metrics.json", "gates.json", "model.sig"} <= set(
        manifest["files"]
    )
    gates = json.loads((workdir(folder).with_name(name) / "gates.json").read_text())
    assert manifest["files"]["model.joblib"]["sha256"] == gates["model_sha256"]
