"""The framework registry is the one place a framework is named: the schema's enum, the
starter spec's hint, the model file names, pyproject's extras and the extras the
generated jobs install all agree with it."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from ci_mlops.errors import StepError
from ci_mlops.frameworks import FRAMEWORKS, NAMES, get
from ci_mlops.generate.plan import build_plan
from ci_mlops.spec import load_spec
from ci_mlops.spec.model import MODEL_FILE_NAMES
from ci_mlops.spec.starter import _OTHER_FRAMEWORKS
from tests.helpers import EXAMPLES, FRAMEWORK_EXAMPLES, REPO

SCHEMA = json.loads((REPO / "ci_mlops/spec/schema.json").read_text("utf-8"))
FRAMEWORK_FIELD = SCHEMA["properties"]["models"]["items"]["properties"]["framework"]
EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"][
    "optional-dependencies"
]


def distributions(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings: ``torch>=2.2`` -> ``torch``."""
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_schema_enum_is_the_registry() -> None:
    assert FRAMEWORK_FIELD["enum"] == list(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_schema_description_says_what_each_framework_saves(name: str) -> None:
    assert FRAMEWORKS[name].saved_as in FRAMEWORK_FIELD["description"]


def test_starter_hint_names_every_framework() -> None:
    assert _OTHER_FRAMEWORKS.split(", ") == [n for n in NAMES if n != "sklearn"]


def test_model_file_names_come_from_the_registry() -> None:
    assert {n: f.model_file for n, f in FRAMEWORKS.items()} == MODEL_FILE_NAMES
    assert len(set(MODEL_FILE_NAMES.values())) == len(NAMES), "two frameworks share a file"


@pytest.mark.parametrize("name", NAMES)
def test_each_framework_has_an_extra_listing_what_it_requires(name: str) -> None:
    framework = FRAMEWORKS[name]
    assert framework.extra in EXTRAS, f"pyproject.toml has no extra {framework.extra!r}"
    missing = set(framework.requires) - distributions(EXTRAS[framework.extra])
    assert not missing, f"extra {framework.extra!r} does not list {sorted(missing)}"


def self_extras(requirements: list[str]) -> set[str]:
    """The extras that ``ci-mlops[a,b]`` entries of an extra pull in."""
    return {
        e for r in requirements if r.startswith("ci-mlops[") for e in r[9 : r.index("]")].split(",")
    }


@pytest.mark.parametrize("name", NAMES)
def test_dev_installs_every_framework_so_the_tests_run_them(name: str) -> None:
    dev = self_extras(EXTRAS["dev"])
    assert FRAMEWORKS[name].extra in dev | self_extras(EXTRAS["all"])


def test_dev_pins_the_cpu_build_of_torch() -> None:
    """An unpinned torch resolves to a CUDA build of several GB."""
    assert "torch==2.13.0" in EXTRAS["dev"]


@pytest.mark.parametrize("name", sorted(FRAMEWORK_EXAMPLES))
def test_jobs_that_load_the_model_install_its_framework(name: str) -> None:
    spec = load_spec(EXAMPLES / FRAMEWORK_EXAMPLES[name] / "mlops.yaml")
    jobs = {j.kind: j for j in build_plan(spec).models[0].jobs}
    extra = FRAMEWORKS[name].extra
    assert extra in jobs["evaluate"].extras("gitlab")
    assert extra in jobs["export"].extras("github")
    # Only the jobs that load the model pay for its library.
    assert extra not in jobs["data-test"].extras("gitlab")
    gitlab_ci = yaml.safe_load((EXAMPLES / FRAMEWORK_EXAMPLES[name] / ".gitlab-ci.yml").read_text())
    export_job = gitlab_ci[f"{spec.models[0].name}:export"]
    assert any(f",{extra}]" in line or f"[{extra}]" in line for line in export_job["before_script"])


@pytest.mark.parametrize("name", sorted(FRAMEWORK_EXAMPLES))
def test_every_framework_has_an_example(name: str) -> None:
    spec = load_spec(EXAMPLES / FRAMEWORK_EXAMPLES[name] / "mlops.yaml")
    assert spec.models[0].framework == name


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(StepError, match="unsupported framework 'keras'; one of sklearn, pytorch"):
        get("keras")


def test_readme_spec_reference_lists_every_framework() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `models[].framework` |")]
    values = re.split(r"(?<!\\)\|", row)[2]  # cells split on pipes that are not escaped
    assert values.count("`") == 2 * len(NAMES)
    for name in NAMES:
        assert f"`{name}`" in values
        assert FRAMEWORKS[name].model_file in row
    assert "`ci_mlops/frameworks/__init__.py`" in readme.split("### Add a framework")[1]
