"""The one table of platforms: detection, the CLI's choices and the generator's CI files
all follow it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from ci_mlops.cli import main
from ci_mlops.errors import UsageError
from ci_mlops.generate.write import render_files
from ci_mlops.platforms import CI_NAMES, NAMES, PLATFORMS, Platform, detect
from ci_mlops.platforms.detect import current_platform, platform_name
from ci_mlops.spec.check import load_spec
from tests.helpers import copy_example


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_builds_its_platform(name: str, tmp_path: Path) -> None:
    spec = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")

    platform = detect(spec, name)

    assert isinstance(platform, Platform)
    assert platform.name == name


@pytest.mark.parametrize("name", CI_NAMES)
def test_a_ci_variable_names_its_platform(name: str) -> None:
    variable = PLATFORMS[name].ci_variable
    assert variable is not None

    assert platform_name({variable: "true"}) == name
    assert current_platform({variable: "true", "MLOPS_PLATFORM": "local"}) == "local"


def test_no_ci_variable_means_the_laptop() -> None:
    assert platform_name({}) == "local"
    assert platform_name({"GITLAB_CI": "false"}) == "local"


def test_an_unknown_platform_lists_the_table(tmp_path: Path) -> None:
    spec = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")
    with pytest.raises(UsageError, match=f"choose one of: {', '.join(NAMES)}"):
        detect(spec, "jenkins")


def test_generate_writes_one_file_per_ci_platform(tmp_path: Path) -> None:
    spec = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")

    each = {name: render_files(spec, platform=name) for name in CI_NAMES}

    assert all(len(files) == 1 for files in each.values())
    assert set(render_files(spec, platform="all")) == {f for files in each.values() for f in files}


def test_cli_choices_are_the_table() -> None:
    choices = {}
    for command in ("generate", "drift", "retrain"):
        option = next(p for p in main.commands[command].params if p.name == "platform")
        assert isinstance(option.type, click.Choice)
        choices[command] = list(option.type.choices)

    assert choices == {
        "generate": [*CI_NAMES, "all"],
        "drift": list(NAMES),
        "retrain": list(NAMES),
    }
