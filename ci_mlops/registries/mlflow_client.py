"""The MLflow client as ci-mlops uses it, for the ``mlflow`` and
``gitlab-model-registry`` deploy targets, the registry baseline and experiment tracking.

Where. An MLflow server is ``MLFLOW_TRACKING_URI``; GitLab's MLflow-compatible API is
``$CI_API_V4_URL/projects/$CI_PROJECT_ID/ml/mlflow`` (``MLFLOW_TRACKING_URI`` wins when
set, for a job that talks to another project). Credentials are MLflow's own variables,
read by the client: ``MLFLOW_TRACKING_TOKEN`` (a bearer token; on GitLab a project or
personal access token with ``api`` scope, since the MLflow endpoints refuse
``CI_JOB_TOKEN``), or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.

Errors. Every call goes through :meth:`Connection.call`, which turns the client's
exceptions into an :class:`~ci_mlops.platforms.remote.ApiError` written from scratch
(the operation, the HTTP status, the server's error code and a hint), with every
credential masked: the client's own texts name URLs, which may carry a password.

Retries. The client retries 429 and 5xx answers itself; ci-mlops bounds the retries
(``MLOPS_API_RETRIES``, default 5) and the wait between them, unless the job set
MLflow's own ``MLFLOW_HTTP_REQUEST_*`` variables.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ci_mlops.errors import PlatformError
from ci_mlops.platforms.remote import ApiError, api_error, redact, retries

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

GITLAB_API_PATH = "/projects/{project}/ml/mlflow"
CREDENTIALS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")
TOKEN_HINT = {
    "mlflow": "check MLFLOW_TRACKING_URI and the server's credentials (MLFLOW_TRACKING_TOKEN, "
    "or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)",
    "gitlab": "GitLab's MLflow API needs MLFLOW_TRACKING_TOKEN: a project or personal access "
    "token with api scope and at least the Developer role (CI_JOB_TOKEN is refused)",
}
# What the client's HTTP layer does unless the job says otherwise: a bounded number of
# retries with short back-off (its defaults are 7 retries, factor 2, 120 s timeouts), and
# no progress bars in CI logs.
_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def tracking_uri(server: str, env: Mapping[str, str] | None = None) -> str | None:
    """The MLflow API root of ``server`` (``mlflow`` or ``gitlab``), or None when the
    environment does not say where it is."""
    env = os.environ if env is None else env
    explicit = env.get("MLFLOW_TRACKING_URI", "").strip()
    if explicit or server != "gitlab":
        return explicit.rstrip("/") or None
    api = env.get("CI_API_V4_URL", "").strip().rstrip("/")
    project = env.get("CI_PROJECT_ID", "").strip()
    if not (api and project):
        return None
    return api + GITLAB_API_PATH.format(project=project)


def public_uri(uri: str) -> str:
    """``uri`` without any user name or password in it, fit to print and link."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def secrets(uri: str | None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every credential that may appear in a client's message: the tokens and the
    password in the environment, and any user information in ``uri``."""
    env = os.environ if env is None else env
    found = [env.get(name, "") for name in CREDENTIALS]
    if uri:
        userinfo = urlsplit(uri).netloc.rpartition("@")[0]
        found += [userinfo, userinfo.partition(":")[2]]
    return tuple(s for s in found if s)


class Connection:
    """One MLflow API root and the client that talks to it; ``kind`` (``mlflow`` or
    ``gitlab``) chooses the hints errors give."""

    def __init__(self, uri: str, kind: str, env: Mapping[str, str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.kind = kind
        self.env = os.environ if env is None else env
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            for name, value in {
                **_CLIENT_DEFAULTS,
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries()),
            }.items():
                os.environ.setdefault(name, value)
            try:
                from mlflow.tracking import MlflowClient
            except ImportError:
                raise PlatformError(
                    "the MLflow client is not installed: install ci-mlops[mlflow]"
                ) from None
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @property
    def where(self) -> str:
        return public_uri(self.uri)

    def call(self, operation: str, action: Callable[[], T], hint: str = "") -> T:
        """Run one client action; any failure becomes an ApiError naming ``operation``
        (with ``hint``) and no credential."""
        from mlflow.exceptions import MlflowException, RestException

        endpoint = f"MLflow {operation} at {self.where}"
        masked = secrets(self.uri, self.env)
        hint = hint or TOKEN_HINT[self.kind]
        try:
            return action()
        except RestException as exc:
            status = exc.get_http_status_code()
            hint = _hint(status, hint, self.kind)
            note = f"{exc.error_code}: {exc.message}" if exc.message else str(exc.error_code)
            plain = api_error(endpoint, status, hint, server_message=note, secrets=masked)
            error: ApiError = MlflowApiError(plain, str(exc.error_code))
        except MlflowException as exc:
            error = _unanswered(endpoint, str(exc), masked, self.kind)
        except OSError as exc:  # requests' connection errors are OSErrors
            error = _unanswered(endpoint, type(exc).__name__, masked, self.kind)
        raise error


class MlflowApiError(ApiError):
    """An MLflow API answer that is an error; ``error_code`` is MLflow's
    (``RESOURCE_DOES_NOT_EXIST``, ``INVALID_PARAMETER_VALUE`` ...)."""

    def __init__(self, error: ApiError, error_code: str) -> None:
        super().__init__(str(error), endpoint=error.endpoint, status=error.status)
        self.error_code = error_code


def error_code(exc: BaseException) -> str:
    """The MLflow error code of an error from :meth:`Connection.call` ('' if none)."""
    return exc.error_code if isinstance(exc, MlflowApiError) else ""


def _hint(status: int, hint: str, kind: str) -> str:
    if status in (401, 403):
        return "the credentials were refused; " + TOKEN_HINT[kind]
    return hint


def _unanswered(endpoint: str, detail: str, masked: tuple[str, ...], kind: str) -> ApiError:
    """No MLflow answer: a connection error, a timeout, retries that ran out, or an
    answer that is not the API's JSON (the client says which in ``detail``)."""
    first = " ".join(redact(detail, masked).split())[:160]
    message = (
        f"{endpoint}: no usable answer from the MLflow API ({first}); check "
        f"{'CI_API_V4_URL' if kind == 'gitlab' else 'MLFLOW_TRACKING_URI'}, the network "
        "and the server's status, then retry"
    )
    # The client's text names the URL; keep user information out of it.
    return ApiError(redact(message, masked), endpoint=endpoint, status=0)


def experiment(connection: Any, name: str) -> str:
    """The id of experiment ``name``, created when it does not exist yet."""
    client = connection.client
    found = connection.call(
        f"get_experiment_by_name({name})", lambda: client.get_experiment_by_name(name)
    )
    if found is not None:
        return str(found.experiment_id)
    return str(
        connection.call(f"create_experiment({name})", lambda: client.create_experiment(name))
    )


def ci_context(root: Path, env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Tags that link a run to where it ran: commit, branch, merge/pull request,
    pipeline (GitLab, GitHub, or the local git checkout)."""
    env = os.environ if env is None else env
    if env.get("GITLAB_CI") == "true":
        project = env.get("CI_PROJECT_URL", "").rstrip("/")
        iid = env.get("CI_MERGE_REQUEST_IID")
        context = {
            "commit": env.get("CI_COMMIT_SHA"),
            "branch": env.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME")
            or env.get("CI_COMMIT_REF_NAME"),
            "merge_request": f"{project}/-/merge_requests/{iid}" if project and iid else iid,
            "pipeline": env.get("CI_PIPELINE_URL"),
            "job": env.get("CI_JOB_URL"),
        }
        extra = {"gitlab.CI_JOB_ID": env.get("CI_JOB_ID")}
    elif env.get("GITHUB_ACTIONS") == "true":
        repo = f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env.get('GITHUB_REPOSITORY', '')}"
        number = _pull_request(env)
        run = env.get("GITHUB_RUN_ID")
        context = {
            "commit": env.get("GITHUB_SHA"),
            "branch": env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME"),
            "merge_request": f"{repo}/pull/{number}" if number else None,
            "pipeline": f"{repo}/actions/runs/{run}" if run else None,
        }
        extra = {}
    else:
        context = {
            "commit": _git(root, "rev-parse", "HEAD"),
            "branch": _git(root, "branch", "--show-current"),
        }
        extra = {}
    return {
        "mlflow.source.git.commit": context.get("commit"),
        "mlflow.source.git.branch": context.get("branch"),
        **{f"ci_mlops.{k}": v for k, v in context.items()},
        **extra,
    }


def _pull_request(env: Mapping[str, str]) -> str | None:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    number = (event.get("pull_request") or {}).get("number") if isinstance(event, dict) else None
    return str(number) if isinstance(number, int) else None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def tags(pairs: Mapping[str, Any]) -> dict[str, str]:
    """MLflow tags from ``pairs``: strings, without the empty ones."""
    return {key: str(value) for key, value in pairs.items() if value not in (None, "")}
