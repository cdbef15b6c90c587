"""The README stays true: every spec field and every command is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ci_mlops.cli import main
from ci_mlops.spec import schema
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
