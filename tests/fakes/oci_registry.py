"""A container registry as the OCI distribution spec describes it, for what
``ci-mlops pin-images`` asks: ``HEAD``/``GET /v2/<name>/manifests/<tag>`` answering with
the manifest's ``Docker-Content-Digest``, behind the token authentication ghcr.io and
Docker Hub use: a request without a token gets 401 and a ``WWW-Authenticate: Bearer
realm=...,service=...,scope=...`` challenge; the realm hands out pull tokens,
anonymously for public repositories and only against Basic credentials for private ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field

from tests.fakes.server import FakeServer, Reply, Request

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SERVICE = "fake-registry"


@dataclass
class Repository:
    tags: dict[str, bytes] = field(default_factory=dict)  # tag -> manifest (an index)
    credentials: tuple[str, str] | None = None  # (user, token) a private one asks for


def index_manifest(tag: str) -> bytes:
    """An image index for ``tag``; its bytes differ per tag, and so does its digest."""
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "annotations": {"t": tag}},
        sort_keys=True,
    ).encode()


def digest_of(manifest: bytes) -> str:
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


class FakeOciRegistry(FakeServer):
    def __init__(self, *, send_digest_header: bool = True) -> None:
        super().__init__()
        self.repositories: dict[str, Repository] = {}
        self.send_digest_header = send_digest_header
        self._tokens: dict[str, str] = {}  # token -> the scope it grants
        for method in ("HEAD", "GET"):
            self.route(
                f"manifest-{method.lower()}",
                method,
                r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)",
                self._manifest,
            )
        self.route("token", "GET", r"/token", self._token)

    def push(self, name: str, tag: str, manifest: bytes | None = None) -> str:
        """Point ``name:tag`` at ``manifest``; its digest."""
        manifest = manifest if manifest is not None else index_manifest(f"{name}:{tag}")
        self.repositories.setdefault(name, Repository()).tags[tag] = manifest
        return digest_of(manifest)

    def expire_tokens(self) -> None:
        """Every token handed out so far stops working, as at the end of its lifetime."""
        self._tokens.clear()

    def _challenge(self, name: str) -> Reply:
        scope = f"repository:{name}:pull"
        header = f'Bearer realm="{self.origin}/token",service="{SERVICE}",scope="{scope}"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return Reply(401, body, {"WWW-Authenticate": header})

    def _manifest(self, request: Request) -> Reply:
        name, reference = request.params["name"], request.params["reference"]
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self._tokens.get(token) != f"repository:{name}:pull":
            return self._challenge(name)
        manifest = self.repositories.get(name, Repository()).tags.get(reference)
        # An index is only served to a client that says it takes one.
        if manifest is None or OCI_INDEX not in request.headers.get("accept", ""):
            body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            return Reply(404, body)
        headers = {"Content-Type": OCI_INDEX}
        if self.send_digest_header:
            headers["Docker-Content-Digest"] = digest_of(manifest)
        return Reply(200, manifest, headers)

    def _token(self, request: Request) -> Reply:
        scope, service = request.query.get("scope", ""), request.query.get("service")
        name = scope.removeprefix("repository:").removesuffix(":pull")
        repository = self.repositories.get(name)
        if service != SERVICE or repository is None:
            return Reply(401, {"errors": [{"code": "DENIED", "message": "unknown scope"}]})
        if repository.credentials is not None:
            user, secret = repository.credentials
            expected = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return Reply(401, {"errors": [{"code": "DENIED", "message": "denied"}]})
        token = secrets.token_hex(16)
        self._tokens[token] = scope
        return Reply(200, {"token": token, "expires_in": 300})
