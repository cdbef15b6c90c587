"""Hypothesis strategies that build schema-valid specs with hostile-but-allowed values.

Free-text fields (train.command, description, params, expectation arguments, columns)
get shell metacharacters, quotes, newlines, ``${{ }}``, ``$[[ ]]``, ``$VAR``, backquotes,
YAML specials and unicode; constrained fields (names, paths, tags, image, install...)
get everything their schema pattern still allows.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from ci_mlops import __version__
from ci_mlops.generate.kinds import job_images as kind_images
from ci_mlops.spec.check import meaning_problems, schema_problems
from ci_mlops.spec.load import parse_spec
from ci_mlops.spec.model import (
    CLASSIFICATION_METRICS,
    JOB_IMAGE_PYTHONS,
    REGRESSION_METRICS,
    Spec,
    build_spec,
)

NAME_RE = r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?"
HOSTILE_FRAGMENTS = (
    "; rm -rf / #",
    "$(touch /tmp/pwned)",
    "`id`",
    "${{ github.event.pull_request.title }}",
    "$[[ inputs.model ]]",
    "$CI_JOB_TOKEN",
    "${HOME}",
    "'\"",
    "\\n",
    "\n",
    ": ",
    " #",
    "&anchor",
    "*alias",
    "!!python/object",
    "{a: 1}",
    "| >",
    "- item",
    "%TAG",
    "@",
    "\u2028",
    "\x85",
    "é漢字🙂",
    "\t",
)
# What the spec's safe-text pattern allows: no control characters, $, quotes,
# backquotes or backslashes (these land where GitLab or a shell would expand them).
_FORBIDDEN_IN_PATHS = (
    set("$`'\"\\\u2028\u2029?+[]")
    | {chr(c) for c in range(0x20)}
    | {chr(c) for c in range(0x7F, 0xA0)}
)
path_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters="".join(_FORBIDDEN_IN_PATHS)
)
# Paths drawn from punctuation that means something to YAML, globs or a shell.
path_text = (
    st.one_of(
        st.text(path_chars, min_size=1, max_size=24),
        st.lists(
            st.sampled_from(
                [
                    "src",
                    "data",
                    "my dir",
                    "*",
                    "**",
                    "{a,b}",
                    "#x",
                    "&y",
                    "!z",
                    "|",
                    ":",
                    "a: b",
                    "0-9",
                    "é",
                    "漢",
                    "~",
                    "%",
                    "@",
                    ",",
                    "-",
                    ".py",
                    "\u00a0",
                    " ",
                ]
            ),
            min_size=1,
            max_size=5,
        ).map(lambda parts: "/".join(parts)),
    )
    .map(lambda p: p.strip().lstrip("!").strip())
    .filter(lambda p: p != "" and not set(p) & _FORBIDDEN_IN_PATHS)
)

hostile_text = st.one_of(
    st.text(max_size=40).filter(lambda t: "\x00" not in t and "\r" not in t),
    st.lists(st.sampled_from(HOSTILE_FRAGMENTS), min_size=1, max_size=6).map("".join),
    st.integers(min_value=1000, max_value=20000).map(lambda n: "x" * n),
)
# YAML cannot carry every character (NUL, lone CR is normalised): keep what it can.
yaml_text = hostile_text.filter(lambda t: all(c not in t for c in "\x00\r\ufeff"))

param_values = st.one_of(
    yaml_text,
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
param_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)

CRONS = ("0 3 * * 1", "*/15 * * * *", "0 0 1 jan,jul *", "30 2 * * mon-fri", "0 12 1-7 * sun")


def dataset(draw: st.DrawFn) -> dict[str, Any]:
    ds: dict[str, Any]
    if draw(st.booleans()):
        ds = {"path": draw(path_text)}
    else:
        ds = {"features": draw(path_text), "labels": draw(path_text)}
    if draw(st.booleans()):
        ds["target"] = draw(yaml_text.filter(bool))
    if draw(st.booleans()):
        ds["expectations"] = [
            {"expect_column_values_to_not_be_null": {"column": draw(yaml_text)}},
            {"expect_column_values_to_be_in_set": {"value_set": [draw(yaml_text)]}},
        ]
    return ds


def metrics(draw: st.DrawFn, task: str) -> dict[str, Any]:
    names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    out: dict[str, Any] = {}
    for metric in chosen:
        gate: dict[str, Any] = {}
        if draw(st.booleans()):
            gate["min"] = draw(st.floats(-1e6, 0.5))
        if draw(st.booleans()):
            gate["max"] = draw(st.floats(0.5, 1e6))
        if draw(st.booleans()):
            gate["max_drop"] = draw(st.floats(0, 1))
        out[metric] = gate or draw(st.sampled_from([None, {}]))
    return out


@st.composite
def model_doc(draw: st.DrawFn, name: str) -> dict[str, Any]:
    task = draw(st.sampled_from(["classification", "regression"]))
    model: dict[str, Any] = {
        "name": name,
        "framework": draw(st.sampled_from(["sklearn", "onnx"])),
        "task": task,
        "data": {"eval": dataset(draw)},
        "train": {"command": draw(yaml_text.filter(lambda t: t.strip() != ""))},
        "metrics": metrics(draw, task),
    }
    if draw(st.booleans()):
        model["description"] = draw(yaml_text.filter(lambda t: len(t) <= 1000))
    if draw(st.booleans()):
        model["paths"] = draw(st.lists(path_text, max_size=4))
    if draw(st.booleans()):
        model["data"]["train"] = dataset(draw)
    if draw(st.booleans()):
        model["train"]["params"] = draw(st.dictionaries(param_names, param_values, max_size=4))
    if draw(st.booleans()):
        model["train"]["timeout_minutes"] = draw(st.integers(1, 1440))
    if draw(st.booleans()):
        model["train"]["output"] = draw(path_text)
    if draw(st.booleans()):
        model["export"] = {"onnx": draw(st.booleans())}
    if draw(st.booleans()):
        envs = draw(
            st.lists(st.from_regex(NAME_RE, fullmatch=True), min_size=1, max_size=4, unique=True)
        )
        model["deploy"] = {
            "environments": [
                {"name": e, "when": draw(st.sampled_from(["auto", "manual"]))} for e in envs
            ]
        }
    retrain: dict[str, Any] = {}
    if draw(st.booleans()):
        retrain["schedule"] = draw(st.sampled_from(CRONS))
    if draw(st.booleans()):
        retrain["drift"] = {
            "reference": draw(path_text),
            "current": draw(path_text),
            "columns": draw(st.lists(yaml_text, max_size=3)),
        }
    if draw(st.booleans()):
        retrain["on_data_change"] = draw(st.lists(path_text, max_size=2))
    if retrain:
        model["retrain"] = retrain
    return model


@st.composite
def runtime_doc(draw: st.DrawFn) -> dict[str, Any]:
    rt: dict[str, Any] = {}
    if draw(st.booleans()):
        rt["python"] = draw(st.sampled_from(["3.10", "3.11", "3.12", "3.13"]))
    if draw(st.booleans()):
        rt["image"] = draw(
            st.sampled_from(
                ["python:3.12", "registry.example.com/team/py@sha256:" + "a" * 64, "img+x:1"]
            )
        )
    if draw(st.booleans()):
        rt["requirements"] = draw(path_text)
    if draw(st.booleans()):
        rt["install"] = draw(
            st.sampled_from(
                [
                    "ci-mlops[{extras}]",
                    "--index-url https://pypi.example.com/simple ci-mlops[{extras}]",
                    "ci-mlops[{extras}] @ git+https://git.example.com/ci-mlops.git@v0.1.0",
                    "ci-mlops[{extras}]~=0.1,!=0.2 (x) * ? é",
                ]
            )
        )
    if draw(st.booleans()):
        rt["installer"] = draw(st.sampled_from(["pip", "uv"]))
    if draw(st.booleans()):
        # One lock, or a folder of per-job locks (a path ending in /).
        rt["lock"] = draw(path_text) + draw(st.sampled_from(["", "/"]))
    if draw(st.booleans()):
        tag_chars = string.ascii_letters + string.digits + "._:/ -"
        rt["tags"] = draw(st.lists(st.text(tag_chars, min_size=1, max_size=12), max_size=3))
    if draw(st.booleans()):
        rt["runs_on"] = draw(st.sampled_from(["ubuntu-22.04", "self-hosted", "ubuntu-latest"]))
    if draw(st.booleans()):
        rt["timeout_minutes"] = draw(st.integers(1, 360))
    if draw(st.booleans()):
        rt["default_branch"] = draw(
            st.from_regex(
                r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,9}(/[A-Za-z0-9_-]{1,10}){0,2}", fullmatch=True
            ).filter(lambda b: ".." not in b and not b.endswith((".", ".lock")))
        )
    if draw(st.booleans()):
        rt["templates"] = {"github_sha": draw(st.from_regex(r"[0-9a-f]{40}", fullmatch=True))}
    if draw(st.booleans()):
        rt["jobs"] = draw(st.sampled_from(["steps", "combined"]))
    if draw(st.integers(0, 3)) == 0:
        job_images(draw, rt)
    return rt


def job_images(draw: st.DrawFn, rt: dict[str, Any]) -> None:
    """runtime.job_images, with what it needs: the released install (maybe behind an
    index option), no image setting, a Python the images are built for, and sometimes
    digests for some images."""
    rt["job_images"] = draw(
        st.sampled_from(["published", "registry.example.com:5000/ci/ci-mlops-job"])
    )
    rt.pop("image", None)
    release = f"ci-mlops[{{extras}}]=={__version__}"
    installs = [None, release, f"--index-url https://pypi.example.com/simple {release}"]
    install = draw(st.sampled_from(installs))
    if install is None:
        rt.pop("install", None)
    else:
        rt["install"] = install
    if rt.get("python", "3.11") not in JOB_IMAGE_PYTHONS:
        rt["python"] = draw(st.sampled_from(JOB_IMAGE_PYTHONS))
    names = sorted(kind_images())
    pinned = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    if pinned:
        rt["job_image_digests"] = {n: "sha256:" + draw(st.sampled_from("0af")) * 64 for n in pinned}


@st.composite
def spec_docs(draw: st.DrawFn, max_models: int = 5) -> dict[str, Any]:
    """A schema-valid spec document with 1 to ``max_models`` models."""
    names = draw(
        st.lists(
            st.from_regex(NAME_RE, fullmatch=True), min_size=1, max_size=max_models, unique=True
        )
    )
    doc: dict[str, Any] = {"version": 1}
    runtime = draw(runtime_doc())
    if runtime:
        doc["runtime"] = runtime
    doc["models"] = [draw(model_doc(name)) for name in names]
    return doc


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000)


def load_doc(doc: dict[str, Any], path: Path) -> Spec:
    """Read ``doc`` through the spec reader, as the CLI would (no file checks); fail the
    test with the reader's problems if the strategy built something the schema refuses."""
    located = parse_spec(to_yaml(doc).encode("utf-8"), str(path))
    problems = schema_problems(located) or meaning_problems(located, path.parent, check_files=False)
    assert not problems, "\n".join(map(str, problems))
    return build_spec(located.data, path)
