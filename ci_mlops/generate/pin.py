"""``ci-mlops pin-images``: pin each job image the spec's jobs run in by its digest.

The images are the ones the generators name (the job plan's kinds, tagged by
:func:`~ci_mlops.generate.kinds.image_tag`); each tag's digest comes from its registry
through the OCI distribution API: ``HEAD /v2/<name>/manifests/<tag>`` accepting an image
index or a manifest (OCI or Docker), read from ``Docker-Content-Digest``. A registry that
answers 401 with a ``Bearer`` challenge (ghcr.io, Docker Hub, GitLab) gets a token from
the challenge's realm: anonymously for public images, or with ``MLOPS_REGISTRY_TOKEN``
(and ``MLOPS_REGISTRY_USER``) for a private mirror. The digests go into the spec as
``runtime.job_image_digests``; the pipelines then run each image by tag and digest.

Only the standard library speaks HTTP here: the command is a handful of small requests.
Registries are reached over https only, except on this machine (localhost, 127.0.0.1),
and credentials are never sent over plain http to anywhere else, nor printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from ci_mlops.errors import CheckFailed, UsageError
from ci_mlops.generate.kinds import image_tag
from ci_mlops.generate.plan import build_plan
from ci_mlops.spec.edit import set_job_image_digests
from ci_mlops.spec.model import Spec

TOKEN_ENV = "MLOPS_REGISTRY_TOKEN"
USER_ENV = "MLOPS_REGISTRY_USER"
# Any user name goes with a token on ghcr.io; GitLab's registry wants the token's owner.
DEFAULT_USER = "ci-mlops"
# What a multi-platform release tag may point at: an image index (OCI) or manifest list
# (Docker), or a single manifest of either kind. Without the index types, a registry
# answers with a converted single-platform manifest, whose digest is not the tag's.
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
TIMEOUT_SECONDS = 30
LOCAL_HOSTS = ("localhost", "127.0.0.1")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class ImageRef:
    """``<registry>/<name>:<tag>`` split the way the distribution API addresses it."""

    registry: str  # host[:port]
    name: str
    tag: str

    @classmethod
    def parse(cls, reference: str) -> ImageRef:
        repository, tag = reference.rsplit(":", 1)
        registry, name = repository.split("/", 1)
        # Docker Hub's images are named docker.io/... but served from this host.
        return cls("registry-1.docker.io" if registry == "docker.io" else registry, name, tag)

    @property
    def manifest_url(self) -> str:
        return f"{scheme(self.registry)}://{self.registry}/v2/{self.name}/manifests/{self.tag}"


def scheme(host: str) -> str:
    """https, except for a registry on this machine (a local mirror, the tests)."""
    return "http" if urllib.parse.urlsplit(f"//{host}").hostname in LOCAL_HOSTS else "https"


def _safe_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOCAL_HOSTS)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Registries answer manifests themselves; a redirect is reported, not followed, so
    no request leaves for a host nobody named."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class Registry:
    """Reads digests from registries; ``token`` (a secret) only ever goes into headers."""

    user: str = DEFAULT_USER
    token: str | None = field(default=None, repr=False)
    # Pull tokens by realm and scope: the images share one repository, so one token.
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _authorizations: dict[str, str] = field(default_factory=dict, repr=False)
    _opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(_NoRedirect), repr=False
    )

    @classmethod
    def from_environment(cls) -> Registry:
        return cls(os.environ.get(USER_ENV) or DEFAULT_USER, os.environ.get(TOKEN_ENV) or None)

    def digest(self, image: str, reference: str) -> str:
        """The digest ``reference`` (``registry/name:tag``) points at now."""
        ref = ImageRef.parse(reference)
        url = ref.manifest_url
        # What the last image of this registry was read with: a challenge per image
        # would double the requests.
        authorization = self._authorizations.get(ref.registry)
        status, headers, _ = self._request("HEAD", url, image, authorization)
        if status == 401:
            if authorization:
                self._tokens.clear()  # it expired: ask the realm again
            authorization = self._authorize(headers, ref, image, url)
            self._authorizations[ref.registry] = authorization
            status, headers, _ = self._request("HEAD", url, image, authorization)
        if status == 404:
            raise UsageError(f"job image {image}: no tag {ref.tag} at {url} (404)")
        if status != 200:
            raise UsageError(f"job image {image}: {url} answered {status}{_hint(status)}")
        digest = headers.get("Docker-Content-Digest")
        if digest is None:
            # The header is a SHOULD of the spec: the manifest's own bytes say the same.
            _, _, body = self._request("GET", url, image, authorization)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if not DIGEST.match(digest):
            raise UsageError(f"job image {image}: {url} gave digest {digest!r}, not sha256:<hex>")
        return digest

    def _authorize(self, headers: Message, ref: ImageRef, image: str, url: str) -> str:
        """The Authorization header the 401's challenge asks for."""
        challenge = headers.get("WWW-Authenticate") or ""
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic" and self.token:
            return f"Basic {self._basic()}"
        if kind != "bearer":
            raise UsageError(
                f"job image {image}: {url} needs credentials ({challenge or 'no challenge'}); "
                f"set {TOKEN_ENV} (and {USER_ENV})"
            )
        return f"Bearer {self._bearer(dict(_CHALLENGE_PARAM.findall(challenge)), ref, image)}"

    def _bearer(self, params: dict[str, str], ref: ImageRef, image: str) -> str:
        """A pull token from the challenge's realm: anonymous unless a token is set."""
        realm = params.get("realm", "")
        if not _safe_url(realm):
            raise UsageError(f"job image {image}: token realm {realm!r} is not an https URL")
        query = {"scope": params.get("scope", f"repository:{ref.name}:pull")}
        if "service" in params:
            query["service"] = params["service"]
        cached = self._tokens.get((realm, query["scope"]))
        if cached is None:
            cached = self._tokens[realm, query["scope"]] = self._fetch_token(realm, query, image)
        return cached

    def _fetch_token(self, realm: str, query: dict[str, str], image: str) -> str:
        url = f"{realm}?{urllib.parse.urlencode(query)}"
        authorization = f"Basic {self._basic()}" if self.token else None
        status, _, body = self._request("GET", url, image, authorization)
        if status != 200:
            raise UsageError(f"job image {image}: token request to {realm} answered {status}")
        try:
            answer = json.loads(body)
            return str(answer.get("token") or answer["access_token"])
        except (ValueError, KeyError, AttributeError):
            raise UsageError(f"job image {image}: {realm} answered no token") from None

    def _basic(self) -> str:
        return base64.b64encode(f"{self.user}:{self.token}".encode()).decode()

    def _request(
        self, method: str, url: str, image: str, authorization: str | None
    ) -> tuple[int, Message, bytes]:
        request = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT})
        if authorization:
            # Never carried along a redirect (there are none: see _NoRedirect).
            request.add_unredirected_header("Authorization", authorization)
        try:
            with self._opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, b""
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UsageError(
                f"job image {image}: registry unreachable at {url} ({reason})"
            ) from None


def _hint(status: int) -> str:
    if status in (401, 403):
        return f": the image is private or the credentials are wrong; set {TOKEN_ENV}"
    return ""


@dataclass(frozen=True)
class Pinned:
    """One job image: its tag, the digest the spec holds and the registry's."""

    image: str
    reference: str
    spec_digest: str | None
    digest: str

    def line(self) -> str:
        if self.spec_digest == self.digest:
            state = "unchanged"
        elif self.spec_digest is None:
            state = "new"
        else:
            state = f"was {self.spec_digest}"
        return f"{self.image}: {self.reference}@{self.digest} ({state})"


def registry_digests(spec: Spec, registry: Registry) -> list[Pinned]:
    """The digest of each job image the spec's jobs run in, as its registry has it."""
    images = spec.runtime.job_images
    if images is None:
        raise UsageError(
            f"{spec.path}: runtime.job_images is not set, so jobs run in no job image to pin; "
            "set it to published or your mirror's repository first"
        )
    plan = build_plan(spec, spec.path.name)
    pinned = []
    for name in plan.job_image_names():
        reference = image_tag(name, images.repository, spec.runtime.python)
        digest = registry.digest(name, reference)
        pinned.append(Pinned(name, reference, images.digests.get(name), digest))
    return pinned


def pin_images(spec: Spec, *, check: bool, registry: Registry | None = None) -> int:
    """Write (or with ``check``, compare) ``runtime.job_image_digests``; the exit code."""
    pinned = registry_digests(spec, registry or Registry.from_environment())
    for entry in pinned:
        print(entry.line())
    assert spec.runtime.job_images is not None  # registry_digests refused otherwise
    digests = {p.image: p.digest for p in pinned}
    if check:
        stale = [p.image for p in pinned if p.spec_digest != p.digest]
        if stale:
            raise CheckFailed(
                f"{spec.path}: runtime.job_image_digests differs from the registry for "
                f"{', '.join(stale)}; run `{_command(spec.path)}` and commit the result"
            )
        return 0
    if digests != spec.runtime.job_images.digests:
        set_job_image_digests(spec.path, digests)
        print(f"{spec.path}: runtime.job_image_digests written", file=sys.stderr)
    return 0


def _command(path: Path) -> str:
    spec = "" if path.name == "mlops.yaml" and len(path.parts) == 1 else f" --spec {path}"
    return f"ci-mlops pin-images{spec}"
