"""PyTorch: the training command writes TorchScript (``torch.jit.save``) or a state dict
(``torch.save(net.state_dict())``) whose network ``model_class`` rebuilds.

Loading never unpickles arbitrary objects: TorchScript is loaded as TorchScript, and a
state dict only with ``weights_only=True``. A whole pickled module is refused with what
to save instead. Exported with ``torch.onnx``.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops.errors import StepError
from ci_mlops.frameworks import onnx as graphs
from ci_mlops.frameworks.base import (
    Input,
    Outputs,
    Predictions,
    Source,
    first_line,
    missing_library,
)
from ci_mlops.frameworks.sklearn import INPUT_NAME, numeric_input

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Pytorch:
    name: ClassVar[str] = "pytorch"
    model_file: ClassVar[str] = "model.pt"
    saved_as: ClassVar[str] = "a PyTorch model (TorchScript, or a state dict with model_class)"
    extra: ClassVar[str] = "torch"
    requires: ClassVar[tuple[str, ...]] = ("torch",)

    def load(self, source: Source) -> TorchModel:
        try:
            import torch
        except ImportError:
            raise missing_library(source.path, "pytorch", "PyTorch", "torch") from None
        network = _network(torch, source)
        network.eval()
        return TorchModel(source, network)


class TorchModel:
    native = True

    def __init__(self, source: Source, network: Any) -> None:
        self.source = source
        self.network = network
        # Parity compares what the network returns; evaluate turns it into probabilities.
        self.compared = "scores" if source.classify else "values"

    @property
    def converter(self) -> str:
        import torch

        return f"torch {torch.__version__}"

    def prepare(self, frame: pd.DataFrame) -> Any:
        import numpy as np

        return np.ascontiguousarray(frame.to_numpy(dtype=np.float32))

    def call(self, prepared: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.network(torch.from_numpy(prepared)).detach().cpu().numpy()

    def predict(self, frame: pd.DataFrame) -> Predictions:
        output = self.call(self.prepare(frame))
        if not self.source.classify:
            return Predictions(graphs.flat(output, len(frame), self.source.path))
        return _classes(output)

    def outputs(self, prepared: Any) -> Outputs:
        values = graphs.two_d(self.call(prepared))
        labels = graphs.argmax_labels(values) if self.source.classify else None
        return Outputs(values, labels)

    def inputs(self, frame: pd.DataFrame) -> tuple[Input, ...]:
        return numeric_input(frame)

    def to_onnx(self, frame: pd.DataFrame, opset: int) -> bytes:
        import torch

        buffer = io.BytesIO()
        sample = torch.from_numpy(self.prepare(frame.iloc[:1]))
        try:
            with torch.no_grad():
                torch.onnx.export(
                    self.network,
                    (sample,),
                    buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes file objects
                    **_export_options(opset),
                )
        except Exception as exc:  # the exporter raises many types; all mean "cannot export"
            raise StepError(
                f"{self.source.path}: torch.onnx cannot export "
                f"{type(self.network).__name__}: {first_line(exc)[:200]}"
            ) from None
        return buffer.getvalue()


FRAMEWORK = Pytorch()


def _export_options(opset: int) -> dict[str, Any]:
    import inspect  # here, not at the top: validate and generate import this module

    import torch

    options: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": ["output"],
        "opset_version": opset,
        "dynamic_axes": {INPUT_NAME: {0: "batch"}, "output": {0: "batch"}},
    }
    # torch 2.9 made the dynamo exporter the default. It cannot export TorchScript
    # modules, takes seconds longer on small networks and needs onnxscript; the
    # TorchScript exporter handles both kinds of saved model the same way.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    return options


def _network(torch: Any, source: Source) -> Any:
    try:
        return torch.jit.load(io.BytesIO(source.data), map_location="cpu")
    except Exception as exc:  # not TorchScript: maybe a state dict
        if not source.model_class:
            raise StepError(
                f"{source.path}: not a TorchScript file ({first_line(exc)}); save it with "
                "torch.jit.save, or save a state dict and set model_class: module:Class"
            ) from None
    network = _import_class(source.model_class, source.root, source.path)()
    try:
        state = torch.load(io.BytesIO(source.data), map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # torch raises RuntimeError, pickle errors, KeyError...
        raise StepError(
            f"{source.path}: cannot load it as a state dict of {source.model_class} "
            f"(only weights are loaded, never pickled objects): {first_line(exc)}"
        ) from None
    return network


def _import_class(dotted: str, root: Path, path: Path) -> Any:
    """``module:Class``, importing the module from the spec's folder."""
    module_name, _, class_name = dotted.partition(":")
    folder = str(root.resolve())
    sys.path.insert(0, folder)
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise StepError(f"{path}: cannot import model_class {dotted}: {first_line(exc)}") from None
    finally:
        sys.path.remove(folder)


def _classes(output: np.ndarray) -> Predictions:
    """Class probabilities from a network's output: one logit (binary) or one per class.

    The network's classes are taken to be 0..k-1, as with CrossEntropyLoss targets."""
    import numpy as np

    if output.ndim == 1 or output.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-output.reshape(-1).astype(float)))
        scores = np.column_stack([1.0 - positive, positive])
    elif graphs.is_proba(output):
        scores = output.astype(float)
    else:
        shifted = np.exp(output - output.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    classes = list(range(scores.shape[1]))
    return Predictions(scores.argmax(axis=1), scores, classes, True)
