"""Accuracy of predicted ages: pure numpy functions of [n] float arrays in years."""

from __future__ import annotations

import numpy as np


def age_metrics(predicted: np.ndarray, age: np.ndarray) -> dict:
    """MAE and RMSE (years), R2 (1 - SSE/SST about the mean age) and Pearson r of predicted against true age.

    R2 and r are NaN when fewer than two ages or no spread make them undefined.
    """
    predicted, age = np.asarray(predicted, np.float64), np.asarray(age, np.float64)
    if predicted.shape != age.shape or predicted.ndim != 1:
        raise ValueError(f"need two [n] arrays, got {predicted.shape} and {age.shape}")
    error = predicted - age
    spread = np.sum((age - age.mean()) ** 2) if age.size else 0.0
    r = np.nan
    if age.size > 1 and np.std(age) > 0 and np.std(predicted) > 0:
        r = float(np.corrcoef(predicted, age)[0, 1])
    return {"mae": float(np.mean(np.abs(error))) if age.size else np.nan,
            "rmse": float(np.sqrt(np.mean(error ** 2))) if age.size else np.nan,
            "r2": float(1 - np.sum(error ** 2) / spread) if spread > 0 else np.nan,
            "pearson_r": r, "n": int(age.size)}
