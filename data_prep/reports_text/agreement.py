"""How well extracted grades agree with the true ones: per condition, present/absent and severity.

Pure functions over two grade tables of the same shape ([reports, `<condition>__<level>`] int 0-3): a cell is
one condition at one level of one report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score


def by_condition(truth: pd.DataFrame, extracted: pd.DataFrame) -> pd.DataFrame:
    """One row per condition and one 'all' row: cells, true findings, tp, fp, fn, precision, recall, F1 of
    "present at this level" (grade >= 1), and quadratic-weighted kappa of the grade (0-3) over every cell."""
    if list(truth.columns) != list(extracted.columns) or truth.shape != extracted.shape:
        raise ValueError("truth and extracted tables must have the same columns and rows")
    rows = []
    conditions = list(dict.fromkeys(c.split("__")[0] for c in truth.columns))
    for condition in [*conditions, "all"]:
        cols = [c for c in truth.columns if condition == "all" or c.split("__")[0] == condition]
        t, e = truth[cols].to_numpy().ravel(), extracted[cols].to_numpy().ravel()
        tp, fp, fn = int(((t > 0) & (e > 0)).sum()), int(((t == 0) & (e > 0)).sum()), int(((t > 0) & (e == 0)).sum())
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        kappa = (cohen_kappa_score(t, e, weights="quadratic", labels=[0, 1, 2, 3])
                 if len(np.unique(np.concatenate([t, e]))) > 1 else float("nan"))
        same = (t == e)[(t > 0) & (e > 0)]
        rows.append({"condition": condition, "cells": len(t), "true_findings": int((t > 0).sum()), "tp": tp,
                     "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
                     "weighted_kappa": kappa, "grade_exact_when_found": float(same.mean()) if len(same) else np.nan})
    return pd.DataFrame(rows).set_index("condition")
