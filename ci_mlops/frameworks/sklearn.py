"""scikit-learn: the training command writes an estimator or pipeline with joblib.

Loaded with joblib from the checked bytes: a pickle runs code from the repository's
own training run, which the threat model trusts, and the sha256 check before loading
makes sure it is that run's file. Converted with skl2onnx.

Raw mixed-type tables go into the ONNX graph as they are, one typed input per column:
numbers as float32 (onnxruntime has no double-typed Imputer kernel) and strings as
strings. A string SimpleImputer fitted on NaN is converted with "" as its missing value
(skl2onnx refuses NaN there, and a string tensor cannot hold NaN), and the feed turns
missing strings into "". Estimators no converter handles fail with what to use instead.
"""

from __future__ import annotations

import copy
import io
import math
import re
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops.errors import StepError
from ci_mlops.frameworks import onnx as graphs
from ci_mlops.frameworks.base import Input, Outputs, Predictions, Source, first_line

if TYPE_CHECKING:
    import pandas as pd

INPUT_NAME = "input"

# Estimators skl2onnx cannot convert as fitted by current scikit-learn, and what to use.
INSTEAD = {
    "HistGradientBoostingClassifier": (
        "GradientBoostingClassifier or RandomForestClassifier, or train LGBMClassifier "
        "with framework: lightgbm"
    ),
    "HistGradientBoostingRegressor": (
        "GradientBoostingRegressor or RandomForestRegressor, or train LGBMRegressor "
        "with framework: lightgbm"
    ),
}


class Sklearn:
    name: ClassVar[str] = "sklearn"
    model_file: ClassVar[str] = "model.joblib"
    saved_as: ClassVar[str] = "a scikit-learn estimator or pipeline saved with joblib"
    extra: ClassVar[str] = "ml"
    requires: ClassVar[tuple[str, ...]] = ("scikit-learn", "joblib")

    def load(self, source: Source) -> SklearnModel:
        import joblib

        try:
            estimator = joblib.load(io.BytesIO(source.data))
        except Exception as exc:  # unpickling can raise almost anything
            raise StepError(
                f"{source.path}: cannot load the model with joblib: {first_line(exc)}"
            ) from None
        return SklearnModel(source, checked_estimator(estimator, source))


def checked_estimator(estimator: Any, source: Source) -> Any:
    if not callable(getattr(estimator, "predict", None)):
        raise StepError(
            f"{source.path}: the loaded {type(estimator).__name__} has no predict() method"
        )
    return estimator


class EstimatorModel:
    """A model with scikit-learn's API (predict, predict_proba or decision_function,
    classes_), predicting on the DataFrame itself. XGBoost and LightGBM models share it
    and bring their own loading and conversion."""

    native = True

    def __init__(self, source: Source, estimator: Any) -> None:
        self.source = source
        self.estimator = estimator
        self.scores = _score_function(estimator) if source.classify else None

    @property
    def compared(self) -> str:
        if self.scores is None:
            return "values"
        return "probabilities" if hasattr(self.estimator, "predict_proba") else "scores"

    def predict(self, frame: pd.DataFrame) -> Predictions:
        import numpy as np

        frame = self.prepare(frame)
        values = np.asarray(self.estimator.predict(frame))
        if not self.source.classify:
            return Predictions(values)
        classes = list(getattr(self.estimator, "classes_", [])) or None
        if self.scores is None:
            return Predictions(values, None, classes, False)
        scores = np.asarray(self.scores(frame), dtype=float)
        if scores.ndim == 1:  # a binary decision function: the score of the second class
            scores = np.column_stack([-scores, scores])
        return Predictions(values, scores, classes, self.compared == "probabilities")

    def prepare(self, frame: pd.DataFrame) -> Any:
        """The frame itself for a model fitted on named columns; its values for one
        fitted on a bare array (numpy.loadtxt), which scikit-learn otherwise warns about
        on every call ("X has feature names, but ... was fitted without feature names")."""
        fitted_on_array = hasattr(self.estimator, "n_features_in_") and not hasattr(
            self.estimator, "feature_names_in_"
        )
        return frame.to_numpy() if fitted_on_array else frame

    def outputs(self, prepared: Any) -> Outputs:
        import numpy as np

        if self.scores is None:
            return Outputs(graphs.two_d(self.estimator.predict(prepared)), None)
        labels = np.asarray(self.estimator.predict(prepared))
        return Outputs(graphs.two_d(self.scores(prepared)), labels)

    def call(self, prepared: Any) -> object:
        return (self.scores or self.estimator.predict)(prepared)

    def inputs(self, frame: pd.DataFrame) -> tuple[Input, ...]:
        return numeric_input(frame)


class SklearnModel(EstimatorModel):
    @property
    def converter(self) -> str:
        import skl2onnx

        return f"skl2onnx {skl2onnx.__version__}"

    def inputs(self, frame: pd.DataFrame) -> tuple[Input, ...]:
        """One typed input per column when a ColumnTransformer picks the columns by name
        (so strings and missing values reach the model as they are), otherwise one
        float tensor."""
        if _takes_columns(self.estimator):
            return tuple(_column_input(frame, c) for c in frame.columns)
        return numeric_input(frame, MIXED_HINT)

    def to_onnx(self, frame: pd.DataFrame, opset: int) -> bytes:
        import skl2onnx

        estimator = _bridged(self.estimator)
        types = [_initial_type(spec) for spec in self.inputs(frame)]
        try:
            with warnings.catch_warnings():
                # skl2onnx warns about opsets newer than it was tested with; onnxruntime
                # and the parity check are the real test.
                warnings.simplefilter("ignore")
                onx = skl2onnx.to_onnx(
                    estimator,
                    initial_types=types,
                    target_opset=opset,
                    options=_no_zipmap(estimator),
                )
        except Exception as exc:  # converters raise many types; all mean "cannot convert"
            raise StepError(f"{self.source.path}: {_failure(exc, estimator)}") from None
        return bytes(onx.SerializeToString())


FRAMEWORK = Sklearn()


# --- inputs -------------------------------------------------------------------------


MIXED_HINT = (
    "start the pipeline with a ColumnTransformer (OneHotEncoder, SimpleImputer) to take "
    "them as they are"
)


def numeric_input(frame: pd.DataFrame, hint: str = "") -> tuple[Input, ...]:
    """One float32 tensor named ``input`` holding every column in order. The error
    names no file: the caller knows which data ``frame`` came from."""
    text = _text_columns(frame)
    if text:
        shown = ", ".join(repr(c) for c in text[:5]) + (", ..." if len(text) > 5 else "")
        raise StepError(
            f"column(s) {shown} are not numeric; this model's ONNX graph takes one float "
            f"tensor, so encode them before they reach it{'; or ' + hint if hint else ''}"
        )
    return (Input(INPUT_NAME, "float32", tuple(str(c) for c in frame.columns)),)


def _takes_columns(estimator: Any) -> bool:
    """Whether the model starts with a ColumnTransformer, which selects columns by name."""
    from sklearn.compose import ColumnTransformer

    first = estimator
    while hasattr(first, "steps"):
        first = first.steps[0][1]
    return isinstance(first, ColumnTransformer)


def _text_columns(frame: pd.DataFrame) -> list[str]:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return [
        str(c) for c in frame.columns if not (is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c]))
    ]


def _column_input(frame: pd.DataFrame, column: Any) -> Input:
    if str(column) in _text_columns(frame[[column]]):
        return Input(str(column), "object", (column,), graphs.MISSING_STRING)
    return Input(str(column), "float32", (column,))


def _initial_type(spec: Input) -> tuple[str, Any]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    tensor = StringTensorType if spec.dtype == "object" else FloatTensorType
    return spec.name, tensor([None, len(spec.columns)])


# --- conversion ---------------------------------------------------------------------


def _score_function(estimator: Any) -> Callable[[Any], Any] | None:
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba
    if hasattr(estimator, "decision_function"):
        return estimator.decision_function
    return None


def _parts(estimator: Any) -> Iterator[Any]:
    """The estimator and every fitted estimator inside it, depth first."""
    yield estimator
    children: list[Any] = []
    if hasattr(estimator, "steps"):
        children = [step for _, step in estimator.steps]
    elif hasattr(estimator, "transformers_"):
        children = [t for _, t, _ in estimator.transformers_ if not isinstance(t, str)]
    elif hasattr(estimator, "transformer_list"):
        children = [t for _, t in estimator.transformer_list]
    for child in children:
        yield from _parts(child)


def _bridged(estimator: Any) -> Any:
    """A copy whose string imputers look for "" instead of NaN, which is what the feed
    sends for a missing string; the loaded model itself is left as it predicts."""
    imputers = [p for p in _parts(estimator) if _string_imputer_on_nan(p)]
    if not imputers:
        return estimator
    bridged = copy.deepcopy(estimator)
    for part in _parts(bridged):
        if _string_imputer_on_nan(part):
            part.missing_values = graphs.MISSING_STRING
    return bridged


def _string_imputer_on_nan(part: Any) -> bool:
    statistics = getattr(part, "statistics_", None)
    missing = getattr(part, "missing_values", None)
    return (
        type(part).__name__ == "SimpleImputer"
        and statistics is not None
        and statistics.dtype == object
        and isinstance(missing, float)
        and math.isnan(missing)
    )


def _no_zipmap(estimator: Any) -> dict[int, dict[str, bool]] | None:
    """Ask for probabilities as a plain tensor instead of a list of maps. The option
    belongs to the classifier itself, which in a pipeline is the last step."""
    from sklearn.base import is_classifier

    final = estimator
    while hasattr(final, "steps"):
        final = final.steps[-1][1]
    return {id(final): {"zipmap": False}} if is_classifier(final) else None


def _failure(exc: Exception, estimator: Any) -> str:
    """Which estimator failed, why, and what to use instead when that is known."""
    import skl2onnx

    version = f"skl2onnx {skl2onnx.__version__}"
    known = [type(p).__name__ for p in _parts(estimator) if type(p).__name__ in INSTEAD]
    if known:
        return (
            f"skl2onnx cannot convert {known[0]}: {version} fails on it "
            f"({first_line(exc)[:80]}); use {INSTEAD[known[0]]}"
        )
    found = re.search(r"<class '(?:[\w.]+\.)?(\w+)'>", str(exc))
    culprit = found.group(1) if found else type(estimator).__name__
    if type(exc).__name__ in ("MissingShapeCalculator", "MissingConverter"):
        return f"skl2onnx cannot convert {culprit}: {version} has no converter for it"
    return f"skl2onnx cannot convert {culprit}: {first_line(exc)[:200]}"
