"""The published schema is a valid Draft 2020-12 schema and agrees with the code."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ci_mlops.spec.check import load_spec
from ci_mlops.spec.load import schema
from ci_mlops.spec.model import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    Model,
    Spec,
    build_spec,
)
from ci_mlops.spec.starter import SCHEMA_URL
from tests.helpers import EXAMPLE_NAMES, EXAMPLES, REPO

MODEL = "#/properties/models/items/properties"
DRIFT = f"{MODEL}/retrain/properties/drift/properties"
IMAGE = f"{MODEL}/deploy/properties/image/properties"
EVALUATE = f"{MODEL}/evaluate/properties"
IMPORTANCE = f"{EVALUATE}/importance/properties"


def walk(node: Any, pointer: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema with its JSON pointer."""
    if isinstance(node, dict):
        yield pointer, node
        for key, child in node.items():
            yield from walk(child, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from walk(child, f"{pointer}/{i}")


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    published = schema()
    assert published["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(published)


def test_packaged_schema_is_the_file_the_starter_links_to() -> None:
    relative = SCHEMA_URL.split("/main/", 1)[1]
    assert json.loads((REPO / relative).read_text("utf-8")) == schema()


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_examples_validate_against_the_schema_and_the_checks(example: str) -> None:
    path = EXAMPLES / example / "mlops.yaml"
    jsonschema.Draft202012Validator(schema()).validate(yaml.safe_load(path.read_text("utf-8")))
    spec = load_spec(path)
    assert [m.name for m in spec.models] == [example]


def test_every_object_with_properties_refuses_unknown_keys() -> None:
    """Otherwise a typo in that section would be silently ignored."""
    open_objects = [
        pointer
        for pointer, node in walk(schema())
        if "properties" in node and node.get("additionalProperties") is not False
    ]
    assert open_objects == []


def test_metric_names_agree_with_the_model() -> None:
    metrics = schema()["properties"]["models"]["items"]["properties"]["metrics"]
    names = metrics["propertyNames"]["enum"]
    assert sorted(names) == sorted(CLASSIFICATION_METRICS + REGRESSION_METRICS)
    assert sorted(HIGHER_IS_BETTER) == sorted(names)


def test_every_default_is_valid_for_its_own_property() -> None:
    for pointer, node in walk(schema()):
        if "default" in node:
            rule = {k: v for k, v in node.items() if k != "default"}
            assert jsonschema.Draft202012Validator(rule).is_valid(node["default"]), pointer


MINIMAL: dict[str, Any] = {
    "version": 1,
    "models": [
        {
            "name": "m",
            "framework": "sklearn",
            "task": "classification",
            "data": {"train": {"path": "t.csv"}, "eval": {"path": "e.csv"}},
            "train": {"command": "python train.py"},
            "metrics": {"accuracy": {}},
            "deploy": {"environments": [{"name": "staging"}], "image": {}},
            "retrain": {"drift": {"reference": "t.csv", "current": "c.csv"}},
            # Importance is off unless present: present and empty shows its defaults.
            "evaluate": {"importance": {}},
        }
    ],
}

# Where each schema default shows up once the spec is built. A default added to the
# schema fails the test below until it is listed here and the code honours it.
DEFAULTS: dict[str, Callable[[Spec], object]] = {
    "#/properties/runtime/properties/python": lambda s: s.runtime.python,
    "#/properties/runtime/properties/runs_on": lambda s: s.runtime.runs_on,
    "#/properties/runtime/properties/timeout_minutes": lambda s: s.runtime.timeout_minutes,
    "#/properties/runtime/properties/default_branch": lambda s: s.runtime.default_branch,
    "#/properties/runtime/properties/layout": lambda s: s.runtime.layout,
    "#/properties/runtime/properties/jobs": lambda s: s.runtime.jobs,
    "#/properties/runtime/properties/installer": lambda s: s.runtime.installer,
    f"{MODEL}/version": lambda s: _m(s).version,
    f"{MODEL}/data/properties/train/properties/header": lambda s: _train(s).header,
    f"{MODEL}/data/properties/train/properties/delimiter": lambda s: _train(s).delimiter,
    f"{MODEL}/data/properties/eval/properties/header": lambda s: _m(s).eval_data.header,
    f"{MODEL}/data/properties/eval/properties/delimiter": lambda s: _m(s).eval_data.delimiter,
    f"{MODEL}/train/properties/timeout_minutes": lambda s: _m(s).train.timeout_minutes,
    f"{MODEL}/baseline/properties/if_missing": lambda s: _m(s).if_no_baseline,
    f"{MODEL}/baseline/properties/from": lambda s: _m(s).baseline_from,
    f"{MODEL}/tracking/properties/server": lambda s: _m(s).tracking.server,
    f"{MODEL}/export/properties/onnx": lambda s: _m(s).export.onnx,
    f"{MODEL}/export/properties/opset": lambda s: _m(s).export.opset,
    f"{MODEL}/export/properties/tolerance": lambda s: _m(s).export.tolerance,
    f"{MODEL}/export/properties/max_label_mismatches": lambda s: _m(s).export.max_label_mismatches,
    f"{MODEL}/deploy/properties/target": lambda s: _m(s).deploy.target,
    f"{MODEL}/deploy/properties/registry": lambda s: _m(s).deploy.registry,
    f"{MODEL}/deploy/properties/environments/items/properties/when": lambda s: (
        _m(s).deploy.environments[0].when
    ),
    f"{IMAGE}/enabled": lambda s: _m(s).deploy.image is not None,
    f"{IMAGE}/port": lambda s: _image(s).port,
    f"{IMAGE}/replicas": lambda s: _image(s).replicas,
    f"{MODEL}/serve/properties/max_latency_ms": lambda s: _m(s).serve.max_latency_ms,
    f"{MODEL}/report/properties/history": lambda s: _m(s).report.history,
    f"{MODEL}/evaluate/properties/shap": lambda s: _m(s).evaluation.shap,
    f"{MODEL}/metrics/additionalProperties/properties/mode": lambda s: _m(s).gates[0].mode,
    f"{EVALUATE}/bootstrap/properties/samples": lambda s: _m(s).evaluation.bootstrap.samples,
    f"{EVALUATE}/bootstrap/properties/level": lambda s: _m(s).evaluation.bootstrap.level,
    f"{EVALUATE}/bootstrap/properties/seed": lambda s: _m(s).evaluation.bootstrap.seed,
    f"{EVALUATE}/min_slice_rows": lambda s: _m(s).evaluation.min_slice_rows,
    f"{IMPORTANCE}/repeats": lambda s: _importance(s).repeats,
    f"{IMPORTANCE}/budget_seconds": lambda s: _importance(s).budget_seconds,
    f"{IMPORTANCE}/top_k": lambda s: _importance(s).top_k,
    f"{IMPORTANCE}/stable_top_feature": lambda s: _importance(s).stable_top_feature,
    f"{IMPORTANCE}/mode": lambda s: _importance(s).mode,
    f"{DRIFT}/psi_threshold": lambda s: _drift(s).psi_threshold,
    f"{DRIFT}/ks_pvalue": lambda s: _drift(s).ks_pvalue,
    f"{DRIFT}/chi2_pvalue": lambda s: _drift(s).chi2_pvalue,
    f"{DRIFT}/js_threshold": lambda s: _drift(s).js_threshold,
    f"{DRIFT}/share": lambda s: _drift(s).share,
    f"{DRIFT}/retrain": lambda s: _drift(s).retrain,
}


def _m(spec: Spec) -> Model:
    return spec.models[0]


def _train(spec: Spec) -> Any:
    assert spec.models[0].train_data is not None
    return spec.models[0].train_data


def _image(spec: Spec) -> Any:
    assert spec.models[0].deploy.image is not None
    return spec.models[0].deploy.image


def _importance(spec: Spec) -> Any:
    assert spec.models[0].evaluation.importance is not None
    return spec.models[0].evaluation.importance


def _drift(spec: Spec) -> Any:
    assert spec.models[0].retrain.drift is not None
    return spec.models[0].retrain.drift


def test_schema_defaults_are_the_defaults_the_code_applies() -> None:
    spec = build_spec(MINIMAL, Path("mlops.yaml"))
    published = {pointer: node["default"] for pointer, node in walk(schema()) if "default" in node}
    assert sorted(published) == sorted(DEFAULTS)
    for pointer, default in published.items():
        assert DEFAULTS[pointer](spec) == default, pointer
