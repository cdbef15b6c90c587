"""The report step: marker, verdict, metrics table that agrees with metrics.json,
direction-aware changes, data-test and ONNX sections (or "not run"), plots, the size
limit, and never crashing on missing or broken inputs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ci_mlops.spec.check import load_spec
from ci_mlops.steps import report
from tests.helpers import Result, copy_example
from tests.steps.trained import clone, invoke, read_json, train_example, trained_example, workdir


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """breast-cancer trained and evaluated against a baseline that is worse on
    accuracy and better on log_loss; no data-test or export run."""
    tmp = tmp_path_factory.mktemp("report")
    folder = trained_example("breast-cancer", tmp)
    baseline = tmp / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"accuracy": 0.9, "log_loss": 0.01, "f1": 0.95}}))
    assert invoke(folder, "evaluate", "--baseline", str(baseline)).code == 0
    return folder


@pytest.fixture(scope="module")
def reported(evaluated: Path) -> tuple[Path, Result]:
    return evaluated, invoke(evaluated, "report", "--no-post")


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The metrics table: metric -> [baseline, this run, change, gate] (the interval
    column is left out; :func:`intervals` reads it)."""
    section = markdown.split("### Metrics", 1)[1].split("###", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] != "metric":
            rows[cells[0]] = [*cells[1:3], *cells[4:]]
    return rows


def render(folder: Path, images: dict[str, str] | None = None) -> str:
    spec = load_spec(folder / "mlops.yaml")
    return report.render(spec, spec.models[0], images)


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


# --- the report of a passing run ------------------------------------------------------


def test_the_report_runs_from_the_model_folder_alone(
    evaluated: Path, reported: tuple[Path, Result], tmp_path: Path
) -> None:
    """As in CI's report job: no checkout, only the model folder (with the spec copy the
    data-test step leaves there), an isolated interpreter, and a ``ci_mlops`` package
    in the current folder that would stop the run if Python imported it."""
    job = tmp_path / "job"
    shutil.copytree(workdir(evaluated), job / ".ci-mlops" / "breast-cancer")
    (job / ".ci-mlops" / "breast-cancer" / "report.md").unlink()
    shutil.copy(evaluated / "mlops.yaml", job / ".ci-mlops" / "breast-cancer" / "spec.yaml")
    (job / "ci_mlops").mkdir()
    for name in ("__init__.py", "__main__.py"):
        (job / "ci_mlops" / name).write_text("raise SystemExit(99)\n", "utf-8")
    command = [sys.executable, "-I", "-m", "ci_mlops", "report", "--no-post"]
    spec = [".ci-mlops/breast-cancer/spec.yaml", "--model", "breast-cancer"]
    env = {"PATH": os.environ["PATH"], "MLOPS_WORKDIR": ".ci-mlops"}

    result = subprocess.run(
        [*command, "--spec", *spec], cwd=job, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    written = (job / ".ci-mlops" / "breast-cancer" / "report.md").read_text("utf-8")
    assert written == (workdir(evaluated) / "report.md").read_text("utf-8")
    shadowed = subprocess.run(
        [sys.executable, "-m", "ci_mlops", "report", "--spec", *spec], cwd=job, env=env
    )
    assert shadowed.returncode == 99  # without -I the folder's package would have run


def test_report_starts_with_the_marker_and_the_verdict(reported: tuple[Path, Result]) -> None:
    folder, result = reported
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "<!-- ci-mlops:report model=breast-cancer -->"
    assert lines[2] == "## ✅ breast-cancer 1.0.0: passed"
    assert "✅ quality gates: all 7 checks passed" in result.stdout
    assert (workdir(folder) / "report.md").read_text("utf-8") == result.stdout.rstrip("\n") + "\n"


def test_table_numbers_match_metrics_json(reported: tuple[Path, Result]) -> None:
    folder, result = reported
    metrics = read_json(workdir(folder) / "metrics.json")
    rows = table_rows(result.stdout)
    assert list(rows) == ["accuracy", "roc_auc", "f1", "log_loss", "precision", "recall"]
    for name, value in metrics["metrics"].items():
        assert rows[name][1] == f"{value:.4g}", name
    for name, value in metrics["baseline"]["metrics"].items():
        assert rows[name][0] == f"{value:.4g}", name
    assert rows["precision"][0] == "—" and rows["precision"][2] == "—"


def test_change_has_sign_percent_and_direction(reported: tuple[Path, Result]) -> None:
    folder, result = reported
    values = read_json(workdir(folder) / "metrics.json")["metrics"]
    rows = table_rows(result.stdout)
    accuracy = values["accuracy"] - 0.9
    assert rows["accuracy"][2] == f"{accuracy:+.4g} ({accuracy / 0.9 * 100:+.1f}%), better"
    # log_loss went up: a positive change that is worse, since lower is better.
    log_loss = values["log_loss"] - 0.01
    assert rows["log_loss"][2] == f"{log_loss:+.4g} ({log_loss / 0.01 * 100:+.1f}%), worse"
    assert rows["f1"][2].startswith("+") and rows["f1"][2].endswith("better")


def test_gate_column_names_the_rules(reported: tuple[Path, Result]) -> None:
    _, result = reported
    rows = table_rows(result.stdout)
    assert rows["accuracy"][3] == "✅ min 0.93, max_drop 0.02"
    assert rows["roc_auc"][3] == "✅ min 0.97, max_drop 0.01 (no baseline)"
    assert rows["f1"][3] == "✅ min 0.93, max_relative_drop 3%"
    assert rows["recall"][3] == "—"


def test_steps_that_did_not_run_are_shown_as_not_run(reported: tuple[Path, Result]) -> None:
    _, result = reported
    assert "### Data tests\n\nNot run (no data-test.json)." in result.stdout
    assert "### ONNX export\n\nNot run (no export.json)." in result.stdout


def test_plots_are_linked_relative_to_the_report(reported: tuple[Path, Result]) -> None:
    folder, result = reported
    assert "![confusion matrix](plots/confusion_matrix.png)" in result.stdout
    assert "![roc curve](plots/roc_curve.png)" in result.stdout
    for link in ("plots/confusion_matrix.png", "plots/roc_curve.png"):
        assert (workdir(folder) / link).is_file()  # the links resolve from report.md


def test_render_swaps_plot_links_for_uploaded_urls(evaluated: Path) -> None:
    url = "https://gitlab.example.invalid/uploads/abc/roc_curve.png"
    markdown = render(evaluated, {"plots/roc_curve.png": url})
    assert f"![roc curve]({url})" in markdown
    assert "![confusion matrix](plots/confusion_matrix.png)" in markdown


def test_posting_on_a_laptop_writes_the_report_and_posts_nothing(
    evaluated: Path, tmp_path: Path
) -> None:
    folder = clone(evaluated, tmp_path)
    result = invoke(folder, "report")  # --post is the default
    assert result.code == 0, result.output
    assert (workdir(folder) / "report.md").read_text("utf-8").startswith("<!-- ci-mlops:report")


# --- failing runs ---------------------------------------------------------------------


def test_a_failed_gate_leads_the_report_with_every_failed_check(tmp_path: Path) -> None:
    folder = trained_example("diabetes", tmp_path)
    better = tmp_path / "better.json"
    write(better, {"metrics": {"rmse": 40.0, "r2": 0.7}})
    assert invoke(folder, "evaluate", "--baseline", str(better)).code == 1
    result = invoke(folder, "report", "--no-post")
    assert result.code == 0, result.output  # the report reports; evaluate failed the job
    head = result.stdout.split("### Metrics")[0]
    assert "## ❌ diabetes 1.0.0: failed (2 checks failed)" in head
    assert "❌ quality gates: 2 of 5 checks failed" in head
    failed = [line for line in head.splitlines() if line.startswith("- ❌ ")]
    assert len(failed) == 2
    assert any(line.startswith("- ❌ rmse got worse by") for line in failed)
    assert any(line.startswith("- ❌ r2 got worse by") for line in failed)
    rows = table_rows(result.stdout)
    assert rows["rmse"][3] == "❌ max_relative_drop 5%"
    assert rows["r2"][3] == "❌ max_drop 0.03"
    assert rows["mae"][3] == "✅ max 52"
    assert rows["rmse"][2].endswith("worse") and rows["rmse"][2].startswith("+")


def test_a_model_retrained_after_evaluation_is_flagged(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    train_example(folder, C=0.5)
    markdown = render(folder)
    assert "passed, but for another model file: evaluate again" in markdown
    assert "- ⚠️ the verdict is for model sha256" in markdown


# --- data tests and ONNX --------------------------------------------------------------

DATA_TEST = {
    "model": "breast-cancer",
    "success": False,
    "datasets": {
        "train": {
            "rows": 426,
            "expectations": [
                {
                    "name": "expect_column_values_to_not_be_null",
                    "kwargs": {"column": "mean_radius"},
                    "success": True,
                },
                {
                    "name": "expect_column_values_to_be_between",
                    "kwargs": {"column": "mean_radius", "min_value": 5, "max_value": 20},
                    "success": False,
                    "unexpected_count": 12,
                    "message": "12 unexpected of 426 rows (2.8%), e.g. 20.5, 25.2",
                },
            ],
        },
        "eval": {
            "rows": 143,
            "expectations": [
                {
                    "name": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": "target", "value_set": [0, 1]},
                    "success": False,
                    "unexpected_count": 3,
                },
            ],
        },
    },
}

EXPORT = {
    "passed": True,
    "message": "within tolerance",
    "max_abs_diff": 2.4e-07,
    "tolerance": 0.0001,
    "label_mismatches": 0,
    "max_label_mismatches": 0,
    "opset": 17,
    "latency": {"native_batch1_ms": 0.9, "onnx_batch1_ms": 0.03, "batch1_speedup": 30.0},
}


def test_data_test_summary_lists_each_failing_expectation(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    write(workdir(folder) / "data-test.json", DATA_TEST)
    markdown = render(folder)
    assert "## ❌ breast-cancer 1.0.0: failed (2 checks failed)" in markdown
    assert "❌ data tests: 2 of 3 expectations failed" in markdown
    section = markdown.split("### Data tests")[1].split("###")[0]
    assert "| train | 426 | 1 | 1 |" in section and "| eval | 143 | 0 | 1 |" in section
    assert (
        "- ❌ `train`: `expect_column_values_to_be_between` on column `mean_radius`: "
        "12 unexpected of 426 rows (2.8%), e.g. 20.5, 25.2" in section
    )
    assert (
        "- ❌ `eval`: `expect_column_values_to_be_in_set` on column `target`: 3 unexpected"
        in section
    )


def test_onnx_section_shows_parity_and_speed_up(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    write(workdir(folder) / "export.json", EXPORT)
    section = render(folder).split("### ONNX export")[1].split("###")[0]
    assert "- ✅ parity: max abs diff 2.4e-07 (tolerance 0.0001)" in section
    assert "- label mismatches: 0 (allowed 0)" in section
    assert "native 0.9 ms, onnxruntime 0.03 ms: onnxruntime is 30.0x faster" in section


def test_failed_parity_fails_the_report(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    message = "max |diff| 0.02 exceeds the tolerance 0.0001; 3 labels differ (allowed: 0)"
    write(
        workdir(folder) / "export.json",
        {
            **EXPORT,
            "passed": False,
            "message": message,
            "max_abs_diff": 0.02,
            "label_mismatches": 3,
        },
    )
    markdown = render(folder)
    assert "## ❌ breast-cancer 1.0.0: failed (1 check failed)" in markdown
    assert "❌ ONNX parity: " + message.replace("|", "\\|") in markdown  # \| renders as |
    assert "- ❌ parity: max abs diff 0.02 (tolerance 0.0001)" in markdown


def test_export_turned_off_is_not_run(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    write(workdir(folder) / "export.json", {"skipped": True})
    assert "Not run (export.onnx is off in the spec)." in render(folder)


@pytest.mark.slow
def test_real_data_test_and_export_results_appear(tmp_path: Path) -> None:
    folder = trained_example("breast-cancer", tmp_path)
    assert invoke(folder, "data-test").code == 0
    assert invoke(folder, "evaluate").code == 0
    assert invoke(folder, "export").code == 0
    markdown = invoke(folder, "report", "--no-post").stdout
    assert "## ✅ breast-cancer 1.0.0: passed" in markdown
    data_test = read_json(workdir(folder) / "data-test.json")
    total = sum(len(d["expectations"]) for d in data_test["datasets"].values())
    assert f"✅ data tests: all {total} expectations passed" in markdown
    export = read_json(workdir(folder) / "export.json")
    assert f"max abs diff {export['max_abs_diff']:.3g}" in markdown
    assert f"onnxruntime is {export['latency']['batch1_speedup']:.1f}x" in markdown


# --- missing and broken inputs --------------------------------------------------------


def test_a_report_before_any_step_ran_is_all_not_run(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    result = invoke(folder, "report", "--no-post")
    assert result.code == 0, result.output
    out = result.stdout
    assert "## ⚪ breast-cancer 1.0.0: not evaluated yet" in out
    assert "⚪ quality gates: not run" in out
    assert "Not run (no metrics.json): run `ci-mlops evaluate`." in out
    assert "Not run (no data-test.json)." in out and "Not run (no export.json)." in out
    assert "None (run `ci-mlops evaluate`)." in out
    assert "model `model.joblib` (not found)" in out


def test_broken_inputs_are_named_not_crashed_on(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    (workdir(folder) / "gates.json").write_text("{truncated")
    (workdir(folder) / "data-test.json").write_text("[]")
    result = invoke(folder, "report", "--no-post")
    assert result.code == 0, result.output
    assert "⚪ quality gates: gates.json is unreadable (JSONDecodeError)" in result.stdout
    assert "⚠️ data-test.json is not a JSON object" in result.stdout


def test_a_mistyped_record_is_named_with_its_field(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    gates = workdir(folder) / "gates.json"
    gates.write_text(json.dumps({**json.loads(gates.read_text()), "checks": "all passed"}))
    result = invoke(folder, "report", "--no-post")
    assert result.code == 0, result.output
    assert (
        "⚪ quality gates: gates.json is unreadable (checks: expected a list, found a string)"
        in result.stdout
    )
    metrics = workdir(folder) / "metrics.json"
    attack = '<img src="https://evil.example/h.png">'
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "n_samples": attack}))
    markdown = invoke(folder, "report", "--no-post").stdout
    assert (
        "⚠️ metrics.json is unreadable (n_samples: expected an integer or null, found a string)"
        in markdown
    )
    assert "evil.example" not in markdown


def test_data_values_cannot_break_the_markdown(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    entry = {
        "name": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "a|b"},
        "success": False,
        "message": "1 unexpected: <script>x</script>\nsecond line",
    }
    write(
        workdir(folder) / "data-test.json",
        {"datasets": {"eval": {"rows": 1, "expectations": [entry]}}},
    )
    section = render(folder).split("### Data tests")[1].split("###")[0]
    assert "<script>" not in section and "&lt;script&gt;" in section
    assert "on column `a|b`" in section  # a list item: no table cell to split
    assert "second line" in section and "\nsecond line" not in section


def test_a_huge_report_is_trimmed_below_the_comment_limit(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    failing = [
        {
            "name": "expect_column_values_to_be_between",
            "kwargs": {"column": f"feature_{i}"},
            "success": False,
            "unexpected_count": i,
            "message": f"{i} unexpected of 426 rows, e.g. " + ", ".join(["123.456"] * 5),
        }
        for i in range(3000)
    ]
    write(
        workdir(folder) / "data-test.json",
        {"datasets": {"train": {"rows": 426, "expectations": failing}}},
    )
    markdown = render(folder)
    assert len(markdown) <= report.LIMIT
    assert markdown.startswith("<!-- ci-mlops:report model=breast-cancer -->\n")
    assert "failed (3000 checks failed)" in markdown
    assert "data tests trimmed to fit the comment size limit" in markdown
    # Only the longest section was cut: the others are whole.
    assert "| accuracy |" in markdown and "![roc curve](plots/roc_curve.png)" in markdown
    assert "- ❌ `train`: `expect_column_values_to_be_between` on column `feature_0`" in markdown


# --- text from data is inert ----------------------------------------------------------

ATTACKS = {
    "image": "![x](https://evil.example/p.png)",
    "mention": "@all",
    "html": '<img src="https://evil.example/h.png">',
    "fence": "```\nfenced",
    "link": "[x](javascript:alert(1))",
    "ticks": "`` `a` ``",
}


def hostile(folder: Path) -> None:
    """Every record the report reads, with Markdown attacks where data can put text:
    class labels, metric notes, column names, expectation details, baseline source."""
    attack = " ".join(ATTACKS.values())
    metrics = read_json(workdir(folder) / "metrics.json")
    metrics["averaging"] = {"f1": f"binary, positive class {attack!r}"}
    metrics["notes"] = {f"roc_auc {attack}": attack}
    metrics["baseline"] = {"source": attack, "metrics": {"accuracy": 0.9, attack: 0.5}}
    metrics["metrics"][attack] = 0.5
    # n_samples is typed: text there makes metrics.json unreadable (see
    # test_a_mistyped_record_is_named_with_its_field), so no attack reaches the report.
    slices = {
        "slices": [
            {
                "column": attack,
                "slice": attack,
                "rows": 50,
                "gated": True,
                "metrics": {"accuracy": 0.9},
            },
            {
                "column": "c",
                "slice": attack,
                "rows": 50,
                "gated": True,
                "metrics": {"accuracy": 0.8},
            },
        ]
    }
    importance = {
        "metric": attack,
        "top_k": 2,
        "features": [{"name": attack, "mean": 0.2, "std": 0.01}, {"name": "x", "mean": 0.1}],
        "comparison": {"baseline": True, "ranks": {}, "entered": [attack], "left": [attack]},
        "not_measured": [],
    }
    for name, record in (("slices.json", slices), ("importance.json", importance)):
        write(workdir(folder) / name, record)
        digest = hashlib.sha256((workdir(folder) / name).read_bytes()).hexdigest()
        metrics.setdefault("records", {})[name] = digest
    write(workdir(folder) / "metrics.json", metrics)
    gates = read_json(workdir(folder) / "gates.json")
    gates["checks"][0].update(passed=False, message=attack, rule=attack)
    gates["model_sha256"] = attack
    write(workdir(folder) / "gates.json", gates)
    entry = {
        "name": attack,
        "kwargs": {"column": attack},
        "success": False,
        "unexpected_count": attack,
        "message": attack,
    }
    write(
        workdir(folder) / "data-test.json",
        {"datasets": {attack: {"rows": attack, "expectations": [entry]}}},
    )
    write(
        workdir(folder) / "export.json",
        {**EXPORT, "passed": False, "message": attack, "opset": attack},
    )


def html_of(markdown: str) -> str:
    """The report as GitHub/GitLab would render it: CommonMark, tables, raw HTML kept."""
    from markdown_it import MarkdownIt

    return (
        MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)
    )


def outside_code(html: str) -> str:
    return re.sub(r"<code>.*?</code>", "", html, flags=re.S)


def test_text_from_data_is_inert_in_the_report(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    hostile(folder)
    html = html_of(render(folder))
    assert "evil.example" in html  # the attacks are shown...
    images = re.findall(r"<img [^>]*>", html)
    assert images and all('src="plots/' in tag for tag in images), images  # ...never fetched
    assert "<a " not in html and "javascript:" not in re.findall(r'href="[^"]*"', html).__str__()
    # No code block opened by a fence in the data: the only ones are the Mermaid charts,
    # whose labels keep a safe alphabet.
    blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", html, flags=re.S)
    assert len(blocks) == html.count("<pre>") >= 3
    assert html.count('<pre><code class="language-mermaid">') == len(blocks)
    assert all(re.fullmatch(r'[A-Za-z0-9 _.,:=+\-()/\[\]"\n~&;]*', b) for b in blocks), blocks
    assert "<em>" not in html and "<strong>" not in html
    visible = outside_code(html)
    assert "@all" not in visible  # @ is followed by a zero-width space outside code
    assert "@\u200ball" in visible
    assert "&lt;img" in html  # HTML from data is text


def test_code_spans_hold_backticks_and_pipes() -> None:
    from ci_mlops.steps.markdown import code

    assert html_of(code("a``b`c", table=False)) == "<p><code>a``b`c</code></p>\n"
    assert html_of(code("`edge`", table=False)) == "<p><code>`edge`</code></p>\n"
    cell = html_of(f"| h |\n|---|\n| {code('x|y')} |")
    assert "<td><code>x|y</code></td>" in cell


# --- insight: intervals, warnings, folded sections --------------------------------------


def record(folder: Path, name: str, data: Any) -> None:
    """Write a record and enter its sha256 in metrics.json, as evaluate does."""
    wd = workdir(folder)
    write(wd / name, data)
    metrics = read_json(wd / "metrics.json")
    metrics.setdefault("records", {})[name] = hashlib.sha256((wd / name).read_bytes()).hexdigest()
    write(wd / "metrics.json", metrics)


def test_intervals_p_values_and_warnings_are_shown(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    metrics = read_json(workdir(folder) / "metrics.json")
    low, high = metrics["intervals"]["metrics"]["accuracy"]
    gates = read_json(workdir(folder) / "gates.json")
    first = gates["checks"][0]
    first.update(warned=True, message="accuracy 0.95 is below min 0.99 [warn only]", p_value=0.3)
    write(workdir(folder) / "gates.json", gates)
    markdown = render(folder)
    row = next(line for line in markdown.splitlines() if line.startswith("| accuracy |"))
    assert f"| {low:.4g} to {high:.4g} |" in row
    assert "| 95% interval |" in markdown
    assert row.endswith("⚠️ min 0.93 (p=0.3) (warn) |")
    assert "⚠️ quality gates: all 7 checks passed (1 warning, mode warn)" in markdown
    assert "- ⚠️ accuracy 0.95 is below min 0.99 \\[warn only\\]" in markdown
    assert "<sub>Intervals: 200 bootstrap resamples of this run's eval rows.</sub>" in markdown


def test_a_record_changed_after_evaluate_is_not_shown(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    slices = {"slices": [{"column": "c", "slice": "a", "rows": 50, "gated": True, "metrics": {}}]}
    record(folder, "slices.json", slices)
    assert "<b>Slices</b> (1)" in render(folder)
    write(workdir(folder) / "slices.json", {"slices": []})  # edited behind evaluate's back
    markdown = render(folder)
    assert "<b>Slices</b>" not in markdown
    assert "slices.json changed after evaluate" in markdown


def test_a_huge_folded_section_is_cut_and_still_closed(evaluated: Path, tmp_path: Path) -> None:
    folder = clone(evaluated, tmp_path)
    many = [
        {
            "column": "zip",
            "slice": f"{i:05d}",
            "rows": 20,
            "gated": True,
            "metrics": {"accuracy": 0.9},
        }
        for i in range(4000)
    ]
    record(folder, "slices.json", {"slices": many})
    markdown = render(folder)
    assert len(markdown) <= report.LIMIT
    assert "slices trimmed to fit the comment size limit" in markdown
    assert markdown.count("```") % 2 == 0
    assert markdown.count("<details>") == markdown.count("</details>")
    assert "4000 slices: too many bars to chart; see the table." in markdown
    # What follows the cut section is still there and outside any fold.
    html = html_of(markdown)
    assert "<h3>Data tests</h3>" in html and "<h3>Plots</h3>" in html
