"""The generated GitHub path filters, read by GitHub's documented filter-pattern rules.

act does not apply ``on.<event>.paths``, so these rules are checked here instead: the
matcher follows the "Filter pattern cheat sheet" of GitHub's workflow syntax reference,
and is itself held to that page's examples before it judges a generated workflow."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.generate.plan import build_plan
from ci_mlops.spec.check import load_spec
from tests.helpers import copy_example, run_cli


def github_path_pattern(pattern: str) -> re.Pattern[str]:
    """A path filter pattern as GitHub reads it: ``*`` is any run of characters but
    ``/``, ``**`` any run of characters, and ``**/`` any number of folders, none
    included. (``?``, ``+``, ``[ ]`` and a leading ``!`` mean more; specs refuse them.)"""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def selects(patterns: list[str], changed: list[str]) -> bool:
    """GitHub runs the workflow when at least one changed path matches a pattern."""
    compiled = [github_path_pattern(p) for p in patterns]
    return any(c.fullmatch(path) for c in compiled for path in changed)


# The path examples of GitHub's filter pattern cheat sheet: pattern, matches, does not.
CHEAT_SHEET = [
    ("*", ["README.md", "server.rb"], ["docs/README.md"]),
    ("**", ["all/the/files.md", "README.md"], []),
    ("*.js", ["app.js", "index.js"], ["js/index.js"]),
    ("**.js", ["index.js", "js/index.js", "src/js/app.js"], ["index.jsx"]),
    ("docs/*", ["docs/README.md", "docs/file.txt"], ["docs/mona/octocat.txt", "README.md"]),
    ("docs/**", ["docs/README.md", "docs/mona/octocat.txt"], ["README.md", "mydocs/a.md"]),
    (
        "docs/**/*.md",
        ["docs/README.md", "docs/mona/hello-world.md", "docs/a/markdown/file.md"],
        ["docs/mona/octocat.txt"],
    ),
    (
        "**/docs/**",
        ["docs/hello.md", "dir/docs/my-file.txt", "space/docs/plan/space.doc"],
        ["mydocs/hello.md"],
    ),
    ("**/README.md", ["README.md", "js/README.md"], ["README.markdown"]),
    ("**/*src/**", ["a/src/app.js", "my-src/code/js/app.js"], ["src.txt"]),
    ("**/*-post.md", ["my-post.md", "path/their-post.md"], ["post.md"]),
    (
        "**/migrate-*.sql",
        ["migrate-10909.sql", "db/migrate-v1.0.sql", "db/sept/migrate-v1.sql"],
        ["migrate.sql"],
    ),
]


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), CHEAT_SHEET)
def test_the_matcher_reads_patterns_as_github_documents(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    regex = github_path_pattern(pattern)
    assert [p for p in matching if not regex.fullmatch(p)] == []
    assert [p for p in not_matching if regex.fullmatch(p)] == []


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    """The breast-cancer example plus a second model whose code and data live in
    ``other/``; the GitHub workflow generated from it."""
    folder = copy_example("breast-cancer", tmp_path)
    for code in ("src/features.py", "other/train.py"):
        (folder / code).parent.mkdir()
        (folder / code).write_text("# model code\n", "utf-8")
    shutil.copy(folder / "data" / "eval.csv", folder / "other" / "eval.csv")
    spec_file = folder / "mlops.yaml"
    spec: dict[str, Any] = yaml.safe_load(spec_file.read_text("utf-8"))
    spec["models"][0]["paths"] = ["train.py", "src/"]
    spec["models"].append(
        {
            "name": "other",
            "framework": "sklearn",
            "task": "classification",
            "paths": ["other/"],
            "data": {"eval": {"path": "other/eval.csv", "target": "target"}},
            "train": {"command": "python other/train.py"},
            "metrics": {"accuracy": {}},
        }
    )
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    result = run_cli("generate", "--platform", "github", cwd=folder)
    assert result.code == 0, result.output
    return folder


def workflow_on(folder: Path) -> dict[str, Any]:
    doc = yaml.safe_load((folder / ".github/workflows/mlops.yml").read_text("utf-8"))
    return doc["on"] if "on" in doc else doc[True]  # YAML 1.1 readers turn `on` into True


def workflow_paths(folder: Path) -> dict[str, list[str]]:
    on = workflow_on(folder)
    return {event: on[event]["paths"] for event in ("push", "pull_request")}


def model_patterns(folder: Path) -> dict[str, list[str]]:
    plan = build_plan(load_spec(folder / "mlops.yaml"))
    return {mp.model.name: list(mp.watched) for mp in plan.models}


@pytest.mark.parametrize("changed", [["README.md"], ["docs/guide.md", "docs/img/flow.png"]])
def test_a_docs_only_change_starts_no_run(two_models: Path, changed: list[str]) -> None:
    for event, patterns in workflow_paths(two_models).items():
        assert not selects(patterns, changed), event


@pytest.mark.parametrize(
    ("changed", "model"),
    [
        (["other/train.py"], "other"),
        (["other/features/encode.py"], "other"),
        (["src/model/net.py"], "breast-cancer"),
        (["train.py"], "breast-cancer"),
        (["data/train.csv"], "breast-cancer"),
    ],
)
def test_a_change_under_a_models_paths_selects_only_that_model(
    two_models: Path, changed: list[str], model: str
) -> None:
    for event, patterns in workflow_paths(two_models).items():
        assert selects(patterns, changed), event
    selected = [name for name, own in model_patterns(two_models).items() if selects(own, changed)]
    assert selected == [model]


def test_a_spec_or_workflow_change_selects_every_model(two_models: Path) -> None:
    for changed in (["mlops.yaml"], [".github/workflows/mlops.yml"]):
        for patterns in workflow_paths(two_models).values():
            assert selects(patterns, changed)
    own = model_patterns(two_models)
    assert all(selects(patterns, ["mlops.yaml"]) for patterns in own.values())


def test_pushes_start_runs_only_on_the_default_branch_and_pull_requests_on_any(
    two_models: Path,
) -> None:
    on = workflow_on(two_models)
    assert on["push"]["branches"] == ["main"]
    assert "branches" not in on["pull_request"]
