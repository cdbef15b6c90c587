"""A fake GitLab REST API (v4) with the endpoints ci-mlops uses, answering as
docs.gitlab.com describes them: merge-request notes (offset pagination with Link and
X-* headers), markdown uploads, the current user, job artifacts by ref and job name,
generic packages and pipeline triggers.

Authentication: ``PRIVATE-TOKEN`` (a project access token) or ``JOB-TOKEN``; an unknown
token answers 401, and a job token on the notes, uploads or user endpoints answers 403,
as CI_JOB_TOKEN may not use them.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.gitlab_mlflow import GitLabMlflow
from tests.fakes.server import FakeServer, Reply, Request, link_header, page_of

API = "/api/v4"
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
PACKAGE_VERSION = re.compile(r"^(\.?[\w+-]+\.?)+$")


@dataclass
class User:
    id: int
    username: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.username.title(),
            "state": "active",
            "avatar_url": None,
            "web_url": f"https://gitlab.example.invalid/{self.username}",
        }


@dataclass
class FakeGitLab(GitLabMlflow, FakeServer):
    """State is plain attributes, so tests can set it up and inspect it."""

    project_id: str = "42"
    job_token: str = "job-token-3f9a1c"
    users: dict[str, User] = field(default_factory=dict)  # PRIVATE-TOKEN -> user
    trigger_tokens: set[str] = field(default_factory=set)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # MR iid -> notes
    uploads: list[dict[str, Any]] = field(default_factory=list)
    packages: dict[tuple[str, str], list[tuple[str, bytes]]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    corrupt_next_package_upload: bool = False

    def __post_init__(self) -> None:
        FakeServer.__init__(self)
        self._ids = itertools.count(1000)
        project = rf"{API}/projects/(?P<project>[^/]+)"
        self.route("user", "GET", rf"{API}/user", self._user)
        notes = rf"{project}/merge_requests/(?P<iid>\d+)/notes"
        self.route("list_notes", "GET", notes, self._list_notes)
        self.route("create_note", "POST", notes, self._create_note)
        self.route("update_note", "PUT", rf"{notes}/(?P<note>\d+)", self._update_note)
        self.route("upload", "POST", rf"{project}/uploads", self._upload)
        self.route(
            "artifact_raw",
            "GET",
            rf"{project}/jobs/artifacts/(?P<ref>[^/]+)/raw/(?P<path>.+)",
            self._artifact_raw,
        )
        generic = rf"{project}/packages/generic/(?P<name>[^/]+)/(?P<version>[^/]+)/(?P<file>[^/]+)"
        self.route("package_put", "PUT", generic, self._package_put)
        # What MLflow's log_artifact sends for a file in a folder of a run.
        self.route(
            "package_put_folder",
            "PUT",
            rf"{project}/packages/generic/[^/]+/[^/]+/.+/[^/]+",
            lambda request: Reply(
                400, {"message": "400 Bad request - directories are not supported"}
            ),
        )
        self.route("package_get", "GET", generic, self._package_get)
        self.route("trigger", "POST", rf"{project}/trigger/pipeline", self._trigger)
        self._ml_routes(API)

    # -- set-up helpers --------------------------------------------------------------

    def add_user(self, token: str, user_id: int, username: str) -> User:
        self.users[token] = User(user_id, username)
        return self.users[token]

    def add_note(self, iid: int, author: User, body: str) -> dict[str, Any]:
        note = self._note(iid, author, body)
        self.notes.setdefault(iid, []).append(note)
        return note

    def package_file(self, name: str, version: str, file_name: str) -> bytes | None:
        """The newest upload of a package file, as GitLab serves it."""
        for stored_name, data in reversed(self.packages.get((name, version), [])):
            if stored_name == file_name:
                return data
        return None

    # -- auth ------------------------------------------------------------------------

    def _who(self, request: Request) -> tuple[str, User | None] | Reply:
        """("private", user) or ("job", None); a Reply when authentication fails."""
        private = request.headers.get("private-token")
        job = request.headers.get("job-token")
        bearer = self._bearer(request)  # GitLab takes either token as a bearer token too
        if bearer is not None and private is None and job is None:
            private, job = (None, bearer) if bearer == self.job_token else (bearer, None)
        if private is not None:
            user = self.users.get(private)
            return ("private", user) if user else Reply(401, {"message": "401 Unauthorized"})
        if job is not None:
            return (
                ("job", None)
                if job == self.job_token
                else Reply(401, {"message": "401 Unauthorized"})
            )
        return Reply(401, {"message": "401 Unauthorized"})

    def _user_only(self, request: Request) -> User | Reply:
        who = self._who(request)
        if isinstance(who, Reply):
            return who
        if who[0] == "job" or who[1] is None:
            return Reply(403, {"message": "403 Forbidden"})
        return who[1]

    def _project_ok(self, request: Request) -> Reply | None:
        if request.params.get("project") != self.project_id:
            return Reply(404, {"message": "404 Project Not Found"})
        return None

    # -- users and notes -------------------------------------------------------------

    def _user(self, request: Request) -> Reply:
        user = self._user_only(request)
        return user if isinstance(user, Reply) else Reply(200, user.json())

    def _note(self, iid: int, author: User, body: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        return {
            "id": next(self._ids),
            "type": None,
            "body": body,
            "attachment": None,
            "author": author.json(),
            "created_at": now,
            "updated_at": now,
            "system": False,
            "noteable_id": 5000 + iid,
            "noteable_type": "MergeRequest",
            "noteable_iid": iid,
            "project_id": int(self.project_id),
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }

    def _list_notes(self, request: Request) -> Reply:
        denied = self._project_ok(request) or self._user_only(request)
        if isinstance(denied, Reply):
            return denied
        notes = list(self.notes.get(int(request.params["iid"]), []))
        key = "updated_at" if request.query.get("order_by") == "updated_at" else "created_at"
        notes.sort(
            key=lambda n: (n[key], n["id"]), reverse=request.query.get("sort", "desc") == "desc"
        )
        chunk, page, per_page, pages = page_of(notes, request.query, 20)
        url = f"{self.origin}{request.path}"
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(len(notes)),
            "X-Total-Pages": str(pages),
            "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "Link": link_header(url, request.query, page, pages),
        }
        return Reply(200, chunk, headers)

    def _create_note(self, request: Request) -> Reply:
        denied = self._project_ok(request)
        user = denied or self._user_only(request)
        if isinstance(user, Reply):
            return user
        body = _fields(request).get("body")
        if not body:
            return Reply(400, {"message": "400 Bad request - body is missing"})
        note = self.add_note(int(request.params["iid"]), user, body)
        return Reply(201, note)

    def _update_note(self, request: Request) -> Reply:
        denied = self._project_ok(request)
        user = denied or self._user_only(request)
        if isinstance(user, Reply):
            return user
        for note in self.notes.get(int(request.params["iid"]), []):
            if note["id"] == int(request.params["note"]):
                if note["author"]["id"] != user.id:
                    return Reply(403, {"message": "403 Forbidden"})
                note["body"] = _fields(request).get("body", note["body"])
                note["updated_at"] = datetime.now(UTC).isoformat()
                return Reply(200, note)
        return Reply(404, {"message": "404 Note Not Found"})

    # -- uploads ---------------------------------------------------------------------

    def _upload(self, request: Request) -> Reply:
        denied = self._project_ok(request)
        user = denied or self._user_only(request)
        if isinstance(user, Reply):
            return user
        parts = _multipart(request)
        if "file" not in parts:
            return Reply(400, {"message": "400 Bad request - file is missing"})
        filename, data = parts["file"]
        secret = hashlib.md5(data + str(len(self.uploads)).encode()).hexdigest()
        alt = filename.rsplit(".", 1)[0]
        url = f"/uploads/{secret}/{filename}"
        record = {
            "id": next(self._ids),
            "alt": alt,
            "url": url,
            "full_path": f"/-/project/{self.project_id}{url}",
            "markdown": f"![{alt}]({url})",
        }
        self.uploads.append({**record, "filename": filename, "data": data})
        return Reply(201, record)

    # -- artifacts and packages ------------------------------------------------------

    def _artifact_raw(self, request: Request) -> Reply:
        who = self._project_ok(request) or self._who(request)
        if isinstance(who, Reply):
            return who
        files = self.artifacts.get((request.params["ref"], request.query.get("job", "")))
        if files is None or request.params["path"] not in files:
            return Reply(404, {"message": "404 Not found"})
        return Reply(200, files[request.params["path"]])

    def _package_put(self, request: Request) -> Reply:
        who = self._project_ok(request) or self._who(request)
        if isinstance(who, Reply):
            return who
        name, version, file_name = (request.params[k] for k in ("name", "version", "file"))
        if not PACKAGE_NAME.match(name) or not PACKAGE_VERSION.match(version):
            return Reply(
                400, {"message": "400 Bad request - package_name or package_version is invalid"}
            )
        data = request.body
        if self.corrupt_next_package_upload and data:
            self.corrupt_next_package_upload = False
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.packages.setdefault((name, version), []).append((file_name, data))
        if request.query.get("select") == "package_file":
            return Reply(
                200,
                {
                    "file_name": file_name,
                    "size": len(data),
                    "file_sha256": hashlib.sha256(data).hexdigest(),
                },
            )
        return Reply(201, {"message": "201 Created"})

    def _package_get(self, request: Request) -> Reply:
        who = self._project_ok(request) or self._who(request)
        if isinstance(who, Reply):
            return who
        data = self.package_file(
            request.params["name"], request.params["version"], request.params["file"]
        )
        if data is None:
            return Reply(404, {"message": "404 Package Not Found"})
        return Reply(200, data)

    # -- triggers --------------------------------------------------------------------

    def _trigger(self, request: Request) -> Reply:
        denied = self._project_ok(request)
        if denied:
            return denied
        fields = _fields(request)
        token = fields.get("token")
        if token not in self.trigger_tokens and token != self.job_token:
            return Reply(404, {"message": "404 Not Found"})
        if not fields.get("ref"):
            return Reply(400, {"message": "400 Bad request - ref is missing"})
        iid = len(self.pipelines) + 1
        pipeline = {
            "id": 9000 + iid,
            "iid": iid,
            "project_id": int(self.project_id),
            "sha": "0" * 40,
            "ref": fields["ref"],
            "status": "created",
            "source": "pipeline" if token == self.job_token else "trigger",
            "web_url": f"https://gitlab.example.invalid/group/project/-/pipelines/{9000 + iid}",
            "variables": fields.get("variables") or {},
        }
        self.pipelines.append(pipeline)
        return Reply(201, {k: v for k, v in pipeline.items() if k != "variables"})


def _fields(request: Request) -> dict[str, Any]:
    """Body fields of a JSON or form-encoded request."""
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        data = request.json()
        return data if isinstance(data, dict) else {}
    if "multipart/form-data" in content_type:
        return {k: v[1].decode() for k, v in _multipart(request).items()}
    fields: dict[str, Any] = {}
    for key, values in parse_qs(request.body.decode(), keep_blank_values=True).items():
        match = re.fullmatch(r"variables\[(.+)\]", key)
        if match:
            fields.setdefault("variables", {})[match.group(1)] = values[-1]
        else:
            fields[key] = values[-1]
    return fields


def _multipart(request: Request) -> dict[str, tuple[str, bytes]]:
    """name -> (filename, content) of a multipart/form-data body."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    parts: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        return parts
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            parts[str(name)] = (
                part.get_filename() or "",
                payload if isinstance(payload, bytes) else b"",
            )
    return parts
