"""The report's Mermaid charts, rendered by Mermaid itself (mermaid-cli driving
Chromium, both installed by `make tools`): every block parses, and each picture shows
the titles, labels and bars the data says it should. Labels from data keep a safe
alphabet."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ci_mlops.spec.check import load_spec
from ci_mlops.steps import mermaid, report
from tests.helpers import REPO
from tests.steps.trained import invoke, read_json, trained_example, workdir

MMDC = REPO / "tools" / "node_modules" / ".bin" / "mmdc"
BLOCK = re.compile(r"```mermaid\n(.*?)\n```", re.S)


def render_svgs(markdown: str, folder: Path) -> list[str]:
    """Every Mermaid block of ``markdown`` as SVG text, in order, through mmdc."""
    chromium = shutil.which("chromium")
    assert chromium and MMDC.is_file(), "run `make tools` (mermaid-cli and Chromium)"
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    config = folder / "puppeteer.json"
    config.write_text(json.dumps({"executablePath": chromium, "args": args}))
    source = folder / "charts.md"
    source.write_text("\n\n".join(f"```mermaid\n{b}\n```" for b in BLOCK.findall(markdown)))
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), "PUPPETEER_SKIP_DOWNLOAD": "1"}
    done = subprocess.run(
        [str(MMDC), "-i", str(source), "-o", str(folder / "out.md"), "-p", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(BLOCK.findall(markdown))
    return [(folder / f"out-{i}.svg").read_text("utf-8") for i in range(1, count + 1)]


def texts(svg: str) -> list[str]:
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def size(svg: str) -> tuple[float, float]:
    match = re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) ([\d.]+)"', svg)
    assert match, svg[:300]
    return float(match.group(1)), float(match.group(2))


@pytest.fixture(scope="module")
def insightful(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """breast-cancer evaluated with slices and importance."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("charts"))
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0]["evaluate"] = {
        "slices": ["mean_radius"],
        "importance": {"repeats": 2, "top_k": 4},
    }
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    assert invoke(folder, "evaluate").code == 0
    return folder


def test_every_chart_renders_with_mermaid(insightful: Path, tmp_path: Path) -> None:
    spec = load_spec(insightful / "mlops.yaml")
    model = spec.models[0]
    history = (("1.0.0+1", {"accuracy": 0.95}), ("1.0.0+2", {"accuracy": 0.965}))
    inputs = report.read_inputs(spec.workdir(model), model, history=history)
    markdown = report.render(spec, model, inputs=inputs)
    svgs = render_svgs(markdown, tmp_path)
    titles = [texts(svg)[0] if texts(svg) else "" for svg in svgs]
    assert titles == [
        "ROC curve (eval data)",
        "accuracy over the deployed versions",
        "accuracy per slice",
        "Permutation importance (accuracy worsening)",
    ]
    for svg in svgs:
        width, height = size(svg)
        assert width >= 400 and height >= 300, (width, height)
    roc, trend, slices, importance = svgs
    assert {"0", "0.5", "1"} <= set(texts(roc))
    assert {"1.0.0+1", "1.0.0+2", "this run"} <= set(texts(trend))
    quartiles = [s for s in read_json(workdir(insightful) / "slices.json")["slices"]]
    assert len(quartiles) == 4
    assert all(f"mean_radius=({s['slice'][1:-1]})" in texts(slices) for s in quartiles)
    ranking = read_json(workdir(insightful) / "importance.json")["features"]
    top = [f["name"] for f in ranking[:4]]
    assert [t for t in texts(importance) if t in top] == top
    # One bar per feature shown (horizontal), longest for the most important.
    assert bar_widths(importance) == sorted(bar_widths(importance), reverse=True)
    assert len(bar_widths(importance)) == 4
    assert len(bar_widths(slices)) == 4


def bar_widths(svg: str) -> list[float]:
    group = re.search(r'<g class="bar-plot-0">(.*?)</g>', svg, re.S)
    assert group, svg[:500]
    return [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', group.group(1))]


def test_labels_from_data_cannot_break_a_chart() -> None:
    hostile = 'a"] \n```\n%%{init: {}}%% <img src=x> `x`'
    shown = mermaid.label(hostile)
    assert shown.startswith('"') and shown.endswith('"')
    inner = shown[1:-1]
    assert re.fullmatch(r"[A-Za-z0-9 _.,:=+\-()/~]*", inner), inner
    assert len(inner) <= mermaid.MAX_LABEL
    chart = mermaid.bar_chart(hostile, [hostile, "b"], [1.0, float("nan")], hostile)
    assert chart.count("```") == 2 and "%%" not in chart and "<" not in chart


def test_a_hostile_chart_still_renders(tmp_path: Path) -> None:
    hostile = 'a"] \n```\n%%{init: {}}%% <img src=x> `x`'
    chart = mermaid.bar_chart(hostile, [hostile, "b"], [0.5, 0.25], hostile, horizontal=True)
    (svg,) = render_svgs(chart, tmp_path)
    assert "<img" not in svg
    assert texts(svg)[0] == "a_) ___ ___init: _____ _img src=x_ _x_"
    assert len(bar_widths(svg)) == 2
