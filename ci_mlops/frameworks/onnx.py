"""ONNX: the training command writes an ONNX file. Loaded in onnxruntime; nothing to
convert. The helpers here feed any ONNX graph from a DataFrame and read its outputs,
so evaluate (framework onnx) and export (every framework) speak to graphs alike."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops.errors import StepError
from ci_mlops.frameworks.base import (
    Input,
    Outputs,
    Predictions,
    Source,
    first_line,
    missing_library,
)

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import pandas as pd

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(string)": "object",
}
# What a missing string becomes: a string tensor cannot hold NaN.
MISSING_STRING = ""


class Onnx:
    name: ClassVar[str] = "onnx"
    model_file: ClassVar[str] = "model.onnx"
    saved_as: ClassVar[str] = "an ONNX file"
    extra: ClassVar[str] = "onnx"
    requires: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")

    def load(self, source: Source) -> OnnxModel:
        return OnnxModel(source, session(source.data, source.path))


class OnnxModel:
    native = False
    compared = "nothing (the model is ONNX already)"
    converter = "none (the model is ONNX already)"

    def __init__(self, source: Source, session: onnxruntime.InferenceSession) -> None:
        self.source = source
        self.session = session
        self.labels = class_labels(source.data)

    def inputs(self, frame: pd.DataFrame) -> tuple[Input, ...]:
        return session_inputs(self.session, frame)

    def predict(self, frame: pd.DataFrame) -> Predictions:
        try:
            inputs = self.inputs(frame)
        except StepError as exc:
            raise StepError(f"{self.source.path}: {exc}") from None
        outputs = self.session.run(None, feed(inputs, frame))
        if not self.source.classify:
            return Predictions(flat(outputs[0], len(frame), self.source.path))
        return _classes(outputs, self.labels)

    def to_onnx(self, frame: pd.DataFrame, opset: int) -> bytes:
        return self.source.data

    def prepare(self, frame: pd.DataFrame) -> Any:
        return feed(self.inputs(frame), frame)

    def outputs(self, prepared: Any) -> Outputs:
        return run_outputs(self.session, prepared, self.source.task)

    def call(self, prepared: Any) -> object:
        return self.session.run(None, prepared)


FRAMEWORK = Onnx()


# --- sessions and feeds, shared by every framework's ONNX graph ---------------------


def session(data: bytes, path: Path) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU; a StepError naming ``path`` when it fails."""
    try:
        import onnxruntime
    except ImportError:
        raise missing_library(path, "onnx", "onnxruntime", "onnx") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # shape warnings of converted trees are noise in logs
    try:
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's error types are not importable portably
        raise StepError(
            f"{path}: onnxruntime cannot load the ONNX model: {first_line(exc)[:300]}"
        ) from None


def session_inputs(session: onnxruntime.InferenceSession, frame: pd.DataFrame) -> tuple[Input, ...]:
    """The graph's inputs: one tensor holding every column in order, or one per column
    named like it. The error names no file: the caller knows where ``frame`` came from."""
    inputs = session.get_inputs()
    if len(inputs) == 1:
        only = inputs[0]
        return (Input(only.name, _DTYPES.get(only.type, "float32"), tuple(frame.columns)),)
    missing = [i.name for i in inputs if i.name not in frame.columns]
    if missing:
        raise StepError(f"the model's inputs {missing} are not columns of the data")
    return tuple(
        Input(i.name, _DTYPES.get(i.type, "float32"), (i.name,), _missing(i.type)) for i in inputs
    )


def _missing(onnx_type: str) -> str | None:
    return MISSING_STRING if onnx_type == "tensor(string)" else None


def feed(inputs: tuple[Input, ...], frame: pd.DataFrame) -> dict[str, Any]:
    """The arrays ``inputs`` take from ``frame``: strings as objects with missing values
    replaced, everything else cast to the input's dtype."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for spec in inputs:
        part = frame[list(spec.columns)]
        if spec.dtype == "object":
            filled = part.astype(object).where(part.notna(), spec.missing or MISSING_STRING)
            arrays[spec.name] = filled.astype(str).to_numpy(dtype=object)
        else:
            arrays[spec.name] = np.ascontiguousarray(part.to_numpy(dtype=spec.dtype))
    return arrays


def run_outputs(session: onnxruntime.InferenceSession, fed: dict[str, Any], task: str) -> Outputs:
    """Converted classifiers give (label, probabilities); other graphs one value tensor."""
    import numpy as np

    results = session.run(None, fed)
    if task == "classification" and len(results) >= 2:
        return Outputs(two_d(results[1]), np.asarray(results[0]).ravel())
    values = two_d(results[0])
    return Outputs(values, argmax_labels(values) if task == "classification" else None)


def two_d(values: Any) -> np.ndarray:
    import numpy as np

    array = np.asarray(values)
    return array.reshape(len(array), -1)


def argmax_labels(values: np.ndarray) -> np.ndarray | None:
    """Labels from raw scores: the largest column; none for a single output column."""
    return values.argmax(axis=1) if values.shape[1] > 1 else None


def flat(output: Any, rows: int, path: Path) -> np.ndarray:
    import numpy as np

    values = np.asarray(output, dtype=float)
    if values.size != rows:
        raise StepError(f"{path}: the model returned {values.shape} values for {rows} rows")
    return values.reshape(rows)


def class_labels(data: bytes) -> list[Any] | None:
    """Class labels stored in a classifier node (skl2onnx writes them there)."""
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load_model_from_string(data).graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.name in ("classlabels_int64s", "classlabels_ints"):
                return list(attr.ints)
            if attr.name == "classlabels_strings":
                return [s.decode("utf-8") for s in attr.strings]
    return None


def _classes(outputs: list[Any], labels: list[Any] | None) -> Predictions:
    import numpy as np

    first = np.asarray(outputs[0]) if not isinstance(outputs[0], list) else None
    if len(outputs) == 1 and first is not None and first.ndim == 2 and first.shape[1] > 1:
        # A network that outputs one score per class and no label.
        classes = labels or list(range(first.shape[1]))
        chosen = np.asarray(classes)[first.argmax(axis=1)]
        if is_proba(first):
            return Predictions(chosen, renormalised(first.astype(float)), classes, True)
        return Predictions(chosen, first, classes, False)
    values = np.asarray(outputs[0]).ravel()
    if len(outputs) < 2:
        return Predictions(values, None, labels, False)
    raw = outputs[1]
    if isinstance(raw, list):  # ZipMap: one {class: probability} dict per row
        classes = list(raw[0].keys()) if raw else labels or []
        scores = np.array([[row[c] for c in classes] for row in raw], dtype=float)
        return Predictions(values, renormalised(scores), classes, True)
    scores = np.asarray(raw, dtype=float)
    classes = labels or sorted(set(values.tolist()))
    if is_proba(scores):
        return Predictions(values, renormalised(scores), classes, True)
    return Predictions(values, scores, classes, False)


def renormalised(probabilities: np.ndarray) -> np.ndarray:
    """float32 probabilities summed in float64 miss 1 by rounding; log_loss warns."""
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def is_proba(scores: np.ndarray) -> bool:
    import numpy as np

    sums = scores.sum(axis=1)
    return bool(np.all(scores >= 0) and np.allclose(sums, 1.0, atol=1e-4))
