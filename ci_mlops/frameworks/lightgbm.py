"""LightGBM: the training command saves the booster as text (``save_model``), which
holds trees and parameters and no code, so loading it runs nothing. Converted with
onnxmltools.

A booster does not keep the labels it was trained on: classes are 0..k-1, as LightGBM
numbers them internally."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops.errors import StepError
from ci_mlops.frameworks import onnx as graphs
from ci_mlops.frameworks.base import (
    Input,
    Outputs,
    Predictions,
    Source,
    convert_with_onnxmltools,
    first_line,
    missing_library,
)
from ci_mlops.frameworks.sklearn import numeric_input

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Lightgbm:
    name: ClassVar[str] = "lightgbm"
    model_file: ClassVar[str] = "model.txt"
    saved_as: ClassVar[str] = "a LightGBM booster saved with save_model"
    extra: ClassVar[str] = "lightgbm"
    requires: ClassVar[tuple[str, ...]] = ("lightgbm", "onnxmltools")

    def load(self, source: Source) -> LightgbmModel:
        try:
            import lightgbm
        except ImportError:
            raise missing_library(source.path, "lightgbm", "LightGBM", "lightgbm") from None
        try:
            booster = lightgbm.Booster(model_str=source.data.decode("utf-8"))
        except Exception as exc:  # LightGBMError, UnicodeDecodeError on a binary file
            raise StepError(
                f"{source.path}: cannot load the model with LightGBM: {first_line(exc)[:200]}"
            ) from None
        return LightgbmModel(source, booster)


class LightgbmModel:
    native = True

    def __init__(self, source: Source, booster: Any) -> None:
        self.source = source
        self.booster = booster
        self.compared = "probabilities" if source.classify else "values"

    @property
    def converter(self) -> str:
        import onnxmltools

        return f"onnxmltools {onnxmltools.__version__}"

    def prepare(self, frame: pd.DataFrame) -> Any:
        return frame

    def call(self, prepared: Any) -> object:
        return self.booster.predict(prepared)

    def _probabilities(self, prepared: Any) -> np.ndarray:
        import numpy as np

        raw = np.asarray(self.booster.predict(prepared), dtype=float)
        if raw.ndim == 1:  # binary: the probability of class 1
            return np.column_stack([1.0 - raw, raw])
        return raw

    def predict(self, frame: pd.DataFrame) -> Predictions:
        import numpy as np

        if not self.source.classify:
            return Predictions(np.asarray(self.booster.predict(frame), dtype=float))
        scores = self._probabilities(frame)
        return Predictions(scores.argmax(axis=1), scores, list(range(scores.shape[1])), True)

    def outputs(self, prepared: Any) -> Outputs:
        if not self.source.classify:
            return Outputs(graphs.two_d(self.booster.predict(prepared)), None)
        scores = self._probabilities(prepared)
        return Outputs(scores, scores.argmax(axis=1))

    def inputs(self, frame: pd.DataFrame) -> tuple[Input, ...]:
        return numeric_input(frame)

    def to_onnx(self, frame: pd.DataFrame, opset: int) -> bytes:
        import onnxmltools

        width = len(self.inputs(frame)[0].columns)
        return convert_with_onnxmltools(
            onnxmltools.convert_lightgbm,
            self.booster,
            width,
            opset,
            self.source.path,
            zipmap=False,
        )


FRAMEWORK = Lightgbm()
