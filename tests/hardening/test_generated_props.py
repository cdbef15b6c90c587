"""Property tests of the generator: for any schema-valid spec, every generated file
passes the platform's schema, runs only the expected command lines, and carries user
values only where nothing expands them. A sample also goes through check-jsonschema,
zizmor and actionlint as subprocesses. ``make fuzz`` runs many more examples."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ci_mlops.cli import main
from ci_mlops.errors import UsageError
from ci_mlops.generate.affected import Event
from ci_mlops.generate.matrix import choose, gitlab_child, gitlab_children_included
from ci_mlops.generate.plan import build_plan, runtime_misfit, template_misfit
from ci_mlops.generate.write import GITHUB_FILE, GITLAB_FILE, render_files
from ci_mlops.generate.yamlout import dump
from tests.hardening.checks import github_problems, gitlab_problems, schema_errors, walk
from tests.hardening.strategies import load_doc, spec_docs, to_yaml
from tests.linters import (
    _run,
    _venv_tool,
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

pytestmark = pytest.mark.fuzz

SPEC_PATH = Path("/project/mlops.yaml")


def scaled(count: int) -> int:
    """``count`` examples in the normal suite, proportionally more in the profile loaded
    by ``make fuzz`` (an explicit max_examples would otherwise override the profile)."""
    return max(1, count * settings.default.max_examples // 100)


def modes(doc: dict[str, Any]) -> list[str]:
    """inline always; include when every model fits the released templates and the
    GitHub caller can pin the reusable workflow."""
    spec = load_doc(doc, SPEC_PATH)
    fits = runtime_misfit(spec) is None and all(template_misfit(m) is None for m in spec.models)
    return ["inline", "include"] if fits and spec.runtime.templates.github_sha else ["inline"]


def free_text(doc: dict[str, Any]) -> set[str]:
    """User strings that no generated file needs: commands, descriptions, params,
    expectation arguments, columns. Long hostile ones only, so a match is no coincidence."""
    found = set()
    for model in doc["models"]:
        picked = {
            "command": model["train"]["command"],
            "description": model.get("description"),
            "params": model["train"].get("params"),
            "data": model["data"],
            "columns": (model.get("retrain") or {}).get("drift", {}).get("columns"),
        }
        for path, leaf in walk(picked):
            files = {"path", "features", "labels"} & set(map(str, path))
            # Only text no path may hold and no generated line needs, so that a match
            # is a leak and not a word the file has anyway (repository_dispatch).
            hostile = isinstance(leaf, str) and any(c in leaf for c in ";`'\"\n\\")
            if hostile and len(leaf) >= 16 and not files:
                found.add(leaf)
    return found


@settings(
    max_examples=scaled(100),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec_docs())
def test_generated_files_are_valid_and_carry_no_user_code(doc: dict[str, Any]) -> None:
    spec = load_doc(doc, SPEC_PATH)
    # A free-text value may by chance equal a path the pipeline has to watch.
    watched = {p for m in spec.models for p in m.watched_paths} | {spec.runtime.requirements}
    secret = free_text(doc) - watched
    for mode in modes(doc):
        files = render_files(spec, platform="all", mode=mode)
        assert gitlab_problems(files[GITLAB_FILE], spec, mode) == []
        assert github_problems(files[GITHUB_FILE], spec, mode) == []
        for text in files.values():
            leaked = [s for s in secret if s in text]
            assert leaked == [], f"{mode}: user text in a generated file: {leaked[:2]}"


@settings(
    max_examples=scaled(40),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec_docs())
def test_matrix_layout_files_are_valid_and_carry_no_user_code(doc: dict[str, Any]) -> None:
    """The same for the matrix layout, and for the child pipelines the GitLab plan job
    writes when every model's jobs run (a change to the spec on the default branch):
    its jobs written out, and in include mode its includes of the component."""
    doc = {**doc, "runtime": {**(doc.get("runtime") or {}), "layout": "matrix"}}
    spec = load_doc(doc, SPEC_PATH)
    watched = {p for m in spec.models for p in m.watched_paths} | {spec.runtime.requirements}
    secret = free_text(doc) - watched
    plan = build_plan(spec, spec.path.name)
    event = Event(source="push", default_branch=True, changed=(spec.path.name,))
    child = dump(gitlab_child(spec, plan, choose(plan, event, GITLAB_FILE), {}))
    assert gitlab_problems(child, spec, "inline") == []
    texts = [child]
    for mode in modes(doc):
        files = render_files(spec, platform="all", mode=mode)
        assert gitlab_problems(files[GITLAB_FILE], spec, mode) == []
        assert github_problems(files[GITHUB_FILE], spec, mode) == []
        texts += files.values()
        if mode == "include":
            for part in gitlab_children_included(spec, plan, choose(plan, event, GITLAB_FILE), {}):
                assert schema_errors("gitlab-ci", part) == []
                texts.append(dump(part))
    for text in texts:
        leaked = [s for s in secret if s in text]
        assert leaked == [], f"user text in a generated file: {leaked[:2]}"


@settings(
    max_examples=scaled(60),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec_docs())
def test_watched_paths_survive_the_round_trip(doc: dict[str, Any]) -> None:
    """rules:changes and on.push.paths hold exactly the spec's paths, byte for byte."""
    spec = load_doc(doc, SPEC_PATH)
    files = render_files(spec, platform="all", mode="inline")
    gl = yaml.safe_load(files[GITLAB_FILE])
    gh = yaml.safe_load(files[GITHUB_FILE])
    every: set[str] = {GITHUB_FILE, spec.path.name}
    for model in spec.models:
        # A folder stands for every file under it (platforms match files, not folders).
        files = [p + "**/*" if p.endswith("/") else p for p in model.watched_paths]
        want = [*dict.fromkeys([*files, spec.path.name])]
        every.update(want)
        # Training runs in the build job under runtime.jobs: combined.
        train = gl.get(f"{model.name}:train") or gl[f"{model.name}:build"]
        changes = [r["changes"]["paths"] for r in train["rules"] if "changes" in r]
        assert changes == [want]
    assert set(gh["on"]["push"]["paths"]) == every
    assert set(gh["on"]["pull_request"]["paths"]) == every


def write_sample(docs: list[dict[str, Any]], folder: Path) -> tuple[list[Path], list[Path]]:
    gitlab_files, github_files = [], []
    for i, doc in enumerate(docs):
        spec = load_doc(doc, SPEC_PATH)
        mode = modes(doc)[-1]
        for rel, text in render_files(spec, platform="all", mode=mode).items():
            target = folder / str(i) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
            (gitlab_files if rel == GITLAB_FILE else github_files).append(target)
    return gitlab_files, github_files


# Each example runs four subprocesses: no shrinking, which would run them hundreds of times.
@settings(
    max_examples=scaled(2),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
@given(st.lists(spec_docs(max_models=3), min_size=5, max_size=5))
def test_a_sample_passes_the_real_checkers(docs: list[dict[str, Any]]) -> None:
    """Five generated pairs per example, each checker called once on all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        gitlab_files, github_files = write_sample(docs, Path(tmp))
        assert _batched_schema(gitlab_files, "gitlab") == []
        assert _batched_schema(github_files, "github") == []
        assert zizmor_findings(github_files) == []
        assert actionlint_findings(github_files) == []


def _batched_schema(files: list[Path], platform: str) -> list[str]:
    """check-jsonschema on several files in one process."""
    builtin = "vendor.gitlab-ci" if platform == "gitlab" else "vendor.github-workflows"
    cmd = [_venv_tool("check-jsonschema"), "--builtin-schema", builtin, "-o", "json"]
    report = json.loads(_run([*cmd, *map(str, files)], ok=(0, 1)).stdout)
    out = [f"{e['filename']}: {e['message']}" for e in report.get("parse_errors", [])]
    return out + [f"{e['filename']}::{e['path']}: {e['message']}" for e in report["errors"]]


def test_the_in_process_schemas_agree_with_check_jsonschema(tmp_path: Path) -> None:
    """A file the vendored schema refuses in-process is refused by check-jsonschema too,
    so the fast check is the same check."""
    bad_gitlab = tmp_path / ".gitlab-ci.yml"
    bad_gitlab.write_text("job:\n  script: [echo]\n  when: sometimes\n", "utf-8")
    bad_github = tmp_path / "wf.yml"
    bad_github.write_text("on: push\njobs:\n  a:\n    runs-on: x\n    stepz: []\n", "utf-8")
    from tests.hardening.checks import schema_errors

    assert schema_errors("gitlab-ci", yaml.safe_load(bad_gitlab.read_text())) != []
    assert gitlab_schema_errors(bad_gitlab) != []
    assert schema_errors("github-workflows", yaml.safe_load(bad_github.read_text())) != []
    assert github_workflow_errors(bad_github) != []


def test_include_mode_refuses_a_spec_the_templates_do_not_fit() -> None:
    doc = {
        "version": 1,
        "runtime": {"templates": {"github_sha": "a" * 40}},
        "models": [
            {
                "name": "m",
                "framework": "sklearn",
                "task": "regression",
                "data": {"eval": {"path": "e.csv"}},
                "train": {"command": "x", "timeout_minutes": 61},
                "metrics": {"r2": None},
            }
        ],
    }
    with pytest.raises(UsageError, match="60 minutes"):
        render_files(load_doc(doc, SPEC_PATH), mode="include")


# A change the schema refuses, where it is made, and the JSON path the message must name.
MUTATIONS: list[tuple[str, Any, str]] = [
    ("name", "Bad Name", "name"),
    ("name", "x;id", "name"),
    ("framework", "tensorflow", "framework"),
    ("bogus_key", 1, "bogus_key"),
    ("paths", ["src/$CI_JOB_TOKEN"], "paths[0]"),
    ("paths", "src/", "paths"),
    ("metrics", {"auc": {}}, "metrics.auc"),
    ("metrics", {"accuracy": {"min": "high"}}, "metrics.accuracy.min"),
    ("train", {"command": "x", "timeout_minutes": "1h"}, "train.timeout_minutes"),
    ("train", {"command": "x", "params": {"p": [1]}}, "train.params.p"),
    ("deploy", {"environments": [{"name": "Prod"}]}, "deploy.environments[0].name"),
    ("export", {"onnx": "yes"}, "export.onnx"),
]


@settings(
    max_examples=scaled(60),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec_docs(max_models=3), st.data())
def test_a_refused_mutation_is_reported_where_it_was_made(doc: dict[str, Any], data: Any) -> None:
    index = data.draw(st.integers(0, len(doc["models"]) - 1))
    key, value, where = data.draw(st.sampled_from(MUTATIONS))
    doc["models"][index][key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlops.yaml"
        path.write_text(to_yaml(doc), "utf-8")
        result = CliRunner().invoke(main, ["validate", "--no-files", "--spec", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("ci-mlops: ") and lines[-1].endswith("in the spec")
    for line in lines[:-1]:
        assert line.startswith(f"{path}:") and ": $" in line, line
    wanted = f": $.models[{index}].{where}: "
    assert any(wanted in line for line in lines), (wanted, lines)
