"""The Open Inference Protocol v2 endpoints of a real server on a free port: metadata,
health, inference for one-tensor and per-column (mixed-type) models, metrics, and a
clear 4xx with ``{"error": ...}`` for every kind of bad request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ci_mlops.errors import IntegrityError
from ci_mlops.serve.app import ServedModel
from tests.serve.conftest import call, running
from tests.steps.trained import read_json, workdir

NAME = "breast-cancer"
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def recorded(exported: Path) -> dict[str, Any]:
    """export.json of the exported example: its replay rows and their predictions."""
    data = read_json(workdir(exported) / "export.json")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def model(exported: Path) -> ServedModel:
    onnx = (workdir(exported) / "model.onnx").read_bytes()
    return ServedModel(onnx, name=NAME, version="1.0.0+1", task="classification")


@pytest.fixture(scope="module")
def address(model: ServedModel) -> Iterator[tuple[str, int]]:
    with running(model, max_body=64 * 1024) as where:
        yield where


def tensor(rows: list[list[float]], **overrides: Any) -> dict[str, Any]:
    item = {"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}
    return {"inputs": [{**item, **overrides}]}


def test_health_and_server_metadata(address: tuple[str, int]) -> None:
    assert call(address, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(address, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = call(address, "GET", "/v2")
    assert status == 200 and meta["name"] == "ci-mlops"


def test_model_metadata_names_inputs_outputs_and_version(
    address: tuple[str, int], model: ServedModel
) -> None:
    for path in (f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/1.0.0+1"):
        status, meta = call(address, "GET", path)
        assert status == 200
        assert meta["versions"] == ["1.0.0+1"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
        assert meta["outputs"] == [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ]
        assert meta["parameters"]["sha256"] == model.sha256
    assert call(address, "GET", f"/v2/models/{NAME}/ready") == (200, {"name": NAME, "ready": True})


def test_infer_answers_what_export_recorded_for_one_row_and_a_batch(
    address: tuple[str, int], recorded: dict[str, Any]
) -> None:
    replay = recorded["replay"]
    rows = replay["inputs"]
    status, answer = call(address, "POST", INFER, {"id": "r-1", **tensor(rows[:1])})
    assert status == 200, answer
    assert answer["id"] == "r-1" and answer["model_version"] == "1.0.0+1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["data"] == replay["labels"][:1]
    assert outputs["probabilities"]["shape"] == [1, 2]

    status, answer = call(address, "POST", INFER, tensor(rows))
    assert status == 200
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["shape"] == [len(rows)]
    assert outputs["label"]["data"] == replay["labels"]
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(len(rows), 2)
    assert np.abs(probabilities - np.asarray(replay["values"])).max() < 1e-5


def test_a_flat_tensor_and_a_chosen_output(
    address: tuple[str, int], recorded: dict[str, Any]
) -> None:
    rows = recorded["replay"]["inputs"][:3]
    flat = [v for row in rows for v in row]
    body = {**tensor(rows, data=flat, datatype="FP64"), "outputs": [{"name": "label"}]}
    status, answer = call(address, "POST", INFER, body)
    assert status == 200, answer
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == recorded["replay"]["labels"][:3]


ROW = [1.0] * 30
BAD = [
    ("not json", b"{", 400, "not JSON"),
    ("no inputs", {"id": 1}, 400, '"inputs" list'),
    ("wrong name", tensor([ROW], name="features"), 400, "unknown input 'features'"),
    ("wrong datatype", tensor([ROW], datatype="INT64"), 400, "datatype 'INT64'"),
    ("wrong width", tensor([[1.0] * 29]), 400, "does not fit [-1, 30]"),
    ("wrong rank", tensor([ROW], shape=[30]), 400, "does not fit"),
    ("too few values", tensor([ROW], shape=[2, 30]), 400, "do not fill shape [2, 30]"),
    ("no rows", tensor([ROW], shape=[0, 30], data=[]), 400, "no rows"),
    ("strings", tensor([["1.5"] * 30]), 400, "FP32 numbers"),
    ("ragged", tensor([ROW, [1.0]], shape=[2, 30]), 400, "nested list"),
    ("NaN", tensor([[float("nan"), *ROW[1:]]]), 400, "NaN or infinite"),
    ("Infinity", tensor([[float("inf"), *ROW[1:]]]), 400, "NaN or infinite"),
    ("over FP32", tensor([[1e300, *ROW[1:]]], datatype="FP64"), 400, "NaN or infinite"),
    ("input twice", {"inputs": tensor([ROW])["inputs"] * 2}, 400, "given twice"),
    ("unknown output", {**tensor([ROW]), "outputs": [{"name": "x"}]}, 400, "unknown output"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_naming_the_problem(
    address: tuple[str, int], case: str, body: Any, status: int, message: str
) -> None:
    # json.dumps writes NaN and Infinity literals, which Python's parser (like many
    # clients') accepts: the server must refuse the values, not the syntax.
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, answer = call(address, "POST", INFER, raw=raw)
    assert got == status, answer
    assert message in answer["error"]


def test_wrong_model_or_version_is_404(address: tuple[str, int]) -> None:
    status, answer = call(address, "POST", "/v2/models/other/infer", tensor([ROW]))
    assert status == 404 and "unknown model 'other'" in answer["error"]
    status, answer = call(address, "GET", f"/v2/models/{NAME}/versions/9.9.9")
    assert status == 404 and "no version '9.9.9'" in answer["error"]
    assert call(address, "GET", "/v3/anything")[0] == 404
    status, answer = call(address, "GET", INFER)
    assert status == 405 and "error" in answer


def test_an_oversized_body_is_413_before_and_while_reading(address: tuple[str, int]) -> None:
    big = json.dumps(tensor([ROW] * 2000)).encode()
    assert len(big) > 64 * 1024
    status, answer = call(address, "POST", INFER, raw=big)
    assert status == 413 and "limit" in answer["error"]
    # Without a Content-Length (chunked), the bound holds while the body streams in.
    assert chunked_status(address, big) == 413


def chunked_status(address: tuple[str, int], body: bytes) -> int:
    """POST ``body`` in chunks without a Content-Length; the answer's status. The server
    may answer and close before the last chunk is sent, as a bounded server should."""
    import socket

    with socket.create_connection(address, timeout=10) as sock:
        head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        try:
            sock.sendall(head.encode())
            for i in range(0, len(body), 8192):
                piece = body[i : i + 8192]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_metrics_count_requests_and_name_the_model_version(
    address: tuple[str, int], model: ServedModel
) -> None:
    call(address, "POST", INFER, tensor([ROW]))
    call(address, "POST", INFER, tensor([ROW], name="nope"))
    status, text = call(address, "GET", "/metrics")
    assert status == 200
    assert f'ci_mlops_serve_requests_total{{code="200",endpoint="{INFER}"}}' in text
    assert f'ci_mlops_serve_requests_total{{code="400",endpoint="{INFER}"}}' in text
    assert (
        f'ci_mlops_serve_request_duration_seconds_bucket{{endpoint="{INFER}",le="0.005"}}' in text
    )
    assert (
        f'ci_mlops_serve_model_info{{model="{NAME}",sha256="{model.sha256}",version="1.0.0+1"}} 1.0'
        in text
    )
    call(address, "GET", "/wp-login.php")
    _, text = call(address, "GET", "/metrics")
    assert "wp-login" not in text and 'endpoint="other"' in text


def test_bytes_whose_sha256_differs_are_never_loaded(exported: Path) -> None:
    onnx = (workdir(exported) / "model.onnx").read_bytes()
    with pytest.raises(IntegrityError) as raised:
        ServedModel(onnx, name=NAME, version="1", task="classification", sha256="0" * 64)
    assert (raised.value.expected, raised.value.actual) == (
        "0" * 64,
        hashlib.sha256(onnx).hexdigest(),
    )
    assert str(raised.value).endswith(f"does not match {'0' * 64} in the verified hashes")


def mixed_model() -> bytes:
    """A classifier over a string column and a number column, converted with one ONNX
    input per column (what skl2onnx makes of a column transformer)."""
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame(
        {"colour": ["red", "blue", "red", "green"] * 10, "size": np.arange(40, dtype=np.float32)}
    )
    target = (frame["colour"] == "red").astype(int)
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [("onehot", OneHotEncoder(), ["colour"]), ("keep", "passthrough", ["size"])]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    ).fit(frame, target)
    types = [("colour", StringTensorType([None, 1])), ("size", FloatTensorType([None, 1]))]
    onnx = to_onnx(pipeline, initial_types=types, options={id(pipeline[-1]): {"zipmap": False}})
    return bytes(onnx.SerializeToString())


def test_a_mixed_type_model_takes_one_named_input_per_column() -> None:
    model = ServedModel(mixed_model(), name="mixed", version="1", task="classification")
    with running(model) as where:
        status, meta = call(where, "GET", "/v2/models/mixed")
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("colour", "BYTES"),
            ("size", "FP32"),
        ]
        body = {
            "inputs": [
                {
                    "name": "colour",
                    "shape": [3, 1],
                    "datatype": "BYTES",
                    "data": ["red", "blue", "red"],
                },
                {"name": "size", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]},
            ]
        }
        status, answer = call(where, "POST", "/v2/models/mixed/infer", body)
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == [1, 0, 1]
        body["inputs"] = body["inputs"][:1]
        status, answer = call(where, "POST", "/v2/models/mixed/infer", body)
        assert status == 400 and "missing input(s) 'size'" in answer["error"]
        body["inputs"] = [{"name": "colour", "shape": [1, 1], "datatype": "BYTES", "data": [3]}]
        status, answer = call(where, "POST", "/v2/models/mixed/infer", body)
        assert status == 400 and "strings" in answer["error"]
