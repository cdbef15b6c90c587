"""The example comment in docs/: a real report of breast-cancer, retrained with
another regularisation and judged against the first model with every kind of insight
on (intervals, paired significance, warn mode, slices, importance, history). The test
produces it again and checks that the committed copy has the same shape; with
``UPDATE_DOCS=1`` it rewrites the copy."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from ci_mlops.spec.check import load_spec
from ci_mlops.steps import report
from tests.helpers import REPO
from tests.steps.trained import invoke, read_json, train_example, trained_example, workdir

EXAMPLE = REPO / "docs" / "report-example.md"


def produce(tmp_path: Path) -> str:
    folder = trained_example("breast-cancer", tmp_path)
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    model = data["models"][0]
    model["metrics"] = {
        "accuracy": {"min": 0.93, "max_drop": 0.0, "significance": 0.05, "worst_slice": 0.9},
        "roc_auc": {"min": 0.97, "max_drop": 0.005, "mode": "warn"},
        "f1": {"min": 0.93, "max_relative_drop": 0.03},
        "log_loss": {"max": 0.3},
    }
    model["evaluate"] = {
        "slices": ["mean_radius"],
        "importance": {
            "repeats": 3,
            "top_k": 5,
            "metric": "log_loss",
            "max_rank_shift": 2,
            "mode": "warn",
        },
    }
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    base = tmp_path / "baseline"
    base.mkdir()
    assert invoke(folder, "evaluate").code == 0
    shutil.copy(workdir(folder) / "metrics.json", base / "metrics.json")
    shutil.copy(workdir(folder) / "model.joblib", base / "model.joblib")
    first = read_json(base / "metrics.json")["metrics"]["accuracy"]
    train_example(folder, C=0.05)
    result = invoke(
        folder,
        "evaluate",
        "--baseline",
        str(base / "metrics.json"),
        "--baseline-model",
        str(base / "model.joblib"),
    )
    assert result.code == 0, result.output
    spec = load_spec(spec_file)
    history = (("1.0.0+7", {"accuracy": 0.958}), ("1.0.0+8", {"accuracy": first}))
    inputs = report.read_inputs(spec.workdir(spec.models[0]), spec.models[0], history=history)
    return report.render(spec, spec.models[0], inputs=inputs)


def shape(markdown: str) -> list[str]:
    """Headings, folds, chart titles and table heads: what the example must keep."""
    keep = re.compile(
        r"^(#+ |<details>|```mermaid|    title |\| (metric|slice|rank|version|false) )"
    )
    return [re.sub(r"\d", "#", line) for line in markdown.splitlines() if keep.match(line)]


def test_the_committed_example_comment_is_current(tmp_path: Path) -> None:
    markdown = produce(tmp_path)
    assert "not significant (paired bootstrap p=" in markdown or "(p=" in markdown
    assert markdown.count("```mermaid") == 4
    if os.environ.get("UPDATE_DOCS") == "1":
        EXAMPLE.parent.mkdir(exist_ok=True)
        EXAMPLE.write_text(markdown, "utf-8")
    assert EXAMPLE.is_file(), "run with UPDATE_DOCS=1 to write docs/report-example.md"
    assert shape(EXAMPLE.read_text("utf-8")) == shape(markdown)
