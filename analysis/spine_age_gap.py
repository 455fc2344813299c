"""From exported predictions to bias-corrected spine age gaps, and accuracy before and after correction.

Input: WORKDIR/predictions/<split>.csv (spinejax.evaluate). The correction (spinejax/bias_correction.py)
is fitted on validation subjects (the eligible ones when eligibility is known, the population the model
was trained on; --fit_on=all uses everyone) and applied to the validation and test splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinejax import bias_correction
from spinejax.age_metrics import age_metrics


def load_predictions(workdir, splits=("validation", "test")) -> pd.DataFrame:
    """The predictions of `splits`, one row per record."""
    frames = []
    for split in splits:
        path = Path(workdir) / "predictions" / f"{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no predictions; run python -m spinejax.evaluate --workdir={workdir}")
        frames.append(pd.read_csv(path, dtype={"series_key": str, "subject_key": str, "sex": str, "site": str,
                                               "eligible": str}, keep_default_na=False))
    table = pd.concat(frames, ignore_index=True)
    table["age"] = table["age"].astype(float)
    table["predicted_age"] = table["predicted_age"].astype(float)
    return table


def fitting_rows(table: pd.DataFrame, fit_on: str) -> pd.Series:
    """Validation rows the correction is fitted on: eligible ones (when known) or all."""
    validation = table["split"] == "validation"
    if fit_on == "eligible" and table["eligible"].isin(["True", "False"]).all():
        return validation & (table["eligible"] == "True")
    if fit_on not in ("eligible", "all"):
        raise ValueError(f"fit_on must be 'eligible' or 'all', not {fit_on!r}")
    return validation


def correct(table: pd.DataFrame, method: str, fit_on: str = "eligible") -> tuple[dict, pd.DataFrame]:
    """(coefficients, table + corrected_age, sag_uncorrected, sag) with the correction fitted on validation."""
    fit_rows = fitting_rows(table, fit_on)
    try:
        coefficients = bias_correction.fit(method, table.loc[fit_rows, "age"], table.loc[fit_rows, "predicted_age"])
    except bias_correction.CannotFit as error:
        # A small cohort's validation split can hold one or two people: report uncorrected gaps rather
        # than stop, and say so in the coefficients (report.py prints and shows it).
        coefficients = {**bias_correction.fit("none", table.loc[fit_rows, "age"], table.loc[fit_rows, "predicted_age"]),
                        "fallback_from": method, "fallback_reason": str(error)}
    coefficients["fit_on"] = f"validation ({fit_on})"
    out = table.copy()
    out["corrected_age"] = bias_correction.corrected_age(coefficients, out["age"], out["predicted_age"])
    out["sag_uncorrected"] = out["predicted_age"] - out["age"]
    out["sag"] = out["corrected_age"] - out["age"]
    return coefficients, out


def accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Per split and stage (uncorrected, corrected): MAE, RMSE, R2, r and the correlation of the gap with age."""
    rows = []
    for split, rows_of in table.groupby("split", sort=False):
        for stage, column in (("uncorrected", "predicted_age"), ("corrected", "corrected_age")):
            metrics = age_metrics(rows_of[column].to_numpy(), rows_of["age"].to_numpy())
            gap = rows_of[column] - rows_of["age"]
            gap_r = float(np.corrcoef(gap, rows_of["age"])[0, 1]) if len(rows_of) > 2 and gap.std() > 0 else np.nan
            rows.append({"split": split, "stage": stage, **metrics, "gap_age_r": gap_r})
    return pd.DataFrame(rows)
