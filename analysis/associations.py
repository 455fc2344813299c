"""Associations of the spine age gap with pathology and lifestyle (statsmodels OLS, HC3, Benjamini-Hochberg).

For each factor, one regression:  SAG ~ factor + age + age^2 + sex + site  (age centred, in years; sex and
site as categories), with heteroscedasticity-robust HC3 standard errors. The factor's coefficient is the
difference in SAG, in years, between people with and without it at equal age, sex and site. q-values are
Benjamini-Hochberg over every factor tested in one table.

Factors:
- conditions (from the reports' `<condition>__<level>` grades): present when graded mild or worse at any
  level, over the whole spine and per region (cervical, thoracic, lumbar);
- lifestyle columns (0/1; blanks are unanswered and leave that person out of that factor's model only).
A factor nobody (or everybody) has is listed with the reason and no estimate, never dropped silently.

One series per person: rescans and follow-ups of one person are not independent, so each person's
earliest series (lowest age, then series key) stands for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests

from data_prep.cohort import pathology_features, spine_labels

FDR = 0.05
REGIONS = tuple(spine_labels.REGIONS)


def one_series_per_subject(table: pd.DataFrame) -> pd.DataFrame:
    """Each subject's earliest series (lowest age, then series key)."""
    ordered = table.sort_values(["subject_key", "age", "series_key"])
    return ordered.drop_duplicates("subject_key", keep="first").reset_index(drop=True)


def factor_table(reports: pd.DataFrame, lifestyle: list[str]) -> pd.DataFrame:
    """0/1 (NaN unanswered) factors per row of `reports`: lifestyle columns, then `<condition>` (any level)
    and `<condition>@<region>` for each condition and region."""
    factors = {name: pd.to_numeric(reports[name], errors="coerce") for name in lifestyle}
    if not any(pathology_features.SEPARATOR in c for c in reports.columns):  # a site without graded reports
        return pd.DataFrame(factors, index=reports.index)
    graded = pathology_features.grades(reports)
    for region in (None, *REGIONS):
        present = pathology_features.any_level(graded, min_grade=1, region=region)
        factors.update({name if region is None else f"{name}@{region}": present[name].astype(float)
                        for name in present.columns})
    return pd.DataFrame(factors, index=reports.index)


def associate(data: pd.DataFrame, factors: pd.DataFrame, lifestyle: list[str]) -> pd.DataFrame:
    """One row per factor: effect (years) with 95% CI, HC3 p, BH q.

    data: one row per subject with sag, age (years), sex, site; factors: aligned rows (factor_table).
    """
    rows = []
    base = data[["sag", "age", "sex", "site"]].copy()
    base["age_c"] = base["age"] - base["age"].mean()
    for name in factors.columns:
        frame = base.assign(factor=factors[name].to_numpy()).dropna(subset=["factor"])
        exposed = int(frame["factor"].sum())
        row = {"factor": name, "kind": "lifestyle" if name in lifestyle else "condition",
               "region": name.split("@")[1] if "@" in name else ("" if name in lifestyle else "any"),
               "n": len(frame), "n_with": exposed}
        if exposed < 2 or len(frame) - exposed < 2:
            rows.append({**row, "note": "too few people with or without it to estimate"})
            continue
        terms = ["factor", "age_c", "I(age_c ** 2)"]
        terms += [f"C({c})" for c in ("sex", "site") if frame[c].nunique() > 1]
        fit = smf.ols("sag ~ " + " + ".join(terms), data=frame).fit(cov_type="HC3")
        low, high = fit.conf_int().loc["factor"]
        rows.append({**row, "effect_years": fit.params["factor"], "ci_low": low, "ci_high": high,
                     "se": fit.bse["factor"], "p": fit.pvalues["factor"], "note": ""})
    table = pd.DataFrame(rows)
    tested = table["p"].notna() if "p" in table else pd.Series(False, index=table.index)
    table["q"] = np.nan
    if tested.any():
        table.loc[tested, "q"] = multipletests(table.loc[tested, "p"], method="fdr_bh")[1]
    table["significant"] = table["q"] < FDR
    columns = ["factor", "kind", "region", "n", "n_with", "effect_years", "ci_low", "ci_high", "se", "p", "q",
               "significant", "note"]
    return table.reindex(columns=columns)


def against_planted(table: pd.DataFrame, planted: dict) -> pd.DataFrame:
    """Synthetic cohorts: each planted lifestyle effect (years of biological age) against its estimate.

    A factor planted at 0 is a null factor: it should not pass the FDR threshold.
    """
    rows = []
    for name, effect in planted.items():
        found = table[table["factor"] == name]
        if found.empty or pd.isna(found["effect_years"].iloc[0]):
            rows.append({"factor": name, "planted_years": effect, "note": "not estimated"})
            continue
        r = found.iloc[0]
        rows.append({"factor": name, "planted_years": effect, "estimate_years": r["effect_years"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"], "q": r["q"],
                     "ci_covers_planted": bool(r["ci_low"] <= effect <= r["ci_high"]),
                     "right_sign": bool(np.sign(r["effect_years"]) == np.sign(effect)) if effect else None,
                     "null_passes_fdr": bool(r["significant"]) if effect == 0 else None, "note": ""})
    return pd.DataFrame(rows)
