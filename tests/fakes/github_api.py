"""A fake GitHub REST API, laid out like GitHub Enterprise Server (``/api/v3`` and
``/api/uploads``), with the endpoints ci-mlops uses, answering as docs.github.com
describes them: issue comments (``per_page``/``page`` with Link headers), check runs
with their output and annotations (validated as the checks API documents them), the
authenticated user, repository, workflow runs and their artifacts (zip downloads that
redirect to signed storage on another host name), releases and assets, deployments and
their statuses, workflow and repository dispatches.

Authentication: ``Authorization: token X`` or ``Bearer X``; an unknown token answers 401
("Bad credentials"). The workflow token (an installation token) answers 403 on ``GET
/user``, as GitHub's does.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.server import FakeServer, Reply, Request, link_header, page_of

API = "/api/v3"
UPLOADS = "/api/uploads"
STORAGE = "/storage"


@dataclass
class FakeGitHub(FakeServer):
    """State is plain attributes, so tests can set it up and inspect it."""

    owner: str = "octo"
    repo: str = "models"
    default_branch: str = "main"
    workflow_token: str = "ghs_workflowtoken9d2c"
    users: dict[str, str] = field(default_factory=dict)  # personal token -> login
    workflows: dict[str, set[str]] = field(default_factory=lambda: {"mlops.yml": {"retrain"}})
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # run id -> artifacts
    blobs: dict[str, bytes] = field(default_factory=dict)  # storage key -> bytes
    releases: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    repository_dispatches: list[dict[str, Any]] = field(default_factory=list)
    asset_digests: bool = True  # GHES before 3.18 returns no digest
    corrupt_next_asset: bool = False
    run_details: bool = True  # servers that know return_run_details
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    checks_writable: bool = True  # False: the token lacks `checks: write`

    def __post_init__(self) -> None:
        FakeServer.__init__(self)
        self._ids = itertools.count(100)
        repo = rf"{API}/repos/{self.owner}/{self.repo}"
        self.route("user", "GET", rf"{API}/user", self._user)
        self.route("create_check_run", "POST", rf"{repo}/check-runs", self._create_check_run)
        self.route("repo", "GET", repo, self._repo)
        self.route(
            "list_comments", "GET", rf"{repo}/issues/(?P<n>\d+)/comments", self._list_comments
        )
        self.route(
            "create_comment", "POST", rf"{repo}/issues/(?P<n>\d+)/comments", self._create_comment
        )
        self.route(
            "edit_comment", "PATCH", rf"{repo}/issues/comments/(?P<id>\d+)", self._edit_comment
        )
        self.route("workflow", "GET", rf"{repo}/actions/workflows/(?P<wf>[^/]+)", self._workflow)
        self.route("runs", "GET", rf"{repo}/actions/workflows/(?P<wf>[^/]+)/runs", self._runs)
        self.route(
            "run_artifacts",
            "GET",
            rf"{repo}/actions/runs/(?P<run>\d+)/artifacts",
            self._run_artifacts,
        )
        self.route(
            "artifact_zip", "GET", rf"{repo}/actions/artifacts/(?P<id>\d+)/zip", self._artifact_zip
        )
        self.route("repo_artifacts", "GET", rf"{repo}/actions/artifacts", self._repo_artifacts)
        self.route("run", "GET", rf"{repo}/actions/runs/(?P<run>\d+)", self._run)
        self.route("storage", "GET", rf"{STORAGE}/(?P<key>.+)", self._storage)
        self.route(
            "dispatch",
            "POST",
            rf"{repo}/actions/workflows/(?P<wf>[^/]+)/dispatches",
            self._dispatch_workflow,
        )
        self.route("repository_dispatch", "POST", rf"{repo}/dispatches", self._repository_dispatch)
        self.route(
            "release_by_tag", "GET", rf"{repo}/releases/tags/(?P<tag>[^/]+)", self._release_by_tag
        )
        self.route("create_release", "POST", rf"{repo}/releases", self._create_release)
        self.route("list_assets", "GET", rf"{repo}/releases/(?P<id>\d+)/assets", self._list_assets)
        self.route(
            "upload_asset",
            "POST",
            rf"{UPLOADS}/repos/{self.owner}/{self.repo}/releases/(?P<id>\d+)/assets",
            self._upload_asset,
        )
        self.route("get_asset", "GET", rf"{repo}/releases/assets/(?P<id>\d+)", self._get_asset)
        self.route(
            "delete_asset", "DELETE", rf"{repo}/releases/assets/(?P<id>\d+)", self._delete_asset
        )
        self.route("list_deployments", "GET", rf"{repo}/deployments", self._list_deployments)
        self.route("create_deployment", "POST", rf"{repo}/deployments", self._create_deployment)
        self.route(
            "deployment_status",
            "POST",
            rf"{repo}/deployments/(?P<id>\d+)/statuses",
            self._deployment_status,
        )

    # -- urls ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.origin}{API}"

    @property
    def repo_api(self) -> str:
        return f"{self.api_url}/repos/{self.owner}/{self.repo}"

    @property
    def html(self) -> str:
        return f"https://github.example.invalid/{self.owner}/{self.repo}"

    def storage_url(self, key: str) -> str:
        # Another host name for the same server: the client must not send the token there.
        return f"http://localhost:{self.port}{STORAGE}/{key}?sig=signed"

    # -- set-up helpers --------------------------------------------------------------

    def add_comment(self, number: int, login: str, body: str) -> dict[str, Any]:
        comment_id = next(self._ids)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": f"{self.repo_api}/issues/comments/{comment_id}",
            "html_url": f"{self.html}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{self.repo_api}/issues/{number}",
            "body": body,
            "user": {
                "login": login,
                "id": abs(hash(login)) % 10**6,
                "type": "Bot" if login.endswith("[bot]") else "User",
            },
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def add_run(
        self,
        *,
        branch: str = "main",
        event: str = "push",
        conclusion: str = "success",
        workflow: str = "mlops.yml",
    ) -> dict[str, Any]:
        run_id = next(self._ids)
        run = {
            "id": run_id,
            "name": "mlops",
            "path": f".github/workflows/{workflow}",
            "workflow_file": workflow,
            "run_number": len(self.runs) + 1,
            "event": event,
            "status": "completed",
            "conclusion": conclusion,
            "head_branch": branch,
            "head_sha": hashlib.sha1(str(run_id).encode()).hexdigest(),
            "url": f"{self.repo_api}/actions/runs/{run_id}",
            "html_url": f"{self.html}/actions/runs/{run_id}",
            "artifacts_url": f"{self.repo_api}/actions/runs/{run_id}/artifacts",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.runs.append(run)
        return run

    def add_artifact(
        self, run: dict[str, Any], name: str, files: dict[str, bytes], *, expired: bool = False
    ) -> dict[str, Any]:
        artifact_id = next(self._ids)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            for path, data in files.items():
                bundle.writestr(path, data)
        self.blobs[f"artifacts/{artifact_id}.zip"] = buffer.getvalue()
        expires = datetime.now(UTC) + (timedelta(days=-1) if expired else timedelta(days=90))
        artifact = {
            "id": artifact_id,
            "node_id": f"MDg6QXJ0aWZhY3Q{artifact_id}",
            "name": name,
            "size_in_bytes": len(buffer.getvalue()),
            "url": f"{self.repo_api}/actions/artifacts/{artifact_id}",
            "archive_download_url": f"{self.repo_api}/actions/artifacts/{artifact_id}/zip",
            "expired": expired,
            "created_at": run["created_at"],
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "workflow_run": {
                "id": run["id"],
                "head_branch": run["head_branch"],
                "head_sha": run["head_sha"],
            },
        }
        self.artifacts.setdefault(run["id"], []).append(artifact)
        return artifact

    def release(self, tag: str) -> dict[str, Any] | None:
        return next((r for r in self.releases if r["tag_name"] == tag), None)

    def asset_bytes(self, asset: dict[str, Any]) -> bytes:
        return self.blobs[f"assets/{asset['id']}"]

    # -- auth ------------------------------------------------------------------------

    def _token(self, request: Request) -> str | Reply:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or not (
            token == self.workflow_token or token in self.users
        ):
            return Reply(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
        return token

    def _login(self, token: str) -> str:
        return self.users.get(token, "github-actions[bot]")

    # -- user and repository ---------------------------------------------------------

    def _user(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        if token == self.workflow_token:
            return Reply(
                403, {"message": "Resource not accessible by integration", "status": "403"}
            )
        login = self.users[token]
        return Reply(
            200, {"login": login, "id": 1, "type": "User", "url": f"{self.api_url}/users/{login}"}
        )

    def _repo(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        return Reply(
            200,
            {
                "id": 1296269,
                "name": self.repo,
                "full_name": f"{self.owner}/{self.repo}",
                "default_branch": self.default_branch,
                "url": self.repo_api,
                "html_url": self.html,
                "private": True,
            },
        )

    # -- comments --------------------------------------------------------------------

    def _list_comments(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        comments = self.comments.get(int(request.params["n"]), [])
        return self._paged(request, comments)

    def _create_comment(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        body = (request.json() or {}).get("body")
        if not isinstance(body, str) or not body:
            return Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"field": "body", "code": "missing_field"}],
                },
            )
        if len(body) > 65536:
            return Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"message": "Body is too long (maximum is 65536 characters)"}],
                },
            )
        return Reply(201, self.add_comment(int(request.params["n"]), self._login(token), body))

    def _edit_comment(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == int(request.params["id"]):
                    if comment["user"]["login"] != self._login(token):
                        return Reply(403, {"message": "Resource not accessible by integration"})
                    body = (request.json() or {}).get("body", "")
                    if len(body) > 65536:
                        return Reply(422, {"message": "Validation Failed"})
                    comment["body"] = body
                    comment["updated_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    return Reply(200, comment)
        return Reply(404, {"message": "Not Found"})

    # -- check runs ------------------------------------------------------------------

    def _create_check_run(self, request: Request) -> Reply:
        """POST /repos/{owner}/{repo}/check-runs: name and head_sha required; a
        completed run needs a conclusion; output needs title and summary; at most 50
        annotations, each with path, start_line, end_line, annotation_level (notice,
        warning or failure) and message."""
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        if not self.checks_writable:
            return Reply(403, {"message": "Resource not accessible by integration"})
        body = request.json() or {}
        problem = _check_run_problem(body)
        if problem:
            return Reply(422, {"message": "Validation Failed", "errors": [problem]})
        run = {
            "id": next(self._ids),
            "head_sha": body["head_sha"],
            "name": body["name"],
            "status": body.get("status", "queued"),
            "conclusion": body.get("conclusion"),
            "output": body.get("output") or {},
        }
        run["html_url"] = f"{self.html}/runs/{run['id']}"
        run["url"] = f"{self.repo_api}/check-runs/{run['id']}"
        self.check_runs.append(run)
        return Reply(201, run)

    # -- workflows, runs and artifacts -----------------------------------------------

    def _workflow_json(self, name: str) -> dict[str, Any]:
        return {
            "id": 161335,
            "name": "mlops",
            "path": f".github/workflows/{name}",
            "state": "active",
            "url": f"{self.repo_api}/actions/workflows/{name}",
            "html_url": f"{self.html}/actions/workflows/{name}",
        }

    def _workflow(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        if request.params["wf"] not in self.workflows:
            return Reply(404, {"message": "Not Found"})
        return Reply(200, self._workflow_json(request.params["wf"]))

    def _runs(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        if request.params["wf"] not in self.workflows:
            return Reply(404, {"message": "Not Found"})
        runs = [r for r in reversed(self.runs) if r["workflow_file"] == request.params["wf"]]
        if "branch" in request.query:
            runs = [r for r in runs if r["head_branch"] == request.query["branch"]]
        if "status" in request.query:
            runs = [r for r in runs if request.query["status"] in (r["status"], r["conclusion"])]
        if "event" in request.query:
            runs = [r for r in runs if r["event"] == request.query["event"]]
        return self._paged(request, runs, "workflow_runs")

    def _paged(self, request: Request, items: list[Any], key: str | None = None) -> Reply:
        """One page of ``items``, 30 a page, with GitHub's Link header: a bare list, or
        under ``key`` beside ``total_count`` as the search-like endpoints answer."""
        chunk, page, _, pages = page_of(items, request.query, 30)
        url = f"{self.origin}{request.path}"
        headers = {"Link": link_header(url, request.query, page, pages)} if pages > 1 else {}
        body = chunk if key is None else {"total_count": len(items), key: chunk}
        return Reply(200, body, headers)

    def _run_artifacts(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        artifacts = self.artifacts.get(int(request.params["run"]), [])
        if "name" in request.query:
            artifacts = [a for a in artifacts if a["name"] == request.query["name"]]
        return self._paged(request, artifacts, "artifacts")

    def _repo_artifacts(self, request: Request) -> Reply:
        """Every artifact of the repository, newest first, optionally of one name."""
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        artifacts = sorted(
            itertools.chain.from_iterable(self.artifacts.values()), key=lambda a: -int(a["id"])
        )
        if "name" in request.query:
            artifacts = [a for a in artifacts if a["name"] == request.query["name"]]
        return self._paged(request, artifacts, "artifacts")

    def _run(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        for run in self.runs:
            if run["id"] == int(request.params["run"]):
                return Reply(200, run)
        return Reply(404, {"message": "Not Found"})

    def _artifact_zip(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        artifact_id = int(request.params["id"])
        for artifact in itertools.chain.from_iterable(self.artifacts.values()):
            if artifact["id"] == artifact_id:
                if artifact["expired"]:
                    return Reply(410, {"message": "Artifact has expired"})
                return Reply(
                    302, None, {"Location": self.storage_url(f"artifacts/{artifact_id}.zip")}
                )
        return Reply(404, {"message": "Not Found"})

    def _storage(self, request: Request) -> Reply:
        if request.query.get("sig") != "signed":
            return Reply(403, b"<Error>AuthenticationFailed</Error>")
        data = self.blobs.get(request.params["key"])
        return Reply(200, data) if data is not None else Reply(404, b"<Error>BlobNotFound</Error>")

    # -- dispatches ------------------------------------------------------------------

    def _dispatch_workflow(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        declared = self.workflows.get(request.params["wf"])
        if declared is None:
            return Reply(404, {"message": "Not Found"})
        data = request.json() or {}
        if "return_run_details" in data and not self.run_details:
            return Reply(
                422, {"message": 'Invalid request.\n\n"return_run_details" is not a permitted key.'}
            )
        unexpected = sorted(set(data.get("inputs") or {}) - declared)
        if unexpected:
            return Reply(422, {"message": f"Unexpected inputs provided: {unexpected}"})
        if not data.get("ref"):
            return Reply(422, {"message": 'Invalid request.\n\n"ref" wasn\'t supplied.'})
        run = self.add_run(branch=data["ref"], event="workflow_dispatch", conclusion="")
        run["status"] = "queued"
        self.dispatches.append(
            {
                "workflow": request.params["wf"],
                "ref": data["ref"],
                "inputs": data.get("inputs") or {},
                "run_id": run["id"],
            }
        )
        if data.get("return_run_details"):
            return Reply(
                200,
                {"workflow_run_id": run["id"], "run_url": run["url"], "html_url": run["html_url"]},
            )
        return Reply(204)

    def _repository_dispatch(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        data = request.json() or {}
        if not data.get("event_type"):
            return Reply(422, {"message": 'Invalid request.\n\n"event_type" wasn\'t supplied.'})
        self.repository_dispatches.append(data)
        return Reply(204)

    # -- releases and assets ---------------------------------------------------------

    def _release_by_tag(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        release = self.release(request.params["tag"])
        return Reply(200, release) if release else Reply(404, {"message": "Not Found"})

    def _create_release(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        data = request.json() or {}
        tag = data.get("tag_name")
        if not tag:
            return Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"field": "tag_name", "code": "missing_field"}],
                },
            )
        if self.release(tag):
            return Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {"resource": "Release", "code": "already_exists", "field": "tag_name"}
                    ],
                },
            )
        release_id = next(self._ids)
        release = {
            "id": release_id,
            "tag_name": tag,
            "name": data.get("name"),
            "body": data.get("body"),
            "target_commitish": data.get("target_commitish") or self.default_branch,
            "draft": bool(data.get("draft")),
            "prerelease": bool(data.get("prerelease")),
            "make_latest": data.get("make_latest"),
            "url": f"{self.repo_api}/releases/{release_id}",
            "html_url": f"{self.html}/releases/tag/{tag}",
            "assets_url": f"{self.repo_api}/releases/{release_id}/assets",
            "upload_url": f"{self.origin}{UPLOADS}/repos/{self.owner}/{self.repo}/releases/{release_id}/assets{{?name,label}}",
            "assets": [],
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.releases.append(release)
        return Reply(201, release)

    def _find_asset(self, asset_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for release in self.releases:
            for asset in release["assets"]:
                if asset["id"] == asset_id:
                    return release, asset
        return None

    def _list_assets(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        release = next((r for r in self.releases if r["id"] == int(request.params["id"])), None)
        return Reply(200, release["assets"]) if release else Reply(404, {"message": "Not Found"})

    def _upload_asset(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        release = next((r for r in self.releases if r["id"] == int(request.params["id"])), None)
        name = request.query.get("name", "")
        if release is None:
            return Reply(404, {"message": "Not Found"})
        if any(a["name"] == name for a in release["assets"]):
            return Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}
                    ],
                },
            )
        data = request.body
        if self.corrupt_next_asset and data:
            self.corrupt_next_asset = False
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        asset_id = next(self._ids)
        self.blobs[f"assets/{asset_id}"] = data
        asset = {
            "id": asset_id,
            "name": name,
            "label": request.query.get("label") or None,
            "state": "uploaded",
            "content_type": request.headers.get("content-type", "application/octet-stream"),
            "size": len(data),
            "download_count": 0,
            "url": f"{self.repo_api}/releases/assets/{asset_id}",
            "browser_download_url": f"{self.html}/releases/download/{release['tag_name']}/{name}",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.asset_digests:
            asset["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
        release["assets"].append(asset)
        return Reply(201, asset)

    def _get_asset(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        found = self._find_asset(int(request.params["id"]))
        if found is None:
            return Reply(404, {"message": "Not Found"})
        if request.headers.get("accept") == "application/octet-stream":
            return Reply(302, None, {"Location": self.storage_url(f"assets/{found[1]['id']}")})
        return Reply(200, found[1])

    def _delete_asset(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        found = self._find_asset(int(request.params["id"]))
        if found is None:
            return Reply(404, {"message": "Not Found"})
        found[0]["assets"].remove(found[1])
        return Reply(204)

    # -- deployments -----------------------------------------------------------------

    def _list_deployments(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        found = list(reversed(self.deployments))
        for key in ("task", "environment", "ref", "sha"):
            if key in request.query:
                found = [d for d in found if d[key] == request.query[key]]
        return self._paged(request, found)

    def _create_deployment(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        data = request.json() or {}
        ref = data.get("ref", "")
        if not any(r["tag_name"] == ref for r in self.releases) and ref != self.default_branch:
            return Reply(422, {"message": f"No ref found for: {ref}"})
        if data.get("auto_merge", True):
            return Reply(409, {"message": "Conflict merging main into " + ref})
        deployment_id = next(self._ids)
        deployment = {
            "id": deployment_id,
            "url": f"{self.repo_api}/deployments/{deployment_id}",
            "sha": "0" * 40,
            "ref": ref,
            "task": data.get("task", "deploy"),
            "payload": data.get("payload", {}),
            "environment": data.get("environment", "production"),
            "description": data.get("description"),
            "production_environment": bool(data.get("production_environment")),
            "statuses_url": f"{self.repo_api}/deployments/{deployment_id}/statuses",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "statuses": [],
        }
        self.deployments.append(deployment)
        return Reply(201, {k: v for k, v in deployment.items() if k != "statuses"})

    def _deployment_status(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        deployment = next(
            (d for d in self.deployments if d["id"] == int(request.params["id"])), None
        )
        if deployment is None:
            return Reply(404, {"message": "Not Found"})
        data = request.json() or {}
        status = {
            "id": next(self._ids),
            "state": data.get("state"),
            "environment_url": data.get("environment_url", ""),
        }
        deployment["statuses"].append(status)
        return Reply(201, status)


CONCLUSIONS = {
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
}
ANNOTATION_FIELDS = ("path", "start_line", "end_line", "annotation_level", "message")


def _check_run_problem(body: dict[str, Any]) -> str | None:
    """What the checks API would refuse in a create-check-run body, or None."""
    if not isinstance(body.get("name"), str) or not body["name"]:
        return "name is missing"
    sha = body.get("head_sha")
    if not (isinstance(sha, str) and len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)):
        return "head_sha is not a commit SHA"
    if body.get("status") == "completed" and body.get("conclusion") not in CONCLUSIONS:
        return "a completed check run needs a conclusion"
    output = body.get("output")
    if output is None:
        return None
    if not (isinstance(output.get("title"), str) and isinstance(output.get("summary"), str)):
        return "output needs title and summary"
    if len(output["summary"]) > 65535:
        return "output.summary is too long (maximum is 65535 characters)"
    annotations = output.get("annotations") or []
    if len(annotations) > 50:
        return "at most 50 annotations per request"
    for note in annotations:
        missing = [f for f in ANNOTATION_FIELDS if f not in note]
        if missing:
            return f"annotation lacks {', '.join(missing)}"
        if note["annotation_level"] not in ("notice", "warning", "failure"):
            return "annotation_level must be notice, warning or failure"
        if not isinstance(note["start_line"], int) or note["start_line"] < 1:
            return "start_line must be a positive integer"
    return None
