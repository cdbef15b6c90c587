"""Train a small network on the wine measurements and save its state dict. ci-mlops
runs this with the environment variables below set."""

from __future__ import annotations

import json
import os

import pandas as pd
import torch
from torch import nn

from net import WineNet


def main() -> None:
    params = json.loads(os.environ.get("MLOPS_PARAMS", "{}"))
    torch.manual_seed(int(params.get("seed", 0)))
    data = pd.read_csv(os.environ.get("MLOPS_TRAIN_DATA", "data/train.csv"))
    target = os.environ.get("MLOPS_TARGET", "target")
    x = torch.tensor(data.drop(columns=[target]).to_numpy(), dtype=torch.float32)
    y = torch.tensor(data[target].to_numpy(), dtype=torch.long)
    net = WineNet(hidden=int(params.get("hidden", 16)))
    net.mean.copy_(x.mean(dim=0))
    net.std.copy_(x.std(dim=0))
    optimiser = torch.optim.Adam(net.parameters(), lr=float(params.get("lr", 0.01)))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(int(params.get("epochs", 200))):  # full batch: 124 rows
        optimiser.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimiser.step()
    torch.save(net.state_dict(), os.environ.get("MLOPS_MODEL_PATH", "model.pt"))
    print(f"trained on {len(data)} rows, final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
