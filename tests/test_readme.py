"""The README stays true: every spec field and every command is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.cli import main
from ci_mlops.errors import SpecError, StepError
from ci_mlops.spec import schema
from ci_mlops.spec.check import load_spec
from ci_mlops.steps.datasets import load_dataset
from tests.helpers import REPO

README = (REPO / "README.md").read_text("utf-8")


def fields(node: dict[str, Any], path: str = "") -> Iterator[str]:
    for key, sub in (node.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        yield here
        if "properties" in sub:
            yield from fields(sub, here)
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from fields(items, f"{here}[]")


def documented(field: str) -> bool:
    short = field.removeprefix("models[].")
    short = re.sub(r"^data\.(train|eval)\.", "data.<dataset>.", short)
    candidates = {field, short, short.removeprefix("runtime.")}
    return any(f"`{c}`" in README for c in candidates)


def test_every_spec_field_is_in_the_reference() -> None:
    missing = [f for f in fields(schema()) if not documented(f)]
    assert missing == []


def test_every_command_is_in_the_commands_table() -> None:
    for name in main.commands:
        assert f"`ci-mlops {name}" in README, name


def test_the_two_commands_are_make_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (REPO / ".ci/run").read_text()


def minimal_spec() -> str:
    after = README.split("A minimal spec", 1)[1]
    return after.split("```yaml\n", 1)[1].split("```", 1)[0]


def key_paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every mapping key of the document, outside the gates' own rules."""
    if isinstance(node, dict) and "metrics" not in here[-1:]:
        for key, child in node.items():
            yield (*here, key)
            yield from key_paths(child, (*here, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from key_paths(child, (*here, i))


def test_the_minimal_spec_validates_and_every_line_of_it_is_needed(tmp_path: Path) -> None:
    text = minimal_spec()
    spec_file = tmp_path / "mlops.yaml"
    spec_file.write_text(text)
    assert load_spec(spec_file, check_files=False).models[0].name == "churn"
    for path in key_paths(yaml.safe_load(text)):
        data = yaml.safe_load(text)
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
        spec_file.write_text(yaml.safe_dump(data))
        if path[-1] != "target":
            with pytest.raises(SpecError):
                load_spec(spec_file, check_files=False)
            continue
        # The schema lets a single file go without a target (data-test needs none);
        # evaluation cannot.
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / "eval.csv").write_text("a,churned\n1,0\n")
        dataset = load_spec(spec_file, check_files=False).models[0].eval_data
        with pytest.raises(StepError, match="names no target column"):
            load_dataset(tmp_path, dataset)
