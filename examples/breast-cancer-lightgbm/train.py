"""Train a LightGBM classifier of breast tumours and save the booster as text (trees
and parameters, no code). ci-mlops runs this with the environment variables below set."""

from __future__ import annotations

import json
import os

import lightgbm as lgb
import pandas as pd


def main() -> None:
    params = json.loads(os.environ.get("MLOPS_PARAMS", "{}"))
    data = pd.read_csv(os.environ.get("MLOPS_TRAIN_DATA", "data/train.csv"))
    target = os.environ.get("MLOPS_TARGET", "target")
    features, labels = data.drop(columns=[target]), data[target]
    model = lgb.LGBMClassifier(
        n_estimators=int(params.get("n_estimators", 100)),
        num_leaves=int(params.get("num_leaves", 8)),
        learning_rate=float(params.get("learning_rate", 0.1)),
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(features, labels)
    model.booster_.save_model(os.environ.get("MLOPS_MODEL_PATH", "model.txt"))
    print(f"trained on {len(data)} rows, {features.shape[1]} features")


if __name__ == "__main__":
    main()
