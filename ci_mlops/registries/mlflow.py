"""The ``mlflow`` deploy target: the model registry of an MLflow tracking server.

Layout on the server, for a model named ``churn``::

    registered model churn
      version 3                   one per deploy (MLflow numbers them); its source is
                                  the model/ folder of the deploy's run, holding the
                                  native model, model.onnx, metrics.json, gates.json,
                                  export.json, report.md, model.sig and manifest.json
                                  (file -> sha256 and size); tags ci_mlops.version (the
                                  spec's version and the pipeline's suffix),
                                  ci_mlops.model_sha256, ci_mlops.evaluation_run
      alias staging -> 3          one alias per environment: what other MLflow tools
      alias production -> 2       read (models:/churn@production)
      tag ci_mlops.env.staging    the environment's record: its version, the versions
                                  it ran before (for rollback) and its history
    experiment churn              (tracking.experiment) one run per deploy, named
                                  "deploy <version>", tagged with commit and pipeline

Versions are MLflow's numbers, so ``ci-mlops deploy`` prints "churn 3" as the MLflow UI
does. A publish uploads every file, registers the version, then downloads the files back
and compares each sha256 with what was uploaded. An alias is moved before the record:
when the record cannot be written afterwards the alias (which other tools read) is
already right and the error says so.

MLflow has no lock: two deploys of one model to one environment at once are kept apart
by the pipeline (GitLab's ``resource_group``, GitHub's ``concurrency``), as generated.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from ci_mlops import log
from ci_mlops.atomic import sha256_file, write_json
from ci_mlops.errors import CheckFailed, IntegrityError, PlatformError, StepError, UsageError
from ci_mlops.platforms.remote import history_list, metric_values, parse_metrics
from ci_mlops.records import TrackingRecord, changed_files
from ci_mlops.registries.base import Published, Registry
from ci_mlops.registries.mlflow_client import (
    Connection,
    ci_context,
    error_code,
    experiment,
    tags,
    tracking_uri,
)
from ci_mlops.spec.model import Model, Spec

MANIFEST = "manifest.json"
FOLDER = "model"  # the artifact folder of the deploy run that a version's source names
RECORD_TAG = "ci_mlops.env.{environment}"
VERSION_TAG = "ci_mlops.version"
# A registered model tag holds a few kilobytes: keep the newest entries of each list.
KEPT = 20
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class MlflowRegistry(Registry):
    """An MLflow server's model registry (see the module docstring)."""

    name: ClassVar[str] = "mlflow"
    extras: ClassVar[tuple[str, ...]] = ("mlflow",)
    kind: ClassVar[str] = "mlflow"  # which hints errors give (mlflow_client.TOKEN_HINT)

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec, env)
        self._connection: Connection | None = None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            uri = tracking_uri(self.kind, self.env)
            if uri is None:
                raise PlatformError(self._no_uri())
            self._connection = Connection(uri, self.kind, self.env)
        return self._connection

    def _no_uri(self) -> str:
        return (
            "deploy.target mlflow needs MLFLOW_TRACKING_URI: the MLflow tracking server's URL "
            "(and its credentials in MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD)"
        )

    def call(self, operation: str, action: Callable[[], Any]) -> Any:
        return self.connection.call(operation, action)

    # -- publishing ----------------------------------------------------------------

    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        """Upload ``files`` and a manifest as a new model version, then download them
        back and compare every sha256 with the manifest."""
        if MANIFEST in files:
            raise PlatformError(f"{MANIFEST}: the registry writes this file itself")
        client = self.connection.client
        self._ensure_model(model)
        with tempfile.TemporaryDirectory(prefix="ci-mlops-mlflow-") as scratch:
            manifest = self._manifest(model, version, files)
            write_json(Path(scratch) / MANIFEST, manifest)
            run_id, artifact_uri = self._deploy_run(model, version)
            for path in [*files.values(), Path(scratch) / MANIFEST]:
                self.call(
                    f"log_artifact({run_id}, {FOLDER}/{path.name})",
                    partial(client.log_artifact, run_id, str(path), FOLDER),
                )
            self.call(f"set_terminated({run_id})", lambda: client.set_terminated(run_id))
            number = self._register(model, version, f"{artifact_uri}/{FOLDER}", run_id, manifest)
        with tempfile.TemporaryDirectory(prefix="ci-mlops-mlflow-") as scratch:
            checked = self.verify(model, number, into=Path(scratch))
        log.info(
            f"published {model.name} {number} ({version}): {len(files)} files, checksums verified"
        )
        return Published(version=number, location=checked.location, files=checked.files)

    def _ensure_model(self, model: Model) -> None:
        client = self.connection.client
        try:
            self.call(
                f"create_registered_model({model.name})",
                lambda: client.create_registered_model(
                    model.name,
                    tags={"ci_mlops.spec": self.spec.path.name},
                    description=model.description or None,
                ),
            )
        except PlatformError as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise

    def _manifest(self, model: Model, version: str, files: dict[str, Path]) -> dict[str, Any]:
        entries = {
            name: {"sha256": sha256_file(path), "size": path.stat().st_size}
            for name, path in sorted(files.items())
        }
        for name, path in files.items():
            if path.name != name:
                raise PlatformError(f"{path}: published files keep their names (not {name})")
        return {
            "model": model.name,
            "version": version,
            "created_at": _now(),
            "files": entries,
            "model_sha256": entries.get(model.model_file, {}).get("sha256"),
        }

    def _deploy_run(self, model: Model, version: str) -> tuple[str, str]:
        """A run that holds the version's files, in the model's experiment."""
        client = self.connection.client
        experiment_id = experiment(self.connection, model.experiment)
        run = self.call(
            f"create_run({model.experiment})",
            lambda: client.create_run(
                experiment_id,
                run_name=f"deploy {model.name} {version}",
                tags=tags({**ci_context(self.spec.root, self.env), "ci_mlops.deploy": version}),
            ),
        )
        return str(run.info.run_id), str(run.info.artifact_uri)

    def _register(
        self, model: Model, version: str, source: str, run_id: str, manifest: dict[str, Any]
    ) -> str:
        client = self.connection.client
        created = self.call(
            f"create_model_version({model.name})",
            lambda: client.create_model_version(
                model.name,
                source=source,
                run_id=run_id,
                tags=self._version_tags(model, version, manifest),
                description=f"ci-mlops {version}",
            ),
        )
        return str(created.version)

    def _version_tags(self, model: Model, version: str, manifest: dict[str, Any]) -> dict[str, str]:
        try:
            evaluation: TrackingRecord | None = TrackingRecord.read(self.spec.workdir(model))
        except StepError:  # not logged (or not readable): the version links no run
            evaluation = None
        same_model = evaluation and evaluation.model_sha256 == manifest.get("model_sha256")
        return tags(
            {
                VERSION_TAG: version,
                "ci_mlops.model_sha256": manifest.get("model_sha256"),
                "ci_mlops.evaluation_run": evaluation.run_id if evaluation and same_model else None,
            }
        )

    # -- reading versions ----------------------------------------------------------

    def verify(self, model: Model, version: str, into: Path | None = None) -> Published:
        """Download every file of ``version`` (into ``into``) and compare each with the
        manifest published with it; CheckFailed names every file that differs."""
        with tempfile.TemporaryDirectory(prefix="ci-mlops-mlflow-") as scratch:
            folder = self._fetch(model, version, into or Path(scratch))
            manifest = self._read_manifest(folder / MANIFEST, model, version)
            expected = {name: entry["sha256"] for name, entry in manifest["files"].items()}
            where = f"{model.name} {version} in {self.name}"
            changes = changed_files(folder, expected, MANIFEST)
            if changes:
                raise IntegrityError(changes, where=where)
            extra = sorted(
                p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in expected
            )
            if extra:
                raise CheckFailed(f"{where}: not listed in {MANIFEST}: {', '.join(extra)}")
            files = {name: sha256_file(folder / name) for name in expected}
        return Published(
            version=version,
            location=self._location(model, version),
            files=files,
            folder=folder if into is not None else None,
        )

    def version_metrics(self, model: Model, version: str) -> dict[str, float] | None:
        """The metrics of the evaluation run the version's ``ci_mlops.evaluation_run``
        tag names (two calls: the version, the run); a version published without
        tracking has no such run, and then its metrics.json is read instead."""
        found = self._model_version(model, version)
        run_id = (found.tags or {}).get("ci_mlops.evaluation_run")
        if not run_id:
            return self._published_metrics(model, version, str(found.source))
        try:
            run = self.call(f"get_run({run_id})", lambda: self.connection.client.get_run(run_id))
        except PlatformError as exc:
            # Evaluations may be tracked on another server than this registry.
            if error_code(exc) not in _MISSING:
                raise
            return self._published_metrics(model, version, str(found.source))
        where = f"{model.name} {version}: evaluation run {run_id}"
        return metric_values(dict(run.data.metrics), where)

    def _published_metrics(
        self, model: Model, version: str, source: str
    ) -> dict[str, float] | None:
        with tempfile.TemporaryDirectory(prefix="ci-mlops-mlflow-") as scratch:
            try:
                path = self._download(f"{source}/metrics.json", Path(scratch))
            except PlatformError:
                return None  # published without one
            return parse_metrics(path.read_bytes(), f"{model.name} {version}/metrics.json")

    def _fetch(self, model: Model, version: str, into: Path) -> Path:
        """Download the files of ``version`` into ``into``; the folder holding them."""
        return self._download(self._source(model, version), into)

    def live(self, model: Model, environment: str) -> Published | None:
        """The version the environment's alias points at, with its manifest's hashes."""
        client = self.connection.client
        try:
            found = self.call(
                f"get_model_version_by_alias({model.name}, {environment})",
                lambda: client.get_model_version_by_alias(model.name, environment),
            )
        except PlatformError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
        return self._published(model, str(found.version))

    def _published(self, model: Model, version: str) -> Published:
        """``version`` with the hashes its manifest records (the files stay remote)."""
        with tempfile.TemporaryDirectory(prefix="ci-mlops-mlflow-") as scratch:
            path = self._manifest_file(model, version, Path(scratch))
            manifest = self._read_manifest(path, model, version)
        files = {name: str(entry["sha256"]) for name, entry in manifest["files"].items()}
        return Published(version=version, location=self._location(model, version), files=files)

    def _manifest_file(self, model: Model, version: str, into: Path) -> Path:
        return self._download(f"{self._source(model, version)}/{MANIFEST}", into)

    def _source(self, model: Model, version: str) -> str:
        return str(self._model_version(model, version).source)

    def _model_version(self, model: Model, version: str) -> Any:
        """The MLflow model version ``version`` of ``model``; a UsageError naming it
        when the registry does not hold it."""
        client = self.connection.client
        try:
            return self.call(
                f"get_model_version({model.name}, {version})",
                lambda: client.get_model_version(model.name, version),
            )
        except PlatformError as exc:
            if error_code(exc) in _MISSING:
                raise UsageError(self._not_there(model, version)) from None
            raise

    def _not_there(self, model: Model, version: str) -> str:
        return (
            f"{model.name} {version} is not in the {self.name} registry at "
            f"{self.connection.where}; publish it first"
        )

    def _download(self, artifact_uri: str, into: Path) -> Path:
        """Download ``artifact_uri`` (a version's folder or one file) into ``into``."""
        from mlflow.artifacts import download_artifacts

        into.mkdir(parents=True, exist_ok=True)
        path = self.call(
            f"download_artifacts({artifact_uri})",
            lambda: download_artifacts(
                artifact_uri=artifact_uri, dst_path=str(into), tracking_uri=self.connection.uri
            ),
        )
        return Path(path)

    def _read_manifest(self, path: Path, model: Model, version: str) -> dict[str, Any]:
        data = _read_json(path)
        files = data.get("files")
        if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()
        ):
            raise CheckFailed(
                f"{model.name} {version} in MLflow: {MANIFEST} is missing or not a manifest"
            )
        return data

    def _location(self, model: Model, version: str) -> str:
        return f"{self.connection.where}/#/models/{model.name}/versions/{version}"

    # -- environments --------------------------------------------------------------

    def promote(self, model: Model, environment: str, version: str, forced: bool = False) -> None:
        """Move the environment's alias to ``version`` and record the move."""
        self._source(model, version)  # refuse a version that is not there
        record = self._record(model, environment)
        current = record.get("version")
        if current == version:
            log.info(f"{model.name} {environment} already runs {version}")
            return
        self._point(model, environment, version)
        previous = [current, *record["previous"]] if current else record["previous"]
        entry = {"version": version, "forced": forced, "at": _now(), "action": "promote"}
        self._write_record(model, environment, record, version, previous, entry, forced)
        log.info(f"{model.name} {environment}: {current or 'nothing'} -> {version}")

    def rollback(
        self, model: Model, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        """Move the alias back to the version the environment ran before."""
        record = self._record(model, environment)
        if not record["previous"]:
            raise UsageError(
                f"{model.name} {environment}: no earlier version to roll back to "
                f"(now: {record.get('version') or 'nothing deployed'})"
            )
        previous = str(record["previous"][0])
        if check is not None:
            check(previous)
        self._point(model, environment, previous)
        entry = {
            "version": previous,
            "forced": False,
            "at": _now(),
            "action": "rollback",
            "rolled_back_from": record.get("version"),
        }
        self._write_record(model, environment, record, previous, record["previous"][1:], entry)
        log.info(f"{model.name} {environment}: rolled back {record.get('version')} -> {previous}")
        return previous

    def history(self, model: Model, environment: str) -> list[dict[str, Any]]:
        """Every move of the environment's alias, newest first (the newest 20)."""
        return [dict(e) for e in self._record(model, environment)["history"]]

    def annotate(
        self, model: Model, environment: str, version: str, fields: dict[str, str]
    ) -> None:
        record = self._record(model, environment)
        history = record["history"]
        if not history or history[0].get("version") != version:
            newest = history[0].get("version") if history else "nothing"
            raise UsageError(
                f"{model.name} {environment}: the newest deploy is {newest}, not {version}"
            )
        history[0] = {**history[0], **fields}
        self._put_record(model, environment, record)

    def _point(self, model: Model, environment: str, version: str) -> None:
        client = self.connection.client
        self.call(
            f"set_registered_model_alias({model.name}, {environment}, {version})",
            lambda: client.set_registered_model_alias(model.name, environment, version),
        )

    def _record(self, model: Model, environment: str) -> dict[str, Any]:
        """The environment's record (a registered model tag): ``version``,
        ``previous`` (newest first), ``forced`` and ``history`` (newest first)."""
        client = self.connection.client
        try:
            found = self.call(
                f"get_registered_model({model.name})",
                lambda: client.get_registered_model(model.name),
            )
        except PlatformError as exc:
            if error_code(exc) in _MISSING:
                return parse_record(None, "")
            raise
        key = RECORD_TAG.format(environment=environment)
        return parse_record(
            (found.tags or {}).get(key), f"registered model {model.name}: tag {key}"
        )

    def _write_record(
        self,
        model: Model,
        environment: str,
        record: dict[str, Any],
        version: str,
        previous: list[str],
        entry: dict[str, Any],
        forced: bool = False,
    ) -> None:
        updated = {
            "version": version,
            "previous": [v for v in previous if v != version][:KEPT],
            "forced": [*record["forced"], *([version] if forced else [])][-KEPT:],
            "history": [entry, *record["history"]][:KEPT],
            "updated_at": entry["at"],
        }
        try:
            self._put_record(model, environment, updated)
        except PlatformError as exc:
            raise PlatformError(
                f"{environment} now points at {model.name} {version} (alias moved), but its "
                f"record was not updated: {exc}"
            ) from None

    def _put_record(self, model: Model, environment: str, record: dict[str, Any]) -> None:
        client = self.connection.client
        key = RECORD_TAG.format(environment=environment)
        value = json.dumps(record, sort_keys=True, separators=(",", ":"))
        self.call(
            f"set_registered_model_tag({model.name}, {key})",
            lambda: client.set_registered_model_tag(model.name, key, value),
        )


def parse_record(raw: str | bytes | None, source: str) -> dict[str, Any]:
    """An environment record from its JSON text (None: nothing deployed yet)."""
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        raise PlatformError(f"{source} is not JSON") from None
    if not isinstance(record, dict):
        raise PlatformError(f"{source} is not a JSON object")
    history = record.get("history") or []
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise PlatformError(f"{source}: history is not a list of entries")
    return {
        **record,
        "previous": history_list(record.get("previous"), f"{source}: previous"),
        "forced": history_list(record.get("forced"), f"{source}: forced"),
        "history": history,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
