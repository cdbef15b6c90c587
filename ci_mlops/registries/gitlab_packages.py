"""The ``gitlab-packages`` deploy target: GitLab's generic package registry holds the
versions and the environment records, through python-gitlab (the clients, tokens and
retries of :class:`ci_mlops.platforms.gitlab.GitLabApi`).

Versions. A model published from pipeline 42 is ``<version>-pipeline.42`` (the pipeline's
IID). A ``+`` build suffix would be semver-proper, but it must be escaped in every URL
of the package API and is easily mangled into a space; ``-pipeline.N`` is safe anywhere.

Environments. GitLab has no place for "which model version is in staging" that a job
token may write, so ci-mlops keeps it in the generic package registry: package
``<model>-environments``, version ``0.0.0``, one file per environment (``staging.json``)
holding the current version and the stack of earlier ones. Promote pushes, rollback pops
and uploads the file again; the registry serves the newest upload of a file name. This
needs duplicate generic packages to be allowed for that package name (GitLab's default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops import log
from ci_mlops.atomic import sha256_file, write_bytes
from ci_mlops.errors import PlatformError, UsageError
from ci_mlops.platforms.remote import (
    ApiError,
    checksums_file,
    forced_versions,
    history_list,
    parse_checksums,
    parse_metrics,
    safe_file_name,
    sha256_bytes,
)
from ci_mlops.records import IntegrityError, changed
from ci_mlops.registries.base import Published, Registry
from ci_mlops.registries.history import history_entries, notes, require_live
from ci_mlops.spec.model import Model, Spec

if TYPE_CHECKING:
    from ci_mlops.platforms.gitlab import GitLabApi

ENVIRONMENTS_VERSION = "0.0.0"


class GitLabPackages(Registry):
    """Generic packages ``<model>`` (versions) and ``<model>-environments`` (records)."""

    name: ClassVar[str] = "gitlab-packages"
    platforms: ClassVar[tuple[str, ...]] = ("gitlab",)
    extras: ClassVar[tuple[str, ...]] = ("gitlab",)

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

    def version_suffix(self) -> str:
        """``-pipeline.<IID>``, GitLab's (see :mod:`ci_mlops.platforms.gitlab`)."""
        from ci_mlops.platforms.gitlab import version_suffix

        return version_suffix(self.api.env)

    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        """Upload ``files`` and a SHA256SUMS listing as generic package ``<model>``
        ``version``, then download each file back and compare its sha256."""
        sums = {name: sha256_file(path) for name, path in files.items()}
        uploads = {name: path.read_bytes() for name, path in files.items()}
        uploads["SHA256SUMS"] = checksums_file(sums)
        for name, data in uploads.items():
            self._put_file(model.name, version, name, data)
        for name, data in uploads.items():
            self._verify_file(model.name, version, name, sha256_bytes(data))
        log.info(f"published {model.name} {version}: {len(uploads)} files, checksums verified")
        return self._published(model, version, sums)

    def _package_path(self, package: str, version: str, file_name: str = "") -> str:
        return self.api.path(f"/packages/generic/{package}/{version}/{file_name}")

    def _put_file(self, package: str, version: str, name: str, data: bytes) -> None:
        packages = self.api.project("job").generic_packages
        hint = (
            "publishing needs CI_JOB_TOKEN or GITLAB_TOKEN with api scope, and duplicate "
            f"generic packages allowed for {package}"
        )
        self.api.call(
            f"PUT {self._package_path(package, version, name)}",
            hint,
            lambda: packages.upload(
                package_name=package, package_version=version, file_name=name, data=data
            ),
        )

    def _get_file(self, package: str, version: str, name: str) -> bytes:
        packages = self.api.project("job").generic_packages
        data = self.api.call(
            f"GET {self._package_path(package, version, name)}",
            "reading the package registry needs CI_JOB_TOKEN or GITLAB_TOKEN with read_api scope",
            lambda: packages.download(
                package_name=package, package_version=version, file_name=name
            ),
        )
        return bytes(data)

    def _verify_file(self, package: str, version: str, name: str, expected: str) -> None:
        actual = sha256_bytes(self._get_file(package, version, name))
        if actual != expected:
            raise PlatformError(
                f"{package} {version}/{name}: the registry returned sha256 {actual[:12]}..., "
                f"but {expected[:12]}... was uploaded; the upload is corrupt, publish again"
            )

    def verify(self, model: Model, version: str, into: Path | None = None) -> Published:
        """Download every file of ``version`` (into ``into`` when given) and compare it
        with its SHA256SUMS line."""
        sums = self._checksums(model, version)
        found = []
        for name, expected in sorted(sums.items()):
            data = self._get_file(model.name, version, name)
            found.append(changed(name, data, expected, "SHA256SUMS"))
            if into is not None:
                write_bytes(into / safe_file_name(name, f"{model.name} {version}"), data)
        problems = [c for c in found if c is not None]
        if problems:
            raise IntegrityError(problems, where=f"{model.name} {version} in the package registry")
        return replace(self._published(model, version, sums), folder=into)

    def live(self, model: Model, environment: str) -> Published | None:
        """The version ``environment`` points at, with the checksums it was published with."""
        version = self._read_environment(model, environment).get("version")
        if not version:
            return None
        return self._published(model, str(version), self._checksums(model, str(version)))

    def version_metrics(self, model: Model, version: str) -> dict[str, float] | None:
        """The metrics.json published with ``version``: one download, not checked
        against SHA256SUMS (a chart, not a gate; deploy and baselines verify)."""
        try:
            raw = self._get_file(model.name, version, "metrics.json")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None
        return parse_metrics(raw, f"{model.name} {version}/metrics.json in the package registry")

    def _checksums(self, model: Model, version: str) -> dict[str, str]:
        try:
            raw = self._get_file(model.name, version, "SHA256SUMS")
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise UsageError(
                f"{model.name} {version} is not in the package registry; publish it first"
            ) from None
        return parse_checksums(raw, f"{model.name} {version}/SHA256SUMS")

    def _published(self, model: Model, version: str, sums: dict[str, str]) -> Published:
        location = f"{self.api.env.api_url}{self._package_path(model.name, version)}".rstrip("/")
        return Published(version=version, location=location, files=sums)

    # -- environments --------------------------------------------------------------

    def promote(self, model: Model, environment: str, version: str, forced: bool = False) -> None:
        """Point ``environment`` at a published ``version``, keeping the old one."""
        self._require_published(model, version)
        record = self._read_environment(model, environment)
        history = record["history"]
        current = record.get("version")
        if current == version:
            log.info(f"{model.name} {environment} already runs {version}")
            return
        if current:
            history.append(current)
        marked = [*forced_versions(record), *([version] if forced else [])]
        self._write_environment(model, environment, version, history, marked, notes(record))
        log.info(f"{model.name} {environment}: {current or 'nothing'} -> {version}")

    def rollback(
        self, model: Model, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        """Point ``environment`` back at the version it ran before; return it."""
        record = self._read_environment(model, environment)
        history = record["history"]
        if not history:
            raise UsageError(
                f"{model.name} {environment}: no earlier version to roll back to "
                f"(now: {record.get('version') or 'nothing deployed'})"
            )
        previous = str(history.pop())
        if check is not None:
            check(previous)
        self._write_environment(
            model, environment, previous, history, forced_versions(record), notes(record)
        )
        log.info(f"{model.name} {environment}: rolled back {record.get('version')} -> {previous}")
        return previous

    def history(self, model: Model, environment: str) -> list[dict[str, Any]]:
        """The environment record's versions, newest first; only the live one has a
        time (``updated_at``)."""
        record = self._read_environment(model, environment)
        return history_entries(record, record["history"], record.get("updated_at"))

    def annotate(
        self, model: Model, environment: str, version: str, fields: dict[str, str]
    ) -> None:
        """Keep ``fields`` for ``version`` in the environment record (uploaded again)."""
        record = self._read_environment(model, environment)
        require_live(model.name, environment, record.get("version"), version)
        annotations = notes(record)
        annotations[version] = {**annotations.get(version, {}), **fields}
        self._write_environment(
            model, environment, version, record["history"], forced_versions(record), annotations
        )

    def _require_published(self, model: Model, version: str) -> None:
        self._checksums(model, version)

    def _read_environment(self, model: Model, environment: str) -> dict[str, Any]:
        try:
            raw = self._get_file(
                f"{model.name}-environments", ENVIRONMENTS_VERSION, f"{environment}.json"
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            return {"history": []}
        try:
            record = json.loads(raw)
        except ValueError:
            raise PlatformError(
                f"{model.name}-environments/{environment}.json in the package registry is not JSON"
            ) from None
        if not isinstance(record, dict):
            raise PlatformError(
                f"{model.name}-environments/{environment}.json in the package registry is not "
                "a JSON object"
            )
        source = f"{model.name}-environments/{environment}.json: history"
        return {**record, "history": history_list(record.get("history"), source)}

    def _write_environment(
        self,
        model: Model,
        environment: str,
        version: str,
        history: list[str],
        forced: list[str] | None = None,
        annotations: dict[str, dict[str, str]] | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "model": model.name,
            "environment": environment,
            "version": version,
            "history": history,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pipeline": self.api.env.pipeline_url or self.api.env.pipeline_iid or None,
            "commit": self.api.env.commit_sha or None,
        }
        if forced:
            record["forced"] = forced  # versions promoted with --force, oldest first
        if annotations:
            record["annotations"] = annotations  # version -> fields (e.g. its image)
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        self._put_file(
            f"{model.name}-environments", ENVIRONMENTS_VERSION, f"{environment}.json", data
        )
