"""The deploy-target table: how ``deploy.target`` resolves to a registry, and that the
schema and README list exactly the table's names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ci_mlops.errors import UsageError
from ci_mlops.registries import (
    ALIASES,
    REGISTRIES,
    TARGETS,
    Registry,
    registry_class,
    registry_for,
)
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from tests.helpers import REPO, copy_example


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")


def with_target(model: Model, target: str) -> Model:
    return dataclasses.replace(model, deploy=dataclasses.replace(model.deploy, target=target))


@pytest.mark.parametrize(
    ("platform", "expected"),
    [("local", "local"), ("gitlab", "gitlab-packages"), ("github", "github-releases")],
)
def test_auto_picks_the_registry_of_the_platform(spec: Spec, platform: str, expected: str) -> None:
    model = with_target(spec.models[0], "auto")

    registry = registry_for(spec, model, platform, env={})

    assert registry.name == expected
    assert platform in registry.platforms


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_old_target_names_resolve_to_their_registry(spec: Spec, alias: str, name: str) -> None:
    model = with_target(spec.models[0], alias)

    # The platform the job runs on does not matter once a target is named.
    assert registry_for(spec, model, "local", env={}).name == name


def test_a_named_target_wins_over_the_platform(spec: Spec) -> None:
    model = with_target(spec.models[0], "local")

    assert registry_for(spec, model, "github", env={}).name == "local"


def test_an_unknown_target_names_the_spec_file_and_field(spec: Spec) -> None:
    model = with_target(spec.models[0], "artifactory")

    with pytest.raises(UsageError) as raised:
        registry_for(spec, model, "local", env={})

    message = str(raised.value)
    assert message.startswith(f"{spec.path}: models.{model.name}.deploy.target: ")
    assert "'artifactory'" in message
    for name in TARGETS:
        assert name in message


def test_every_table_entry_is_a_registry_named_as_listed() -> None:
    for name in REGISTRIES:
        cls = registry_class(name)
        assert issubclass(cls, Registry)
        assert cls.name == name


def test_aliases_point_into_the_table() -> None:
    assert set(ALIASES.values()) <= set(REGISTRIES)
    assert not set(ALIASES) & set(REGISTRIES)


def test_schema_enum_is_the_table() -> None:
    schema = json.loads((REPO / "ci_mlops" / "spec" / "schema.json").read_text("utf-8"))
    found = _find_target(schema)

    assert found["enum"] == list(TARGETS)
    assert found["default"] == "auto"


def _find_target(node: object) -> dict[str, object]:
    """The ``deploy.target`` property anywhere in the schema."""
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict) and "target" in props and "registry" in props:
            target = props["target"]
            assert isinstance(target, dict)
            return target
        for value in node.values():
            try:
                return _find_target(value)
            except LookupError:
                pass
    elif isinstance(node, list):
        for value in node:
            try:
                return _find_target(value)
            except LookupError:
                pass
    raise LookupError("no deploy.target in the schema")


def test_readme_spec_reference_lists_the_table() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `deploy.target` |"))
    allowed = row.removeprefix("| `deploy.target` |").split(" | ")[0]

    assert [v.strip(" `") for v in allowed.split("\\|")] == list(TARGETS)
