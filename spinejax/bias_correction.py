"""Age-bias correction of predicted ages, and the spine age gap (SAG).

Brain- and spine-age models regress towards the mean age of their training set: the young look older
and the old younger, so the raw gap (predicted - age) correlates negatively with age. The correction is
fitted on validation subjects only (never on training subjects, whose predictions are overfitted, nor
on the test subjects it is applied to), and saved, so the same coefficients can be applied to any
later prediction.

Methods (all pure functions of [n] float arrays in years):
- 'linear' (Cole et al. 2018; Beheshti et al. 2019): fit predicted = a * age + b, corrected = (predicted - b) / a.
- 'residual' (Smith et al. 2019, Le et al. 2018): fit gap = c * age + d, corrected gap = gap - (c * age + d).
- 'none': corrected = predicted. Also what analysis.spine_age_gap falls back to, saying so, when the
  validation split is too small to fit (fewer than 3 subjects of different ages) or the model's predictions
  do not follow age.
SAG = corrected predicted age - age: positive means the spine looks older than its years. Correction uses
the true age of the person corrected, which inflates R2 and r of corrected ages: always show the
uncorrected accuracy next to the corrected one.
"""

from __future__ import annotations

import numpy as np

METHODS = ("linear", "residual", "none")


class CannotFit(ValueError):
    """Too few fitting subjects, or predictions that do not follow age: analysis.spine_age_gap then falls back
    to 'none' and says so."""


def fit(method: str, age: np.ndarray, predicted: np.ndarray) -> dict:
    """Coefficients of `method` from fitting subjects: {'method', 'slope', 'intercept', 'n'} (years)."""
    if method not in METHODS:
        raise ValueError(f"unknown bias correction {method!r}; choose one of {METHODS}")
    age, predicted = np.asarray(age, float), np.asarray(predicted, float)
    if method == "none":
        return {"method": method, "slope": 1.0, "intercept": 0.0, "n": int(age.size)}
    if age.size < 3 or np.std(age) == 0:
        raise CannotFit(f"bias correction needs at least 3 fitting subjects of different ages, got {age.size}")
    target = predicted if method == "linear" else predicted - age
    slope, intercept = np.polyfit(age, target, 1)
    if method == "linear" and abs(slope) < 0.05:
        raise CannotFit(f"predicted age barely follows age on the fitting subjects (slope {slope:.3f}); "
                         "a linear correction would divide by almost zero: use 'residual' or a better model")
    return {"method": method, "slope": float(slope), "intercept": float(intercept), "n": int(age.size)}


def corrected_age(coefficients: dict, age: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Bias-corrected predicted age [n], years."""
    age, predicted = np.asarray(age, float), np.asarray(predicted, float)
    slope, intercept = coefficients["slope"], coefficients["intercept"]
    if coefficients["method"] == "linear":
        return (predicted - intercept) / slope
    if coefficients["method"] == "residual":
        return predicted - (slope * age + intercept)
    return predicted.copy()


def spine_age_gap(coefficients: dict, age: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """SAG [n] = corrected predicted age - age, years."""
    return corrected_age(coefficients, age, predicted) - np.asarray(age, float)
