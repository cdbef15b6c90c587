"""Train a diabetes-progression regressor. ci-mlops runs this with the environment
variables below set; run it by hand the same way."""

from __future__ import annotations

import json
import os

import joblib
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor


def main() -> None:
    params = json.loads(os.environ.get("MLOPS_PARAMS", "{}"))
    features = pd.read_csv(os.environ.get("MLOPS_TRAIN_DATA", "data/train_features.csv"))
    labels = pd.read_csv(os.environ.get("MLOPS_TRAIN_LABELS", "data/train_labels.csv")).iloc[:, 0]
    model = GradientBoostingRegressor(
        n_estimators=int(params.get("n_estimators", 150)),
        max_depth=int(params.get("max_depth", 2)),
        learning_rate=float(params.get("learning_rate", 0.05)),
        random_state=0,
    )
    model.fit(features, labels)
    joblib.dump(model, os.environ.get("MLOPS_MODEL_PATH", "model.joblib"))
    print(f"trained on {len(features)} rows, {features.shape[1]} features")


if __name__ == "__main__":
    main()
