"""XGBoost: the training command saves an ``XGBClassifier`` or ``XGBRegressor`` with
``save_model`` in XGBoost's own format (UBJSON), which holds trees and parameters
and no code, so loading it runs nothing. Converted with onnxmltools."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops.errors import StepError
from ci_mlops.frameworks.base import Source, convert_with_onnxmltools, first_line, missing_library
from ci_mlops.frameworks.sklearn import EstimatorModel, checked_estimator

if TYPE_CHECKING:
    import pandas as pd


class Xgboost:
    name: ClassVar[str] = "xgboost"
    model_file: ClassVar[str] = "model.ubj"
    saved_as: ClassVar[str] = "an XGBoost model saved with save_model"
    extra: ClassVar[str] = "xgboost"
    requires: ClassVar[tuple[str, ...]] = ("xgboost-cpu", "onnxmltools")

    def load(self, source: Source) -> XgboostModel:
        try:
            import xgboost
        except ImportError:
            raise missing_library(source.path, "xgboost", "XGBoost", "xgboost") from None
        estimator: Any = xgboost.XGBClassifier() if source.classify else xgboost.XGBRegressor()
        try:
            estimator.load_model(bytearray(source.data))
        except Exception as exc:  # XGBoostError, or anything a corrupt file triggers
            raise StepError(
                f"{source.path}: cannot load the model with XGBoost: {first_line(exc)[:200]}"
            ) from None
        return XgboostModel(source, checked_estimator(estimator, source))


class XgboostModel(EstimatorModel):
    @property
    def converter(self) -> str:
        import onnxmltools

        return f"onnxmltools {onnxmltools.__version__}"

    def to_onnx(self, frame: pd.DataFrame, opset: int) -> bytes:
        import onnxmltools

        width = len(self.inputs(frame)[0].columns)
        return convert_with_onnxmltools(
            onnxmltools.convert_xgboost, _positional(self.estimator), width, opset, self.source.path
        )


def _positional(estimator: Any) -> Any:
    """A copy that names its features by position. The converter reads feature indices
    from names like f0, f1 and refuses a DataFrame's column names; the ONNX graph takes
    the columns in order anyway."""
    positional = copy.deepcopy(estimator)
    positional.get_booster().feature_names = None
    return positional


FRAMEWORK = Xgboost()
