"""The container image's build context and cluster manifests: `ci-mlops package` writes
them for a verified registry version, the manifests pass the vendored Kubernetes and
KServe schemas, and `ci-mlops serve --folder` serves the packaged model as the image's
entry point does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ci_mlops.serve import container
from tests.helpers import run_cli
from tests.serve.test_serve_cli import serving, version_served
from tests.steps.trained import clone, invoke, read_json, workdir

NAME = "breast-cancer"
SCHEMAS = Path(__file__).parent / "schemas"
DIGEST = "sha256:" + "ab" * 32


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text("utf-8"))


def validate(document: dict[str, Any]) -> None:
    """``document`` against the vendored schema of its kind; raises ValidationError."""
    names = {
        "Deployment": "kubernetes-1.34-deployment-apps-v1.json",
        "Service": "kubernetes-1.34-service-v1.json",
        "InferenceService": "kserve-inferenceservice-v1beta1.json",
    }
    jsonschema.Draft202012Validator(schema(names[document["kind"]])).validate(document)


def sample(**changes: Any) -> container.Package:
    fields: dict[str, Any] = {
        "model": NAME,
        "version": "1.0.0+3",
        "task": "classification",
        "image": "registry.example.com/group/project/breast-cancer:1.0.0_3",
        "base": "python:3.11-slim",
        "port": 8080,
        "replicas": 2,
        "install": ("ci-mlops[serve]==0.1.0",),
    }
    return container.Package(**{**fields, **changes})


@pytest.fixture(scope="module")
def deployed(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with staging at 1.0.0+1 and then 1.0.0+2, and an image section."""
    folder = clone(exported, tmp_path_factory.mktemp("packaged"))
    spec = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))
    spec["models"][0].setdefault("deploy", {})["image"] = {"port": 9000, "replicas": 3}
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    for _ in range(2):
        result = invoke(folder, "deploy")
        assert result.code == 0, result.output
    return folder


def test_image_tags_carry_the_build_number_after_an_underscore() -> None:
    assert container.image_tag("1.0.0+3") == "1.0.0_3"
    assert container.image_ref("localhost/churn", "2.1.0") == "localhost/churn:2.1.0"
    with pytest.raises(Exception, match="not an image repository"):
        container.image_ref("Registry/Churn", "1.0.0")
    with pytest.raises(Exception, match="cannot be an image tag"):
        container.image_tag("1.0.0+a/b")


def test_the_repository_is_the_platforms_container_registry() -> None:
    gitlab = {"GITLAB_CI": "true", "CI_REGISTRY_IMAGE": "registry.example.com/g/p"}
    github = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Octo-Org/Models"}
    assert container.default_repository("churn", gitlab) == "registry.example.com/g/p/churn"
    assert container.default_repository("churn", github) == "ghcr.io/octo-org/models/churn"
    assert container.default_repository("churn", {}) == "localhost/churn"


def test_the_containerfile_installs_the_serve_extra_and_runs_unprivileged() -> None:
    text = container.containerfile(sample())
    lines = text.splitlines()
    assert "FROM python:3.11-slim" in lines
    run = next(line for line in lines if line.startswith("RUN "))
    assert json.loads(run.removeprefix("RUN ")) == [
        *("python", "-I", "-m", "pip", "install", "--no-cache-dir"),
        "ci-mlops[serve]==0.1.0",
    ]
    assert "COPY models/ /models/" in lines
    assert "USER 10001:10001" in lines
    entry = json.loads(next(x for x in lines if x.startswith("ENTRYPOINT ")).split(" ", 1)[1])
    assert entry[:7] == ["python", "-I", "-m", "ci_mlops", "serve", "--folder", "/models"]
    assert entry[-2:] == ["--port", "8080"]
    offline = container.containerfile(sample(wheels=True))
    assert "RUN --mount=type=bind,source=wheels,target=/tmp/wheels " in offline
    assert '"--no-index", "--find-links", "/tmp/wheels"' in offline


def test_the_manifests_pass_the_kubernetes_and_kserve_schemas() -> None:
    pkg = sample()
    documents = [container.inference_service(pkg), *container.deployment(pkg)]
    for document in documents:
        validate(document)
    isvc, deployment, service = documents
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"}
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == f"oci://{pkg.image}"
    pod = deployment["spec"]["template"]["spec"]
    (run,) = pod["containers"]
    assert run["image"] == pkg.image
    assert run["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert run["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector


def test_the_schemas_refuse_a_misspelt_field() -> None:
    """The schema check could fail: a typo in a field name is refused by each schema."""
    pkg = sample()
    isvc = container.inference_service(pkg)
    isvc["spec"]["predictor"]["model"]["protocolVersoin"] = "v2"
    deployment, service = container.deployment(pkg)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    service["spec"]["port"] = 80
    for broken in (isvc, deployment, service):
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            validate(broken)


def test_package_writes_the_context_and_manifests_of_what_staging_runs(
    deployed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    result = run_cli("package", "--out", out, cwd=deployed)
    assert result.code == 0, result.output
    assert f"packaged {NAME} 1.0.0+2" in result.stdout
    onnx = (out / "models" / "model.onnx").read_bytes()
    registry = deployed / ".mlops-registry" / NAME / "versions" / "1.0.0+2"
    assert onnx == (registry / "model.onnx").read_bytes()
    record = read_json(out / "models" / "package.json")
    manifest = read_json(registry / "manifest.json")
    assert record["files"]["model.onnx"]["sha256"] == manifest["files"]["model.onnx"]["sha256"]
    assert (record["model"], record["version"], record["task"]) == (
        NAME,
        "1.0.0+2",
        "classification",
    )
    text = (out / "Containerfile").read_text("utf-8")
    assert "FROM python:3.11-slim" in text
    assert "EXPOSE 9000" in text
    deployment, service = yaml.safe_load_all((out / "manifests" / "deployment.yaml").read_text())
    (isvc,) = yaml.safe_load_all((out / "manifests" / "inferenceservice.yaml").read_text())
    for document in (deployment, service, isvc):
        validate(document)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"localhost/{NAME}:1.0.0_2"
    )
    assert deployment["spec"]["replicas"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context"]  # no staging left


def test_package_takes_a_version_and_an_image_repository(deployed: Path, tmp_path: Path) -> None:
    out = tmp_path / "older"
    result = run_cli(
        "package",
        "--version",
        "1.0.0+1",
        "--image",
        "registry.example.com/ml/bc",
        "--out",
        out,
        cwd=deployed,
    )
    assert result.code == 0, result.output
    (isvc,) = yaml.safe_load_all((out / "manifests" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == (
        "oci://registry.example.com/ml/bc:1.0.0_1"
    )
    assert read_json(out / "models" / "package.json")["version"] == "1.0.0+1"


def test_package_replaces_an_earlier_package_but_no_other_folder(
    deployed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    assert run_cli("package", "--version", "1.0.0+1", "--out", out, cwd=deployed).code == 0
    assert run_cli("package", "--out", out, cwd=deployed).code == 0
    assert read_json(out / "models" / "package.json")["version"] == "1.0.0+2"
    precious = tmp_path / "repo"
    precious.mkdir()
    (precious / "train.py").write_text("print('mine')\n")
    result = run_cli("package", "--out", precious, cwd=deployed)
    assert result.code == 2
    assert "is not a folder `ci-mlops package` wrote" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in precious.iterdir()) == ["train.py"]


def test_package_refuses_a_tampered_version_and_writes_nothing(
    deployed: Path, tmp_path: Path
) -> None:
    folder = clone(deployed, tmp_path / "tampered")
    stored = folder / ".mlops-registry" / NAME / "versions" / "1.0.0+2" / "model.onnx"
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes() + b"\0")
    out = tmp_path / "context"
    result = run_cli("package", "--out", out, cwd=folder)
    assert result.code == 1
    assert "model.onnx" in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tampered"]


def test_serve_folder_answers_like_the_registry_version(deployed: Path, tmp_path: Path) -> None:
    out = tmp_path / "context"
    assert run_cli("package", "--out", out, cwd=deployed).code == 0
    with serving(tmp_path, "--folder", str(out / "models")) as (address, _log, _):
        assert version_served(address, deployed) == "1.0.0+2"
    log_text = (tmp_path / "serve.log").read_text()
    assert "packaged; sha256" in log_text


def test_serve_folder_refuses_a_model_that_differs_from_its_record(
    deployed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    assert run_cli("package", "--out", out, cwd=deployed).code == 0
    model = out / "models" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1])
    result = run_cli("serve", "--folder", out / "models", "--port", "0", cwd=tmp_path)
    assert result.code == 1
    assert "does not match" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("serve", "--folder", empty, "--port", "0", cwd=tmp_path)
    assert result.code == 2
    assert "package.json: not found" in result.stderr


def test_read_folder_reports_what_it_checked(deployed: Path, tmp_path: Path) -> None:
    out = tmp_path / "context"
    assert run_cli("package", "--out", out, cwd=deployed).code == 0
    found = container.read_folder(out / "models")
    onnx = workdir(deployed) / "model.onnx"
    assert found.onnx == onnx.read_bytes()
    assert (found.model, found.version, found.task) == (NAME, "1.0.0+2", "classification")
