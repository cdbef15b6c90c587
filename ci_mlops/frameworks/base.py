"""The Framework protocol: what ci-mlops needs from a machine-learning library.

A framework loads the trained model from the exact bytes whose sha256 the steps checked
(never from the path again, so what is judged is what was hashed), predicts with it,
says what inputs its ONNX graph takes and converts it to ONNX. evaluate and export both
go through ``Framework.load``, so they load a model the same way.

This module imports nothing heavy: the registry, the schema test and the generator read
frameworks without importing numpy, pandas or any ML library. Framework modules import
their library inside their methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ci_mlops.errors import StepError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass(frozen=True)
class Source:
    """A trained model file as the steps hand it over: its bytes, already checked against
    train.json, and the spec facts a loader needs."""

    path: Path
    data: bytes
    task: str  # classification | regression
    root: Path  # the spec's folder: model_class modules are imported from there
    model_class: str | None = None

    @property
    def classify(self) -> bool:
        return self.task == "classification"


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


@dataclass(frozen=True)
class Outputs:
    """What export compares with the ONNX model: probabilities, scores or values as a
    2-D array, and labels for classifiers."""

    values: np.ndarray
    labels: np.ndarray | None


@dataclass(frozen=True)
class Input:
    """One input of an ONNX graph. ``dtype`` is the numpy dtype fed to it (``object``
    for strings); ``columns`` are the eval data's columns it holds, in order;
    ``missing`` is what stands for a missing string (NaN cannot be a string tensor)."""

    name: str
    dtype: str
    columns: tuple[str, ...]
    missing: str | None = None

    def describe(self) -> dict[str, Any]:
        onnx_type = {"float32": "tensor(float)", "int64": "tensor(int64)"}.get(
            self.dtype, "tensor(string)" if self.dtype == "object" else self.dtype
        )
        shown: dict[str, Any] = {"name": self.name, "type": onnx_type, "width": len(self.columns)}
        if self.missing is not None:
            shown["missing"] = self.missing
        return shown


class Trained(Protocol):
    """A trained model loaded in its own runtime."""

    @property
    def native(self) -> bool:
        """False when the model is ONNX already: nothing to convert or compare."""
        ...

    @property
    def compared(self) -> str:
        """What parity compares: probabilities, scores or values."""
        ...

    @property
    def converter(self) -> str:
        """The converter and its version, for export.json."""
        ...

    def predict(self, frame: pd.DataFrame) -> Predictions:
        """Labels and class scores, or values, for every row of ``frame``."""
        ...

    def inputs(self, frame: pd.DataFrame) -> tuple[Input, ...]:
        """The ONNX graph's inputs for data shaped like ``frame``; a StepError naming the
        columns the framework cannot take."""
        ...

    def to_onnx(self, frame: pd.DataFrame, opset: int) -> bytes:
        """The serialized ONNX model; a StepError naming what cannot be converted."""
        ...

    def prepare(self, frame: pd.DataFrame) -> Any:
        """``frame`` as the native model takes it (sliced before latency is timed)."""
        ...

    def outputs(self, prepared: Any) -> Outputs:
        """What parity compares with the ONNX model's outputs."""
        ...

    def call(self, prepared: Any) -> object:
        """The single native call whose latency is measured."""
        ...


class Framework(Protocol):
    """One machine-learning library. Its module is listed once, in
    ``ci_mlops.frameworks.FRAMEWORKS``; the schema's ``framework`` values, the starter
    spec's hint and the extras jobs install all come from there."""

    name: ClassVar[str]  # the spec's `framework` value
    model_file: ClassVar[str]  # file name of the trained model in .ci-mlops/<model>/
    saved_as: ClassVar[str]  # what the training command writes, for people
    extra: ClassVar[str]  # the ci-mlops extra that loads, predicts and converts it
    requires: ClassVar[tuple[str, ...]]  # distributions that extra must list

    def load(self, source: Source) -> Trained:
        """The model in ``source.data``; a StepError naming the file when it cannot be."""
        ...


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def missing_library(path: Path, framework: str, library: str, extra: str) -> StepError:
    """The error for a framework whose library is not installed."""
    return StepError(
        f"{path}: framework {framework} needs {library}, which is not installed: "
        f"pip install 'ci-mlops[{extra}]'"
    )


def convert_with_onnxmltools(
    convert: Callable[..., Any], model: Any, width: int, opset: int, path: Path, **options: Any
) -> bytes:
    """A tree ensemble as ONNX through one of onnxmltools' converters, taking one float
    tensor named ``input`` of ``width`` columns."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType
    from onnxmltools.convert.common.onnx_ex import get_maximum_opset_supported

    newest = get_maximum_opset_supported()
    if opset > newest:
        raise StepError(
            f"{path}: onnxmltools {onnxmltools.__version__} converts up to opset {newest}; "
            f"set export.opset to {newest} or lower"
        )
    types = [("input", FloatTensorType([None, width]))]
    try:
        onx = convert(model, initial_types=types, target_opset=opset, **options)
    except Exception as exc:  # converters raise many types; all mean "cannot convert"
        raise StepError(
            f"{path}: onnxmltools {onnxmltools.__version__} cannot convert "
            f"{type(model).__name__}: {first_line(exc)[:200]}"
        ) from None
    return bytes(onx.SerializeToString())
