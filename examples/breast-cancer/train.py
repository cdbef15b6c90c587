"""Train a breast-cancer classifier. ci-mlops runs this with the environment variables
below set; run it by hand the same way."""

from __future__ import annotations

import json
import os

import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    params = json.loads(os.environ.get("MLOPS_PARAMS", "{}"))
    data = pd.read_csv(os.environ.get("MLOPS_TRAIN_DATA", "data/train.csv"))
    target = os.environ.get("MLOPS_TARGET", "target")
    features, labels = data.drop(columns=[target]), data[target]
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=float(params.get("C", 1.0)), max_iter=int(params.get("max_iter", 1000))),
    )
    model.fit(features, labels)
    joblib.dump(model, os.environ.get("MLOPS_MODEL_PATH", "model.joblib"))
    print(f"trained on {len(data)} rows, {features.shape[1]} features")


if __name__ == "__main__":
    main()
