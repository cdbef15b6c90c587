"""Train an XGBoost regressor of diabetes progression and save it in XGBoost's own
format (trees and parameters, no code). ci-mlops runs this with the environment
variables below set."""

from __future__ import annotations

import json
import os

import pandas as pd
from xgboost import XGBRegressor


def main() -> None:
    params = json.loads(os.environ.get("MLOPS_PARAMS", "{}"))
    data = pd.read_csv(os.environ.get("MLOPS_TRAIN_DATA", "data/train.csv"))
    target = os.environ.get("MLOPS_TARGET", "target")
    features, labels = data.drop(columns=[target]), data[target]
    model = XGBRegressor(
        n_estimators=int(params.get("n_estimators", 200)),
        max_depth=int(params.get("max_depth", 2)),
        learning_rate=float(params.get("learning_rate", 0.05)),
        subsample=0.8,
        random_state=0,
        n_jobs=1,
    )
    model.fit(features, labels)
    model.save_model(os.environ.get("MLOPS_MODEL_PATH", "model.ubj"))
    print(f"trained on {len(data)} rows, {features.shape[1]} features")


if __name__ == "__main__":
    main()
