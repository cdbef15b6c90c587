"""Load a trained model of any supported framework and predict with it.

Every loader gets the model file's bytes, not its path, so that what is judged is
exactly what was hashed. Heavy libraries are imported inside the loaders: a
scikit-learn user never needs onnxruntime or torch.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci_mlops.errors import StepError
from ci_mlops.spec.model import Model

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass(frozen=True)
class Predictions:
    """What a model said about the eval data.

    ``values`` are predicted labels (classification) or values (regression).
    ``scores`` has one column per entry of ``classes``; ``probabilities`` says whether
    they are class probabilities (log_loss needs them) or other scores.
    """

    values: np.ndarray
    scores: np.ndarray | None = None
    classes: list[Any] | None = None
    probabilities: bool = False


Predictor = Callable[["pd.DataFrame"], Predictions]


def load_predictor(model: Model, path: Path, data: bytes, root: Path) -> Predictor:
    """A function that predicts with the model in ``data`` (read from ``path``)."""
    if model.framework == "sklearn":
        return _sklearn(model, path, data)
    if model.framework == "onnx":
        return _onnx(model, path, data)
    if model.framework == "pytorch":
        return _torch(model, path, data, root)
    raise StepError(f"{path}: unsupported framework {model.framework!r}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- scikit-learn -------------------------------------------------------------------


def _sklearn(model: Model, path: Path, data: bytes) -> Predictor:
    import joblib

    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise almost anything
        raise StepError(f"{path}: cannot load the model with joblib: {first_line(exc)}") from None
    if not callable(getattr(estimator, "predict", None)):
        raise StepError(f"{path}: the loaded {type(estimator).__name__} has no predict() method")
    classify = model.task == "classification"

    def predict(frame: pd.DataFrame) -> Predictions:
        values = estimator.predict(frame)
        if not classify:
            return Predictions(values)
        return _sklearn_scores(estimator, frame, values)

    return predict


def _sklearn_scores(estimator: Any, frame: pd.DataFrame, values: np.ndarray) -> Predictions:
    import numpy as np

    classes = list(getattr(estimator, "classes_", [])) or None
    if hasattr(estimator, "predict_proba"):
        return Predictions(values, np.asarray(estimator.predict_proba(frame)), classes, True)
    if hasattr(estimator, "decision_function"):
        scores = np.asarray(estimator.decision_function(frame), dtype=float)
        if scores.ndim == 1:  # binary: the score of the second class
            scores = np.column_stack([-scores, scores])
        return Predictions(values, scores, classes, False)
    return Predictions(values, None, classes, False)


# --- ONNX ---------------------------------------------------------------------------

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(string)": "object",
}


def _onnx(model: Model, path: Path, data: bytes) -> Predictor:
    try:
        import onnxruntime as ort
    except ImportError:
        raise StepError(
            f"{path}: framework onnx needs onnxruntime: pip install 'ci-mlops[onnx]'"
        ) from None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise StepError(
            f"{path}: cannot load the model with onnxruntime: {first_line(exc)}"
        ) from None
    labels = _onnx_class_labels(data)
    classify = model.task == "classification"

    def predict(frame: pd.DataFrame) -> Predictions:
        outputs = session.run(None, _onnx_feed(session, frame, path))
        if not classify:
            return Predictions(_flat(outputs[0], len(frame), path))
        return _onnx_classes(outputs, labels)

    return predict


def _onnx_feed(session: Any, frame: pd.DataFrame, path: Path) -> dict[str, Any]:
    inputs = session.get_inputs()
    if len(inputs) == 1:  # one tensor holding every feature, in column order
        spec = inputs[0]
        return {spec.name: frame.to_numpy(dtype=_ONNX_DTYPES.get(spec.type, "float32"))}
    missing = [i.name for i in inputs if i.name not in frame.columns]
    if missing:
        raise StepError(f"{path}: the model's inputs {missing} are not columns of the eval data")
    return {
        i.name: frame[[i.name]].to_numpy(dtype=_ONNX_DTYPES.get(i.type, "float32")) for i in inputs
    }


def _onnx_class_labels(data: bytes) -> list[Any] | None:
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


def _onnx_classes(outputs: list[Any], labels: list[Any] | None) -> Predictions:
    import numpy as np

    first = np.asarray(outputs[0]) if not isinstance(outputs[0], list) else None
    if len(outputs) == 1 and first is not None and first.ndim == 2 and first.shape[1] > 1:
        # A network that outputs one score per class and no label.
        classes = labels or list(range(first.shape[1]))
        chosen = np.asarray(classes)[first.argmax(axis=1)]
        if _is_proba(first):
            return Predictions(chosen, _renormalised(first.astype(float)), classes, True)
        return Predictions(chosen, first, classes, False)
    values = np.asarray(outputs[0]).ravel()
    if len(outputs) < 2:
        return Predictions(values, None, labels, False)
    raw = outputs[1]
    if isinstance(raw, list):  # ZipMap: one {class: probability} dict per row
        classes = list(raw[0].keys()) if raw else labels or []
        scores = np.array([[row[c] for c in classes] for row in raw], dtype=float)
        return Predictions(values, _renormalised(scores), classes, True)
    scores = np.asarray(raw, dtype=float)
    classes = labels or sorted(set(values.tolist()))
    if _is_proba(scores):
        return Predictions(values, _renormalised(scores), classes, True)
    return Predictions(values, scores, classes, False)


def _renormalised(probabilities: np.ndarray) -> np.ndarray:
    """float32 probabilities summed in float64 miss 1 by rounding; log_loss warns."""
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def _is_proba(scores: np.ndarray) -> bool:
    import numpy as np

    sums = scores.sum(axis=1)
    return bool(np.all(scores >= 0) and np.allclose(sums, 1.0, atol=1e-4))


def _flat(output: Any, rows: int, path: Path) -> np.ndarray:
    import numpy as np

    values = np.asarray(output, dtype=float)
    if values.size != rows:
        raise StepError(f"{path}: the model returned {values.shape} values for {rows} rows")
    return values.reshape(rows)


# --- PyTorch ------------------------------------------------------------------------


def _torch(model: Model, path: Path, data: bytes, root: Path) -> Predictor:
    try:
        import torch
    except ImportError:
        raise StepError(
            f"{path}: framework pytorch needs PyTorch, which is not installed: "
            "pip install 'ci-mlops[torch]'"
        ) from None
    network = _torch_network(torch, model, path, data, root)
    network.eval()
    classify = model.task == "classification"

    def predict(frame: pd.DataFrame) -> Predictions:
        with torch.no_grad():
            output = network(torch.as_tensor(frame.to_numpy(dtype="float32")))
        array = output.detach().cpu().numpy()
        if not classify:
            return Predictions(_flat(array, len(frame), path))
        return _torch_classes(array)

    return predict


def _torch_network(torch: Any, model: Model, path: Path, data: bytes, root: Path) -> Any:
    try:
        return torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # not TorchScript: maybe a state dict
        if not model.model_class:
            raise StepError(
                f"{path}: not a TorchScript file ({first_line(exc)}); save it with "
                "torch.jit.save, or save a state dict and set model_class: module:Class"
            ) from None
    network = _import_class(model.model_class, root, path)()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # torch raises RuntimeError, pickle errors, KeyError...
        raise StepError(
            f"{path}: cannot load it as a state dict of {model.model_class}: {first_line(exc)}"
        ) from None
    return network


def _import_class(dotted: str, root: Path, path: Path) -> Any:
    """``module:Class``, importing the module from the spec's folder."""
    module_name, _, class_name = dotted.partition(":")
    sys.path.insert(0, str(root))
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise StepError(f"{path}: cannot import model_class {dotted}: {first_line(exc)}") from None
    finally:
        sys.path.remove(str(root))


def _torch_classes(output: np.ndarray) -> Predictions:
    """Class probabilities from a network's output: one logit (binary) or one per class.

    The network's classes are taken to be 0..k-1, as with CrossEntropyLoss targets."""
    import numpy as np

    if output.ndim == 1 or output.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-output.reshape(-1)))
        scores = np.column_stack([1.0 - positive, positive])
    elif _is_proba(output):
        scores = output
    else:
        shifted = np.exp(output - output.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    classes = list(range(scores.shape[1]))
    return Predictions(scores.argmax(axis=1), scores, classes, True)
