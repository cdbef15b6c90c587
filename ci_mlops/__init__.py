"""ci-mlops: ship ML models through the CI/CD platform you already run."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
