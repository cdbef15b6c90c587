"""The ``gitlab-model-registry`` deploy target: GitLab's model registry, through its
MLflow-compatible API for models and versions and its model-package endpoints for files.

What GitLab offers, and how ci-mlops fits it (GitLab documents MLflow 2.7
compatibility):

- Versions must be semver. A deploy's version is the spec's ``version`` plus the
  pipeline's ``-pipeline.<IID>`` (a semver pre-release), passed as the ``gitlab.version``
  tag of ``create_model_version``; GitLab refuses anything else, and a version it
  already has. MLflow's ``version`` field is GitLab's internal id; versions are found by
  their semver through ``registered-models/alias``, which GitLab answers for semver.
- Files go to ``/projects/:id/packages/ml_models/:model_version_id/files/:name``, where
  ``CI_JOB_TOKEN`` is accepted (as a bearer token); one file per request, no folders.
  Each version holds the model, model.onnx, the records, report.md, model.sig and
  manifest.json (file -> sha256 and size), downloaded back and compared after upload.
- There are no aliases (``set_registered_model_alias`` is not part of the API), so each
  environment is a record beside the registry: the generic package
  ``<model>-model-registry-environments`` version ``0.0.0``, one file per environment
  (``staging.json``) with its version, the versions it ran before and its history,
  written with ``CI_JOB_TOKEN``. The registry serves the newest upload of a file name.

Tokens: the MLflow endpoints need ``MLFLOW_TRACKING_TOKEN``, a project or personal
access token with ``api`` scope (Developer role); they refuse ``CI_JOB_TOKEN``. File and
record calls use ``CI_JOB_TOKEN`` in a job, and ``GITLAB_TOKEN`` elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from ci_mlops import log
from ci_mlops.atomic import sha256_file, write_bytes
from ci_mlops.errors import PlatformError, UsageError
from ci_mlops.platforms.remote import ApiError, parse_metrics, safe_file_name, sha256_bytes
from ci_mlops.registries.base import Published
from ci_mlops.registries.mlflow import (
    _MISSING,
    MANIFEST,
    MlflowRegistry,
    parse_record,
)
from ci_mlops.registries.mlflow_client import GITLAB_API_PATH, Connection, error_code
from ci_mlops.spec.model import Model, Spec

if TYPE_CHECKING:
    from ci_mlops.platforms.gitlab import GitLabApi

ENVIRONMENTS = "{model}-model-registry-environments"
ENVIRONMENTS_VERSION = "0.0.0"
# Semantic Versioning 2.0.0, as GitLab checks model versions.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
FILE_HINT = (
    "model files need CI_JOB_TOKEN (in a job) or GITLAB_TOKEN with api scope, "
    "and the model registry enabled for the project"
)
RECORD_HINT = (
    "environment records need CI_JOB_TOKEN (in a job) or GITLAB_TOKEN with api "
    f"scope, and duplicate generic packages allowed for {ENVIRONMENTS.format(model='<model>')}"
)


class GitLabModelRegistry(MlflowRegistry):
    """GitLab's model registry (see the module docstring)."""

    name: ClassVar[str] = "gitlab-model-registry"
    extras: ClassVar[tuple[str, ...]] = ("mlflow", "gitlab")
    kind: ClassVar[str] = "gitlab"

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec, env)
        self._api: GitLabApi | None = None

    @property
    def api(self) -> GitLabApi:
        # Built on first use: it imports python-gitlab, which naming a target must not.
        if self._api is None:
            from ci_mlops.platforms.gitlab import GitLabApi

            self._api = GitLabApi(self.env)
        return self._api

    @property
    def connection(self) -> Connection:
        """GitLab's MLflow API of this pipeline's project (CI_API_V4_URL, CI_PROJECT_ID)."""
        if self._connection is None:
            api = self.api.require("CI_API_V4_URL", self.api.env.api_url)
            project = self.api.require("CI_PROJECT_ID", self.api.env.project_id)
            uri = api + GITLAB_API_PATH.format(project=project)
            self._connection = Connection(uri, self.kind, self.env)
        return self._connection

    # -- the model-package endpoints -----------------------------------------------

    def _file_call(self, verb: str, version_id: str, name: str, **kwargs: Any) -> Any:
        """One request to a version's file; the job token (or GITLAB_TOKEN outside a
        job) goes as a bearer token, the one form these endpoints read."""
        token = self.api.env.job_token or self.api.env.api_token
        if not token:
            raise PlatformError(
                "no GitLab token for model files: CI_JOB_TOKEN is set in jobs; elsewhere set "
                "GITLAB_TOKEN to a project access token with api scope"
            )
        path = self.api.path(f"/packages/ml_models/{quote(version_id, safe='')}/files/{name}")
        client = self.api.client("none")
        send = client.http_put if verb == "PUT" else client.http_get
        headers = {"Authorization": f"Bearer {token}"}
        return self.api.call(
            f"{verb} {path}", FILE_HINT, lambda: send(path, extra_headers=headers, **kwargs)
        )

    def _put_file(self, version_id: str, name: str, data: bytes) -> None:
        self._file_call("PUT", version_id, name, files={"file": (name, data)})

    def _get_file(self, version_id: str, name: str) -> bytes:
        return bytes(self._file_call("GET", version_id, name, raw=True).content)

    # -- versions ------------------------------------------------------------------

    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        """Register ``version`` (semver) and upload its files and manifest through the
        model-package endpoints; then download each back and compare its sha256."""
        if not SEMVER.fullmatch(version):
            raise UsageError(
                f"{model.name}: version {version!r} is not semver, which GitLab's model "
                "registry requires (set the model's version in the spec to MAJOR.MINOR.PATCH)"
            )
        if MANIFEST in files:
            raise PlatformError(f"{MANIFEST}: the registry writes this file itself")
        self._ensure_model(model)
        manifest = self._manifest(model, version, files)
        version_id = self._create_version(model, version, manifest)
        uploads = {name: path.read_bytes() for name, path in sorted(files.items())}
        uploads[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        for name, data in uploads.items():
            self._put_file(version_id, name, data)
        for name, data in uploads.items():
            actual = sha256_bytes(self._get_file(version_id, name))
            if actual != sha256_bytes(data):
                raise PlatformError(
                    f"{model.name} {version}/{name}: GitLab returned sha256 {actual[:12]}..., "
                    f"not the {sha256_bytes(data)[:12]}... uploaded; publish again"
                )
        log.info(f"published {model.name} {version}: {len(uploads)} files, checksums verified")
        sums = {name: sha256_file(path) for name, path in files.items()}
        return Published(version=version, location=self._location(model, version), files=sums)

    def _create_version(self, model: Model, version: str, manifest: dict[str, Any]) -> str:
        client = self.connection.client
        created = self.call(
            f"create_model_version({model.name}, {version})",
            lambda: client.create_model_version(
                model.name,
                source=f"{self.api.env.api_url}{self.api.path('/packages/ml_models')}",
                tags={"gitlab.version": version, **self._version_tags(model, version, manifest)},
                description=f"ci-mlops {version}",
            ),
        )
        return str(created.version)

    def _version_id(self, model: Model, version: str) -> str:
        """GitLab's id of semver ``version`` (what its MLflow API calls the version)."""
        client = self.connection.client
        try:
            found = self.call(
                f"get_model_version_by_alias({model.name}, {version})",
                lambda: client.get_model_version_by_alias(model.name, version),
            )
        except PlatformError as exc:
            if error_code(exc) in _MISSING:
                raise UsageError(self._not_there(model, version)) from None
            raise
        return str(found.version)

    def _source(self, model: Model, version: str) -> str:
        return self._version_id(model, version)

    def version_metrics(self, model: Model, version: str) -> dict[str, float] | None:
        """The metrics.json stored with ``version``: its id by semver, then the file (two
        requests); not checked against the manifest (a chart, not a gate)."""
        try:
            raw = self._get_file(self._version_id(model, version), "metrics.json")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None
        return parse_metrics(raw, f"{model.name} {version}/metrics.json in the model registry")

    def _fetch(self, model: Model, version: str, into: Path) -> Path:
        """Download the manifest and every file it lists into ``into``."""
        version_id = self._version_id(model, version)
        into.mkdir(parents=True, exist_ok=True)
        manifest = self._read_manifest(self._manifest_file(model, version, into), model, version)
        for name in manifest["files"]:
            data = self._get_file(version_id, name)
            write_bytes(into / safe_file_name(name, f"{model.name} {version}"), data)
        return into

    def _manifest_file(self, model: Model, version: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        data = self._get_file(self._version_id(model, version), MANIFEST)
        write_bytes(into / MANIFEST, data)
        return into / MANIFEST

    def _location(self, model: Model, version: str) -> str:
        project = self.env.get("CI_PROJECT_URL", "").rstrip("/")
        if project:
            return f"{project}/-/ml/models ({model.name} {version})"
        return f"{self.connection.where} ({model.name} {version})"

    # -- environments: records beside the registry ---------------------------------

    def live(self, model: Model, environment: str) -> Published | None:
        version = self._record(model, environment).get("version")
        return self._published(model, str(version)) if version else None

    def _point(self, model: Model, environment: str, version: str) -> None:
        """GitLab has no aliases: the environment's record is the pointer."""

    def _record(self, model: Model, environment: str) -> dict[str, Any]:
        package = ENVIRONMENTS.format(model=model.name)
        project = self.api.project("job")
        try:
            raw = self.api.call(
                f"GET {self._record_path(package, environment)}",
                RECORD_HINT,
                lambda: project.generic_packages.download(
                    package_name=package,
                    package_version=ENVIRONMENTS_VERSION,
                    file_name=f"{environment}.json",
                ),
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            raw = None
        return parse_record(raw, f"{package}/{environment}.json in the package registry")

    def _put_record(self, model: Model, environment: str, record: dict[str, Any]) -> None:
        package = ENVIRONMENTS.format(model=model.name)
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        project = self.api.project("job")
        self.api.call(
            f"PUT {self._record_path(package, environment)}",
            RECORD_HINT,
            lambda: project.generic_packages.upload(
                package_name=package,
                package_version=ENVIRONMENTS_VERSION,
                file_name=f"{environment}.json",
                data=data,
            ),
        )

    def _record_path(self, package: str, environment: str) -> str:
        return self.api.path(
            f"/packages/generic/{package}/{ENVIRONMENTS_VERSION}/{environment}.json"
        )

    def version_suffix(self) -> str:
        """``-pipeline.<IID>`` in a GitLab pipeline: a semver pre-release, so each
        pipeline's deploy is a version of its own."""
        from ci_mlops.platforms.gitlab import version_suffix

        return version_suffix(self.api.env)
