"""The model spec: its published JSON Schema, the located YAML loader, and the model."""

from __future__ import annotations

from ci_mlops.spec.check import load_spec
from ci_mlops.spec.load import schema
from ci_mlops.spec.model import Dataset, Gate, Model, Spec

__all__ = ["Dataset", "Gate", "Model", "Spec", "load_spec", "schema"]
