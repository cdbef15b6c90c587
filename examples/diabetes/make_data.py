"""Write this example's data files from the diabetes dataset that ships with
scikit-learn (no download): features and labels in separate files, as many data
pipelines deliver them. Run it once; the CSV files are committed."""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split


def main() -> None:
    data = load_diabetes(as_frame=True, scaled=False)
    x_train, x_eval, y_train, y_eval = train_test_split(
        data.data, data.target.rename("progression"), test_size=0.25, random_state=7
    )
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    x_train.to_csv(out / "train_features.csv", index=False, float_format="%.6g")
    y_train.to_csv(out / "train_labels.csv", index=False, float_format="%.6g")
    x_eval.to_csv(out / "eval_features.csv", index=False, float_format="%.6g")
    y_eval.to_csv(out / "eval_labels.csv", index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
