"""Write this example's data: a raw customer table as a CRM export would give it, with
string categories and missing values, made here from a fixed seed (no download).
Run it once; the CSV files are committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 1600
CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["card", "bank-transfer", "electronic-check", "mailed-check"]


def customers(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    contract = rng.choice(CONTRACTS, rows, p=[0.55, 0.25, 0.20])
    payment = rng.choice(PAYMENTS, rows)
    tenure = rng.integers(1, 72, rows)
    charges = np.round(rng.normal(70, 25, rows).clip(18, 120), 2)
    calls = rng.poisson(1.5, rows)
    # Who leaves: short tenure, monthly contracts, high charges, many support calls.
    logit = (
        -1.0
        + 1.6 * (contract == "month-to-month")
        - 1.2 * (contract == "two-year")
        + 0.6 * (payment == "electronic-check")
        - 0.04 * tenure
        + 0.02 * (charges - 70)
        + 0.35 * calls
    )
    churned = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "contract": contract,
            "payment_method": payment,
            "support_calls": calls,
            "churned": churned,
        }
    )
    # Gaps the model must handle itself: unrecorded charges and contract types.
    frame.loc[rng.random(rows) < 0.08, "monthly_charges"] = np.nan
    frame.loc[rng.random(rows) < 0.08, "contract"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "payment_method"] = np.nan
    return frame


def main() -> None:
    frame = customers(np.random.default_rng(11), ROWS)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    cut = int(ROWS * 0.75)
    frame.iloc[:cut].to_csv(out / "train.csv", index=False)
    frame.iloc[cut:].to_csv(out / "eval.csv", index=False)


if __name__ == "__main__":
    main()
