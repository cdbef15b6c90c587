"""The reusable templates this project publishes: GitLab CI/CD components in
``templates/`` and the GitHub reusable workflow ``.github/workflows/mlops.yml``.

They are rendered from the same job plan as the inline pipelines, for a symbolic model
whose facts are the templates' inputs, so the two can never drift apart. A test renders
them again and fails when the committed files differ.

Run ``python -m ci_mlops.generate.templates [--check] [ROOT]`` to write or check them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, cast

import yaml

from ci_mlops import atomic
from ci_mlops.generate import github, gitlab
from ci_mlops.generate.plan import Plan, build_plan
from ci_mlops.generate.yamlout import dump
from ci_mlops.spec.model import Spec, build_spec

SYMBOLIC_MODEL = {
    "framework": "sklearn",
    "task": "classification",
    "data": {"eval": {"path": "eval.csv"}},
    "train": {"command": "train"},
    "metrics": {"accuracy": None},
    "retrain": {"drift": {"reference": "reference.csv", "current": "current.csv"}},
    # Every optional job is in the templates; the caller's inputs switch them on.
    "deploy": {"image": {}},
}

HEADER = (
    "# Part of ci-mlops, rendered from its job plan; do not edit by hand.\n"
    "# Regenerate with: python -m ci_mlops.generate.templates\n"
)


def symbolic(name: str, spec_file: str) -> tuple[Spec, Plan]:
    """A spec with one model whose name is a template placeholder, and its plan."""
    spec = build_spec({"version": 1, "models": [{"name": name, **SYMBOLIC_MODEL}]}, Path(spec_file))
    return spec, build_plan(spec, spec_file)


def render_templates() -> dict[str, str]:
    """Relative path -> text of every published template."""
    out: dict[str, str] = {}
    spec, plan = symbolic("$[[ inputs.model ]]", "$[[ inputs.spec ]]")
    for name, (head, jobs) in gitlab.render_components(spec, plan).items():
        out[f"templates/{name}.yml"] = HEADER + dump(head) + "---\n" + dump(jobs)
    spec, plan = symbolic("${{ inputs.model }}", "${{ inputs.spec }}")
    text = github.annotate(dump(github.render_reusable(spec, plan)), kinds=plan.kinds)
    out[github.REUSABLE_FILE] = HEADER + text
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    rest = [a for a in argv if a != "--check"]
    root = Path(rest[0]) if rest else Path.cwd()
    stale = []
    for rel, text in render_templates().items():
        target = root / rel
        if target.is_file() and target.read_text("utf-8") == text:
            continue
        if check:
            stale.append(rel)
        else:
            atomic.write_text(target, text)
            print(f"{target}: written")
    for rel in stale:
        print(f"{rel}: out of date; run `python -m ci_mlops.generate.templates`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


_PLACEHOLDER = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")


def interpolate(component: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The jobs of a GitLab component with ``inputs`` (and the header's defaults) filled
    in, as GitLab does when a project includes it."""
    head_text, _, jobs_text = component.partition("\n---\n")
    declared = (yaml.safe_load(head_text) or {})["spec"]["inputs"]
    values = {k: d["default"] for k, d in declared.items() if "default" in d}
    unknown = set(inputs) - set(declared)
    if unknown:
        raise ValueError(f"unknown inputs: {', '.join(sorted(unknown))}")
    values.update(inputs)
    missing = set(declared) - set(values)
    if missing:
        raise ValueError(f"missing inputs: {', '.join(sorted(missing))}")
    jobs: dict[str, Any] = yaml.safe_load(jobs_text)
    return cast(dict[str, Any], _fill(jobs, values))


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {_fill(k, values): _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: _scalar(values[m.group(1)]), node)
    return node


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
