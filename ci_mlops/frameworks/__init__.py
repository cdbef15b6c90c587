"""The frameworks ci-mlops supports, in one registry.

Add a framework by writing one module here (a class with the ``Framework`` attributes
and a ``load`` that returns a ``Trained``; see ``base.py``) and listing it below. The
spec schema's ``framework`` values, the starter spec's hint, each job's extras and the
model file names all come from this dict; tests fail when schema.json or pyproject.toml
disagree with it. Importing this package imports no ML library: each module imports
its own inside its methods.
"""

from __future__ import annotations

from ci_mlops.errors import StepError
from ci_mlops.frameworks import lightgbm, onnx, pytorch, sklearn, xgboost
from ci_mlops.frameworks.base import Framework, Input, Outputs, Predictions, Source, Trained

FRAMEWORKS: dict[str, Framework] = {
    "sklearn": sklearn.FRAMEWORK,
    "pytorch": pytorch.FRAMEWORK,
    "xgboost": xgboost.FRAMEWORK,
    "lightgbm": lightgbm.FRAMEWORK,
    "onnx": onnx.FRAMEWORK,
}
NAMES = tuple(FRAMEWORKS)


def get(name: str) -> Framework:
    """The framework called ``name``; the spec schema only lets known names through."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise StepError(f"unsupported framework {name!r}; one of {', '.join(NAMES)}") from None


def load(name: str, source: Source) -> Trained:
    """The trained model in ``source``, loaded by its framework."""
    return get(name).load(source)


__all__ = [
    "FRAMEWORKS",
    "NAMES",
    "Framework",
    "Input",
    "Outputs",
    "Predictions",
    "Source",
    "Trained",
]
