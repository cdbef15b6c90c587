"""Every broken spec is refused through the real CLI with located, one-line problems.

Each ``broken/*.yaml`` starts with ``# expect: LINE: FRAGMENT`` lines: a problem must be
reported on LINE whose ``$.path: message`` contains FRAGMENT. Specs that cannot carry a
comment (binary, empty, wrong encoding) are built here, with the same kind of claim.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import Result, run_cli

BROKEN = Path(__file__).parent / "broken"
EXPECT = re.compile(r"^# expect: (\d+): (.+)$", re.MULTILINE)
# FILE:LINE:COL: $.json.path: message — the path is $ then .name, [0] or ["odd key"] parts.
PROBLEM = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): "
    r'(?P<path>\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*): '
    r"(?P<message>\S.*)$"
)
SUMMARY = re.compile(r"^ci-mlops: (\d+) problems? in the spec$")


@dataclass(frozen=True)
class Expected:
    line: int
    fragment: str


@dataclass(frozen=True)
class Reported:
    line: int
    column: int
    text: str  # "$.path: message"


def expectations(text: str) -> list[Expected]:
    return [Expected(int(line), frag) for line, frag in EXPECT.findall(text)]


# name → (content, [(line, fragment)]): specs that cannot hold an expectation comment.
GENERATED: dict[str, tuple[bytes, list[Expected]]] = {
    "empty.yaml": (b"", [Expected(1, "$: the file is empty")]),
    "blank.yaml": (b"\n   \n\n", [Expected(1, "$: the file is empty")]),
    "png.yaml": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 4,
        [Expected(3, "$: not a text file (contains NUL bytes)")],
    ),
    "nul.yaml": (
        b"version: 1\nmodels:\n  - name: a\x00b\n",
        [Expected(3, "$: not a text file (contains NUL bytes)")],
    ),
    "latin1.yaml": (
        "version: 1\n# caf\u00e9 ordering model\nmodels: []\n".encode("latin-1"),
        [Expected(2, "$: not valid UTF-8 text (byte 0xe9): save the file as UTF-8")],
    ),
    "utf16.yaml": (
        "\ufeffversion: 1\nmodels: []\n".encode("utf-16-le"),
        [Expected(1, "$: the file is UTF-16 text: save it as UTF-8")],
    ),
    "control-char.yaml": (
        b"version: 1\nmodels:\n  - name: a\x07b\n",
        [Expected(3, "$: YAML error: control character U+0007 is not allowed")],
    ),
    "huge.yaml": (
        b"version: 1\n" + b"# padding\n" * 210_000,
        [Expected(1, "$: file is larger than 2000000 bytes")],
    ),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding every file the corpus specs name when they mean to be correct."""
    root = tmp_path_factory.mktemp("project")
    (root / "data").mkdir()
    for name in ("train.csv", "eval.csv", "current.csv"):
        (root / "data" / name).write_text("a,y\n1,0\n2,1\n", "utf-8")
    (root / "train.py").write_text("print('training')\n", "utf-8")
    (root / "requirements.txt").write_text("scikit-learn\n", "utf-8")
    return root


def validate(
    project: Path, name: str, result: Result | None = None
) -> tuple[Result, list[Reported]]:
    """Run ``ci-mlops validate`` on ``project/name`` (unless ``result`` holds that run
    already); check the output's shape and return the problems it reported."""
    result = result or run_cli("validate", "--spec", name, cwd=project)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    *lines, summary = result.stderr.splitlines()
    count = SUMMARY.match(summary)
    assert count, f"last line is not the summary: {summary!r}"
    assert int(count.group(1)) == len(lines)
    reported = []
    for line in lines:
        match = PROBLEM.match(line)
        assert match, f"not FILE:LINE:COL: $.path: message: {line!r}"
        assert match["file"] == name
        text = f"{match['path']}: {match['message']}"
        reported.append(Reported(int(match["line"]), int(match["col"]), text))
    return result, reported


def assert_reported(reported: list[Reported], expected: list[Expected]) -> None:
    assert expected, "a corpus spec must say what it expects"
    for want in expected:
        hits = [r for r in reported if r.line == want.line and want.fragment in r.text]
        assert hits, f"expected line {want.line}: {want.fragment!r}; got {reported}"


CORPUS = sorted(p.name for p in BROKEN.glob("*.yaml"))


@pytest.fixture(scope="module")
def runs(project: Path) -> dict[str, Result]:
    """Every corpus and generated spec validated by the real CLI, several at a time:
    one process each costs about 0.3 s of start-up, most of it waiting on imports."""
    for name in CORPUS:
        shutil.copyfile(BROKEN / name, project / name)
    for name, (content, _) in GENERATED.items():
        (project / name).write_bytes(content)
    names = [*CORPUS, *GENERATED]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda n: run_cli("validate", "--spec", n, cwd=project), names)
        return dict(zip(names, done, strict=True))


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert len(CORPUS) + len(GENERATED) >= 60


@pytest.mark.slow  # the shared `runs` fixture starts ~70 CLI processes
@pytest.mark.parametrize("name", CORPUS)
def test_broken_spec_is_refused_with_located_problems(
    project: Path, runs: dict[str, Result], name: str
) -> None:
    text = (BROKEN / name).read_text("utf-8")
    _, reported = validate(project, name, runs[name])
    assert_reported(reported, expectations(text))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_unreadable_spec_is_refused_with_one_problem(
    project: Path, runs: dict[str, Result], name: str
) -> None:
    _, expected = GENERATED[name]
    _, reported = validate(project, name, runs[name])
    assert len(reported) == 1
    assert_reported(reported, expected)


def test_a_missing_spec_points_at_init(tmp_path: Path) -> None:
    _, reported = validate(tmp_path, "mlops.yaml")
    assert_reported(reported, [Expected(1, "$: file not found (create one with `ci-mlops init`)")])


SCHEMA_PROBLEMS = """\
version: 1
runtime:
  python: 3.11
  colour: blue
models:
  - name: Churn
    framework: sklearn
    task: classification
    data:
      eval: {path: data/eval.csv}
    train: {command: python train.py, timeout_minutes: 0}
    metrics:
      acuracy: {min: 0.8}
"""


def test_every_schema_problem_is_reported_in_line_order(project: Path) -> None:
    (project / "many.yaml").write_text(SCHEMA_PROBLEMS, "utf-8")
    _, reported = validate(project, "many.yaml")
    expected = [
        Expected(3, "$.runtime.python: expected a string, got float '3.11'"),
        Expected(4, "$.runtime.colour: unknown key 'colour'"),
        Expected(6, "$.models[0].name: 'Churn' is not allowed here"),
        Expected(11, "$.models[0].train.timeout_minutes: 0 is out of range"),
        Expected(13, "$.models[0].metrics.acuracy: unknown metric 'acuracy'"),
    ]
    assert_reported(reported, expected)
    assert len(reported) == len(expected)
    assert [r.line for r in reported] == sorted(r.line for r in reported)


MEANING_PROBLEMS = """\
version: 1
runtime:
  requirements: requirements/prod.txt
models:
  - name: churn
    framework: sklearn
    task: classification
    data:
      eval: {path: data/eval.csv, target: y}
    train: {command: python train.py}
    metrics:
      rmse: {}
      accuracy: {min: 0.9, max: 0.5}
    retrain:
      schedule: "0 0 * * 8"
  - name: churn
    framework: sklearn
    task: regression
    model_class: nets:Net
    paths: [src/]
    data:
      eval: {path: data/holdout.csv, target: y}
    train: {command: python train.py}
    metrics: {rmse: {}}
"""


def test_every_meaning_problem_is_reported_in_line_order(project: Path) -> None:
    (project / "meaning.yaml").write_text(MEANING_PROBLEMS, "utf-8")
    _, reported = validate(project, "meaning.yaml")
    expected = [
        Expected(3, "$.runtime.requirements: file not found: requirements/prod.txt"),
        Expected(12, "$.models[0].metrics.rmse: 'rmse' is not a classification metric"),
        Expected(13, "$.models[0].metrics.accuracy.min: min 0.9 is above max 0.5"),
        Expected(15, "'8' is not a valid day of week (0-7)"),
        Expected(16, "$.models[1].name: duplicate model name 'churn'"),
        Expected(19, "$.models[1].model_class: model_class is only used with framework: pytorch"),
        Expected(20, "$.models[1].paths[0]: matches no file: src/"),
        Expected(22, "$.models[1].data.eval.path: file not found: data/holdout.csv"),
    ]
    assert_reported(reported, expected)
    assert len(reported) == len(expected)
    assert [r.line for r in reported] == sorted(r.line for r in reported)


def test_no_files_skips_only_the_file_checks(project: Path) -> None:
    (project / "nofiles.yaml").write_text(MEANING_PROBLEMS, "utf-8")
    result = run_cli("validate", "--no-files", "--spec", "nofiles.yaml", cwd=project)
    assert result.code == 2
    assert "not found" not in result.stderr and "matches no file" not in result.stderr
    assert "duplicate model name" in result.stderr


def test_debug_shows_the_traceback_that_is_otherwise_hidden(project: Path) -> None:
    shutil.copyfile(BROKEN / "version-2.yaml", project / "debug.yaml")
    result = run_cli("validate", "--debug", "--spec", "debug.yaml", cwd=project)
    assert result.code != 0
    assert "Traceback" in result.stderr and "SpecError" in result.stderr
