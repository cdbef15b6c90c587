"""Write this example's data files from the breast-cancer dataset that ships with
scikit-learn (no download). Run it once; the CSV files are committed."""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def main() -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    train, evaluation = train_test_split(
        frame, test_size=0.25, random_state=7, stratify=frame["target"]
    )
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    train.to_csv(out / "train.csv", index=False, float_format="%.6g")
    evaluation.to_csv(out / "eval.csv", index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
