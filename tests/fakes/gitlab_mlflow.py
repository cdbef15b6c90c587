"""GitLab's MLflow-compatible API and its model-package endpoints, for the fake GitLab,
as docs.gitlab.com ("MLflow client compatibility", "Model registry") and GitLab's
``lib/api/ml/mlflow`` describe them:

- ``/projects/:id/ml/mlflow/api/2.0/mlflow/...``: experiments (get-by-name, create),
  runs (create, get, update, log-batch, set-tag), registered models (create, get,
  ``alias`` GET only), model versions (create, get). Every answer is 200 (GitLab answers
  201 never: the MLflow client counts anything else as an error); errors are MLflow's
  ``{error_code, message}``. Authentication is a personal or project access token as a
  bearer token; ``CI_JOB_TOKEN`` is refused (401).
- What GitLab does not have answers 404 like any unknown route: setting aliases
  (``POST registered-models/alias``), model version tags (``model-versions/set-tag``).
- A model version's semver comes from its ``gitlab.version`` tag and is refused unless
  it is semver, or when the model has it already (400 ``INVALID_PARAMETER_VALUE``); its
  MLflow ``version`` is GitLab's id and its ``aliases`` hold the semver, which
  ``registered-models/alias`` finds it by.
- A run's ``artifact_uri`` is a generic package (``ml_experiment_<iid>/<run iid>``);
  ``log_artifact`` into a folder of it answers 400: GitLab takes no directories there.
- ``/projects/:id/packages/ml_models/:model_version_id/files/:file_name`` PUT (multipart
  ``file``) and GET, with a bearer token: an access token or ``CI_JOB_TOKEN``.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from typing import Any

from tests.fakes.server import Reply, Request

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def _error(code: str, message: str = "", status: int = 400) -> Reply:
    return Reply(status, {"error_code": code, "message": message})


class GitLabMlflow:
    """The MLflow and model-package half of the fake GitLab; state is plain attributes.
    The host class provides ``route``, ``origin``, ``project_id``, ``job_token``,
    ``users`` and ``_project_ok``."""

    def _ml_routes(self, api: str) -> None:
        self.experiments: dict[str, dict[str, Any]] = {}  # iid -> experiment
        self.runs: dict[str, dict[str, Any]] = {}  # iid -> run
        self.ml_models: dict[str, dict[str, Any]] = {}  # name -> model
        self.ml_versions: dict[str, dict[str, Any]] = {}  # id -> version
        self.ml_files: dict[tuple[str, str], bytes] = {}  # (version id, file) -> bytes
        self._ml_ids = itertools.count(1)
        base = rf"{api}/projects/(?P<project>[^/]+)/ml/mlflow/api/2\.0/mlflow"
        routes = {
            ("GET", "experiments/get-by-name"): self._experiment_by_name,
            ("POST", "experiments/create"): self._create_experiment,
            ("POST", "runs/create"): self._create_run,
            ("GET", "runs/get"): self._get_run,
            ("POST", "runs/update"): self._update_run,
            ("POST", "runs/log-batch"): self._log_batch,
            ("POST", "runs/set-tag"): self._set_tag,
            ("POST", "registered-models/create"): self._create_model,
            ("GET", "registered-models/get"): self._get_model,
            ("GET", "registered-models/alias"): self._version_by_alias,
            ("POST", "model-versions/create"): self._create_version,
            ("GET", "model-versions/get"): self._get_version,
        }
        for (method, path), handler in routes.items():
            self.route(f"mlflow {path}", method, f"{base}/{path}", self._mlflow(handler))  # type: ignore[attr-defined]
        files = rf"{api}/projects/(?P<project>[^/]+)/packages/ml_models/(?P<version>[^/]+)/files/(?P<file>.+)"
        self.route("ml_file_put", "PUT", files, self._ml_file_put)  # type: ignore[attr-defined]
        self.route("ml_file_get", "GET", files, self._ml_file_get)  # type: ignore[attr-defined]

    # -- auth ------------------------------------------------------------------------

    def _bearer(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return header[7:] if header.lower().startswith("bearer ") else None

    def _mlflow(self, handler: Any) -> Any:
        def guarded(request: Request) -> Reply:
            denied = self._project_ok(request)  # type: ignore[attr-defined]
            if denied:
                return denied
            token = self._bearer(request)
            # The MLflow endpoints take access tokens only: a job token is refused.
            if token is None or token not in self.users:  # type: ignore[attr-defined]
                return Reply(401, {"message": "401 Unauthorized"})
            return handler(request)

        return guarded

    # -- experiments and runs --------------------------------------------------------

    def _experiment_json(self, experiment: dict[str, Any]) -> dict[str, Any]:
        return {
            "experiment_id": experiment["iid"],
            "name": experiment["name"],
            "artifact_location": "not_implemented",
            "lifecycle_stage": "active",
            "tags": [],
        }

    def _experiment_by_name(self, request: Request) -> Reply:
        name = request.query.get("experiment_name", "")
        for experiment in self.experiments.values():
            if experiment["name"] == name:
                return Reply(200, {"experiment": self._experiment_json(experiment)})
        return _error("RESOURCE_DOES_NOT_EXIST", status=404)

    def _create_experiment(self, request: Request) -> Reply:
        name = (request.json() or {}).get("name")
        if not name:
            return _error("INVALID_PARAMETER_VALUE", "name is missing")
        if any(e["name"] == name for e in self.experiments.values()):
            return _error("RESOURCE_ALREADY_EXISTS")
        iid = str(len(self.experiments) + 1)
        self.experiments[iid] = {"iid": iid, "name": name}
        return Reply(200, {"experiment_id": iid})

    def _run_json(self, run: dict[str, Any]) -> dict[str, Any]:
        info = {
            "run_id": run["eid"],
            "run_uuid": run["eid"],
            "experiment_id": run["experiment_id"],
            "run_name": run["name"],
            "start_time": run["start_time"],
            "status": run["status"],
            "artifact_uri": (
                f"{self.origin}/api/v4/projects/{self.project_id}/packages/generic/"  # type: ignore[attr-defined]
                f"ml_experiment_{run['experiment_id']}/{run['iid']}"
            ),
            "lifecycle_stage": "active",
            "user_id": "1",
        }
        if run.get("end_time"):
            info["end_time"] = run["end_time"]
        data = {
            "metrics": [
                {"key": k, "value": v, "timestamp": 0, "step": 0} for k, v in run["metrics"].items()
            ],
            "params": [{"key": k, "value": v} for k, v in run["params"].items()],
            "tags": [{"key": k, "value": v} for k, v in run["tags"].items()],
        }
        return {"run": {"info": info, "data": data}}

    def _create_run(self, request: Request) -> Reply:
        body = request.json() or {}
        experiment_id = str(body.get("experiment_id", ""))
        if experiment_id not in self.experiments:
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        iid = str(len(self.runs) + 1)
        self.runs[iid] = {
            "iid": iid,
            # GitLab answers a candidate's eid, a UUID, as its MLflow run id; unique
            # across servers, as the MLflow client's per-run caches assume.
            "eid": str(uuid.uuid4()),
            "experiment_id": experiment_id,
            "name": body.get("run_name") or f"candidate-{iid}",
            "start_time": body.get("start_time") or int(time.time() * 1000),
            "status": "RUNNING",
            "metrics": {},
            "params": {},
            "tags": {t["key"]: t["value"] for t in body.get("tags") or []},
            "artifacts": {},
        }
        return Reply(200, self._run_json(self.runs[iid]))

    def _run_of(
        self, request: Request, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        run_id = str((body or {}).get("run_id") or request.query.get("run_id"))
        return next((r for r in self.runs.values() if r["eid"] == run_id), None)

    def _get_run(self, request: Request) -> Reply:
        run = self._run_of(request)
        return (
            Reply(200, self._run_json(run))
            if run
            else _error("RESOURCE_DOES_NOT_EXIST", status=404)
        )

    def _update_run(self, request: Request) -> Reply:
        body = request.json() or {}
        run = self._run_of(request, body)
        if run is None:
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        run["status"] = body.get("status", run["status"])
        run["end_time"] = body.get("end_time")
        return Reply(200, {"run_info": self._run_json(run)["run"]["info"]})

    def _log_batch(self, request: Request) -> Reply:
        body = request.json() or {}
        run = self._run_of(request, body)
        if run is None:
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        run["metrics"].update({m["key"]: float(m["value"]) for m in body.get("metrics") or []})
        run["params"].update({p["key"]: p["value"] for p in body.get("params") or []})
        run["tags"].update({t["key"]: t["value"] for t in body.get("tags") or []})
        return Reply(200, {})

    def _set_tag(self, request: Request) -> Reply:
        body = request.json() or {}
        run = self._run_of(request, body)
        if run is None:
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        run["tags"][body["key"]] = body["value"]
        return Reply(200, {})

    def run_artifact(self, experiment: str, run: str, name: str) -> bytes | None:
        """A file logged to a run (stored in its generic package)."""
        return self.package_file(f"ml_experiment_{experiment}", run, name)  # type: ignore[attr-defined]

    # -- registered models and versions ----------------------------------------------

    def _model_json(self, model: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": model["name"],
            "creation_timestamp": model["created"],
            "last_updated_timestamp": model["created"],
            "description": model["description"],
            "tags": [{"key": k, "value": v} for k, v in model["tags"].items()],
        }

    def _create_model(self, request: Request) -> Reply:
        body = request.json() or {}
        name = body.get("name")
        if not name:
            return _error("INVALID_PARAMETER_VALUE", "name is missing")
        if name in self.ml_models:
            return _error("RESOURCE_ALREADY_EXISTS")
        self.ml_models[name] = {
            "name": name,
            "created": int(time.time() * 1000),
            "description": body.get("description") or "",
            "tags": {t["key"]: t["value"] for t in body.get("tags") or []},
        }
        return Reply(200, {"registered_model": self._model_json(self.ml_models[name])})

    def _get_model(self, request: Request) -> Reply:
        model = self.ml_models.get(request.query.get("name", ""))
        if model is None:
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        return Reply(200, {"registered_model": self._model_json(model)})

    def _version_json(self, version: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": version["name"],
            "version": version["id"],
            "creation_timestamp": version["created"],
            "last_updated_timestamp": version["created"],
            "user_id": None,
            "current_stage": "development",
            "description": version["description"],
            "source": f"https://gitlab.example.invalid/group/project/-/ml/models/1/versions/{version['id']}",
            "run_id": version["run_id"],
            "status": "READY",
            "status_message": "",
            "tags": [{"key": k, "value": v} for k, v in version["tags"].items()],
            "run_link": "",
            "aliases": [version["semver"]],
        }

    def _create_version(self, request: Request) -> Reply:
        body = request.json() or {}
        name = body.get("name")
        if name not in self.ml_models:
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        version_tags = {t["key"]: t["value"] for t in body.get("tags") or []}
        existing = [v for v in self.ml_versions.values() if v["name"] == name]
        semver = version_tags.get("gitlab.version") or f"1.0.{len(existing)}"
        if not SEMVER.fullmatch(semver):
            return _error("INVALID_PARAMETER_VALUE", "Version must be semantic version")
        if any(v["semver"] == semver for v in existing):
            return _error("INVALID_PARAMETER_VALUE", "Version has already been taken")
        version_id = str(next(self._ml_ids))
        self.ml_versions[version_id] = {
            "id": version_id,
            "name": name,
            "semver": semver,
            "created": int(time.time() * 1000),
            "description": body.get("description") or "",
            "run_id": str(next(self._ml_ids) + 500),
            "tags": version_tags,
        }
        return Reply(200, {"model_version": self._version_json(self.ml_versions[version_id])})

    def _get_version(self, request: Request) -> Reply:
        version = self.ml_versions.get(request.query.get("version", ""))
        if version is None or version["name"] != request.query.get("name"):
            return _error("RESOURCE_DOES_NOT_EXIST", status=404)
        return Reply(200, {"model_version": self._version_json(version)})

    def _version_by_alias(self, request: Request) -> Reply:
        name, alias = request.query.get("name"), request.query.get("alias")
        for version in self.ml_versions.values():
            if version["name"] == name and version["semver"] == alias:
                return Reply(200, {"model_version": self._version_json(version)})
        return _error("RESOURCE_DOES_NOT_EXIST", status=404)

    def ml_version(self, name: str, semver: str) -> dict[str, Any] | None:
        return next(
            (v for v in self.ml_versions.values() if v["name"] == name and v["semver"] == semver),
            None,
        )

    # -- model-package files ---------------------------------------------------------

    def _ml_file_auth(self, request: Request) -> Reply | None:
        denied = self._project_ok(request)  # type: ignore[attr-defined]
        if denied:
            return denied
        token = self._bearer(request)
        if token is None or (token != self.job_token and token not in self.users):  # type: ignore[attr-defined]
            return Reply(401, {"message": "401 Unauthorized"})
        if request.params["version"] not in self.ml_versions:
            return Reply(404, {"message": "404 Not Found"})
        return None

    def _ml_file_put(self, request: Request) -> Reply:
        from tests.fakes.gitlab_api import _multipart

        denied = self._ml_file_auth(request)
        if denied:
            return denied
        parts = _multipart(request)
        if "file" not in parts:
            return Reply(400, {"message": "400 Bad request - file is missing"})
        self.ml_files[(request.params["version"], request.params["file"])] = parts["file"][1]
        return Reply(201, {"message": "201 Created"})

    def _ml_file_get(self, request: Request) -> Reply:
        denied = self._ml_file_auth(request)
        if denied:
            return denied
        data = self.ml_files.get((request.params["version"], request.params["file"]))
        return Reply(200, data) if data is not None else Reply(404, {"message": "404 Not Found"})
