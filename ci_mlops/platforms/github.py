"""GitHub through PyGithub: pull-request comments, baselines from workflow artifacts and
dispatches, and the authenticated client the GitHub registry shares (:class:`GitHubApi`;
releases and deployments are :mod:`ci_mlops.registries.github_releases`).

Token. Everything uses ``GITHUB_TOKEN`` (pass ``${{ github.token }}`` in the step's
``env``). The permissions each call needs: ``pull-requests: write`` to comment,
``actions: read`` to download the baseline artifact, ``contents: write`` to publish a
release or send a repository dispatch, ``deployments: write`` to promote or roll back,
``actions: write`` for a workflow dispatch, ``checks: write`` for the check run that
names each failed gate on its line of the spec. Pull requests from forks get a read-only
token, so for them the report is not posted: a warning says so, and the report is in the
job summary and the run's artifacts (as on GitLab, where a fork's pipeline has no
GITLAB_TOKEN).

Retries. PyGithub's ``GithubRetry`` retries 5xx, 429 and rate-limited 403 answers with
back-off (bounded by ``MLOPS_API_RETRIES``, default 5) and spaces writes out by
``MLOPS_GITHUB_WRITE_INTERVAL`` seconds (default 0.5). A server's ``Retry-After`` or
rate-limit reset is waited for at most ``MLOPS_RETRY_AFTER_MAX`` seconds (default 60).

Baselines. The repository's ``<model>-evaluate`` artifacts are listed newest first
(GitHub keeps listing expired ones), paging through up to ``MAX_BASELINE_ARTIFACTS``; the
first made on the default branch by a successful run of the workflow started by an
event that evaluates there (push, schedule, workflow or repository dispatch; never a
pull request) is the baseline. Scheduled drift runs and pull-request runs cost nothing
this way, however many there are. An expired baseline is a :class:`MissingBaseline`
(change gates fail); only a default branch that never produced one means a first model.

Images. GitHub strips ``data:`` URIs from comments and has no API to attach an image to
one, and ci-mlops does not push plots to a third-party host or into the repository.
Each image in the report becomes a link to the run's artifacts (the evaluate job uploads
``.ci-mlops/<model>/``, plots included, as ``<model>-evaluate``); the numbers themselves
are in the report's tables, which GitHub renders natively.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from github import Auth, Github, GithubException, GithubRetry
from requests.adapters import HTTPAdapter

from ci_mlops import log
from ci_mlops.atomic import write_text
from ci_mlops.errors import PlatformError
from ci_mlops.generate.kinds import baseline_names
from ci_mlops.platforms.base import Baseline, CheckReport, MissingBaseline, Platform
from ci_mlops.platforms.remote import (
    ApiError,
    api_error,
    env_flag,
    env_number,
    has_marker,
    image_names,
    invalid_answer,
    parse_metrics,
    parse_ranking,
    retries,
    retry_after_cap,
    unreachable,
    with_marker,
)
from ci_mlops.spec.model import Model, Spec

T = TypeVar("T")

BODY_LIMIT = 65_536
SUMMARY_LIMIT = 1024 * 1024
DEFAULT_BOT_LOGIN = "github-actions[bot]"
# How far back to page for a baseline: 10 pages of 100 artifacts of the model's name.
MAX_BASELINE_ARTIFACTS = 1000
RUNS_PER_PAGE = 100
# Events whose default-branch runs evaluate the model (pull requests never do there).
BASELINE_EVENTS = ("push", "schedule", "workflow_dispatch", "repository_dispatch")
TIMEOUT_SECONDS = 60
FORK_WARNING = (
    "this pull request comes from a fork: GitHub gives its runs a read-only GITHUB_TOKEN, "
    "so the report was not posted as a comment. It is in the job summary and in the "
    "run's artifacts."
)
COMMENT_HINT = (
    "commenting needs `pull-requests: write` for GITHUB_TOKEN "
    "(pull requests from forks only get a read-only token)"
)
TOKEN_MISSING = (
    "GITHUB_TOKEN is not set: add `env: GITHUB_TOKEN: ${{ github.token }}` to the step "
    "and grant the job the permissions it needs"
)
_IMAGE = r"!\[(?P<alt>[^\]]*)\]\((?:\./)?{name}(?:\s+\"[^\"]*\")?\)|<img\b[^>]*\bsrc=\"(?:\./)?{name}\"[^>]*>"

_RELATIVE_IMAGE = re.compile(
    r"!\[[^\]]*\]\((?!https?://|/|data:|#)(?P<path>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
)


@dataclass(frozen=True)
class GitHubEnv:
    """The variables a GitHub Actions job sets (and the settings ci-mlops reads)."""

    api_url: str
    server_url: str
    repository: str
    event_name: str
    event_path: str
    sha: str
    ref_name: str
    token: str
    step_summary: str
    run_number: str
    run_id: str
    bot_login: str
    workflow: str
    dispatch: str

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> GitHubEnv:
        env = os.environ if env is None else env
        return cls(
            api_url=env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
            server_url=env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/"),
            repository=env.get("GITHUB_REPOSITORY", ""),
            event_name=env.get("GITHUB_EVENT_NAME", ""),
            event_path=env.get("GITHUB_EVENT_PATH", ""),
            sha=env.get("GITHUB_SHA", ""),
            ref_name=env.get("GITHUB_REF_NAME", ""),
            token=env.get("GITHUB_TOKEN", ""),
            step_summary=env.get("GITHUB_STEP_SUMMARY", ""),
            run_number=env.get("GITHUB_RUN_NUMBER", ""),
            run_id=env.get("GITHUB_RUN_ID", ""),
            bot_login=env.get("MLOPS_BOT_LOGIN", ""),
            workflow=env.get("MLOPS_WORKFLOW", "mlops.yml"),
            dispatch=env.get("MLOPS_DISPATCH", "workflow"),
        )

    @property
    def run_url(self) -> str:
        if not (self.repository and self.run_id):
            return ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


class GitHubApi:
    """An authenticated PyGithub client for one job's variables, the one way its calls
    fail (an :class:`ApiError` without the token), and binary downloads that keep the
    token on the API host. The platform (comments, baselines, dispatches) and the
    releases registry both talk to GitHub through it."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = GitHubEnv.read(env)
        self._client_made: Github | None = None

    def retry(self) -> GithubRetry:
        cap = retry_after_cap()
        return _CappedRetry(
            total=retries(),
            backoff_factor=0.5,
            status_forcelist=[429, *range(500, 600)],
            secondary_rate_wait=min(cap, 60.0),
            max_rate_limit_wait=cap,
        )

    def client(self) -> Github:
        if self._client_made is None:
            self._client_made = self.new_client(self.retry())
        return self._client_made

    def new_client(self, retry: GithubRetry) -> Github:
        if not self.env.token:
            raise PlatformError(TOKEN_MISSING)
        _quiet_pygithub()
        writes = env_number("MLOPS_GITHUB_WRITE_INTERVAL", 0.5)
        return Github(
            base_url=self.env.api_url,
            auth=Auth.Token(self.env.token),
            retry=retry,
            timeout=TIMEOUT_SECONDS,
            seconds_between_requests=min(writes, 0.25),
            seconds_between_writes=writes,
            per_page=RUNS_PER_PAGE,
            lazy=True,
        )

    def repo(self) -> Any:
        if not self.env.repository:
            raise PlatformError("GITHUB_REPOSITORY is not set; GitHub Actions sets it in every job")
        return self.client().get_repo(self.env.repository)

    def path(self, rest: str = "") -> str:
        return f"/repos/{self.env.repository}{rest}"

    def call(self, endpoint: str, hint: str, action: Callable[[], T]) -> T:
        """Run one API action; turn any failure into an ApiError without secrets."""
        try:
            return action()
        except GithubException as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            message = data.get("message") if isinstance(data.get("message"), str) else None
            error = api_error(
                endpoint,
                exc.status,
                self._hint(exc.status, hint),
                server_message=message,
                secrets=(self.env.token,),
            )
        except json.JSONDecodeError:
            error = invalid_answer(endpoint, "GitHub")
        except requests.RequestException as exc:
            error = unreachable(endpoint, "GitHub", exc)
        except AssertionError:
            # PyGithub asserts that every URL an answer points to (next page, upload
            # URL) is on GITHUB_API_URL's host and port.
            error = ApiError(
                f"{endpoint}: the answer points to URLs on another host or port than "
                f"GITHUB_API_URL ({self.env.api_url}); set GITHUB_API_URL to the address the "
                "server calls itself (check any proxy in between)",
                endpoint=endpoint,
                status=0,
            )
        raise error

    @staticmethod
    def _hint(status: int, hint: str) -> str:
        if status == 401:
            return "GITHUB_TOKEN was rejected (expired or mistyped)"
        if status == 404:
            return hint + " (GitHub also answers 404 when the token cannot see the resource)"
        return hint

    def download(self, url: str, endpoint: str, hint: str) -> bytes:
        """GET binary content, following GitHub's redirect to signed storage URLs.

        The token goes only to the API host; storage URLs are pre-signed, and sending
        the token elsewhere would leak it."""
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=self.retry())
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        headers = {
            "Authorization": f"Bearer {self.env.token}",
            "Accept": "application/octet-stream",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            response = session.get(
                url, headers=headers, allow_redirects=False, timeout=TIMEOUT_SECONDS
            )
            if response.is_redirect and "Location" in response.headers:
                location = response.headers["Location"]
                same_host = urlsplit(location).netloc in ("", urlsplit(url).netloc)
                response = session.get(
                    requests.compat.urljoin(url, location),
                    headers=headers if same_host else {"Accept": "application/octet-stream"},
                    timeout=TIMEOUT_SECONDS,
                )
        except GithubException as exc:  # GithubRetry raises it for a 403 it will not retry
            error = api_error(endpoint, exc.status, self._hint(exc.status, hint))
        except requests.RequestException as exc:
            error = unreachable(endpoint, "GitHub", exc)
        else:
            if response.status_code < 400:
                return response.content
            error = api_error(endpoint, response.status_code, hint, secrets=(self.env.token,))
        finally:
            session.close()
        raise error


class GitHubPlatform(Platform):
    """The GitHub Actions platform (see the module docstring for what lives where)."""

    name = "github"

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec)
        self.api = GitHubApi(env)
        self.env = self.api.env
        self._event_data: dict[str, Any] | None = None

    # -- event -----------------------------------------------------------------------

    def _event(self) -> dict[str, Any]:
        if self._event_data is None:
            self._event_data = {}
            if self.env.event_path and Path(self.env.event_path).is_file():
                try:
                    data = json.loads(Path(self.env.event_path).read_text(encoding="utf-8"))
                except ValueError:
                    raise PlatformError(
                        f"{self.env.event_path}: event payload is not JSON"
                    ) from None
                self._event_data = data if isinstance(data, dict) else {}
        return self._event_data

    def _pr_number(self) -> int | None:
        event = self._event()
        pull = event.get("pull_request")
        if isinstance(pull, dict) and isinstance(pull.get("number"), int):
            return int(pull["number"])
        issue = event.get("issue")
        if (
            isinstance(issue, dict)
            and issue.get("pull_request")
            and isinstance(issue.get("number"), int)
        ):
            return int(issue["number"])
        return None

    def request_labels(self) -> frozenset[str]:
        """The pull request's labels as the event payload lists them (those it had when
        the event fired: a label added later needs a new run)."""
        pull = self._event().get("pull_request")
        labels = pull.get("labels") if isinstance(pull, dict) else None
        names = (item.get("name") for item in labels or () if isinstance(item, dict))
        return frozenset(n for n in names if isinstance(n, str) and n)

    def _default_branch(self, repo: Any) -> str:
        known = (self._event().get("repository") or {}).get("default_branch")
        if isinstance(known, str) and known:
            return known
        return str(
            self.api.call(
                f"GET {self.api.path()}",
                "reading the repository needs `contents: read`",
                lambda: repo.default_branch,
            )
        )

    # -- pull-request report ---------------------------------------------------------

    def post_report(self, model: Model, markdown: str, images: list[Path]) -> str | None:
        """Create or update the model's one comment on the pull request.

        The comment is found again by its hidden marker line AND the bot's login
        (MLOPS_BOT_LOGIN, else the token's user, else ``github-actions[bot]``), so a
        comment quoting the report is never touched. Images become links to the run's
        artifacts; a body over GitHub's 65,536-character limit is cut with a note."""
        number = self._pr_number()
        if number is None:
            log.info("not a pull-request event: report not posted")
            return None
        if self._from_fork():
            if env_flag("MLOPS_REQUIRE_COMMENT"):
                raise PlatformError(FORK_WARNING)
            log.warn(FORK_WARNING)
            return None
        if not self.env.token:
            if env_flag("MLOPS_REQUIRE_COMMENT"):
                raise PlatformError(TOKEN_MISSING)
            log.warn(TOKEN_MISSING + "; the report was not posted (it is in the run's artifacts)")
            return None
        body = self._fit(self._link_images(model, with_marker(markdown, model), images))
        issue = self.api.repo().get_issue(number)
        endpoint = self.api.path(f"/issues/{number}/comments")
        comment = self._find_comment(issue, model, endpoint)
        if comment is None:
            comment = self._create_comment(number, model, body, endpoint)
            log.info(f"posted the {model.name} report to pull request #{number}")
        else:
            self.api.call(
                f"PATCH {self.api.path(f'/issues/comments/{comment.id}')}",
                COMMENT_HINT,
                lambda: comment.edit(body),
            )
            log.info(f"updated the {model.name} report on pull request #{number}")
        return str(comment.html_url)

    def _create_comment(self, number: int, model: Model, body: str, endpoint: str) -> Any:
        """Create the comment through a client that does not repeat POSTs: a 5xx (or no
        answer) can come after GitHub stored it, so look for it by its marker before
        creating it again."""
        writer = self._single_post_client().get_repo(self.env.repository)
        issue = writer.get_issue(number)
        attempts = retries() + 1
        for attempt in range(attempts):
            try:
                return self.api.call(
                    f"POST {endpoint}", COMMENT_HINT, lambda: issue.create_comment(body)
                )
            except ApiError as exc:
                if not (exc.status == 0 or exc.status >= 500) or attempt == attempts - 1:
                    raise
            stored = self._find_comment(self.api.repo().get_issue(number), model, endpoint)
            if stored is not None:
                log.info("the comment was stored before the error; not posting it again")
                return stored
            time.sleep(min(2**attempt * 0.5, retry_after_cap()))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _single_post_client(self) -> Github:
        """A client like :meth:`_client` whose retries leave POST alone."""
        retry = self.api.retry()
        retry.allowed_methods = frozenset(m for m in retry.allowed_methods or () if m != "POST")
        return self.api.new_client(retry)

    def _from_fork(self) -> bool:
        """True when the pull request's head lives in another repository (a fork, or a
        deleted fork whose head repository is null)."""
        pull = self._event().get("pull_request")
        if not isinstance(pull, dict) or not isinstance(pull.get("head"), dict):
            return False
        head = pull["head"].get("repo")
        name = head.get("full_name") if isinstance(head, dict) else None
        return name != self.env.repository

    def _bot_login(self) -> str:
        if self.env.bot_login:
            return self.env.bot_login
        user = self.api.client().get_user()
        try:
            return str(self.api.call("GET /user", "GITHUB_TOKEN was refused", lambda: user.login))
        except ApiError as exc:
            # A workflow's GITHUB_TOKEN is an installation token: /user answers 403.
            if exc.status != 403:
                raise
            return DEFAULT_BOT_LOGIN

    def _find_comment(self, issue: Any, model: Model, endpoint: str) -> Any | None:
        login = self._bot_login()

        def search() -> Any | None:
            for comment in issue.get_comments():
                if comment.user.login == login and has_marker(comment.body, model):
                    return comment
            return None

        return self.api.call(f"GET {endpoint}", COMMENT_HINT, search)

    def _link_images(self, model: Model, body: str, images: list[Path]) -> str:
        artifact = baseline_names(model.name, self.spec.runtime.jobs)[0].artifact
        for image in images:
            label = f"{image.name} (in the `{artifact}` artifact of this run)"
            link = (
                f"[\N{BAR CHART} {label}]({self.env.run_url}#artifacts)"
                if self.env.run_url
                else label
            )
            for name in image_names(image, self.spec.workdir(model)):
                pattern = re.compile(_IMAGE.format(name=re.escape(name)))
                body = pattern.sub(_constant(link), body)
        return body

    def _link_relative_images(self, markdown: str) -> str:
        """Relative image links cannot render on GitHub: link to the run's artifacts."""

        def link(match: re.Match[str]) -> str:
            name = Path(match.group("path")).name
            label = f"{name} (in this run's artifacts)"
            return (
                f"[\N{BAR CHART} {label}]({self.env.run_url}#artifacts)"
                if self.env.run_url
                else label
            )

        return _RELATIVE_IMAGE.sub(link, markdown)

    def _fit(self, body: str) -> str:
        if len(body) <= BODY_LIMIT:
            return body
        where = (
            f"the run's artifacts ({self.env.run_url})"
            if self.env.run_url
            else "the job's artifacts"
        )
        note = f"\n\n---\n*Report cut to fit GitHub's {BODY_LIMIT:,}-character comment limit; the full report is in {where}.*\n"
        return body[: BODY_LIMIT - len(note)] + note

    def job_summary(self, markdown: str) -> None:
        """Append ``markdown`` to the job's summary page (GITHUB_STEP_SUMMARY)."""
        if not self.env.step_summary:
            return
        path = Path(self.env.step_summary)
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        text = old + self._link_relative_images(markdown).rstrip("\n") + "\n\n"
        if len(text.encode()) > SUMMARY_LIMIT:
            log.warn("the job summary would exceed GitHub's 1 MiB limit; not added")
            return
        write_text(path, text)

    # -- check run -------------------------------------------------------------------

    def publish_check(self, model: Model, check: CheckReport) -> str | None:
        """A completed check run ``ci-mlops <model>`` on the pull request's head commit:
        success or failure, the report as its summary, and one annotation per failed
        (or warned) gate on the gate's line of the spec. A check that cannot be created
        (no token, a fork's read-only one, no ``checks: write``) is a warning: the
        comment and the job summary already carry the verdict."""
        head = self._head_sha()
        if not (self.env.token and head) or self._from_fork():
            log.info("no check run: not a pull request with a writable token")
            return None
        output = {
            "title": check.title,
            "summary": check.summary[:CHECK_SUMMARY_LIMIT],
            "annotations": self._annotations(check)[:MAX_ANNOTATIONS],
        }
        endpoint = f"POST {self.api.path('/check-runs')}"
        try:
            run = self.api.call(
                endpoint,
                "creating a check run needs `checks: write`",
                lambda: self.api.repo().create_check_run(
                    name=f"ci-mlops {model.name}",
                    head_sha=head,
                    status="completed",
                    conclusion="success" if check.passed else "failure",
                    output=output,
                ),
            )
        except PlatformError as exc:
            log.warn(f"{exc}; the verdict is in the comment and the job summary")
            return None
        log.info(f"{model.name}: check run {run.id} with {len(output['annotations'])} annotations")
        return str(run.html_url)

    def _head_sha(self) -> str:
        """The pull request's head commit (GITHUB_SHA of a pull_request event is a merge
        commit, which the pull request's checks tab does not show), else GITHUB_SHA."""
        pull = self._event().get("pull_request")
        head = pull.get("head") if isinstance(pull, dict) else None
        sha = head.get("sha") if isinstance(head, dict) else None
        return sha if isinstance(sha, str) and sha else self.env.sha

    @staticmethod
    def _annotations(check: CheckReport) -> list[dict[str, Any]]:
        out = []
        for note in check.annotations:
            out.append(
                {
                    "path": check.spec_file,
                    "start_line": note.line,
                    "end_line": note.line,
                    "annotation_level": note.level,
                    "title": note.title[:255],
                    "message": note.message[:ANNOTATION_LIMIT],
                }
            )
        return out

    # -- baseline --------------------------------------------------------------------

    def fetch_baseline(self, model: Model) -> Baseline | MissingBaseline | None:
        """metrics.json from the newest ``<model>-evaluate`` artifact (``<model>-build``
        under ``runtime.jobs: combined``; the other layout's is looked for next, so a
        switch of layout keeps the baseline) made on the default branch by a successful
        run of the workflow (MLOPS_WORKFLOW, default mlops.yml) started by one of
        BASELINE_EVENTS. None when there never was one (a first model); MissingBaseline
        when it expired. Needs ``actions: read``."""
        repo = self.api.repo()
        branch = self._default_branch(repo)
        names = [n.artifact for n in baseline_names(model.name, self.spec.runtime.jobs)]
        workflow = self.env.workflow
        found = None
        for name in names:
            endpoint = f"GET {self.api.path('/actions/artifacts')}?name={name}"

            def find(name: str = name) -> tuple[Any, Any] | None:
                return self._find_artifact(repo, branch, name)

            try:
                found = self.api.call(endpoint, "listing artifacts needs `actions: read`", find)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                log.info(f"no baseline: the artifacts of {self.env.repository} cannot be listed")
                return None
            if found is not None:
                break
        if found is None:
            log.info(
                f"no baseline: never produced: no successful {'/'.join(BASELINE_EVENTS)} run of "
                f"{workflow} on {branch} made an artifact named {' or '.join(names)} (looked at "
                f"up to {MAX_BASELINE_ARTIFACTS} artifacts of each name)"
            )
            return None
        run, artifact = found
        source = f"run #{run.run_number} of {workflow} on {branch} ({str(run.head_sha)[:7]}), artifact {name}"
        if artifact.expired:
            return self._expired(name, run, branch)
        try:
            archive = self.api.download(
                artifact.archive_download_url,
                f"GET {self.api.path(f'/actions/artifacts/{artifact.id}/zip')}",
                "downloading artifacts needs `actions: read`",
            )
        except ApiError as exc:
            if exc.status not in (404, 410):
                raise
            return self._expired(name, run, branch)
        raw = _metrics_from_zip(archive, model, source)
        return Baseline(
            metrics=parse_metrics(raw, source),
            source=source,
            importance=parse_ranking(raw),
            shap=parse_ranking(raw, "shap_ranking"),
        )

    def _expired(self, name: str, run: Any, branch: str) -> MissingBaseline:
        reason = (
            f"expired: the {name} artifact of run #{run.run_number} on {branch}, the newest "
            "baseline, has expired; run the default branch's pipeline again to make a new one"
        )
        log.warn(f"no baseline: {reason}")
        return MissingBaseline(reason)

    def _find_artifact(self, repo: Any, branch: str, name: str) -> tuple[Any, Any] | None:
        """The newest artifact ``name`` a baseline-making run left on ``branch``, and
        that run; artifacts of other branches are skipped without a request."""
        artifacts = repo.get_artifacts(name=name)
        for index, artifact in enumerate(artifacts):  # PaginatedList: page after page
            if index >= MAX_BASELINE_ARTIFACTS:
                break
            origin = artifact.workflow_run
            if artifact.name != name or origin is None or origin.head_branch != branch:
                continue
            run = repo.get_workflow_run(origin.id)
            if self._makes_baselines(run):
                return run, artifact
        return None

    def _makes_baselines(self, run: Any) -> bool:
        """A successful run of our workflow started by an event that evaluates on the
        default branch: a pull request from a fork's branch called like the default
        branch, or another workflow's artifact of the same name, must not count."""
        workflow = self.env.workflow
        ours = str(run.path).rsplit("/", 1)[-1] == workflow or str(run.workflow_id) == workflow
        return ours and run.event in BASELINE_EVENTS and run.conclusion == "success"

    # -- job context -----------------------------------------------------------------

    def version_suffix(self) -> str:
        return version_suffix(self.env)

    # -- retraining ------------------------------------------------------------------

    def trigger_retrain(self, model: Model, reason: str) -> str:
        """Start the workflow on the default branch with input ``retrain=<model>``, or
        (MLOPS_DISPATCH=repository) send a ``ci-mlops-retrain`` repository dispatch."""
        repo = self.api.repo()
        branch = self._default_branch(repo)
        if self.env.dispatch == "repository":
            self.api.call(
                f"POST {self.api.path('/dispatches')}",
                "repository dispatches need `contents: write`",
                lambda: repo.create_repository_dispatch(
                    "ci-mlops-retrain", {"model": model.name, "reason": reason[:1000]}
                ),
            )
            where = f"repository dispatch ci-mlops-retrain for {model.name}"
        else:
            where = self._dispatch_workflow(repo, model, branch)
        log.info(f"triggered retraining of {model.name} on {branch}: {where}")
        return where

    def _dispatch_workflow(self, repo: Any, model: Model, branch: str) -> str:
        workflow = repo.get_workflow(self.env.workflow)
        endpoint = f"POST {self.api.path(f'/actions/workflows/{self.env.workflow}/dispatches')}"
        hint = f"workflow dispatches need `actions: write`, and {self.env.workflow} must declare a `retrain` input"
        inputs = {"retrain": model.name}
        try:
            run = self.api.call(
                endpoint,
                hint,
                lambda: workflow.create_dispatch(
                    branch, inputs, throw=True, return_run_details=True
                ),
            )
        except ApiError as exc:
            # Servers older than the run-details API refuse the field: ask without it.
            if exc.status not in (400, 422) or "return_run_details" not in str(exc):
                raise
            self.api.call(
                endpoint, hint, lambda: workflow.create_dispatch(branch, inputs, throw=True)
            )
            return f"workflow {self.env.workflow} on {branch}"
        url = getattr(run, "html_url", None) if not isinstance(run, bool) else None
        return str(url) if url else f"workflow {self.env.workflow} on {branch}"


def version_suffix(env: GitHubEnv) -> str:
    """``-run.<GITHUB_RUN_NUMBER>``."""
    return f"-run.{env.run_number}" if env.run_number else ""


class _CappedRetry(GithubRetry):
    """GithubRetry that waits at most MLOPS_RETRY_AFTER_MAX seconds whatever a server's
    Retry-After says (urllib3 would sleep for as long as it is told)."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), retry_after_cap())


# GitHub's limits on a check run's output: 65,535 characters of summary, 64 KB per
# annotation message, 50 annotations per request.
CHECK_SUMMARY_LIMIT = 65_000
ANNOTATION_LIMIT = 60_000
MAX_ANNOTATIONS = 50


def _quiet_pygithub() -> None:
    """PyGithub logs INFO lines to stderr by default, such as "GET /user failed with 403"
    on every workflow-token run; ci-mlops explains such answers itself. A level someone
    set on purpose (anything but the library's INFO) is left alone."""
    logger = logging.getLogger("github")
    if logger.level == logging.INFO:
        logger.setLevel(logging.WARNING)


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement that inserts ``text`` as it is (no backslash escapes)."""
    return lambda _match: text


def _metrics_from_zip(archive: bytes, model: Model, source: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            names = [n for n in bundle.namelist() if n.rsplit("/", 1)[-1] == "metrics.json"]
            preferred = [
                n for n in names if n in ("metrics.json", f".ci-mlops/{model.name}/metrics.json")
            ]
            chosen = (preferred or sorted(names, key=len))[:1]
            if not chosen:
                raise PlatformError(f"{source}: the artifact holds no metrics.json")
            return bundle.read(chosen[0])
    except zipfile.BadZipFile:
        raise PlatformError(f"{source}: the artifact download is not a zip archive") from None
