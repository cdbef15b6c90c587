"""The network. ci-mlops rebuilds it from this class (model_class: net:WineNet) and
loads the trained weights into it with torch.load(weights_only=True)."""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 13
CLASSES = 3


class WineNet(nn.Module):
    """Standardises its inputs itself (the statistics are buffers, saved with the
    weights), so callers and the ONNX model take the raw measurements."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(FEATURES))
        self.register_buffer("std", torch.ones(FEATURES))
        self.layers = nn.Sequential(
            nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.std)
