"""Train a churn classifier on the raw customer table. The pipeline itself fills gaps
and encodes the string columns, so the ONNX model takes the table's columns as they are.
ci-mlops runs this with the environment variables below set."""

from __future__ import annotations

import json
import os

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMBERS = ["tenure_months", "monthly_charges", "support_calls"]
CATEGORIES = ["contract", "payment_method"]


def main() -> None:
    params = json.loads(os.environ.get("MLOPS_PARAMS", "{}"))
    data = pd.read_csv(os.environ.get("MLOPS_TRAIN_DATA", "data/train.csv"))
    target = os.environ.get("MLOPS_TARGET", "churned")
    features, labels = data.drop(columns=[target]), data[target]
    columns = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMBERS),
            (
                "categories",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="unknown"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                CATEGORIES,
            ),
        ]
    )
    model = Pipeline(
        [("columns", columns), ("classifier", LogisticRegression(C=float(params.get("C", 1.0))))]
    )
    model.fit(features, labels)
    joblib.dump(model, os.environ.get("MLOPS_MODEL_PATH", "model.joblib"))
    print(f"trained on {len(data)} rows, {features.shape[1]} raw columns")


if __name__ == "__main__":
    main()
