"""GitLab through python-gitlab: merge-request notes, baselines from job artifacts and
pipeline triggers, and the authenticated clients the GitLab registries share
(:class:`GitLabApi`; the generic package registry is
:mod:`ci_mlops.registries.gitlab_packages`).

Tokens. A job's ``CI_JOB_TOKEN`` may read job artifacts, read and write the generic
package registry and trigger pipelines, so those calls use it. It may not post notes or
upload images: that needs ``GITLAB_TOKEN``, a project access token with the ``api``
scope. Outside a job ``GITLAB_TOKEN`` serves for everything.

Retries. python-gitlab retries 429 and 5xx answers itself, backing off (or waiting
``Retry-After``); ci-mlops bounds the number of retries (``MLOPS_API_RETRIES``, default
5) and the wait a server may ask for (``MLOPS_RETRY_AFTER_MAX``, default 60 s). Creating
a note is the one write that is not repeated blindly: after a 5xx or no answer, the note
is looked for by its marker first, since GitLab may have stored it before failing.

Forks. A merge request from a fork runs its pipeline in the fork (``CI_PROJECT_ID``);
its note and its baseline belong to the project it targets,
``CI_MERGE_REQUEST_PROJECT_ID``. Publishing stays in ``CI_PROJECT_ID``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import gitlab
import requests

from ci_mlops import log
from ci_mlops.atomic import read_artifact
from ci_mlops.errors import PlatformError
from ci_mlops.generate.kinds import baseline_names
from ci_mlops.platforms.base import Baseline, Platform
from ci_mlops.platforms.remote import (
    ApiError,
    api_error,
    env_flag,
    has_marker,
    invalid_answer,
    parse_metrics,
    parse_ranking,
    replace_image_links,
    retries,
    retry_after_cap,
    retry_after_seconds,
    unreachable,
    with_marker,
)
from ci_mlops.spec.model import Model, Spec

T = TypeVar("T")

ENVIRONMENTS_VERSION = "0.0.0"
TIMEOUT_SECONDS = 60
NOTE_HINT = (
    "posting notes needs a project access token with api scope in GITLAB_TOKEN; "
    "CI_JOB_TOKEN cannot post notes"
)
NO_TOKEN_WARNING = (
    "GITLAB_TOKEN is not set, so the report was not posted to the merge request: "
    "CI_JOB_TOKEN cannot post notes or upload images. Create a project access token with "
    "the api scope (Settings > Access tokens) and add it as a masked CI/CD variable named "
    "GITLAB_TOKEN. The report is still in the job's artifacts."
)


@dataclass(frozen=True)
class GitLabEnv:
    """The CI variables a GitLab job sets (and the tokens ci-mlops is given)."""

    api_url: str
    project_id: str
    mr_project_id: str
    mr_iid: str
    default_branch: str
    commit_sha: str
    pipeline_source: str
    pipeline_iid: str
    pipeline_url: str
    project_url: str
    job_token: str
    api_token: str
    trigger_token: str
    mr_labels: str = ""  # CI_MERGE_REQUEST_LABELS: comma-separated, merge request pipelines only

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> GitLabEnv:
        env = os.environ if env is None else env
        return cls(
            api_url=env.get("CI_API_V4_URL", "").rstrip("/"),
            project_id=env.get("CI_PROJECT_ID", ""),
            mr_project_id=env.get("CI_MERGE_REQUEST_PROJECT_ID", ""),
            mr_iid=env.get("CI_MERGE_REQUEST_IID", ""),
            default_branch=env.get("CI_DEFAULT_BRANCH", ""),
            commit_sha=env.get("CI_COMMIT_SHA", ""),
            pipeline_source=env.get("CI_PIPELINE_SOURCE", ""),
            pipeline_iid=env.get("CI_PIPELINE_IID") or env.get("CI_PIPELINE_ID", ""),
            pipeline_url=env.get("CI_PIPELINE_URL", ""),
            project_url=env.get("CI_PROJECT_URL", "").rstrip("/"),
            job_token=env.get("CI_JOB_TOKEN", ""),
            api_token=env.get("GITLAB_TOKEN", ""),
            trigger_token=env.get("MLOPS_TRIGGER_TOKEN", ""),
            mr_labels=env.get("CI_MERGE_REQUEST_LABELS", ""),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.job_token, self.api_token, self.trigger_token)

    @property
    def target_project_id(self) -> str:
        """The project a merge request targets (its fork's pipeline runs elsewhere)."""
        return self.mr_project_id or self.project_id


class _Gitlab(gitlab.Gitlab):
    """python-gitlab's client with a bound on its own retry loop for 429/5xx answers."""

    max_retries = 5

    def http_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("max_retries", self.max_retries)
        return super().http_request(*args, **kwargs)


class GitLabApi:
    """Authenticated python-gitlab clients for one job's CI variables, and the one way
    their calls fail (an :class:`ApiError` without secrets). The platform (notes,
    baselines, triggers) and the package registry both talk to GitLab through it."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = GitLabEnv.read(env)
        self._clients: dict[str, gitlab.Gitlab] = {}

    def client(self, token_kind: str) -> gitlab.Gitlab:
        """A client authenticated with ``job`` (CI_JOB_TOKEN, else GITLAB_TOKEN), ``api``
        (GITLAB_TOKEN only) or ``none``."""
        if token_kind not in self._clients:
            self._clients[token_kind] = self._new_client(token_kind)
        return self._clients[token_kind]

    def _new_client(self, token_kind: str) -> gitlab.Gitlab:
        api = self.require("CI_API_V4_URL", self.env.api_url)
        if not api.endswith("/api/v4"):
            raise PlatformError(f"CI_API_V4_URL must end with /api/v4 (got {api!r})")
        auth: dict[str, Any] = {}
        if token_kind == "api" or (token_kind == "job" and not self.env.job_token):
            if not self.env.api_token:
                raise PlatformError(
                    "no GitLab token: inside a job CI_JOB_TOKEN is set automatically; "
                    "elsewhere set GITLAB_TOKEN to a project access token with api scope"
                )
            auth["private_token"] = self.env.api_token
        elif token_kind == "job":
            auth["job_token"] = self.env.job_token
        client = _Gitlab(
            api.removesuffix("/api/v4"),
            retry_transient_errors=True,
            keep_base_url=True,
            timeout=TIMEOUT_SECONDS,
            **auth,
        )
        client.max_retries = retries()
        client.session.hooks["response"].append(_cap_retry_after)
        return client

    def project(self, token_kind: str, *, target: bool = False) -> Any:
        """This pipeline's project, or with ``target`` the one its merge request targets."""
        pid = self.require("CI_PROJECT_ID", self.env.project_id)
        if target:
            pid = self.env.target_project_id
        return self.client(token_kind).projects.get(pid, lazy=True)

    def require(self, name: str, value: str) -> str:
        if not value:
            raise PlatformError(f"{name} is not set; GitLab sets it in CI jobs")
        return value

    def call(self, endpoint: str, hint: str, action: Callable[[], T]) -> T:
        """Run one API action; turn any failure into an ApiError without secrets."""
        try:
            return action()
        except gitlab.exceptions.GitlabParsingError:
            error = invalid_answer(endpoint, "GitLab")
        except requests.exceptions.JSONDecodeError:
            error = invalid_answer(endpoint, "GitLab")
        except gitlab.exceptions.GitlabError as exc:
            error = api_error(
                endpoint,
                exc.response_code or 0,
                self._hint(exc.response_code, hint),
                server_message=exc.error_message if isinstance(exc.error_message, str) else None,
                secrets=self.env.secrets,
            )
        except requests.RequestException as exc:
            error = unreachable(endpoint, "GitLab", exc)
        raise error

    @staticmethod
    def _hint(status: int | None, hint: str) -> str:
        if status == 401:
            return "the token was rejected (expired, revoked or mistyped); " + hint
        return hint

    def path(self, rest: str, *, target: bool = False) -> str:
        project = self.env.target_project_id if target else self.env.project_id
        return f"/projects/{project}{rest}"


class GitLabPlatform(Platform):
    """The GitLab CI platform (see the module docstring for tokens, retries and forks)."""

    name = "gitlab"

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec)
        self.api = GitLabApi(env)
        self.env = self.api.env

    # -- merge-request report ------------------------------------------------------

    def post_report(self, model: Model, markdown: str, images: list[Path]) -> str | None:
        """Create or update the model's one note on the merge request.

        The note is found again by its hidden marker line AND its author (the user
        behind GITLAB_TOKEN), so a comment that quotes the report is never overwritten.
        Images are uploaded to the project and their relative links rewritten. Without
        GITLAB_TOKEN nothing is posted (a warning says why) unless MLOPS_REQUIRE_COMMENT
        is true, which makes it an error."""
        if not self.env.mr_iid:
            source = self.env.pipeline_source or "not in a pipeline"
            log.info(f"not a merge-request pipeline ({source}): report not posted")
            return None
        if not self.env.api_token:
            if env_flag("MLOPS_REQUIRE_COMMENT"):
                raise PlatformError(
                    NO_TOKEN_WARNING.replace(", so the report was", ": the report was")
                )
            log.warn(NO_TOKEN_WARNING)
            return None
        project = self.api.project("api", target=True)
        body = self._embed_images(project, model, with_marker(markdown, model), images)
        mr = project.mergerequests.get(self.env.mr_iid, lazy=True)
        notes = self.api.path(f"/merge_requests/{self.env.mr_iid}/notes", target=True)
        note = self._find_note(mr, model, notes)
        if note is None:
            note = self._create_note(mr, model, body, notes)
            log.info(f"posted the {model.name} report to merge request !{self.env.mr_iid}")
        elif note.body != body:
            note.body = body
            self.api.call(f"PUT {notes}/{note.id}", NOTE_HINT, note.save)
            log.info(f"updated the {model.name} report on merge request !{self.env.mr_iid}")
        return self._note_url(note.id)

    def _create_note(self, mr: Any, model: Model, body: str, endpoint: str) -> Any:
        """Create the note, without python-gitlab's blind retry of a POST: a 5xx (or no
        answer) can come after GitLab stored the note, so look for it by its marker
        before creating it again."""
        attempts = retries() + 1
        for attempt in range(attempts):
            try:
                return self.api.call(
                    f"POST {endpoint}",
                    NOTE_HINT,
                    lambda: mr.notes.create({"body": body}, retry_transient_errors=False),
                )
            except ApiError as exc:
                if not (exc.status == 0 or exc.status >= 500) or attempt == attempts - 1:
                    raise
            stored = self._find_note(mr, model, endpoint)
            if stored is not None:
                log.info("the note was stored before the error; not posting it again")
                return stored
            time.sleep(min(2**attempt * 0.1, retry_after_cap()))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _own_user_id(self) -> int:
        client = self.api.client("api")
        self.api.call("GET /user", "GITLAB_TOKEN must be a valid token with api scope", client.auth)
        assert client.user is not None
        return int(client.user.id)

    def _find_note(self, mr: Any, model: Model, endpoint: str) -> Any | None:
        user_id = self._own_user_id()

        def search() -> Any | None:
            for note in mr.notes.list(iterator=True, sort="asc", order_by="created_at"):
                author = (note.attributes.get("author") or {}).get("id")
                if author == user_id and has_marker(note.attributes.get("body"), model):
                    return note
            return None

        return self.api.call(f"GET {endpoint}", NOTE_HINT, search)

    def _embed_images(self, project: Any, model: Model, body: str, images: list[Path]) -> str:
        workdir = self.spec.workdir(model)
        hint = "uploading images needs GITLAB_TOKEN with api scope"
        for image in images:
            uploaded = self._upload(project, image, _image_bytes(workdir, image), hint)
            body, found = replace_image_links(body, image, workdir, str(uploaded["url"]))
            if not found:
                body += f"\n\n{uploaded['markdown']}"
        return body

    def _upload(self, project: Any, image: Path, data: bytes, hint: str) -> dict[str, Any]:
        def upload() -> dict[str, Any]:
            return dict(project.upload(image.name, filedata=data))

        return self.api.call(f"POST {self.api.path('/uploads')}", hint, upload)

    def _note_url(self, note_id: int) -> str:
        if self.env.project_url:
            return f"{self.env.project_url}/-/merge_requests/{self.env.mr_iid}#note_{note_id}"
        return f"merge request !{self.env.mr_iid}, note {note_id}"

    # -- baseline ------------------------------------------------------------------

    def fetch_baseline(self, model: Model) -> Baseline | None:
        """metrics.json from the latest successful ``<model>:evaluate`` job on the default
        branch (``<model>:build`` under ``runtime.jobs: combined``; the other layout's job
        is tried next, so a switch of layout keeps the baseline). None when there is none,
        or its artifacts expired. Works with CI_JOB_TOKEN."""
        branch = self.api.require("CI_DEFAULT_BRANCH", self.env.default_branch)
        artifact = _artifact_path(model, "metrics.json")
        ref = quote(branch, safe="")
        project = self.api.project("job", target=True)
        raw_path = self.api.path(f"/jobs/artifacts/{ref}/raw/{artifact}", target=True)
        hint = "reading job artifacts needs CI_JOB_TOKEN (in a job) or GITLAB_TOKEN with read_api scope"
        jobs = [names.key for names in baseline_names(model.name, self.spec.runtime.jobs)]
        for job in jobs:

            def fetch(job: str = job) -> Any:
                return project.artifacts.raw(ref, artifact, job)

            try:
                raw = self.api.call(f"GET {raw_path}?job={job}", hint, fetch)
                break
            except ApiError as exc:
                if exc.status not in (404, 410):
                    raise
        else:
            tried = " or ".join(jobs)
            log.info(
                f"no baseline: no successful {tried} job on {branch} (or its artifacts expired)"
            )
            return None
        source = f"latest successful {job} job on {branch}"
        return Baseline(
            metrics=parse_metrics(raw, source),
            source=source,
            importance=parse_ranking(raw),
            shap=parse_ranking(raw, "shap_ranking"),
        )

    # -- job context ---------------------------------------------------------------

    def request_labels(self) -> frozenset[str]:
        """The merge request's labels, as GitLab listed them when it created the
        pipeline (CI_MERGE_REQUEST_LABELS; GitLab label names cannot contain commas)."""
        return frozenset(n.strip() for n in self.env.mr_labels.split(",") if n.strip())

    def version_suffix(self) -> str:
        return version_suffix(self.env)

    # -- retraining ----------------------------------------------------------------

    def trigger_retrain(self, model: Model, reason: str) -> str:
        """Start a default-branch pipeline with ``MLOPS_RETRAIN=<model>``.

        Uses MLOPS_TRIGGER_TOKEN (a pipeline trigger token) when set, else the job's
        CI_JOB_TOKEN. A pipeline started with the job token has CI_PIPELINE_SOURCE
        ``pipeline``; one started with a trigger token has ``trigger``."""
        token = self.env.trigger_token or self.env.job_token
        if not token:
            raise PlatformError(
                "cannot trigger a pipeline: set MLOPS_TRIGGER_TOKEN to a pipeline trigger "
                "token (Settings > CI/CD > Pipeline trigger tokens), or run inside a GitLab job"
            )
        branch = self.api.require("CI_DEFAULT_BRANCH", self.env.default_branch)
        kind = "job" if (self.env.job_token or self.env.api_token) else "none"
        project = self.api.project(kind)
        variables = {"MLOPS_RETRAIN": model.name, "MLOPS_RETRAIN_REASON": reason[:1000]}
        pipeline = self.api.call(
            f"POST {self.api.path('/trigger/pipeline')}",
            "the trigger token was refused: check MLOPS_TRIGGER_TOKEN, or that this "
            "project's CI_JOB_TOKEN may run its pipelines",
            lambda: project.trigger_pipeline(ref=branch, token=token, variables=variables),
        )
        attrs = pipeline.attributes
        where = attrs.get("web_url") or f"pipeline #{attrs.get('iid') or attrs.get('id')}"
        log.info(f"triggered retraining of {model.name} on {branch}: {where}")
        return str(where)


def version_suffix(env: GitLabEnv) -> str:
    """``-pipeline.<IID>``: a ``+`` build suffix would be semver-proper, but it must be
    escaped in every URL of the package API and is easily mangled into a space."""
    return f"-pipeline.{env.pipeline_iid}" if env.pipeline_iid else ""


def _cap_retry_after(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Rewrite the wait a 429/5xx answer asks for to at most MLOPS_RETRY_AFTER_MAX
    seconds, in the one header python-gitlab reads first (delta-seconds, which it
    int()s; an HTTP date or garbage would crash it)."""
    headers = response.headers
    wait: float | None = None
    if "Retry-After" in headers:
        wait = retry_after_seconds(headers["Retry-After"])
    elif "RateLimit-Reset" in headers and headers["RateLimit-Reset"].strip().isdigit():
        wait = max(0.0, float(headers["RateLimit-Reset"]) - time.time())
    if wait is not None:
        headers["Retry-After"] = str(int(min(wait, retry_after_cap())))
    else:
        headers.pop("Retry-After", None)
    return response


def _image_bytes(workdir: Path, image: Path) -> bytes:
    """An image to upload, read only from inside the model's folder and never through a
    link: this job holds GITLAB_TOKEN, and an upload is visible to every reader."""
    try:
        relative = image.relative_to(workdir).as_posix()
    except ValueError:
        raise PlatformError(
            f"{image}: refused: images are uploaded only from inside {workdir}"
        ) from None
    return read_artifact(workdir, relative)


def _artifact_path(model: Model, name: str) -> str:
    """Where a job's artifacts hold the model's ``name``: under MLOPS_WORKDIR (relative
    to the project's folder, as generated pipelines set it), else ``.ci-mlops``."""
    base = Path(os.environ.get("MLOPS_WORKDIR") or ".ci-mlops")
    if base.is_absolute():
        project = os.environ.get("CI_PROJECT_DIR")
        inside = bool(project) and base.is_relative_to(str(project))
        base = base.relative_to(str(project)) if inside else Path(".ci-mlops")
    return (base / model.name / name).as_posix()
