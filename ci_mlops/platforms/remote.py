"""What the GitLab and GitHub platforms share: API errors that never carry a secret, the
hidden marker that finds a model's report comment again, and settings read from the
environment.

Error messages are written from scratch out of the request's method and path, the HTTP
status and a hint; the SDK's own exception text (which can echo URLs, headers or the
server's reply) is never embedded, and errors are raised outside the ``except`` block so
that no traceback chains back to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ci_mlops.errors import PlatformError, StepError
from ci_mlops.records import MetricsRecord
from ci_mlops.spec.model import Model

# How many times to retry 429 and 5xx answers before giving up (both SDKs back off).
DEFAULT_RETRIES = 5
# The longest wait a server's Retry-After (or rate-limit reset) may impose per retry: a
# job that obeys "Retry-After: 3600" sits idle for an hour holding a runner.
DEFAULT_RETRY_AFTER_CAP = 60.0
REPORT_MARKER = "<!-- ci-mlops:report model={name} -->"
_SERVER_NOTE_LIMIT = 160


class ApiError(PlatformError):
    """An API request failed; ``status`` is the HTTP status, or 0 when none came back."""

    def __init__(self, message: str, *, endpoint: str, status: int) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


def api_error(
    endpoint: str,
    status: int,
    hint: str,
    *,
    server_message: str | None = None,
    secrets: Iterable[str | None] = (),
) -> ApiError:
    """``METHOD /path: 403 Forbidden (server says: ...) - hint``, with secrets masked."""
    text = f"{endpoint}: {status_text(status)}"
    # Mask first: cut first, and a token straddling the cut prints half-masked.
    note = _short(redact(server_message or "", secrets))
    if note:
        text += f" (server says: {note})"
    if hint:
        text += f" \N{EM DASH} {hint}"
    return ApiError(redact(text, secrets), endpoint=endpoint, status=status)


def unreachable(endpoint: str, what: str, exc: BaseException) -> ApiError:
    """The request got no HTTP answer (connection refused, timeout, retries exhausted)."""
    return ApiError(
        f"{endpoint}: no usable answer from the {what} API ({type(exc).__name__}: "
        "connection failed, timed out or retries ran out); check the API URL, the network "
        "and the service's status, then retry",
        endpoint=endpoint,
        status=0,
    )


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (and its URL-quoted form) in ``text`` with ``***``."""
    from urllib.parse import quote

    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def _short(message: str | None) -> str:
    if not message:
        return ""
    flat = " ".join(str(message).split())
    return (
        flat
        if len(flat) <= _SERVER_NOTE_LIMIT
        else flat[: _SERVER_NOTE_LIMIT - 1] + "\N{HORIZONTAL ELLIPSIS}"
    )


def marker(model: Model) -> str:
    """The hidden HTML comment that identifies ``model``'s report comment."""
    return REPORT_MARKER.format(name=model.name)


def with_marker(markdown: str, model: Model) -> str:
    """``markdown`` starting with the model's marker (added when the report lacks it)."""
    tag = marker(model)
    if tag in markdown.split("\n", 1)[0]:
        return markdown
    return f"{tag}\n{markdown.replace(tag, '')}"


def has_marker(body: str | None, model: Model) -> bool:
    """True when ``body`` starts with the model's marker line.

    Only the first line counts, so a comment that quotes the marker further down (a
    reply, a copy of the report) is not mistaken for the report itself."""
    if not body:
        return False
    return body.lstrip().split("\n", 1)[0].strip() == marker(model)


def image_names(image: Path, root: Path) -> list[str]:
    """How a report may refer to ``image``: relative to ``root``, as given, or by name."""
    names = []
    with contextlib.suppress(ValueError):
        names.append(image.resolve().relative_to(root.resolve()).as_posix())
    return list(dict.fromkeys([*names, image.as_posix(), image.name]))


def replace_image_links(markdown: str, image: Path, root: Path, target: str) -> tuple[str, bool]:
    """Point Markdown/HTML references to ``image`` (see :func:`image_names`) at
    ``target``. Returns the new text and whether anything matched."""
    found = False
    for name in image_names(image, root):
        pattern = re.compile(r"(\]\(|src=\")(?:\./)?" + re.escape(name) + r"(?=[)\"\s])")
        markdown, count = pattern.subn(lambda m: m.group(1) + target, markdown)
        found = found or count > 0
    return markdown, found


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(name, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_number(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise PlatformError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise PlatformError(f"{name}={raw!r} must not be negative")
    return value


def retries() -> int:
    """How often to retry 429/5xx answers (MLOPS_API_RETRIES, default 5)."""
    return int(env_number("MLOPS_API_RETRIES", DEFAULT_RETRIES))


def retry_after_cap() -> float:
    """The longest wait per retry a server may ask for (MLOPS_RETRY_AFTER_MAX, default 60 s)."""
    return env_number("MLOPS_RETRY_AFTER_MAX", DEFAULT_RETRY_AFTER_CAP)


def retry_after_seconds(value: str) -> float | None:
    """Seconds a Retry-After value asks for (delta-seconds or an HTTP date), None when
    it is neither."""
    import time
    from email.utils import parsedate_to_datetime

    raw = value.strip()
    if raw.isdigit():
        return float(raw)
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def invalid_answer(endpoint: str, what: str) -> ApiError:
    """The server answered, but not with the JSON its API documents (cut short by a
    proxy, an HTML error page, a half-written reply)."""
    return ApiError(
        f"{endpoint}: the {what} API's answer is not valid JSON (cut short or not from the "
        "API); retry, and check the API URL and any proxy in between",
        endpoint=endpoint,
        status=0,
    )


def history_list(value: Any, source: str) -> list[str]:
    """The stack of earlier versions in an environment record: a list of version
    strings. Anything else (a string would split into characters) is a PlatformError."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PlatformError(f"{source}: expected a list of version strings, not {value!r:.80}")
    return list(value)


def forced_versions(record: Mapping[str, Any]) -> list[str]:
    """The versions an environment record says were promoted with ``--force``."""
    forced = record.get("forced")
    return [str(v) for v in forced] if isinstance(forced, list) else []


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksums_file(sums: Mapping[str, str]) -> bytes:
    """A ``sha256sum``-compatible SHA256SUMS listing."""
    return "".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())).encode()


_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def safe_file_name(name: str, source: str) -> str:
    """``name`` from a registry listing, refused when it could leave a download folder."""
    if not _FILE_NAME.fullmatch(name):
        raise PlatformError(f"{source}: {name!r} cannot be a file name of a version")
    return name


def parse_checksums(raw: bytes, source: str) -> dict[str, str]:
    """file name -> sha256 from a SHA256SUMS listing."""
    sums: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        digest, _, name = line.strip().partition("  ")
        if not line.strip():
            continue
        if len(digest) != 64 or not name:
            raise PlatformError(f"{source}: not a SHA256SUMS line: {line[:80]!r}")
        sums[name.lstrip("*")] = digest.lower()
    return sums


def parse_metrics(raw: bytes, source: str) -> dict[str, float]:
    """The ``metrics`` mapping of a metrics.json read from ``source``, read as
    :class:`~ci_mlops.records.MetricsRecord` reads the one evaluate wrote."""
    import json

    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not (isinstance(data, dict) and isinstance(data.get("metrics"), dict)):
        raise PlatformError(
            f"{source}: metrics.json is not a ci-mlops metrics file (no 'metrics' mapping of numbers)"
        )
    try:
        record = MetricsRecord.from_json(data, where=f"{source}: metrics.json")
    except StepError as exc:
        raise PlatformError(str(exc)) from None
    return metric_values(record.metrics, source)


def parse_ranking(raw: bytes | Mapping[str, Any], key: str = "ranking") -> tuple[str, ...] | None:
    """The importance ranking a metrics.json recorded (``importance.ranking``, or
    ``importance.shap_ranking`` by mean |SHAP|), or None when its evaluation measured
    none. Anything but a list of strings counts as none: the ranking only informs a
    comparison, it is never trusted for more."""
    import json

    try:
        data = json.loads(raw) if isinstance(raw, bytes) else raw
        ranking = data["importance"][key]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(ranking, list) or not all(isinstance(n, str) for n in ranking):
        return None
    return tuple(ranking)


def metric_values(metrics: Mapping[str, Any], source: str) -> dict[str, float]:
    """Baseline values: finite JSON numbers; null (an undefined metric) is skipped.
    Strings such as "NaN" or "-inf" are refused: float() would accept them, and a
    baseline of -inf makes every change gate pass."""
    import math

    values: dict[str, float] = {}
    for name, value in metrics.items():
        if value is None:
            continue
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if number is None or not math.isfinite(number):
            raise PlatformError(
                f"{source}: metrics.{name}: expected a finite number, not {value!r:.40}"
            )
        values[str(name)] = float(number)
    return values
