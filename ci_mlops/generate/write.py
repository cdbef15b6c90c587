"""Turn a spec into files on disk: render, compare with what is there, write atomically."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ci_mlops import atomic
from ci_mlops.errors import UsageError
from ci_mlops.generate import github, gitlab, matrix
from ci_mlops.generate.affected import uses_matrix
from ci_mlops.generate.plan import build_plan, runtime_misfit, template_misfit
from ci_mlops.generate.yamlout import dump, header
from ci_mlops.spec.model import Spec

GITLAB_FILE = ".gitlab-ci.yml"
GITHUB_FILE = ".github/workflows/mlops.yml"


def regenerate_command(spec_file: str, platform: str, mode: str) -> str:
    parts = ["ci-mlops generate"]
    if spec_file != "mlops.yaml":
        parts.append(f"--spec {spec_file}")
    parts.append(f"--platform {platform}")
    if mode != "inline":
        parts.append(f"--mode {mode}")
    return " ".join(parts)


def pin_tip(spec_file: str) -> str:
    """What to run so that the GitHub workflow's job images carry digests."""
    spec = "" if spec_file == "mlops.yaml" else f" --spec {spec_file}"
    return (
        f"job images run by tag alone; `ci-mlops pin-images{spec}` pins their digests "
        "(runtime.job_image_digests), then generate again"
    )


def render_files(spec: Spec, *, platform: str = "all", mode: str = "inline") -> dict[str, str]:
    """The generated files' paths (relative to the output folder) and texts."""
    spec_file = spec.path.name
    plan = build_plan(spec, spec_file)
    if mode == "include":
        misfit = runtime_misfit(spec)
        if misfit:
            raise UsageError(misfit)
        for mp in plan.models:
            reason = template_misfit(mp.model)
            if reason:
                raise UsageError(reason)
    out: dict[str, str] = {}
    wide = uses_matrix(spec)
    if platform in ("gitlab", "all"):
        if mode == "inline":
            doc = matrix.gitlab_parent(spec, plan) if wide else gitlab.render_inline(spec, plan)
        elif wide:
            doc = matrix.gitlab_parent(spec, plan, mode)
        else:
            doc = gitlab.render_caller(spec, plan)
        out[GITLAB_FILE] = header(spec_file, regenerate_command(spec_file, "gitlab", mode)) + dump(
            doc
        )
        check_limits(GITLAB_FILE, doc, out[GITLAB_FILE], mode)
    if platform in ("github", "all"):
        if mode == "inline":
            doc = (
                matrix.github_inline(spec, plan, GITHUB_FILE)
                if wide
                else github.render_inline(spec, plan)
            )
        elif wide:
            doc = matrix.github_caller(spec, plan, GITHUB_FILE)
        else:
            doc = github.render_caller(spec, plan)
        text = github.annotate(dump(doc), spec, plan.kinds)
        out[GITHUB_FILE] = header(spec_file, regenerate_command(spec_file, "github", mode)) + text
        check_limits(GITHUB_FILE, doc, out[GITHUB_FILE], mode)
    return out


# Documented platform limits a generated file must stay within:
# GitLab: 150 includes per pipeline; `needs` of at most 50 jobs; configuration YAML of
# max_yaml_size_bytes, 1 MB by default before GitLab 17.3 (2 MB since).
# GitHub: 256 jobs per workflow run (the documented matrix limit, applied to the run);
# workflow files over 500 KB start no runs.
GITLAB_MAX_INCLUDES = 150
GITLAB_MAX_NEEDS = 50
GITLAB_MAX_BYTES = 1_000_000
GITHUB_MAX_JOBS = 256
GITHUB_MAX_BYTES = 500 * 1024


def check_limits(rel: str, doc: dict[str, Any], text: str, mode: str) -> None:
    """UsageError naming the limit and the fix when ``doc`` would exceed a platform limit."""
    split = "split the models into several specs"
    size = len(text.encode("utf-8"))
    if rel == GITLAB_FILE:
        includes = len(doc.get("include") or [])
        if includes > GITLAB_MAX_INCLUDES:
            raise UsageError(
                f"GitLab allows {GITLAB_MAX_INCLUDES} includes per pipeline; this spec needs "
                f"{includes} (one per model): {split}"
            )
        for name, job in doc.items():
            needs = job.get("needs") if isinstance(job, dict) else None
            if needs and len(needs) > GITLAB_MAX_NEEDS:
                raise UsageError(
                    f"GitLab allows a job to need {GITLAB_MAX_NEEDS} jobs; {name} needs {len(needs)}"
                )
        if size > GITLAB_MAX_BYTES:
            fix = "use --mode include or " + split if mode == "inline" else split
            raise UsageError(
                f"{rel} would be {size} bytes; GitLab refuses configurations over "
                f"{GITLAB_MAX_BYTES} bytes by default (max_yaml_size_bytes): {fix}"
            )
        return
    jobs = len(doc.get("jobs") or {})
    if mode == "inline" and jobs > GITHUB_MAX_JOBS:
        raise UsageError(
            f"GitHub allows {GITHUB_MAX_JOBS} jobs per workflow run; this spec needs {jobs}: "
            f"{split} or use --mode include"
        )
    if size > GITHUB_MAX_BYTES:
        raise UsageError(
            f"{rel} would be {size} bytes; GitHub starts no run of a workflow file over "
            f"{GITHUB_MAX_BYTES} bytes: {split}"
        )


def generate_files(
    spec: Spec, *, platform: str, mode: str, check: bool, output: Path | None
) -> int:
    """Write (or with ``check``, compare) the pipeline files; return the exit code."""
    root = output if output is not None else spec.root
    files = render_files(spec, platform=platform, mode=mode)
    stale = []
    for rel, text in files.items():
        target = root / rel
        current = target.read_text("utf-8") if target.is_file() else None
        if current == text:
            if not check:
                print(f"{target}: up to date")
            continue
        if check:
            stale.append(rel)
            _print_diff(target, current, text)
            continue
        atomic.write_text(target, text)
        print(f"{target}: {'written' if current is None else 'updated'}")
    if not check and github.TAG_PINNED in files.get(GITHUB_FILE, ""):
        print(f"ci-mlops: tip: {pin_tip(spec.path.name)}", file=sys.stderr)
    if stale:
        print(
            f"ci-mlops: {len(stale)} file(s) out of date with {spec.path.name}; "
            f"run `{regenerate_command(spec.path.name, platform, mode)}` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_diff(target: Path, current: str | None, text: str) -> None:
    if current is None:
        print(f"{target}: missing")
        return
    import difflib  # only needed when a file is stale

    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=f"{target} (committed)",
        tofile=f"{target} (from spec)",
    )
    sys.stdout.writelines(diff)
