"""Hostile spec values: the schema refuses what would land where a shell, GitLab's
variable expansion or a GitHub expression reads it, with one located line; what it
accepts reaches the training command exactly as written, through a real GitLab job run
by gitlab-ci-local, and nothing else runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ci_mlops import __version__
from ci_mlops.cli import main
from tests.hardening.checks import UNTRUSTED, github_problems, gitlab_problems, load
from tests.hardening.strategies import load_doc, to_yaml
from tests.helpers import REPO, make_git_repo, run_cli
from tests.linters import GITLAB_CI_LOCAL

BASE: dict[str, Any] = {
    "version": 1,
    "models": [
        {
            "name": "churn",
            "framework": "sklearn",
            "task": "classification",
            "paths": ["src/"],
            "data": {"eval": {"path": "data/eval.csv", "target": "y"}},
            "train": {"command": "python train.py"},
            "metrics": {"accuracy": {}},
        }
    ],
}

# (where, value, the JSON path the message must name, words the message must hold)
REFUSED: list[tuple[tuple[Any, ...], Any, str, str]] = [
    (("models", 0, "name"), "churn; rm -rf /", "$.models[0].name", "lower-case"),
    (("models", 0, "name"), "$(id)", "$.models[0].name", "lower-case"),
    (("models", 0, "name"), "a\nb", "$.models[0].name", "lower-case"),
    (("models", 0, "name"), "${{ github.token }}", "$.models[0].name", "lower-case"),
    (("models", 0, "paths", 0), "src/$CI_JOB_TOKEN", "$.models[0].paths[0]", "$"),
    (("models", 0, "paths", 0), "src/`id`", "$.models[0].paths[0]", "backquotes"),
    (("models", 0, "paths", 0), "src/'x'", "$.models[0].paths[0]", "quotes"),
    (("models", 0, "paths", 0), 'src/"x"', "$.models[0].paths[0]", "quotes"),
    (("models", 0, "paths", 0), "src\\x", "$.models[0].paths[0]", "backslashes"),
    (("models", 0, "paths", 0), "src\nx", "$.models[0].paths[0]", "control"),
    (("models", 0, "paths", 0), "src\u2028x", "$.models[0].paths[0]", "line separators"),
    (("models", 0, "paths", 0), "!src/", "$.models[0].paths[0]", "leading !"),
    (("models", 0, "paths", 0), "src/?.py", "$.models[0].paths[0]", "GitLab and GitHub"),
    (("models", 0, "paths", 0), "c++/x", "$.models[0].paths[0]", "GitLab and GitHub"),
    (("models", 0, "paths", 0), " src", "$.models[0].paths[0]", "spaces"),
    (("models", 0, "data", "eval", "path"), "$HOME/e.csv", "$.models[0].data.eval.path", "$"),
    (("runtime", "image"), "python:3.12 ; id", "$.runtime.image", "must match"),
    (("runtime", "image"), "$EVIL", "$.runtime.image", "must match"),
    (("runtime", "install"), "ci-mlops; curl x|sh", "$.runtime.install", ";"),
    (("runtime", "install"), "ci-mlops $(id)", "$.runtime.install", "$"),
    (("runtime", "requirements"), "req$X.txt", "$.runtime.requirements", "$"),
    (("runtime", "tags"), ["$RUNNER"], "$.runtime.tags[0]", "must match"),
    (("runtime", "default_branch"), "main' || true", "$.runtime.default_branch", "must match"),
    (("runtime", "default_branch"), "a..b", "$.runtime.default_branch", "branch name"),
    (("runtime", "runs_on"), "${{ github.event.x }}", "$.runtime.runs_on", "must match"),
    (("runtime", "python"), "3.11; id", "$.runtime.python", "Python version"),
    (
        ("models", 0, "retrain"),
        {"schedule": "0 3 * * 1\n#"},
        "$.models[0].retrain.schedule",
        "single spaces",
    ),
    (("models", 0, "retrain"), {"schedule": "0 3 * * '1'"}, "$.models[0].retrain.schedule", "cron"),
    (
        ("models", 0, "deploy"),
        {"environments": [{"name": "prod$X"}]},
        "$.models[0].deploy.environments[0].name",
        "lower-case",
    ),
    (
        ("models", 0, "train", "params"),
        {"a b": 1},
        '$.models[0].train.params["a b"]',
        "parameter name",
    ),
    (
        ("models", 0, "train", "params"),
        {"x": {"nested": 1}},
        "$.models[0].train.params.x",
        "expected",
    ),
    (("models", 0, "bogus"), 1, "$.models[0].bogus", "unknown key"),
    (
        ("models", 0, "train", "timeout_minutes"),
        "60; id",
        "$.models[0].train.timeout_minutes",
        "expected",
    ),
]


def mutated(where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    node = doc
    for part in where[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[where[-1]] = value
    return doc


LOCATED = re.compile(r"^mlops\.yaml:\d+:\d+: \$")


@pytest.mark.parametrize(("where", "value", "json_path", "words"), REFUSED)
def test_hostile_value_is_refused_with_one_located_line(
    tmp_path: Path, where: tuple[Any, ...], value: Any, json_path: str, words: str
) -> None:
    (tmp_path / "mlops.yaml").write_text(to_yaml(mutated(where, value)), "utf-8")
    result = CliRunner().invoke(main, ["validate", "--no-files"], catch_exceptions=False, env={})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("ci-mlops: ") and "problem" in lines[-1]
    assert all(LOCATED.match(line) for line in lines[:-1]), lines
    assert any(f": {json_path}: " in line and words in line for line in lines[:-1]), lines


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("case", [0, 4, 18, 26])
def test_a_few_refusals_through_the_installed_command(tmp_path: Path, case: int) -> None:
    where, value, json_path, words = REFUSED[case]
    (tmp_path / "mlops.yaml").write_text(to_yaml(mutated(where, value)), "utf-8")
    result = run_cli("validate", "--no-files", cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.output
    assert f": {json_path}: " in result.stderr and words in result.stderr


# --- hostile but valid -----------------------------------------------------------------

PARAMS = {
    "quote": 'it\'s "quoted"',
    "newline": "line one\nline two",
    "dollar": "$(touch pwned-param) ${HOME} `id`",
    "expr": "${{ github.event.pull_request.title }} $[[ inputs.model ]]",
    "yaml": "a: b # c &d *e !f {g} |h",
    "unicode": "é漢字🙂" + "x" * 3000,
    "number": 1e100,
    "flag": False,
}
ARGS = ["semi;colon", 'dq"x', "$(touch pwned-arg)", "`touch pwned-tick`"]
RECORDER = (
    "import json, os, sys; "
    "json.dump({'argv': sys.argv[1:], 'params': os.environ['MLOPS_PARAMS'], "
    "'quote': os.environ['MLOPS_PARAM_QUOTE']}, open('received.json', 'w')); "
    "open(os.environ['MLOPS_MODEL_PATH'], 'wb').write(b'model')"
)
# The spec author's own shell command: its ; and $( ) are theirs and do run; the quoted
# arguments must arrive untouched.
COMMAND = (
    f'python -c "{RECORDER}" '
    "'semi;colon' 'dq\"x' '$(touch pwned-arg)' '`touch pwned-tick`'; "
    'echo "after: $(echo sub)" > echoed.txt'
)
DESCRIPTION = "Churn ${{ github.token }} $(touch pwned-description) `id` ' \" \n: # & * ! { |"


def hostile_spec() -> dict[str, Any]:
    doc = mutated(("models", 0, "train"), {"command": COMMAND, "params": PARAMS})
    model = doc["models"][0]
    model["description"] = DESCRIPTION
    model["paths"] = ["src dir/train me.py", "src dir/**/*: #&*{a,b}|é"]
    model["data"]["eval"] = {
        "path": "data dir/eval set.csv",
        "target": "y; $(id)",
        "expectations": [
            {"expect_column_values_to_be_in_set": {"column": "x", "value_set": ["'$(id)'"]}}
        ],
    }
    model["export"] = {"onnx": False}
    doc["runtime"] = {"tags": ["docker linux", "a:b/c.d"]}
    return doc


def test_hostile_values_never_reach_a_script_or_an_expression(tmp_path: Path) -> None:
    from ci_mlops.generate.write import GITHUB_FILE, GITLAB_FILE, render_files

    spec = load_doc(hostile_spec(), tmp_path / "mlops.yaml")
    files = render_files(spec)
    assert gitlab_problems(files[GITLAB_FILE], spec, "inline") == []
    assert github_problems(files[GITHUB_FILE], spec, "inline") == []
    for text in files.values():
        for needle in ("pwned", "touch", "quoted", "github.event.pull_request", "inputs.model"):
            assert needle not in text
    gl = load(files[GITLAB_FILE])
    assert gl["churn:train"]["rules"][2]["changes"]["paths"] == [
        "src dir/train me.py",
        "src dir/**/*: #&*{a,b}|é",
        "data dir/eval set.csv",
        "mlops.yaml",
    ]
    assert gl["churn:train"]["tags"] == ["docker linux", "a:b/c.d"]


def test_no_script_reads_values_anyone_can_choose() -> None:
    """Branch names, merge-request titles and commit messages are attacker-chosen; the
    committed pipelines and templates never expand them in a script."""
    files = [
        *REPO.glob("examples/*/.gitlab-ci.yml"),
        *REPO.glob("examples/*/.github/workflows/*.yml"),
        *REPO.glob("templates/*.yml"),
        REPO / ".github/workflows/mlops.yml",
    ]
    assert len(files) >= 6
    for path in files:
        text = path.read_text("utf-8")
        docs = [load(part) for part in re.split(r"(?m)^---\n", text) if part.strip()]
        for doc in docs:
            for line in _script_lines(doc):
                assert not UNTRUSTED.search(line.replace("${{ inputs.", "")), (path, line)


def _script_lines(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("script", "before_script", "after_script") and isinstance(value, list):
                out += [line for item in value for line in str(item).split("\n")]
            elif key == "run" and isinstance(value, str):
                out += value.split("\n")
            else:
                out += _script_lines(value)
    elif isinstance(node, list):
        for item in node:
            out += _script_lines(item)
    return out


# --- end to end: a real GitLab job --------------------------------------------------------

SHIM = """#!/bin/sh
# Jobs install ci-mlops with pip; here it is already installed, so record and skip that.
if [ "$1" = "-I" ] && [ "$2" = "-m" ] && [ "$3" = "pip" ]; then echo "$@" >> "$PIP_LOG"; exit 0; fi
exec {python} "$@"
"""


@pytest.mark.slow
def test_the_train_job_passes_exactly_the_spec_values(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src dir").mkdir(parents=True)
    (project / "src dir" / "train me.py").write_text("print('unused')\n", "utf-8")
    (project / "src dir" / "k: #&z{a,b}|é").write_text("", "utf-8")
    (project / "data dir").mkdir()
    (project / "data dir" / "eval set.csv").write_text("x,y; $(id)\n1,0\n2,1\n", "utf-8")
    (project / "mlops.yaml").write_text(to_yaml(hostile_spec()), "utf-8")
    assert run_cli("validate", cwd=project).code == 0
    assert run_cli("generate", "--platform", "gitlab", cwd=project).code == 0
    make_git_repo(project)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "python").write_text(SHIM.format(python=sys.executable), "utf-8")
    (shims / "python").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PIP_LOG": str(tmp_path / "pip.log"),
    }
    cmd = [
        str(GITLAB_CI_LOCAL),
        "--force-shell-executor",
        "--no-color",
        "--home",
        str(tmp_path / "gcl-home"),
        "--variable",
        "MLOPS_RETRAIN=churn",
        "churn:train",
    ]
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    received_files = list(project.rglob("received.json"))
    assert len(received_files) == 1, proc.stdout
    received = json.loads(received_files[0].read_text("utf-8"))
    assert received["argv"] == ARGS
    assert json.loads(received["params"]) == PARAMS
    assert received["params"] == json.dumps(PARAMS, sort_keys=True)
    assert received["quote"] == PARAMS["quote"]
    echoed = received_files[0].with_name("echoed.txt")
    assert echoed.read_text("utf-8") == "after: sub\n"
    assert not [p for p in project.rglob("pwned*")], "a quoted value was executed"
    assert not (tmp_path / "pwned-param").exists()
    # The only other commands the job ran: one pip call (the shim), then ci-mlops train.
    pip_calls = (tmp_path / "pip.log").read_text("utf-8").splitlines()
    assert pip_calls == [f"-I -m pip install ci-mlops=={__version__}"]
    ran = [line for line in proc.stdout.splitlines() if re.search(r"\$ (python|ci-mlops)", line)]
    assert [line.split("$ ", 1)[1] for line in ran] == [
        f"python -I -m pip install ci-mlops=={__version__}",
        'ci-mlops train --spec "$MLOPS_SPEC" --model "$MLOPS_MODEL"',
    ]
    record = yaml.safe_load(next(project.rglob(".ci-mlops/churn/train.json")).read_text("utf-8"))
    assert record["command"] == COMMAND
