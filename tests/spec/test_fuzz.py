"""Property tests: whatever the input, the spec reader answers with located problems or a
spec, never with a crash. ``make fuzz`` runs them with many more examples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ci_mlops.errors import SpecError
from ci_mlops.spec.check import meaning_problems, schema_problems
from ci_mlops.spec.load import parse_spec
from ci_mlops.spec.model import build_spec
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.fuzz

EXAMPLE = yaml.safe_load((EXAMPLES / "breast-cancer" / "mlops.yaml").read_text("utf-8"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def check(raw: bytes) -> None:
    """Read ``raw`` as the CLI would (without file checks); only SpecError may escape,
    and every problem is one located line."""
    try:
        doc = parse_spec(raw, "mlops.yaml")
        problems = schema_problems(doc)
        if not problems:
            problems = meaning_problems(doc, Path("."), check_files=False)
        if problems:
            raise SpecError(problems)
        build_spec(doc.data, Path("mlops.yaml"))
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1
            assert problem.path.startswith("$")
            assert "\n" not in str(problem)


@given(st.binary(max_size=400))
def test_any_bytes(raw: bytes) -> None:
    check(raw)


@given(st.text(alphabet=" \t\n:-[]{}#&*!|>'\"%@`,?abc01.", max_size=200))
def test_yaml_punctuation_soup(text: str) -> None:
    check(text.encode("utf-8"))


def paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a parsed document, containers included."""
    found = [here]
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*here, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += paths(child, (*here, i))
    return found


EXAMPLE_PATHS = paths(EXAMPLE)[1:]


@given(st.sampled_from(EXAMPLE_PATHS), json_values)
def test_one_changed_value_in_a_real_spec(where: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(EXAMPLE)
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    parent[where[-1]] = value
    check(yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))


@given(st.sampled_from(EXAMPLE_PATHS))
def test_one_removed_value_in_a_real_spec(where: tuple[Any, ...]) -> None:
    doc = copy.deepcopy(EXAMPLE)
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    del parent[where[-1]]
    check(yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
