"""Turn a spec into files on disk: render, compare with what is there, write atomically."""

from __future__ import annotations

import sys
from pathlib import Path

from ci_mlops import atomic
from ci_mlops.errors import UsageError
from ci_mlops.generate import github, gitlab
from ci_mlops.generate.plan import build_plan, template_misfit
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


def render_files(spec: Spec, *, platform: str = "all", mode: str = "inline") -> dict[str, str]:
    """The generated files' paths (relative to the output folder) and texts."""
    spec_file = spec.path.name
    plan = build_plan(spec, spec_file)
    if mode == "include":
        for mp in plan.models:
            reason = template_misfit(mp.model)
            if reason:
                raise UsageError(reason)
    out: dict[str, str] = {}
    if platform in ("gitlab", "all"):
        doc = (
            gitlab.render_inline(spec, plan)
            if mode == "inline"
            else gitlab.render_caller(spec, plan)
        )
        out[GITLAB_FILE] = header(spec_file, regenerate_command(spec_file, "gitlab", mode)) + dump(
            doc
        )
    if platform in ("github", "all"):
        doc = (
            github.render_inline(spec, plan)
            if mode == "inline"
            else github.render_caller(spec, plan)
        )
        text = github.annotate_pins(dump(doc), spec)
        out[GITHUB_FILE] = header(spec_file, regenerate_command(spec_file, "github", mode)) + text
    return out


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
