"""The deployed model as a container image and cluster manifests.

``ci-mlops package`` renders, for one verified registry version:

- a ``Containerfile``: a small Python base, ci-mlops with its ``serve`` extra (which
  brings onnxruntime), the model under ``/models`` and ``ci-mlops serve --folder
  /models`` as the entry point, run as an unprivileged user;
- ``models/``: ``model.onnx`` and ``package.json``, which names the model, its version,
  its task and the sha256 every start of the image checks before loading it;
- ``manifests/inferenceservice.yaml``: a KServe ``InferenceService`` (ONNX format,
  protocol v2) whose ``storageUri`` is the image itself (KServe's "modelcars" read the
  model files from ``/models`` of an OCI image);
- ``manifests/deployment.yaml``: a plain Kubernetes Deployment and Service running the
  image, probed on the protocol's health paths.

Everything here is text: nothing is built or contacted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_mlops import __version__
from ci_mlops.atomic import read_artifact
from ci_mlops.errors import UsageError
from ci_mlops.generate import yamlout
from ci_mlops.records import require_sha256

MODELS = "/models"  # KServe's modelcars look for model files here too
PACKAGE_FILE = "package.json"
MODEL_FILE = "model.onnx"
WHEELS = "wheels"  # optional folder of wheels in the context: an offline install
# A fixed numeric user: Kubernetes can then prove runAsNonRoot without a passwd entry.
USER_ID = 10001
LIVE, READY = "/v2/health/live", "/v2/health/ready"
# OCI distribution spec: what a tag may be.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_REF = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
_REPOSITORY = re.compile(r"[a-z0-9]+([._/:-][a-z0-9]+)*")


@dataclass(frozen=True)
class Package:
    """What the Containerfile and the manifests are rendered from."""

    model: str
    version: str
    task: str
    image: str  # what the manifests run: repository:tag, or repository@sha256:... once pushed
    base: str
    port: int
    replicas: int
    install: tuple[str, ...]  # pip arguments that install ci-mlops with the serve extra
    wheels: bool = False  # install only from the context's wheels/ folder (no index)
    tag: str = ""  # repository:tag the image is built as (default: ``image``)

    @property
    def build_tag(self) -> str:
        return self.tag or self.image


def image_tag(version: str) -> str:
    """The image tag of a registry version: OCI tags allow no ``+``, so the build part
    follows ``_`` (as Helm writes SemVer build metadata into OCI tags)."""
    tag = version.replace("+", "_")
    if not _TAG.fullmatch(tag):
        raise UsageError(f"version {version!r} cannot be an image tag ({tag!r})")
    return tag


def default_repository(model: str, env: Mapping[str, str]) -> str:
    """Where the image of ``model`` goes: the project's container registry in CI
    (``$CI_REGISTRY_IMAGE/<model>`` on GitLab, ``ghcr.io/<owner>/<repo>/<model>`` on
    GitHub), ``localhost/<model>`` (a local builder's name for a local image) elsewhere."""
    if env.get("GITLAB_CI") and env.get("CI_REGISTRY_IMAGE"):
        return f"{env['CI_REGISTRY_IMAGE']}/{model}"
    if env.get("GITHUB_ACTIONS") and env.get("GITHUB_REPOSITORY"):
        # GHCR names must be lower case; GitHub repository names need not be.
        return f"ghcr.io/{env['GITHUB_REPOSITORY'].lower()}/{model}"
    return f"localhost/{model}"


def image_ref(repository: str, version: str) -> str:
    """``repository:tag`` of ``version``; UsageError for a repository no registry takes."""
    if not _REPOSITORY.fullmatch(repository):
        raise UsageError(
            f"{repository!r} is not an image repository (lower-case letters, digits, "
            "and . _ - / : between them)"
        )
    return f"{repository}:{image_tag(version)}"


def check_digest_ref(ref: str) -> str:
    """``ref`` when it names an image by digest (``repository@sha256:<64 hex>``)."""
    if not _DIGEST_REF.fullmatch(ref):
        raise UsageError(f"{ref!r} is not an image reference by digest (name@sha256:<64 hex>)")
    return ref


def containerfile(pkg: Package) -> str:
    """The Containerfile of ``pkg``. Instructions use the exec form: no shell parses
    the install arguments, and the image needs no shell to start."""
    pip = ["python", "-I", "-m", "pip", "install", "--no-cache-dir"]
    run = "RUN "
    if pkg.wheels:
        pip += ["--no-index", "--find-links", f"/tmp/{WHEELS}"]
        # Bind-mounted for this step only: the wheels never become a layer of the image.
        run += f"--mount=type=bind,source={WHEELS},target=/tmp/{WHEELS} "
    entry = ["python", "-I", "-m", "ci_mlops", "serve", "--folder", MODELS]
    entry += ["--host", "0.0.0.0", "--port", str(pkg.port)]
    labels = {
        "org.opencontainers.image.title": pkg.model,
        "org.opencontainers.image.version": pkg.version,
        "org.opencontainers.image.base.name": pkg.base,
        "dev.ci-mlops.task": pkg.task,
    }
    lines = [
        f"# Generated by ci-mlops {__version__} for {pkg.model} {pkg.version}; do not edit by hand.",
        "# Regenerate with: ci-mlops package --model "
        f"{pkg.model} --version {pkg.version} --out <folder>",
        f"FROM {pkg.base}",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1"
        " PIP_ROOT_USER_ACTION=ignore",
        run + json.dumps([*pip, *pkg.install]),
        f"COPY models/ {MODELS}/",
        "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()),
        f"USER {USER_ID}:{USER_ID}",
        f"EXPOSE {pkg.port}",
        f"ENTRYPOINT {json.dumps(entry)}",
    ]
    return "\n".join(lines) + "\n"


def _labels(pkg: Package) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": pkg.model,
        "app.kubernetes.io/version": image_tag(pkg.version),
        "app.kubernetes.io/managed-by": "ci-mlops",
    }


def _metadata(pkg: Package) -> dict[str, Any]:
    # The label holds the tag form (label values allow no "+"); the annotation the
    # registry version as the registry writes it.
    return {
        "name": pkg.model,
        "labels": _labels(pkg),
        "annotations": {"ci-mlops.dev/version": pkg.version},
    }


def inference_service(pkg: Package) -> dict[str, Any]:
    """A KServe InferenceService serving the image's ``/models/model.onnx`` with KServe's
    ONNX runtime over protocol v2 (needs modelcars enabled in KServe's configuration)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(pkg),
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "onnx"},
                    "protocolVersion": "v2",
                    "storageUri": f"oci://{pkg.image}",
                    "resources": _resources(),
                }
            }
        },
    }


def _resources() -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _probe(path: str, delay: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "initialDelaySeconds": delay}


def deployment(pkg: Package) -> list[dict[str, Any]]:
    """A Deployment running the image (non-root, read-only root file system, no
    privilege escalation, no service-account token) and a Service in front of it."""
    selector = {"app.kubernetes.io/name": pkg.model}
    container = {
        "name": "model",
        "image": pkg.image,
        "ports": [{"name": "http", "containerPort": pkg.port, "protocol": "TCP"}],
        "readinessProbe": _probe(READY, 2),
        "livenessProbe": _probe(LIVE, 10),
        "resources": _resources(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(pkg),
            "spec": {
                "replicas": pkg.replicas,
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": _labels(pkg)}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(pkg),
            "spec": {
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


def manifests_text(documents: list[dict[str, Any]], pkg: Package) -> str:
    """``documents`` as one YAML stream with a header naming what they deploy."""
    head = (
        f"# Generated by ci-mlops {__version__} for {pkg.model} {pkg.version} ({pkg.image}).\n"
        "# Apply with: kubectl apply -f <this file>\n"
    )
    return head + "---\n".join(yamlout.dump(d) for d in documents)


def package_record(pkg: Package, onnx: bytes, verified: str, source: str) -> dict[str, Any]:
    """``package.json``: what the image serves and the sha256 it checks at every start."""
    return {
        "model": pkg.model,
        "version": pkg.version,
        "task": pkg.task,
        "files": {MODEL_FILE: {"sha256": hashlib.sha256(onnx).hexdigest(), "size": len(onnx)}},
        "verified": verified,
        "source": source,
        "ci_mlops": __version__,
    }


@dataclass(frozen=True)
class Packaged:
    """A packaged model folder, read back: the bytes and the sha256 they must have."""

    model: str
    version: str
    task: str
    onnx: bytes
    sha256: str


def read_folder(folder: Path) -> Packaged:
    """The model in ``folder`` (as ``ci-mlops package`` wrote it), its bytes checked
    against ``package.json``; UsageError for a folder that is not one, CheckFailed when
    the model file differs from what was packaged."""
    path = folder / PACKAGE_FILE
    if not path.is_file():
        raise UsageError(f"{path}: not found; is {folder} a folder `ci-mlops package` wrote?")
    try:
        record = json.loads(read_artifact(folder, PACKAGE_FILE))
        expected = record["files"][MODEL_FILE]["sha256"]
        names = (str(record["model"]), str(record["version"]), str(record["task"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a package record ({type(exc).__name__}: {exc})") from None
    onnx = read_artifact(folder, MODEL_FILE)
    actual = hashlib.sha256(onnx).hexdigest()
    require_sha256(folder / MODEL_FILE, actual, expected, PACKAGE_FILE)
    return Packaged(*names, onnx=onnx, sha256=actual)
